package verify

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/seqshiftd/seqshiftd/capture"
)

// A conversation is written as it happened — who sent what, in each sender's own numbering
// relative to its ISN — and then rendered twice, once as the client-side capture sees it and
// once as the server-side capture does, the gateway's offsets applied. gopacket serialises the
// packets (its checksums are an implementation verify shares nothing with); tests then tamper
// with one side.

// spec is one segment of a conversation. seq is relative to the sender's ISN, ack and SACK
// edges to the receiver's.
type spec struct {
	c2s        bool
	flags      uint8
	seq, ack   uint32
	n          int
	sack       [][2]uint32
	tsval      uint32
	only       int // 0: both captures; 1: client capture only (dropped on the way); 2: server capture only
	icmpQuote  bool
	icmpFrom   netip.Addr
	noTS       bool
	gsoGroupOf int // >0 on the first of n segments the client capture holds as one super-packet
}

const (
	fSYN = 0x02
	fACK = 0x10
	fFIN = 0x01
	fPSH = 0x08
)

type conv struct {
	client, server netip.AddrPort
	cISN, sISN     uint32 // as each end chose them
	offC2S, offS2C uint32 // what the gateway adds to each direction's numbers
	segs           []spec
}

// frame is one rendered packet of one side, before serialisation, so a test can tamper with it.
type frame struct {
	spec     int // index in conv.segs
	src, dst netip.AddrPort
	flags    uint8
	seq, ack uint32
	n        int
	sack     []uint32
	tsval    uint32
	tsecr    uint32
	ipid     uint16
	noTS     bool
	badCsum  bool
	t        time.Time
	icmp     *frame // set for an ICMP error quoting this frame
	icmpFrom netip.Addr
	raw      []byte // set instead of the fields for a hand-made packet
}

// render returns the frames side (0 client capture, 1 server capture) holds.
func (c *conv) render(side int) []frame {
	var out []frame
	var ipid [2]uint16
	t := time.Unix(1764500000, 0)
	for i, s := range c.segs {
		t = t.Add(100 * time.Microsecond)
		dir := 0
		if !s.c2s {
			dir = 1
		}
		// The sender numbers every packet it sends, whichever capture holds it.
		ipid[dir]++
		if s.only != 0 && s.only != side+1 {
			continue
		}
		src, dst := c.client, c.server
		seqBase, ackBase := c.cISN, c.sISN+c.offS2C // client-side numbering
		if side == 1 {
			seqBase, ackBase = c.cISN+c.offC2S, c.sISN
		}
		if !s.c2s {
			src, dst = c.server, c.client
			seqBase, ackBase = c.sISN+c.offS2C, c.cISN
			if side == 1 {
				seqBase, ackBase = c.sISN, c.cISN+c.offC2S
			}
		}
		f := frame{spec: i, src: src, dst: dst, flags: s.flags, seq: seqBase + s.seq, n: s.n, tsval: s.tsval, tsecr: s.tsval / 2, noTS: s.noTS, t: t}
		if s.flags&fACK != 0 {
			f.ack = ackBase + s.ack
		}
		for _, b := range s.sack {
			f.sack = append(f.sack, ackBase+b[0], ackBase+b[1])
		}
		f.ipid = ipid[dir]
		if s.icmpQuote {
			q := f
			f = frame{spec: i, icmp: &q, icmpFrom: s.icmpFrom, t: t, ipid: 7}
		}
		if s.gsoGroupOf > 0 && side == 0 {
			// The client capture holds the group as one super-packet of all their bytes.
			for _, g := range c.segs[i+1 : i+s.gsoGroupOf] {
				f.n += g.n
			}
			ipid[dir] += uint16(s.gsoGroupOf - 1)
			out = append(out, f)
			continue
		}
		if i > 0 && side == 0 && inGroup(c.segs, i) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// inGroup reports whether segs[i] is a follower in a GSO group.
func inGroup(segs []spec, i int) bool {
	for j := i - 1; j >= 0; j-- {
		if segs[j].gsoGroupOf > 0 {
			return i-j < segs[j].gsoGroupOf
		}
		if j < i-64 {
			break
		}
	}
	return false
}

// packet serialises f as an IP packet.
func packet(t testing.TB, f frame) []byte {
	t.Helper()
	if f.raw != nil {
		return f.raw
	}
	if f.icmp != nil {
		return icmpPacket(t, f)
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(f.src.Port()), DstPort: layers.TCPPort(f.dst.Port()),
		Seq: f.seq, Ack: f.ack, Window: 502,
		SYN: f.flags&fSYN != 0, ACK: f.flags&fACK != 0, FIN: f.flags&fFIN != 0, PSH: f.flags&fPSH != 0,
	}
	if !f.noTS {
		ts := binary.BigEndian.AppendUint32(nil, f.tsval)
		ts = binary.BigEndian.AppendUint32(ts, f.tsecr)
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: ts})
	}
	if len(f.sack) > 0 {
		var d []byte
		for _, e := range f.sack {
			d = binary.BigEndian.AppendUint32(d, e)
		}
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: d})
	}
	pl := make([]byte, f.n)
	for i := range pl {
		pl[i] = byte(f.seq) + byte(i)
	}
	b := serialize(t, f.src.Addr(), f.dst.Addr(), f.ipid, layers.IPProtocolTCP, tcp, gopacket.Payload(pl))
	if f.badCsum {
		at := 20 + 16
		if f.src.Addr().Is6() {
			at = 40 + 16
		}
		b[at] ^= 0x5a
	}
	return b
}

