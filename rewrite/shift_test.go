package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/seqshiftd/seqshiftd/internal/inetsum"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// The expected packets below are built from scratch with the shifted values and a checksum
// computed in full; Shift must produce them byte for byte. A full computation never yields
// 0xffff and neither does RFC 1624 equation 3, so the two agree exactly, not just modulo
// one's complement zero.

func TestShift_TCP(t *testing.T) {
	var (
		seqD uint32 = 0x10000123
		ackD uint32 = 0xfffff000 // -4096: the other direction's offset, negated by the caller
	)
	data := bytes.Repeat([]byte("seqshift"), 25)
	ts := optTimestamps(0x11111111, 0x22222222)
	sack := func(edges ...uint32) []byte { return cat(ts, []byte{optNOP, optNOP}, optSACKBlocks(edges...)) }
	plus := func(v ...uint32) []uint32 {
		out := make([]uint32, len(v))
		for i := range v {
			out[i] = v[i] + ackD
		}
		return out
	}
	tests := []struct {
		name          string
		before, after seg
	}{
		{"data segment",
			seg{seq: 1000, ack: 5000, flags: FlagACK | FlagPSH, opts: ts, payload: data},
			seg{seq: 1000 + seqD, ack: 5000 + ackD, flags: FlagACK | FlagPSH, opts: ts, payload: data}},
		{"seq and ack wrap around",
			seg{seq: 0xffffff00, ack: 0x00000010, flags: FlagACK, payload: data},
			seg{seq: 0xffffff00 + seqD, ack: 0x10 + ackD, flags: FlagACK, payload: data}},
		{"syn keeps its ack field",
			seg{seq: 0xfffffffe, ack: 0xabcdef01, flags: FlagSYN, opts: []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}},
			seg{seq: 0xfffffffe + seqD, ack: 0xabcdef01, flags: FlagSYN, opts: []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}}},
		{"syn-ack shifts its ack",
			seg{seq: 77, ack: 1001, flags: FlagSYN | FlagACK},
			seg{seq: 77 + seqD, ack: 1001 + ackD, flags: FlagSYN | FlagACK}},
		{"rst without ack",
			seg{seq: 9, ack: 123, flags: FlagRST},
			seg{seq: 9 + seqD, ack: 123, flags: FlagRST}},
		{"three sack blocks follow ack",
			seg{seq: 1, ack: 100, flags: FlagACK, opts: sack(200, 300, 400, 500, 600, 700)},
			seg{seq: 1 + seqD, ack: 100 + ackD, flags: FlagACK, opts: sack(plus(200, 300, 400, 500, 600, 700)...)}},
		{"d-sack below ack",
			seg{seq: 1, ack: 1000, flags: FlagACK, opts: sack(500, 600, 1200, 1300)},
			seg{seq: 1 + seqD, ack: 1000 + ackD, flags: FlagACK, opts: sack(plus(500, 600, 1200, 1300)...)}},
		{"sack edges wrap around",
			seg{seq: 1, ack: 0x800, flags: FlagACK, opts: sack(0x900, 0x1000)},
			seg{seq: 1 + seqD, ack: 0x800 + ackD, flags: FlagACK, opts: sack(0x900+ackD, 0x1000+ackD)}},
		{"sack at odd offsets",
			seg{seq: 1, ack: 10, flags: FlagACK, opts: cat([]byte{optNOP}, optSACKBlocks(0x12345678, 0x9abcdef0, 0xfffffff1, 5))},
			seg{seq: 1 + seqD, ack: 10 + ackD, flags: FlagACK, opts: cat([]byte{optNOP}, optSACKBlocks(plus(0x12345678, 0x9abcdef0, 0xfffffff1, 5)...))}},
		{"two sack options",
			seg{seq: 1, ack: 10, flags: FlagACK, opts: cat(optSACKBlocks(20, 30), []byte{optNOP}, optSACKBlocks(40, 50))},
			seg{seq: 1 + seqD, ack: 10 + ackD, flags: FlagACK, opts: cat(optSACKBlocks(plus(20, 30)...), []byte{optNOP}, optSACKBlocks(plus(40, 50)...))}},
		{"sack without ack flag is left alone",
			seg{seq: 1, ack: 10, flags: FlagFIN, opts: optSACKBlocks(20, 30)},
			seg{seq: 1 + seqD, ack: 10, flags: FlagFIN, opts: optSACKBlocks(20, 30)}},
		{"md5 segment still shifts when asked",
			seg{seq: 1, ack: 2, flags: FlagACK, opts: append([]byte{optNOP, optNOP, optMD5, 18}, bytes.Repeat([]byte{7}, 16)...)},
			seg{seq: 1 + seqD, ack: 2 + ackD, flags: FlagACK, opts: append([]byte{optNOP, optNOP, optMD5, 18}, bytes.Repeat([]byte{7}, 16)...)}},
		{"gso super-packet",
			seg{seq: 42, ack: 43, flags: FlagACK, opts: ts, payload: bytes.Repeat([]byte{0xa5}, 65535-40-32-8)},
			seg{seq: 42 + seqD, ack: 43 + ackD, flags: FlagACK, opts: ts, payload: bytes.Repeat([]byte{0xa5}, 65535-40-32-8)}},
	}
	for _, tt := range tests {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%t", tt.name, v6), func(t *testing.T) {
				before, after := tt.before, tt.after
				before.v6, after.v6 = v6, v6
				pkt, l4 := before.build()
				want := after.pkt()
				var p Packet
				Classify(pkt, &p)
				if p.Kind != KindTCP {
					t.Fatalf("Classify: %v/%v", p.Kind, p.Reason)
				}
				if r := Shift(pkt, &p, seqnum.Delta(seqD), seqnum.Delta(ackD), false); r != ReasonNone {
					t.Fatalf("Shift: %v", r)
				}
				if !bytes.Equal(pkt, want) {
					t.Fatalf("rewritten packet differs from the one built with shifted values\n got % x\nwant % x", head(pkt, l4), head(want, l4))
				}
				if !checkTCP(pkt, l4, after) {
					t.Fatal("checksum invalid")
				}
			})
		}
	}
}

