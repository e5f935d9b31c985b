package rewrite

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

var (
	padN6    = []byte{1, 4, 0, 0, 0, 0} // PadN option filling an 8-byte header
	routing0 = []byte{4, 0, 0, 0, 0, 0} // segment routing, no segments left
	fragHdr  = func(off int, more bool, id uint32) []byte {
		b := make([]byte, 6)
		v := uint16(off)
		if more {
			v |= 1
		}
		binary.BigEndian.PutUint16(b, v)
		binary.BigEndian.PutUint32(b[2:], id)
		return b
	}
)

func TestClassify_TCP(t *testing.T) {
	data := []byte("hello, world")
	tests := []struct {
		name    string
		seg     seg
		auth    Auth
		payload int
	}{
		{"ipv4 data", seg{seq: 1000, ack: 2000, flags: FlagACK | FlagPSH, opts: optTimestamps(1, 2), payload: data}, AuthNone, len(data)},
		{"ipv4 with options", seg{seq: 1, ack: 2, flags: FlagACK, ipOpts: []byte{1, 1, 0x94, 4, 0, 0, 1, 1, 1, 1, 1, 1}, payload: data}, AuthNone, len(data)},
		{"ipv4 first fragment", seg{seq: 5, flags: FlagACK, moreFrags: true, payload: data}, AuthNone, len(data)},
		{"ipv4 syn", seg{seq: 0xfffffff0, flags: FlagSYN, opts: []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}}, AuthNone, 0},
		{"ipv4 md5", seg{seq: 1, flags: FlagSYN, opts: append([]byte{optMD5, 18}, make([]byte, 16)...)}, AuthMD5, 0},
		{"ipv4 ao", seg{seq: 1, flags: FlagACK, opts: append([]byte{optNOP, optNOP, optAO, 16, 1, 2}, make([]byte, 12)...)}, AuthAO, 0},
		{"ipv4 eol then junk", seg{seq: 1, flags: FlagACK, opts: []byte{optEOL, 5, 3, 0xff}}, AuthNone, 0},
		{"ipv4 trailing bytes past total length", seg{seq: 1, flags: FlagACK, payload: data}, AuthNone, len(data)},
		{"ipv6 data", seg{v6: true, seq: 7, ack: 9, flags: FlagACK, opts: optTimestamps(3, 4), payload: data}, AuthNone, len(data)},
		{"ipv6 hbh dstopts routing atomic fragment", seg{v6: true, seq: 7, flags: FlagACK, payload: data, exts: []ext{
			{extHopByHop, padN6}, {extDestinationOp, padN6}, {extRouting, routing0}, {extFragment, fragHdr(0, false, 42)}, {extDestinationOp, padN6},
		}}, AuthNone, len(data)},
		{"ipv6 first fragment", seg{v6: true, seq: 7, flags: FlagACK, payload: data, exts: []ext{{extFragment, fragHdr(0, true, 42)}}}, AuthNone, len(data)},
		{"ipv6 md5", seg{v6: true, seq: 1, flags: FlagACK, opts: append([]byte{optNOP, optNOP, optMD5, 18}, make([]byte, 16)...)}, AuthMD5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt, l4 := tt.seg.build()
			if strings.Contains(tt.name, "trailing") {
				pkt = append(pkt, 0xde, 0xad, 0xbe, 0xef)
			}
			orig := bytes.Clone(pkt)
			var p Packet
			Classify(pkt, &p)
			if !bytes.Equal(pkt, orig) {
				t.Fatal("Classify wrote to the packet")
			}
			want := Packet{
				Kind: KindTCP, Flags: tt.seg.flags, Auth: tt.auth,
				Src: client4, Dst: server4, SrcPort: 40000, DstPort: 443,
				Seq: tt.seg.seq, Ack: tt.seg.ack, PayloadLen: tt.payload,
				tcp: uint32(l4), tcpLen: uint32(20 + len(pad4(tt.seg.opts))),
			}
			if tt.seg.v6 {
				want.Src, want.Dst = client6, server6
			}
			if p != want {
				t.Fatalf("Classify:\n got %+v\nwant %+v", p, want)
			}
		})
	}
}

