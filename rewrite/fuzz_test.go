package rewrite

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/inetsum"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// seedPackets is a spread of well-formed packets of every kind, the seed corpus of the fuzz
// targets and the input of the round-trip and allocation tests.
func seedPackets() [][]byte {
	data := []byte("0123456789abcdefghij")
	ts := optTimestamps(0xaabbccdd, 0x11223344)
	sack3 := cat(ts, []byte{optNOP, optNOP}, optSACKBlocks(100, 200, 300, 400, 500, 600))
	var out [][]byte
	for _, v6 := range []bool{false, true} {
		var exts []ext
		if v6 {
			exts = []ext{{extHopByHop, padN6}, {extRouting, routing0}, {extFragment, fragHdr(0, false, 3)}, {extDestinationOp, padN6}}
		}
		segs := []seg{
			{v6: v6, seq: 1, ack: 2, flags: FlagACK | FlagPSH, opts: ts, payload: data},
			{v6: v6, seq: 0xfffffff0, flags: FlagSYN, opts: []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}},
			{v6: v6, seq: 0x7fffffff, ack: 0xffffffff, flags: FlagACK, opts: sack3},
			{v6: v6, seq: 3, ack: 4, flags: FlagACK, opts: cat([]byte{optNOP}, optSACKBlocks(0xfffffffe, 0xffffffff, 0, 1))},
			{v6: v6, seq: 3, ack: 4, flags: FlagACK | FlagFIN, opts: cat(optSACKBlocks(5, 6), []byte{optNOP}, optSACKBlocks(7, 8))},
			{v6: v6, seq: 5, ack: 6, flags: FlagACK, opts: append([]byte{optNOP, optNOP, optMD5, 18}, make([]byte, 16)...)},
			{v6: v6, seq: 5, ack: 6, flags: FlagRST, exts: exts, ipOpts: []byte{1, 1, 1, 0}, payload: data},
			{v6: v6, seq: 9, ack: 10, flags: FlagACK, moreFrags: !v6, exts: append([]ext{{extFragment, fragHdr(0, true, 5)}}, exts[min(len(exts), 3):]...), payload: data},
		}
		dst := client4
		if v6 {
			dst = client6
		}
		for i, s := range segs {
			pkt := s.pkt()
			out = append(out, pkt)
			if i > 3 {
				continue
			}
			ip := 20
			if v6 {
				ip = 40
			}
			for _, n := range []int{ip + 8, ip + 14, ip + 18, len(pkt)} {
				typ := uint8(3)
				if v6 {
					typ = 2
				}
				e, _ := icmpErr(v6, typ, 4, 1280, dst, pkt[:min(n, len(pkt))])
				out = append(out, e)
			}
		}
	}
	return out
}

func FuzzClassifyShift(f *testing.F) {
	for i, pkt := range seedPackets() {
		f.Add(pkt, uint32(i)*0x9e3779b9, uint32(i)*0x7f4a7c15, i%5 == 0)
	}
	f.Add([]byte{0x45}, uint32(1), uint32(1), false)
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 44, 64}, uint32(1), uint32(1), false)
	f.Fuzz(func(t *testing.T, data []byte, seqD, ackD uint32, partial bool) {
		orig := bytes.Clone(data)
		pkt := bytes.Clone(data)
		var p Packet
		Classify(pkt, &p)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("Classify wrote to the packet")
		}
		var slow Packet
		classify(pkt, &slow)
		if slow != p {
			t.Fatalf("fast path and classify disagree:\nfast %+v\nslow %+v", p, slow)
		}
		switch p.Kind {
		case KindOther:
			if p != (Packet{}) {
				t.Fatalf("KindOther with fields: %+v", p)
			}
		case KindMalformed:
			if p.Reason == ReasonNone || p.Reason >= NumReasons || p.Reason == ReasonNotRewritable {
				t.Fatalf("malformed with reason %d", p.Reason)
			}
		case KindTCP, KindICMPQuotingTCP:
			if p.Reason != ReasonNone {
				t.Fatalf("%v with reason %v", p.Kind, p.Reason)
			}
		default:
			t.Fatalf("kind %d", p.Kind)
		}
		r := Shift(pkt, &p, seqnum.Delta(seqD), seqnum.Delta(ackD), partial)
		if p.Kind != KindTCP && p.Kind != KindICMPQuotingTCP {
			if r != ReasonNotRewritable || !bytes.Equal(pkt, orig) {
				t.Fatalf("Shift of %v: %v, untouched %t", p.Kind, r, bytes.Equal(pkt, orig))
			}
			return
		}
		if r != ReasonNone {
			t.Fatalf("Shift of a classified %v failed: %v", p.Kind, r)
		}
		allowed := changeable(&p)
		for i := range pkt {
			if pkt[i] != orig[i] && !allowed(i) {
				t.Fatalf("Shift changed byte %d, which is no seq, ack, edge or checksum", i)
			}
		}
		// The rewritten packet must classify the same, but for the numbers themselves.
		var q Packet
		Classify(pkt, &q)
		q.Seq, q.Ack = p.Seq, p.Ack
		if q != p {
			t.Fatalf("rewritten packet classifies differently:\n got %+v\nwant %+v", q, p)
		}
		if r := Shift(pkt, &q, seqnum.Delta(-seqD), seqnum.Delta(-ackD), partial); r != ReasonNone {
			t.Fatalf("Shift back: %v", r)
		}
		for i := range pkt {
			if pkt[i] == orig[i] {
				continue
			}
			// The only inexact case: a checksum field of 0xffff, one's complement zero's other
			// spelling, which no sender computes, comes back as 0x0000.
			c := i &^ 1
			if isChecksumField(&p, c) && !partial && binary.BigEndian.Uint16(orig[c:]) == 0xffff && binary.BigEndian.Uint16(pkt[c:]) == 0 {
				continue
			}
			if isQuotedChecksum(&p, c) && binary.BigEndian.Uint16(orig[c:]) == 0xffff && binary.BigEndian.Uint16(pkt[c:]) == 0 {
				continue
			}
			t.Fatalf("+d then -d changed byte %d: %#x -> %#x", i, orig[i], pkt[i])
		}
	})
}