func head(b []byte, l4 int) []byte { return b[:min(len(b), l4+60)] }

func TestShift_PartialChecksumUntouched(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		// With NEEDS_CSUM the field holds the folded pseudo-header sum, not a checksum.
		s := seg{v6: v6, seq: 5, ack: 6, flags: FlagACK, opts: cat([]byte{optNOP, optNOP}, optSACKBlocks(7, 8)), payload: []byte("partial")}
		pkt, l4 := s.build()
		pseudo := uint16(0x1234)
		binary.BigEndian.PutUint16(pkt[l4+16:], pseudo)
		var p Packet
		Classify(pkt, &p)
		if r := Shift(pkt, &p, 100, 200, true); r != ReasonNone {
			t.Fatalf("v6=%t: Shift: %v", v6, r)
		}
		tcp := TCP(pkt[l4:])
		if tcp.Checksum() != pseudo {
			t.Errorf("v6=%t: checksum field changed from %#x to %#x", v6, pseudo, tcp.Checksum())
		}
		if tcp.SequenceNumber() != 105 || tcp.AckNumber() != 206 {
			t.Errorf("v6=%t: seq/ack = %d/%d, want 105/206", v6, tcp.SequenceNumber(), tcp.AckNumber())
		}
		if e := binary.BigEndian.Uint32(tcp[24:]); e != 207 {
			t.Errorf("v6=%t: first sack edge = %d, want 207", v6, e)
		}
	}
}