func TestClassify_SACKEdgesFound(t *testing.T) {
	tests := []struct {
		name  string
		opts  []byte
		edges []int // byte offsets in the options area
	}{
		{"linux layout", cat(optTimestamps(1, 2), []byte{optNOP, optNOP}, optSACKBlocks(1, 2, 3, 4, 5, 6)), []int{16, 20, 24, 28, 32, 36}},
		{"odd alignment", cat([]byte{optNOP}, optSACKBlocks(10, 20)), []int{3, 7}},
		{"two options", cat(optSACKBlocks(1, 2), optSACKBlocks(3, 4)), []int{2, 6, 12, 16}},
		{"four blocks", optSACKBlocks(1, 2, 3, 4, 5, 6, 7, 8), []int{2, 6, 10, 14, 18, 22, 26, 30}},
	}
	for _, tt := range tests {
		for _, v6 := range []bool{false, true} {
			var p Packet
			Classify(seg{v6: v6, flags: FlagACK, opts: tt.opts}.pkt(), &p)
			var want uint64
			for _, e := range tt.edges {
				want |= 1 << e
			}
			if p.Kind != KindTCP || p.edgeBits() != want {
				t.Errorf("%s v6=%t: kind %v edges %#x, want tcp %#x", tt.name, v6, p.Kind, p.edgeBits(), want)
			}
		}
	}
}

func TestClassify_PassesWhatItCannotRewrite(t *testing.T) {
	data := []byte("0123456789abcdef0123456789")
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"udp", seg{proto: 17, payload: data}.pkt()},
		{"ipv6 udp", seg{v6: true, proto: 17, payload: data}.pkt()},
		{"ipv4 non-first fragment", seg{fragOff: 1480, payload: data}.pkt()},
		{"ipv4 last fragment", seg{fragOff: 8, moreFrags: false, payload: data}.pkt()},
		{"ipv6 non-first fragment", seg{v6: true, payload: data, exts: []ext{{extFragment, fragHdr(1232, true, 1)}}}.pkt()},
		{"ipv6 last fragment", seg{v6: true, payload: data, exts: []ext{{extDestinationOp, padN6}, {extFragment, fragHdr(8, false, 1)}}}.pkt()},
		{"ipv6 ah", seg{v6: true, payload: data, exts: []ext{{51, make([]byte, 14)}}}.pkt()},
		{"ipv6 no next header", seg{v6: true, proto: 59}.pkt()},
		{"icmp echo", func() []byte { b, _ := icmpErr(false, 8, 0, 1, client4, data); return b }()},
		{"icmpv6 echo", func() []byte { b, _ := icmpErr(true, 128, 0, 1, client6, data); return b }()},
		{"icmp quoting udp", func() []byte { b, _ := icmpErr(false, 3, 3, 0, client4, seg{proto: 17, payload: data}.pkt()); return b }()},
		{"icmp quoting non-first fragment", func() []byte {
			b, _ := icmpErr(false, 11, 1, 0, client4, seg{fragOff: 16, payload: data}.pkt())
			return b
		}()},
		{"icmpv6 quoting non-first fragment", func() []byte {
			b, _ := icmpErr(true, 3, 1, 0, client6, seg{v6: true, payload: data, exts: []ext{{extFragment, fragHdr(64, false, 1)}}}.pkt())
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			Classify(tt.pkt, &p)
			if p != (Packet{}) {
				t.Fatalf("got %+v, want a zero KindOther packet", p)
			}
			orig := bytes.Clone(tt.pkt)
			if r := Shift(tt.pkt, &p, 1, 1, false); r != ReasonNotRewritable || !bytes.Equal(tt.pkt, orig) {
				t.Fatalf("Shift = %v (changed: %t), want not_rewritable, untouched", r, !bytes.Equal(tt.pkt, orig))
			}
		})
	}
}

