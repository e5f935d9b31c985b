package tcshift

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// FuzzKernelMatchesShift feeds the same packet and deltas to a client program and to
// rewrite.Classify+Shift, with a kernel-mode flow for the packet's own tuple and every address
// intercepted, and checks:
//   - whenever the program handled the segment as the flow's (counted it), rewrite.Shift
//     succeeded on it and produced the same bytes (the Ethernet header unchanged);
//   - whenever Go calls the packet malformed (or anything but a TCP segment), the program did
//     not rewrite it;
//   - whatever the program passes without handling it is byte for byte the input, and what it
//     sends to the daemon differs in the Ethernet header only;
//   - a segment Go can rewrite that has no SYN, FIN or RST, no IP options, no fragment and no
//     extension header is never passed unshifted: it is rewritten or goes to the daemon.
func FuzzKernelMatchesShift(f *testing.F) {
	e := newEnv(f)
	// Every address on x0 is intercepted: a prefix of the ifindex's 32 bits alone.
	all := interceptKeyOf(e.x, netip.MustParsePrefix("::/0"))
	all.Prefixlen = 32
	if err := e.dp.objs.Intercept.Put(all, uint32(1)); err != nil {
		f.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		f.Add(s.pkt(), uint32(i)*0x9e3779b9, uint32(i)*0x7f4a7c15, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, seqD, ackD uint32, egress bool) {
		// BPF_PROG_TEST_RUN refuses a frame whose EtherType is IP but that is shorter than
		// the fixed IP header (the programs pass those as not_ip), and one that does not fit
		// in a page with the skb's head and tail room.
		if len(pkt) < 20 || (pkt[0]>>4 == 6 && len(pkt) < 40) || len(pkt) > 3000 {
			return
		}
		h := HookIngress
		if egress {
			h = HookEgress
		}
		dir := h.Dir()
		k, ok := rawKey(h, pkt)
		if ok {
			v := FlowValue{Ifindex: uint32(e.x), Mode: ModeKernel}
			v.SeqDelta[dir], v.AckDelta[dir] = seqnum.Delta(seqD), seqnum.Delta(ackD)
			if err := e.dp.Put(k, v); err != nil {
				t.Fatal(err)
			}
			defer e.dp.Delete(k)
		}
		in := e.frame(h, pkt)
		ret, out, _ := e.run(t, e.prog(h), in, e.x, 0)
		var handled bool
		if ok {
			v, _, _ := e.dp.Lookup(k)
			handled = v.Packets[dir] != 0
		}
		want, r, kind := goShift(pkt, seqD, ackD)
		switch {
		case handled:
			if ret != actOK {
				t.Fatalf("counted as the flow's, but returned %d", ret)
			}
			if kind != rewrite.KindTCP || r != rewrite.ReasonNone {
				t.Fatalf("the program rewrote a packet Go finds %v (%v)", kind, r)
			}
			var p rewrite.Packet
			rewrite.Classify(pkt, &p)
			if seqD == 0 && (ackD == 0 || p.Flags&flagACK == 0) && bytes.Equal(out, in) {
				// Zero deltas (ackD is not used without ACK): the program writes nothing, and
				// rewrite.Shift rewrites a checksum field of 0xffff (one's complement zero's
				// other spelling, which no sender computes) as 0x0000.
				return
			}
			if !bytes.Equal(out, e.frame(h, want)) {
				t.Fatalf("program and rewrite.Shift differ\n got % x\nwant % x", head(out), head(e.frame(h, want)))
			}
		case ret == actRedirect:
			if !bytes.Equal(out[EthHeaderLen:], in[EthHeaderLen:]) {
				t.Fatal("a packet sent to the daemon was changed beyond its Ethernet header")
			}
		case ret == actOK:
			if !bytes.Equal(out, in) {
				t.Fatal("a packet passed without being counted was changed")
			}
			if ok && kind == rewrite.KindTCP && r == rewrite.ReasonNone && plainSegment(pkt) {
				t.Fatalf("a segment of a kernel-mode flow passed unshifted")
			}
		default:
			t.Fatalf("program returned %d", ret)
		}
	})
}

// rawKey reads the flow key of pkt as seen at hook h from the fixed places of a plain IPv4 or
// IPv6 header, whether or not the packet is well formed, so that the program finds a flow for
// whatever it parses.
func rawKey(h Hook, pkt []byte) (FlowKey, bool) {
	var src, dst netip.Addr
	var l4 int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = int(pkt[0]&0xf) * 4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = 40
	default:
		return FlowKey{}, false
	}
	if len(pkt) < l4+4 {
		return FlowKey{}, false
	}
	sport, dport := binary.BigEndian.Uint16(pkt[l4:]), binary.BigEndian.Uint16(pkt[l4+2:])
	s := seg{src: src, dst: dst, sport: sport, dport: dport}
	if sport == 0 {
		// seg reads a zero port as "the default ports"; build the key directly.
		c, sv := netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
		if h == HookEgress {
			c, sv = sv, c
		}
		return KeyOf(c, sv), true
	}
	return keyOf(h, s), true
}

// plainSegment says whether pkt is a segment the programs must rewrite themselves when its
// flow is in kernel mode: IPv4 without options or fragmentation, or IPv6 without extension
// headers, and no SYN, FIN or RST.
func plainSegment(pkt []byte) bool {
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	if p.Flags&(flagSYN|flagFIN|flagRST) != 0 {
		return false
	}
	if pkt[0]>>4 == 4 {
		return pkt[0]&0xf == 5 && binary.BigEndian.Uint16(pkt[6:])&0x3fff == 0
	}
	return pkt[6] == 6
}

// fuzzSeeds are segments of every shape the tests know, including the ones for the daemon.
func fuzzSeeds() []seg {
	var out []seg
	for _, tc := range shiftCases() {
		for _, v6 := range []bool{false, true} {
			s := tc.s
			s.v6 = v6
			if len(s.payload) > 200 {
				s.payload = s.payload[:200]
			}
			out = append(out, s)
		}
	}
	out = append(out,
		seg{seq: 1, flags: flagSYN, opts: []byte{2, 4, 5, 0xb4}},
		seg{seq: 1, ack: 2, flags: flagACK, opts: []byte{1, 1, 5, 6, 0, 0, 0, 1}},
		seg{seq: 1, ack: 2, flags: flagACK, doff: 4},
		seg{seq: 1, ack: 2, flags: flagACK, moreFrags: true, payload: []byte("frag")},
		seg{seq: 1, ack: 2, flags: flagACK, ipOpts: []byte{1, 1, 1, 0}},
		seg{v6: true, seq: 1, ack: 2, flags: flagACK, destOpts: true},
	)
	return out
}
