package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The oracle: packets are built by gopacket, rewritten by this package, and decoded and
// checksum-verified by gopacket again. gopacket shares no code with rewrite, so agreement
// means both read the bytes the same way.

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// gpSegment is a TCP segment to build with gopacket.
type gpSegment struct {
	v6      bool
	ipOpts  []layers.IPv4Option
	exts    []gopacket.SerializableLayer // IPv6 extension headers, next-header fields set by gpBuild
	tcp     layers.TCP
	payload []byte
	src     net.IP
	dst     net.IP
}

func (g gpSegment) build(t testing.TB) []byte {
	t.Helper()
	tcp := g.tcp // a copy: serialisation writes lengths into the layer
	tcp.Options = append([]layers.TCPOption(nil), g.tcp.Options...)
	src, dst := g.src, g.dst
	var ls []gopacket.SerializableLayer
	if g.v6 {
		if src == nil {
			src, dst = client6.AsSlice(), server6.AsSlice()
		}
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src, DstIP: dst, NextHeader: layers.IPProtocolTCP}
		ls = append(ls, ip)
		prev := func(p layers.IPProtocol) { ip.NextHeader = p }
		for _, e := range g.exts {
			switch h := e.(type) {
			case *layers.IPv6HopByHop:
				prev(layers.IPProtocolIPv6HopByHop)
				h.NextHeader = layers.IPProtocolTCP
				prev = func(p layers.IPProtocol) { h.NextHeader = p }
			case *layers.IPv6Destination:
				prev(layers.IPProtocolIPv6Destination)
				h.NextHeader = layers.IPProtocolTCP
				prev = func(p layers.IPProtocol) { h.NextHeader = p }
			case *layers.IPv6Routing:
				prev(layers.IPProtocolIPv6Routing)
				h.NextHeader = layers.IPProtocolTCP
				prev = func(p layers.IPProtocol) { h.NextHeader = p }
			default:
				t.Fatalf("unexpected extension %T", e)
			}
			ls = append(ls, e)
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
	} else {
		if src == nil {
			src, dst = client4.AsSlice(), server4.AsSlice()
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst, Options: g.ipOpts}
		ls = append(ls, ip)
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
	}
	ls = append(ls, &tcp, gopacket.Payload(g.payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// decodeTCP decodes pkt with gopacket and returns its TCP layer after checking that every
// layer decoded and that the IPv4 header and TCP checksums verify.
func decodeTCP(t testing.TB, pkt []byte) *layers.TCP {
	t.Helper()
	first := layers.LayerTypeIPv4
	if pkt[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	pk := gopacket.NewPacket(pkt, first, gopacket.Default)
	if el := pk.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	tl, ok := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatalf("gopacket found no TCP layer in % x", pkt)
	}
	if err := tl.SetNetworkLayerForChecksum(pk.NetworkLayer()); err != nil {
		t.Fatal(err)
	}
	if err, res := tl.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("gopacket: TCP checksum invalid: %v %+v", err, res)
	}
	if ip, ok := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if err, res := ip.VerifyChecksum(); err != nil || !res.Valid {
			t.Fatalf("gopacket: IPv4 header checksum invalid: %v %+v", err, res)
		}
	}
	return tl
}

func gpSACKEdges(tcp *layers.TCP) []uint32 {
	var out []uint32
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindSACK {
			for d := o.OptionData; len(d) >= 4; d = d[4:] {
				out = append(out, binary.BigEndian.Uint32(d))
			}
		}
	}
	return out
}

func sackOption(edges ...uint32) layers.TCPOption {
	var d []byte
	for _, e := range edges {
		d = binary.BigEndian.AppendUint32(d, e)
	}
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: d}
}

var (
	nop    = layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	tsOpt  = layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	mssOpt = layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{5, 0xb4}}
	wsOpt  = layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}}
	spOpt  = layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted}
)

func padN() []*layers.IPv6DestinationOption {
	return []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 4, ActualLength: 6, OptionData: make([]byte, 4)}}
}