func serialize(t testing.TB, src, dst netip.Addr, ipid uint16, proto layers.IPProtocol, l4 interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}, rest ...gopacket.SerializableLayer) []byte {
	t.Helper()
	var ip interface {
		gopacket.SerializableLayer
		gopacket.NetworkLayer
	}
	if src.Is4() {
		ip = &layers.IPv4{Version: 4, TTL: 63, Id: ipid, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		if proto == layers.IPProtocolICMPv4 {
			proto = layers.IPProtocolICMPv6
		}
		ip = &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	ls := append([]gopacket.SerializableLayer{ip, l4}, rest...)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// icmpPacket is a fragmentation-needed (IPv4) or packet-too-big (IPv6) error from f.icmpFrom
// to the quoted segment's sender, quoting its first 48 bytes (RFC 792 asks for 8 past the IP
// header; Linux quotes more).
func icmpPacket(t testing.TB, f frame) []byte {
	q := packet(t, *f.icmp)
	q = q[:min(len(q), 48+20*boolInt(f.icmp.src.Addr().Is6()))]
	to := f.icmp.src.Addr()
	if to.Is4() {
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}
		return serialize(t, f.icmpFrom, to, f.ipid, layers.IPProtocolICMPv4, icmp4{ic}, gopacket.Payload(q))
	}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
	return serialize(t, f.icmpFrom, to, 0, layers.IPProtocolICMPv6, ic, gopacket.Payload(append(binary.BigEndian.AppendUint32(nil, 1400), q...)))
}

// icmp4 gives ICMPv4 the method serialize wants; it has no pseudo-header.
type icmp4 struct{ *layers.ICMPv4 }

func (icmp4) SetNetworkLayerForChecksum(gopacket.NetworkLayer) error { return nil }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// linkHeader returns the bytes link puts before an IP packet.
func linkHeader(link capture.LinkType, v6 bool) []byte {
	et := []byte{0x08, 0x00}
	if v6 {
		et = []byte{0x86, 0xdd}
	}
	switch link {
	case capture.LinkEthernet:
		h := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x2a} // with an 802.1Q tag, VLAN 42
		return append(h, et...)
	case capture.LinkSLL:
		return append([]byte{0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}, et...)
	case capture.LinkSLL2:
		return append(et, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0)
	}
	return nil
}

// writeCapture writes frames as a capture file: pcap by Writer, or pcapng by gopacket.
func writeCapture(t testing.TB, frames []frame, link capture.LinkType, ng bool, snap int) []byte {
	t.Helper()
	var b bytes.Buffer
	var write func(ts time.Time, data []byte, orig int) error
	var flush func() error
	if ng {
		w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{LinkType: layers.LinkType(link), SnapLength: uint32(snap), TimestampResolution: 9}, pcapgo.DefaultNgWriterOptions)
		if err != nil {
			t.Fatal(err)
		}
		flush = w.Flush
		write = func(ts time.Time, data []byte, orig int) error {
			if snap > 0 && len(data) > snap {
				data = data[:snap]
			}
			return w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: orig}, data)
		}
	} else {
		w, err := capture.NewWriter(&b, link, snap)
		if err != nil {
			t.Fatal(err)
		}
		flush, write = w.Flush, w.WriteFrame
	}
	for _, f := range frames {
		pkt := packet(t, f)
		data := append(linkHeader(link, pkt[0]>>4 == 6), pkt...)
		if err := write(f.t, data, len(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