// changeable returns which byte offsets Shift may change in the packet p describes.
func changeable(p *Packet) func(int) bool {
	tcp, icmp := int(p.tcp), int(p.icmp)
	return func(i int) bool {
		switch {
		case i >= tcp+4 && i < tcp+12: // seq, ack
			return true
		case i >= tcp+16 && i < tcp+18: // TCP checksum (the quoted one for ICMP)
			return true
		case p.Kind == KindICMPQuotingTCP:
			return i >= icmp+2 && i < icmp+4
		}
		for m := p.edgeBits(); m != 0; m &= m - 1 {
			e := tcp + 20 + trailingZeros(m)
			if i >= e && i < e+4 {
				return true
			}
		}
		return false
	}
}

func trailingZeros(m uint64) int {
	n := 0
	for m&1 == 0 {
		m >>= 1
		n++
	}
	return n
}

func isChecksumField(p *Packet, c int) bool {
	if p.Kind == KindICMPQuotingTCP {
		return c == int(p.icmp)+2
	}
	return c == int(p.tcp)+16
}

func isQuotedChecksum(p *Packet, c int) bool {
	return p.Kind == KindICMPQuotingTCP && p.tcpLen >= tcpQuoteCsum && c == int(p.tcp)+16
}

// packetEnd returns where the packet ends by its own length field (Classify checked it).
func packetEnd(pkt []byte) int {
	if pkt[0]>>4 == 4 {
		end, _, _ := ipv4Bounds(pkt)
		return end
	}
	end, _ := ipv6Bounds(pkt)
	return end
}

// outerSum returns the full one's complement sum over what the outer checksum covers, and
// where its checksum field is.
func outerSum(pkt []byte, p *Packet) (sum uint16, field int) {
	end := packetEnd(pkt)
	if p.Kind == KindTCP {
		off := int(p.tcp)
		return inetsum.Sum(pkt[off:end], inetsum.Pseudo(p.Src, p.Dst, ProtocolTCP, end-off)), off + 16
	}
	off := int(p.icmp)
	if pkt[0]>>4 == 4 {
		return inetsum.Sum(pkt[off:end], 0), off + 2
	}
	ip := IPv6(pkt)
	return inetsum.Sum(pkt[off:end], inetsum.Pseudo(ip.SourceAddress(), ip.DestinationAddress(), ProtocolICMPv6, end-off)), off + 2
}

// quotedSegment returns the quoted TCP segment's extent when the quote holds all of it.
func quotedSegment(pkt []byte, p *Packet) (start, end int, ok bool) {
	q := int(p.icmp) + ICMPHeaderSize
	outer := packetEnd(pkt)
	if pkt[q]>>4 == 4 {
		end = q + IPv4(pkt[q:]).TotalLength()
	} else {
		pl := IPv6(pkt[q:]).PayloadLength()
		if pl == 0 {
			return 0, 0, false
		}
		end = q + IPv6FixedHeaderSize + pl
	}
	start = int(p.tcp)
	return start, end, end <= outer && end-start >= tcpQuoteCsum
}

func FuzzShiftKeepsChecksumValid(f *testing.F) {
	for i, pkt := range seedPackets() {
		f.Add(pkt, uint32(i)*0x01000193, uint32(i)*0x811c9dc5)
	}
	f.Fuzz(func(t *testing.T, data []byte, seqD, ackD uint32) {
		pkt := bytes.Clone(data)
		var p Packet
		Classify(pkt, &p)
		if p.Kind != KindTCP && p.Kind != KindICMPQuotingTCP {
			return
		}
		// Make the checksums valid first, so that random bytes exercise the property.
		qs, qe, quoted := 0, 0, false
		if p.Kind == KindICMPQuotingTCP {
			if qs, qe, quoted = quotedSegment(pkt, &p); quoted {
				TCP(pkt[qs:]).SetChecksum(0)
				TCP(pkt[qs:]).SetChecksum(^inetsum.Sum(pkt[qs:qe], inetsum.Pseudo(p.Src, p.Dst, ProtocolTCP, qe-qs)))
			}
		}
		_, field := outerSum(pkt, &p)
		binary.BigEndian.PutUint16(pkt[field:], 0)
		sum, _ := outerSum(pkt, &p)
		binary.BigEndian.PutUint16(pkt[field:], ^sum)
		if s, _ := outerSum(pkt, &p); s != 0xffff {
			t.Fatalf("test setup: checksum not valid")
		}
		Classify(pkt, &p)
		if r := Shift(pkt, &p, seqnum.Delta(seqD), seqnum.Delta(ackD), false); r != ReasonNone {
			t.Fatalf("Shift: %v", r)
		}
		if s, _ := outerSum(pkt, &p); s != 0xffff {
			t.Fatalf("%v: checksum invalid after Shift (sum %#x)", p.Kind, s)
		}
		if quoted && inetsum.Sum(pkt[qs:qe], inetsum.Pseudo(p.Src, p.Dst, ProtocolTCP, qe-qs)) != 0xffff {
			t.Fatal("quoted TCP checksum invalid after Shift")
		}
	})
}