func TestOracle_GopacketDecodesRewrite(t *testing.T) {
	hbh := func() *layers.IPv6HopByHop {
		return &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, ActualLength: 6, OptionData: make([]byte, 4)}}}
	}
	tests := []struct {
		name string
		g    gpSegment
	}{
		{"ipv4 data", gpSegment{tcp: layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 2, ACK: true, PSH: true, Window: 501, Options: []layers.TCPOption{nop, nop, tsOpt}}, payload: []byte("hello")}},
		{"ipv4 options, sack", gpSegment{
			ipOpts: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}},
			tcp:    layers.TCP{SrcPort: 1, DstPort: 2, Seq: 0xfffffff0, Ack: 0xffffff00, ACK: true, Options: []layers.TCPOption{nop, nop, tsOpt, nop, nop, sackOption(0xffffff10, 0xffffff20, 0xfffffff0, 0x10, 0x20, 0x30)}}}},
		{"ipv4 odd sack", gpSegment{tcp: layers.TCP{SrcPort: 1, DstPort: 2, Seq: 5, Ack: 6, ACK: true, Options: []layers.TCPOption{nop, sackOption(7, 8, 9, 10)}}, payload: make([]byte, 999)}},
		{"ipv4 syn", gpSegment{tcp: layers.TCP{SrcPort: 1, DstPort: 2, Seq: 5, Ack: 77, SYN: true, Options: []layers.TCPOption{mssOpt, spOpt, tsOpt, nop, wsOpt}}}},
		{"ipv6 data", gpSegment{v6: true, tcp: layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Ack: 2, ACK: true, Options: []layers.TCPOption{nop, nop, tsOpt}}, payload: []byte("hello")}},
		{"ipv6 extension chain, sack", gpSegment{v6: true,
			exts: []gopacket.SerializableLayer{hbh(), &layers.IPv6Destination{Options: padN()}, &layers.IPv6Routing{RoutingType: 4, Reserved: make([]byte, 4)}, &layers.IPv6Destination{Options: padN()}},
			tcp:  layers.TCP{SrcPort: 1, DstPort: 2, Seq: 3, Ack: 4, ACK: true, FIN: true, Options: []layers.TCPOption{nop, nop, sackOption(1, 2, 3, 4, 5, 6, 7, 8)}}, payload: []byte("bye")}},
		{"ipv6 syn-ack", gpSegment{v6: true, tcp: layers.TCP{SrcPort: 443, DstPort: 40000, Seq: 0x80000000, Ack: 6, SYN: true, ACK: true, Options: []layers.TCPOption{mssOpt, spOpt, tsOpt, nop, wsOpt}}}},
	}
	deltas := [][2]uint32{{1, 1}, {0x80000000, 0x7fffffff}, {0xfffffff0, 0x20}, {0x13579bdf, 0xeca86420}}
	for _, tt := range tests {
		for _, d := range deltas {
			t.Run(fmt.Sprintf("%s/%#x", tt.name, d), func(t *testing.T) {
				pkt := tt.g.build(t)
				before := decodeTCP(t, bytes.Clone(pkt))
				checkOracle(t, pkt, before, d[0], d[1])
			})
		}
	}
}