func TestClassify_MalformedSaysWhy(t *testing.T) {
	good4 := seg{seq: 1, flags: FlagACK, opts: optTimestamps(1, 2), payload: []byte("data")}.pkt()
	good6 := seg{v6: true, seq: 1, flags: FlagACK, opts: optTimestamps(1, 2), payload: []byte("data")}.pkt()
	mod := func(b []byte, f func(b []byte)) []byte { b = bytes.Clone(b); f(b); return b }
	withOpts := func(v6 bool, opts []byte) []byte { return seg{v6: v6, flags: FlagACK, opts: opts}.pkt() }
	fullQuote4 := seg{seq: 77, ack: 88, flags: FlagACK, opts: optTimestamps(1, 2)}.pkt()
	fullQuote6 := seg{v6: true, seq: 77, ack: 88, flags: FlagACK, opts: optTimestamps(1, 2)}.pkt()
	icmp4 := func(quote []byte) []byte { b, _ := icmpErr(false, 3, 4, 1400, client4, quote); return b }
	icmp6 := func(quote []byte) []byte { b, _ := icmpErr(true, 2, 0, 1280, client6, quote); return b }

	tests := []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"empty", nil, ReasonTruncatedIP},
		{"version 5", mod(good4, func(b []byte) { b[0] = 0x55 }), ReasonBadIPVersion},
		{"version 0", []byte{0}, ReasonBadIPVersion},
		{"ipv4 19 bytes", good4[:19], ReasonTruncatedIP},
		{"ipv4 total length past buffer", good4[:len(good4)-1], ReasonTruncatedIP},
		{"ipv4 ihl 4", mod(good4, func(b []byte) { b[0] = 0x44 }), ReasonBadIPHeader},
		{"ipv4 ihl past total length", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 20); b[0] = 0x46 }), ReasonBadIPHeader},
		{"ipv4 total length below ihl", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 19) }), ReasonBadIPHeader},
		{"ipv6 39 bytes", good6[:39], ReasonTruncatedIP},
		{"ipv6 payload length past buffer", good6[:len(good6)-1], ReasonTruncatedIP},
		{"ipv6 ext truncated", mod(seg{v6: true, exts: []ext{{extDestinationOp, padN6}}}.pkt()[:44], func(b []byte) { binary.BigEndian.PutUint16(b[4:], 4) }), ReasonBadExtHeader},
		{"ipv6 ext length past packet", mod(seg{v6: true, exts: []ext{{extDestinationOp, padN6}}}.pkt(), func(b []byte) { b[41] = 200 }), ReasonBadExtHeader},
		{"ipv6 fragment header truncated", mod(seg{v6: true, proto: extFragment}.pkt()[:44], func(b []byte) { binary.BigEndian.PutUint16(b[4:], 4) }), ReasonBadExtHeader},
		{"ipv6 hop-by-hop not first", seg{v6: true, exts: []ext{{extDestinationOp, padN6}, {extHopByHop, padN6}}}.pkt(), ReasonBadExtHeader},
		{"ipv4 tiny first fragment", mod(seg{moreFrags: true}.pkt()[:36], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 36) }), ReasonTinyFragment},
		{"ipv4 first fragment cuts options", func() []byte {
			b := seg{moreFrags: true, opts: optTimestamps(1, 2)}.pkt()[:48]
			binary.BigEndian.PutUint16(b[2:], 48)
			return b
		}(), ReasonTinyFragment},
		{"ipv6 tiny first fragment", func() []byte {
			b := seg{v6: true, exts: []ext{{extFragment, fragHdr(0, true, 1)}}}.pkt()[:60]
			binary.BigEndian.PutUint16(b[4:], 20)
			return b
		}(), ReasonTinyFragment},
		{"ipv4 truncated tcp", func() []byte {
			b := good4[:39]
			b = bytes.Clone(b)
			binary.BigEndian.PutUint16(b[2:], 39)
			return b
		}(), ReasonTruncatedTCP},
		{"ipv6 truncated tcp", mod(good6[:59], func(b []byte) { binary.BigEndian.PutUint16(b[4:], 19) }), ReasonTruncatedTCP},
		{"data offset 4", seg{doffOverride: 4}.pkt(), ReasonBadDataOffset},
		{"data offset 0", seg{v6: true, doffOverride: 0x10}.pkt(), ReasonBadDataOffset},
		{"data offset past segment", seg{doffOverride: 15, opts: make([]byte, 8)}.pkt(), ReasonBadDataOffset},
		{"ipv6 data offset past segment", seg{v6: true, doffOverride: 6}.pkt(), ReasonBadDataOffset},
		{"option length 0", withOpts(false, []byte{2, 0, 0, 0}), ReasonBadOption},
		{"option length 1", withOpts(true, []byte{3, 1, 0, 0}), ReasonBadOption},
		{"option past header", withOpts(false, []byte{1, 1, 8, 10, 0, 0, 0, 0}), ReasonBadOption},
		{"option without length byte", withOpts(false, []byte{1, 1, 1, 2}), ReasonBadOption},
		{"sack length 2", withOpts(false, []byte{1, 1, optSACK, 2}), ReasonBadSACK},
		{"sack length 9", withOpts(true, []byte{optSACK, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), ReasonBadSACK},
		{"sack length 14", withOpts(false, []byte{optSACK, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), ReasonBadSACK},
		{"sack past header", withOpts(false, []byte{1, 1, optSACK, 18, 0, 0, 0, 0, 0, 0, 0, 0}), ReasonBadOption},
		{"icmp header truncated", mod(icmp4(nil)[:27], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 27) }), ReasonTruncatedICMP},
		{"icmpv6 header truncated", mod(icmp6(nil)[:47], func(b []byte) { binary.BigEndian.PutUint16(b[4:], 7) }), ReasonTruncatedICMP},
		{"icmp quote shorter than ip header", icmp4(fullQuote4[:19]), ReasonBadICMPQuote},
		{"icmp quote of 7 tcp bytes", icmp4(fullQuote4[:27]), ReasonBadICMPQuote},
		{"icmp quoting ipv6", icmp4(fullQuote6), ReasonBadICMPQuote},
		{"icmpv6 quoting ipv4", icmp6(fullQuote4), ReasonBadICMPQuote},
		{"icmp quote ihl 4", icmp4(mod(fullQuote4, func(b []byte) { b[0] = 0x44 })), ReasonBadICMPQuote},
		{"icmp quote ihl past quote", icmp4(mod(fullQuote4[:28], func(b []byte) { b[0] = 0x48 })), ReasonBadICMPQuote},
		{"icmp quote total length below ihl", icmp4(mod(fullQuote4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 12) })), ReasonBadICMPQuote},
		{"icmp quote data offset 3", icmp4(mod(fullQuote4, func(b []byte) { b[32] = 0x30 })), ReasonBadICMPQuote},
		{"icmpv6 quote of 7 tcp bytes", icmp6(fullQuote6[:47]), ReasonBadICMPQuote},
		{"icmpv6 quote cut in ext chain", icmp6(seg{v6: true, exts: []ext{{extDestinationOp, padN6}}}.pkt()[:46]), ReasonBadICMPQuote},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.pkt)
			var p Packet
			Classify(tt.pkt, &p)
			if p.Kind != KindMalformed || p.Reason != tt.want {
				t.Fatalf("got %v/%v, want malformed/%v", p.Kind, p.Reason, tt.want)
			}
			if p != (Packet{Kind: KindMalformed, Reason: tt.want}) {
				t.Fatalf("malformed packet carries fields: %+v", p)
			}
			if r := Shift(tt.pkt, &p, 1, 1, false); r != ReasonNotRewritable || !bytes.Equal(tt.pkt, orig) {
				t.Fatalf("Shift = %v, want not_rewritable with the packet untouched", r)
			}
		})
	}
}

