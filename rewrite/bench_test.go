package rewrite

import "testing"

// Each benchmark measures what the datapath does per packet: Classify, then Shift. The packet
// is shifted again on every iteration, which keeps it valid (the checksum follows).

func benchShift(b *testing.B, pkt []byte, kind Kind) {
	var p Packet
	Classify(pkt, &p)
	if p.Kind != kind {
		b.Fatalf("Classify: %v/%v", p.Kind, p.Reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		// p is reused: Classify sets every field.
		Classify(pkt, &p)
		if Shift(pkt, &p, 0x01000193, 0xfffff000, false) != ReasonNone {
			b.Fatal("Shift failed")
		}
	}
}

// BenchmarkShiftIPv4Data is a 1448-byte data segment with timestamps, as Linux sends them.
func BenchmarkShiftIPv4Data(b *testing.B) {
	pkt := seg{seq: 1, ack: 2, flags: FlagACK | FlagPSH, opts: optTimestamps(1, 2), payload: make([]byte, 1448)}.pkt()
	benchShift(b, pkt, KindTCP)
}

// BenchmarkShiftIPv6Data is the same segment over IPv6.
func BenchmarkShiftIPv6Data(b *testing.B) {
	pkt := seg{v6: true, seq: 1, ack: 2, flags: FlagACK | FlagPSH, opts: optTimestamps(1, 2), payload: make([]byte, 1428)}.pkt()
	benchShift(b, pkt, KindTCP)
}

// BenchmarkShiftSACKAck is a pure ACK carrying timestamps and 3 SACK blocks (Linux's layout).
func BenchmarkShiftSACKAck(b *testing.B) {
	opts := cat(optTimestamps(1, 2), []byte{optNOP, optNOP}, optSACKBlocks(100, 200, 300, 400, 500, 600))
	pkt := seg{seq: 1, ack: 2, flags: FlagACK, opts: opts}.pkt()
	benchShift(b, pkt, KindTCP)
}

// BenchmarkShiftIPv4GSO is a 64 KiB super-packet: the cost does not depend on the payload.
func BenchmarkShiftIPv4GSO(b *testing.B) {
	pkt := seg{seq: 1, ack: 2, flags: FlagACK, opts: optTimestamps(1, 2), payload: make([]byte, 65535-52)}.pkt()
	benchShift(b, pkt, KindTCP)
}

// BenchmarkShiftICMPFragNeeded is an ICMP fragmentation-needed quoting a whole segment header.
func BenchmarkShiftICMPFragNeeded(b *testing.B) {
	quote := seg{seq: 1, ack: 2, flags: FlagACK, opts: optTimestamps(1, 2), payload: make([]byte, 1448)}.pkt()
	pkt, _ := icmpErr(false, 3, 4, 1400, client4, quote[:548])
	benchShift(b, pkt, KindICMPQuotingTCP)
}