// checkOracle shifts pkt and checks with gopacket that exactly the right fields moved.
func checkOracle(t *testing.T, pkt []byte, before *layers.TCP, seqD, ackD uint32) {
	t.Helper()
	var p Packet
	Classify(pkt, &p)
	if p.Kind != KindTCP {
		t.Fatalf("Classify: %v/%v", p.Kind, p.Reason)
	}
	if p.Seq != before.Seq || p.SrcPort != uint16(before.SrcPort) || p.DstPort != uint16(before.DstPort) || p.PayloadLen != len(before.Payload) {
		t.Fatalf("Classify disagrees with gopacket: %+v", p)
	}
	if r := Shift(pkt, &p, seqnum.Delta(seqD), seqnum.Delta(ackD), false); r != ReasonNone {
		t.Fatalf("Shift: %v", r)
	}
	after := decodeTCP(t, pkt)
	wantAck, wantEdges := before.Ack, gpSACKEdges(before)
	if before.ACK {
		wantAck += ackD
		for i := range wantEdges {
			wantEdges[i] += ackD
		}
	}
	if after.Seq != before.Seq+seqD || after.Ack != wantAck {
		t.Fatalf("seq/ack = %#x/%#x, want %#x/%#x", after.Seq, after.Ack, before.Seq+seqD, wantAck)
	}
	if got := gpSACKEdges(after); fmt.Sprint(got) != fmt.Sprint(wantEdges) {
		t.Fatalf("sack edges %#x, want %#x", got, wantEdges)
	}
	if !bytes.Equal(after.Payload, before.Payload) || after.Window != before.Window || after.Urgent != before.Urgent ||
		after.DataOffset != before.DataOffset || len(after.Options) != len(before.Options) {
		t.Fatal("Shift changed more than seq, ack and SACK")
	}
	for i, o := range after.Options {
		if o.OptionType != layers.TCPOptionKindSACK && !bytes.Equal(o.OptionData, before.Options[i].OptionData) {
			t.Fatalf("option %v changed", o.OptionType)
		}
	}
}

// TestOracle_RandomSegments builds random segments with gopacket and checks every rewrite.
func TestOracle_RandomSegments(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 1624))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		g := gpSegment{v6: rng.IntN(2) == 1}
		g.tcp = layers.TCP{SrcPort: layers.TCPPort(rng.Uint32()), DstPort: layers.TCPPort(rng.Uint32()), Seq: rng.Uint32(), Ack: rng.Uint32(),
			Window: uint16(rng.Uint32()), SYN: rng.IntN(8) == 0, ACK: rng.IntN(5) != 0, FIN: rng.IntN(8) == 0, PSH: rng.IntN(2) == 0, RST: rng.IntN(20) == 0}
		room := 40
		for room > 0 {
			var o layers.TCPOption
			switch rng.IntN(7) {
			case 0:
				o = nop
			case 1:
				o = mssOpt
			case 2:
				o = wsOpt
			case 3:
				o = spOpt
			case 4:
				o = tsOpt
			default:
				blocks := 1 + rng.IntN(4)
				edges := make([]uint32, 2*blocks)
				for j := range edges {
					edges[j] = g.tcp.Ack + uint32(rng.IntN(1<<20)) - 1<<19
				}
				o = sackOption(edges...)
			}
			size := 1
			if o.OptionType > 1 {
				size = 2 + len(o.OptionData)
			}
			if size > room {
				break
			}
			room -= size
			g.tcp.Options = append(g.tcp.Options, o)
		}
		if !g.v6 {
			for range rng.IntN(9) {
				g.ipOpts = append(g.ipOpts, layers.IPv4Option{OptionType: 1})
			}
		} else {
			for range rng.IntN(3) {
				g.exts = append(g.exts, &layers.IPv6Destination{Options: padN()})
			}
		}
		g.payload = make([]byte, rng.IntN(3000))
		for j := range g.payload {
			g.payload[j] = byte(rng.Uint32())
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			pkt := g.build(t)
			before := decodeTCP(t, bytes.Clone(pkt))
			checkOracle(t, pkt, before, rng.Uint32(), rng.Uint32())
		})
	}
}