func TestClassify_ICMPReportsQuotedSegment(t *testing.T) {
	quote4 := seg{seq: 0xdeadbeef, ack: 0x01020304, flags: FlagACK | FlagPSH, opts: optTimestamps(1, 2), payload: []byte("x")}.pkt()
	quote6 := seg{v6: true, seq: 0xdeadbeef, ack: 0x01020304, flags: FlagACK, exts: []ext{{extHopByHop, padN6}, {extFragment, fragHdr(0, true, 9)}}, payload: []byte("x")}.pkt()
	tests := []struct {
		name       string
		v6         bool
		typ, code  uint8
		quote      []byte
		flags      uint8
		ack        uint32
		tcpLen     uint32
		icmpOffset uint32
	}{
		{"frag needed, rfc 792 quote", false, 3, 4, quote4[:28], 0, 0, 8, 20},
		{"port unreachable, 14 tcp bytes", false, 3, 3, quote4[:34], FlagACK | FlagPSH, 0x01020304, 14, 20},
		{"time exceeded, whole segment", false, 11, 0, quote4, FlagACK | FlagPSH, 0x01020304, 33, 20},
		{"parameter problem", false, 12, 0, quote4, FlagACK | FlagPSH, 0x01020304, 33, 20},
		{"redirect", false, 5, 1, quote4[:28], 0, 0, 8, 20},
		{"quote longer than quoted packet", false, 3, 1, append(bytes.Clone(quote4), 1, 2, 3, 4), FlagACK | FlagPSH, 0x01020304, 33, 20},
		{"v6 packet too big", true, 2, 0, quote6, FlagACK, 0x01020304, 21, 40},
		{"v6 destination unreachable, 8 tcp bytes", true, 1, 4, quote6[:64], 0, 0, 8, 40},
		{"v6 time exceeded", true, 3, 0, quote6, FlagACK, 0x01020304, 21, 40},
		{"v6 parameter problem", true, 4, 0, quote6, FlagACK, 0x01020304, 21, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, src, qdst := client4, client4, server4
			if tt.v6 {
				dst, src, qdst = client6, client6, server6
			}
			pkt, _ := icmpErr(tt.v6, tt.typ, tt.code, 1400, dst, tt.quote)
			var p Packet
			Classify(pkt, &p)
			qip := 28
			if tt.v6 {
				qip = 48
			}
			l4 := qip + 20
			if tt.v6 {
				l4 = qip + 40 + 16
			}
			want := Packet{
				Kind: KindICMPQuotingTCP, Flags: tt.flags, Src: src, Dst: qdst, SrcPort: 40000, DstPort: 443,
				Seq: 0xdeadbeef, Ack: tt.ack, tcp: uint32(l4), tcpLen: tt.tcpLen, icmp: tt.icmpOffset,
			}
			if p != want {
				t.Fatalf("Classify:\n got %+v\nwant %+v", p, want)
			}
		})
	}
}