func TestShift_RewritesFirstFragment(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		before := seg{v6: v6, seq: 1, ack: 2, flags: FlagACK, payload: make([]byte, 64), ipOpts: []byte{1, 1, 1, 1}}
		after := before
		after.seq, after.ack = 1+500, 0xfffffe0e // 2 - 500, wrapped
		if v6 {
			before.exts = []ext{{extDestinationOp, padN6}, {extFragment, fragHdr(0, true, 7)}}
			after.exts = before.exts
		} else {
			before.moreFrags, after.moreFrags = true, true
		}
		pkt, want := before.pkt(), after.pkt()
		var p Packet
		Classify(pkt, &p)
		if r := Shift(pkt, &p, 500, 1<<32-500, false); r != ReasonNone || !bytes.Equal(pkt, want) {
			t.Errorf("v6=%t: Shift = %v, match %t", v6, r, bytes.Equal(pkt, want))
		}
	}
}

func TestShift_ICMPTranslatesQuote(t *testing.T) {
	// The client sent `orig`; the gateway shifted it into `wire` (seq + off, ack - offRev) on
	// its way to the server; a router beyond the gateway quotes `wire` back to the client. The
	// gateway must hand the client a quote of `orig`, as if the router had quoted it directly.
	var off, offRev uint32 = 0x7fff0001, 0x00badbad
	payload := []byte("GET / HTTP/1.1\r\n")
	quoteLens := []struct {
		name string
		tcp  int // TCP bytes quoted; -1: the whole segment
	}{{"8 bytes (rfc 792)", 8}, {"12 bytes", 12}, {"14 bytes", 14}, {"17 bytes", 17}, {"18 bytes", 18}, {"header", 32}, {"whole segment", -1}}
	types := []struct {
		v6        bool
		typ, code uint8
	}{{false, 3, 4}, {false, 3, 1}, {false, 11, 0}, {false, 12, 0}, {false, 5, 1}, {true, 1, 3}, {true, 2, 0}, {true, 3, 0}, {true, 4, 0}}
	for _, ty := range types {
		for _, flags := range []uint8{FlagACK | FlagPSH, FlagSYN} {
			for _, ql := range quoteLens {
				name := fmt.Sprintf("v6=%t/type=%d/flags=%#x/%s", ty.v6, ty.typ, flags, ql.name)
				t.Run(name, func(t *testing.T) {
					orig := seg{v6: ty.v6, seq: 0xfffffff0, ack: 0x10, flags: flags, opts: optTimestamps(1, 2), payload: payload}
					if ty.v6 {
						orig.exts = []ext{{extHopByHop, padN6}, {extDestinationOp, padN6}}
					}
					wire := orig
					wire.seq += off
					if flags&FlagACK != 0 {
						wire.ack -= offRev
					}
					origPkt, l4 := orig.build()
					wirePkt := wire.pkt()
					n := len(origPkt)
					if ql.tcp >= 0 {
						n = l4 + ql.tcp
					}
					dst := client4
					if ty.v6 {
						dst = client6
					}
					pkt, icmpOff := icmpErr(ty.v6, ty.typ, ty.code, 1400, dst, wirePkt[:n])
					want, _ := icmpErr(ty.v6, ty.typ, ty.code, 1400, dst, origPkt[:n])
					var p Packet
					Classify(pkt, &p)
					if p.Kind != KindICMPQuotingTCP {
						t.Fatalf("Classify: %v/%v", p.Kind, p.Reason)
					}
					if p.Seq != wire.seq || p.Src != origSrc(ty.v6) || p.SrcPort != 40000 || p.DstPort != 443 {
						t.Fatalf("Classify reported %+v", p)
					}
					if r := Shift(pkt, &p, seqnum.Delta(-off), seqnum.Delta(offRev), false); r != ReasonNone {
						t.Fatalf("Shift: %v", r)
					}
					qtcp := want[icmpOff+8+l4:]
					if ql.tcp >= 12 && ql.tcp < 14 && flags&FlagACK != 0 {
						// The quote cuts before the flags: the ack cannot be known to be valid
						// and stays as quoted; the rest must match.
						binary.BigEndian.PutUint32(qtcp[8:], wire.ack)
					}
					if ql.tcp == 17 {
						// The quote cuts the checksum in half: without its low byte the new
						// high byte cannot be known, so the half stays as quoted.
						qtcp[16] = wirePkt[l4+16]
					}
					binary.BigEndian.PutUint16(want[icmpOff+2:], 0)
					binary.BigEndian.PutUint16(want[icmpOff+2:], ^inetsum.Sum(want[icmpOff:], icmpPseudo(ty.v6, dst, len(want)-icmpOff)))
					if !bytes.Equal(pkt, want) {
						t.Fatalf("translated ICMP differs\n got % x\nwant % x", pkt, want)
					}
					if !checkICMP(pkt, icmpOff, ty.v6, dst) {
						t.Fatal("ICMP checksum invalid")
					}
				})
			}
		}
	}
}