// TestOracle_ICMPErrors has gopacket build ICMP and ICMPv6 errors quoting a shifted segment
// and verify, after translation, the ICMP checksum (with the ICMPv6 pseudo-header) and the
// quoted segment, which must decode with a valid checksum when it is quoted whole.
func TestOracle_ICMPErrors(t *testing.T) {
	var off, offRev uint32 = 0x40000000, 0xfff00000
	for _, v6 := range []bool{false, true} {
		for _, cut := range []int{8, 20, -1} {
			t.Run(fmt.Sprintf("v6=%t/cut=%d", v6, cut), func(t *testing.T) {
				orig := gpSegment{v6: v6, tcp: layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 0xfffffff0, Ack: 1234, ACK: true, PSH: true,
					Options: []layers.TCPOption{nop, nop, tsOpt, nop, nop, sackOption(1000, 1100)}}, payload: bytes.Repeat([]byte{'z'}, 100)}
				wire := orig
				wire.tcp.Seq += off
				wire.tcp.Ack -= offRev
				wire.tcp.Options = []layers.TCPOption{nop, nop, tsOpt, nop, nop, sackOption(1000-offRev, 1100-offRev)}
				origPkt, wirePkt := orig.build(t), wire.build(t)
				ipLen := 20
				if v6 {
					ipLen = 40
				}
				quote := wirePkt
				if cut >= 0 {
					quote = wirePkt[:ipLen+cut]
				}
				pkt := gpICMP(t, v6, quote)
				var p Packet
				Classify(pkt, &p)
				if p.Kind != KindICMPQuotingTCP || p.Seq != wire.tcp.Seq || p.SrcPort != 40000 {
					t.Fatalf("Classify: %+v", p)
				}
				if r := Shift(pkt, &p, seqnum.Delta(-off), seqnum.Delta(offRev), false); r != ReasonNone {
					t.Fatalf("Shift: %v", r)
				}
				got := verifyICMP(t, pkt)
				if seq := binary.BigEndian.Uint32(got[ipLen+4:]); seq != orig.tcp.Seq {
					t.Fatalf("quoted seq %#x, want %#x", seq, orig.tcp.Seq)
				}
				if cut < 0 {
					// Quoted whole: the translated quote is the original segment, except the
					// SACK edges, which Shift does not translate in quotes (nobody reads them).
					q := decodeTCP(t, got)
					if q.Seq != orig.tcp.Seq || q.Ack != orig.tcp.Ack {
						t.Fatalf("quoted seq/ack %#x/%#x", q.Seq, q.Ack)
					}
					// The checksum differs from the original by the untranslated edges only.
					if !bytes.Equal(got[:ipLen+16], origPkt[:ipLen+16]) || !bytes.Equal(got[ipLen+18:ipLen+28], origPkt[ipLen+18:ipLen+28]) {
						t.Fatal("quoted header differs from the original")
					}
				}
			})
		}
	}
}

// gpICMP builds with gopacket an ICMP fragmentation-needed or ICMPv6 packet-too-big from the
// router to the client, quoting quote.
func gpICMP(t *testing.T, v6 bool, quote []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	var err error
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: router6.AsSlice(), DstIP: client6.AsSlice()}
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
		if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		mtu := binary.BigEndian.AppendUint32(nil, 1280)
		err = gopacket.SerializeLayers(buf, serializeOpts, ip, icmp, gopacket.Payload(append(mtu, quote...)))
	} else {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: router4.AsSlice(), DstIP: client4.AsSlice()}
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1400}
		err = gopacket.SerializeLayers(buf, serializeOpts, ip, icmp, gopacket.Payload(quote))
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// verifyICMP decodes an ICMP error with gopacket, checks its checksum and returns the quote.
func verifyICMP(t *testing.T, pkt []byte) []byte {
	t.Helper()
	if pkt[0]>>4 == 6 {
		pk := gopacket.NewPacket(pkt, layers.LayerTypeIPv6, gopacket.Default)
		icmp, ok := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if !ok {
			t.Fatalf("no ICMPv6 layer: %v", pk.ErrorLayer())
		}
		if err := icmp.SetNetworkLayerForChecksum(pk.NetworkLayer()); err != nil {
			t.Fatal(err)
		}
		if err, res := icmp.VerifyChecksum(); err != nil || !res.Valid {
			t.Fatalf("gopacket: ICMPv6 checksum invalid: %v %+v", err, res)
		}
		return icmp.Payload[4:]
	}
	pk := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	icmp, ok := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatalf("no ICMPv4 layer: %v", pk.ErrorLayer())
	}
	if err, res := icmp.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("gopacket: ICMP checksum invalid: %v %+v", err, res)
	}
	return icmp.Payload
}