func TestKindReasonAuthStrings(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] || strings.ToLower(s) != s || strings.ContainsAny(s, " -") {
			t.Errorf("Reason(%d).String() = %q: want a unique snake_case label", r, s)
		}
		seen[s] = true
	}
	if NumReasons.String() != "unknown" || Kind(9).String() != "unknown" || Auth(9).String() != "unknown" {
		t.Error("out-of-range values should say unknown")
	}
	if KindICMPQuotingTCP.String() != "icmp_quoting_tcp" || AuthAO.String() != "tcp_ao" {
		t.Error("unexpected names")
	}
}

// TestClassify_AddressesAreValues checks the Packet is a comparable value fit for a map key
// lookup (netip.AddrPort) without touching the packet again.
func TestClassify_AddressesAreValues(t *testing.T) {
	pkt := seg{v6: true, flags: FlagACK}.pkt()
	var p Packet
	Classify(pkt, &p)
	clear(pkt)
	if netip.AddrPortFrom(p.Src, p.SrcPort) != netip.AddrPortFrom(client6, 40000) {
		t.Fatal("Packet.Src refers to the packet's bytes")
	}
}

// TestClassify_BigTCPLengthZero: Linux BIG TCP super-packets over 64 KiB carry an IPv4 total
// length or IPv6 payload length of 0; the buffer is then the packet.
func TestClassify_BigTCPLengthZero(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := seg{v6: v6, seq: 1, ack: 2, flags: FlagACK, opts: optTimestamps(1, 2), payload: make([]byte, 70000)}
		var pkt []byte
		if v6 {
			pkt = seg{v6: true, seq: 1, ack: 2, flags: FlagACK, opts: optTimestamps(1, 2)}.pkt()
			pkt = append(pkt, s.payload...)
			binary.BigEndian.PutUint16(pkt[4:], 0)
		} else {
			pkt = seg{seq: 1, ack: 2, flags: FlagACK, opts: optTimestamps(1, 2)}.pkt()
			pkt = append(pkt, s.payload...)
			binary.BigEndian.PutUint16(pkt[2:], 0)
		}
		var p Packet
		Classify(pkt, &p)
		if p.Kind != KindTCP || p.PayloadLen != 70000 {
			t.Errorf("v6=%t: %v/%v payload %d", v6, p.Kind, p.Reason, p.PayloadLen)
		}
	}
}

func TestHeaderViews(t *testing.T) {
	pkt, l4 := seg{seq: 7, flags: FlagACK, opts: optTimestamps(1, 2)}.build()
	tcp := TCP(pkt[l4:])
	if !bytes.Equal(tcp.Options(), optTimestamps(1, 2)) {
		t.Errorf("Options() = % x", tcp.Options())
	}
	msg, off := icmpErr(true, 2, 0, 1280, client6, pkt)
	m := ICMP(msg[off:])
	if m.Type() != 2 || m.Code() != 0 || !bytes.Equal(m.Quote(), pkt) {
		t.Errorf("ICMP view: type %d code %d", m.Type(), m.Code())
	}
}