func origSrc(v6 bool) netip.Addr {
	if v6 {
		return client6
	}
	return client4
}

func icmpPseudo(v6 bool, dst netip.Addr, n int) uint32 {
	if !v6 {
		return 0
	}
	return inetsum.Pseudo(router6, dst, ProtocolICMPv6, n)
}

func TestShift_ICMPPartialLeavesICMPChecksum(t *testing.T) {
	quote := seg{seq: 10, ack: 20, flags: FlagACK}.pkt()
	pkt, off := icmpErr(false, 3, 4, 1400, client4, quote)
	cs := ICMP(pkt[off:]).Checksum()
	var p Packet
	Classify(pkt, &p)
	if r := Shift(pkt, &p, 1, 1, true); r != ReasonNone {
		t.Fatal(r)
	}
	if ICMP(pkt[off:]).Checksum() != cs {
		t.Fatal("partial: ICMP checksum changed")
	}
	if q := TCP(pkt[off+8+20:]); q.SequenceNumber() != 11 || q.AckNumber() != 21 {
		t.Fatalf("quote seq/ack = %d/%d", q.SequenceNumber(), q.AckNumber())
	}
}

func TestShift_RefusesStaleOrForeignPacket(t *testing.T) {
	pkt := seg{v6: true, seq: 1, ack: 2, flags: FlagACK, opts: cat([]byte{optNOP, optNOP}, optSACKBlocks(3, 4, 5, 6))}.pkt()
	var p Packet
	Classify(pkt, &p)
	for _, tc := range []struct {
		name string
		pkt  []byte
		p    Packet
	}{
		{"shorter buffer", pkt[:70], p},
		{"empty buffer", nil, p},
		{"sack block past header", pkt, func() Packet { q := p; q.sackAt = 36; return q }()},
		{"edge past header", pkt, func() Packet { q := p; q.sackBlocks, q.edges = 0, 1<<37; return q }()},
		{"header length too small", pkt, func() Packet { q := p; q.tcpLen = 19; return q }()},
		{"header length too large", pkt, func() Packet { q := p; q.tcpLen = 64; return q }()},
		{"offset past buffer", pkt, func() Packet { q := p; q.tcp = 1 << 31; return q }()},
		{"icmp quote with no room for icmp header", pkt, func() Packet { q := p; q.Kind, q.icmp = KindICMPQuotingTCP, q.tcp-4; return q }()},
		{"icmp offset past buffer", pkt, func() Packet { q := p; q.Kind, q.icmp = KindICMPQuotingTCP, 1<<32-1; return q }()},
		{"icmp quote too short", pkt, func() Packet { q := p; q.Kind, q.icmp, q.tcpLen = KindICMPQuotingTCP, 0, 7; return q }()},
	} {
		orig := bytes.Clone(tc.pkt)
		if r := Shift(tc.pkt, &tc.p, 1, 1, false); r != ReasonNotRewritable || !bytes.Equal(orig, tc.pkt) {
			t.Errorf("%s: Shift = %v, untouched %t; want not_rewritable, untouched", tc.name, r, bytes.Equal(orig, tc.pkt))
		}
	}
}

func TestShift_RoundTripIsExact(t *testing.T) {
	pkts := seedPackets()
	deltas := [][2]uint32{{1, 1}, {0, 0}, {0xffffffff, 1}, {0x80000000, 0x80000000}, {0x12345678, 0x9abcdef0}, {0xffff, 0x10000}}
	for i, orig := range pkts {
		for _, d := range deltas {
			pkt := bytes.Clone(orig)
			var p Packet
			Classify(pkt, &p)
			if p.Kind != KindTCP && p.Kind != KindICMPQuotingTCP {
				continue
			}
			if r := Shift(pkt, &p, seqnum.Delta(d[0]), seqnum.Delta(d[1]), false); r != ReasonNone {
				t.Fatalf("packet %d: %v", i, r)
			}
			Classify(pkt, &p)
			if r := Shift(pkt, &p, seqnum.Delta(-d[0]), seqnum.Delta(-d[1]), false); r != ReasonNone {
				t.Fatalf("packet %d: %v", i, r)
			}
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("packet %d, deltas %#x: +d then -d changed it\n got % x\nwant % x", i, d, pkt, orig)
			}
		}
	}
}

// TestShift_ChecksumFFFFBecomesZero pins the one case where a round trip is not byte-exact: a
// checksum field of 0xffff (a second spelling of one's complement zero that no sender
// computes) comes back as 0x0000. Both verify.
func TestShift_ChecksumFFFFBecomesZero(t *testing.T) {
	ffff := uint16(0xffff)
	s := seg{seq: 1, ack: 2, flags: FlagACK, checksumOverride: &ffff}
	pkt, l4 := s.build()
	var p Packet
	Classify(pkt, &p)
	Shift(pkt, &p, 5, 5, false)
	Shift(pkt, &p, 1<<32-5, 1<<32-5, false)
	if TCP(pkt[l4:]).Checksum() != 0 || TCP(pkt[l4:]).SequenceNumber() != 1 {
		t.Fatalf("checksum %#x", TCP(pkt[l4:]).Checksum())
	}
}

func TestFold(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want uint16
	}{{0, 0}, {0xffff, 0xffff}, {0x10000, 1}, {0x1fffe, 0xffff}, {1<<64 - 1, 0xffff}, {0xffffffff, 0xffff}, {0x100000000, 1}} {
		if got := fold(tc.in); got != tc.want {
			t.Errorf("fold(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// TestFold_MatchesWordByWord checks the rotate-and-add fold against the textbook loop.
func TestFold_MatchesWordByWord(t *testing.T) {
	ref := func(s uint64) uint16 {
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		return uint16(s)
	}
	rng := rand.New(rand.NewPCG(1, 1071))
	for i := range 1 << 20 {
		s := rng.Uint64()
		switch i % 4 {
		case 1:
			s >>= rng.IntN(64)
		case 2:
			s = 0xffff * uint64(rng.Uint32())
		}
		if got, want := fold(s), ref(s); got != want {
			t.Fatalf("fold(%#x) = %#x, want %#x", s, got, want)
		}
	}
}

func TestPacket_Is96Bytes(t *testing.T) {
	if n := unsafe.Sizeof(Packet{}); n != 96 {
		t.Fatalf("Packet is %d bytes; the datapath zeroes one per packet, keep it at 96", n)
	}
}

func TestShift_DoesNotAllocate(t *testing.T) {
	pkts := seedPackets()
	allocs := testing.AllocsPerRun(100, func() {
		for _, pkt := range pkts {
			var p Packet
			Classify(pkt, &p)
			Shift(pkt, &p, 3, 5, false)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per run, want 0", allocs)
	}
}
