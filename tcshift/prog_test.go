package tcshift

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// shiftCases are rewrite's TestShift_TCP and oracle cases that the kernel rewrites (its SYN,
// FIN and RST cases go to the daemon here: see TestClientHooks_ToDaemon), as client -> server
// segments; each runs at both hooks (reversed for egress), both IP versions, every delta pair.
func shiftCases() []struct {
	name string
	s    seg
} {
	data := bytes.Repeat([]byte("seqshift"), 25)
	ts := optTimestamps(0x11111111, 0x22222222)
	sack := func(edges ...uint32) []byte { return cat(ts, []byte{1, 1}, optSACK(edges...)) }
	return []struct {
		name string
		s    seg
	}{
		{"data segment", seg{seq: 1000, ack: 5000, flags: flagACK | flagPSH, opts: ts, payload: data}},
		{"no options", seg{seq: 7, ack: 9, flags: flagACK, payload: data}},
		{"seq and ack wrap around", seg{seq: 0xffffff00, ack: 0x00000010, flags: flagACK, payload: data}},
		{"one sack block", seg{seq: 1, ack: 100, flags: flagACK, opts: sack(200, 300)}},
		{"three sack blocks follow ack", seg{seq: 1, ack: 100, flags: flagACK, opts: sack(200, 300, 400, 500, 600, 700)}},
		{"four sack blocks", seg{seq: 1, ack: 100, flags: flagACK, opts: cat([]byte{1, 1}, optSACK(200, 300, 400, 500, 600, 700, 800, 900))}},
		{"d-sack below ack", seg{seq: 1, ack: 1000, flags: flagACK, opts: sack(500, 600, 1200, 1300)}},
		{"sack edges wrap around", seg{seq: 1, ack: 0x800, flags: flagACK, opts: sack(0xfffff900, 0x1000)}},
		{"sack at odd offsets", seg{seq: 1, ack: 10, flags: flagACK, opts: cat([]byte{1}, optSACK(0x12345678, 0x9abcdef0, 0xfffffff1, 5))}},
		{"two sack options", seg{seq: 1, ack: 10, flags: flagACK, opts: cat(optSACK(20, 30), []byte{1}, optSACK(40, 50))}},
		{"sack odd and even", seg{seq: 1, ack: 10, flags: flagACK, opts: cat([]byte{1}, optSACK(20, 30), []byte{1}, optSACK(40, 50))}},
		{"sack without ack flag is left alone", seg{seq: 1, ack: 10, flags: flagPSH, opts: optSACK(20, 30)}},
		{"md5 segment still shifts when asked", seg{seq: 1, ack: 2, flags: flagACK, opts: append([]byte{1, 1, 19, 18}, bytes.Repeat([]byte{7}, 16)...)}},
		{"mss, window scale, sack-permitted", seg{seq: 5, ack: 6, flags: flagACK, opts: []byte{2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7}}},
		{"eol ends the options", seg{seq: 5, ack: 6, flags: flagACK, opts: cat(ts, []byte{0, 5, 1, 0xff})}},
		{"large segment", seg{seq: 42, ack: 43, flags: flagACK, opts: ts, payload: bytes.Repeat([]byte{0xa5}, 3000)}},
	}
}

var deltaPairs = [][2]uint32{
	{0x10000123, 0xfffff000},
	{0, 0},
	{1, 1},
	{0, 5},
	{5, 0},
	{0x80000000, 0x7fffffff},
	{0xfffffff0, 0x20},
	{0x13579bdf, 0xeca86420},
}

// TestClientHooks_ShiftMatchesRewrite runs client_ingress and client_egress on every shift
// case and checks the frame they pass is rewrite.Shift's output byte for byte, the Ethernet
// header unchanged, and that the flow's counters moved.
func TestClientHooks_ShiftMatchesRewrite(t *testing.T) {
	e := newEnv(t)
	for _, tc := range shiftCases() {
		for _, v6 := range []bool{false, true} {
			for _, h := range []Hook{HookIngress, HookEgress} {
				for _, d := range deltaPairs {
					s := tc.s
					s.v6 = v6
					if h == HookEgress {
						s = s.reversed()
					}
					t.Run(fmt.Sprintf("%s/v6=%t/%v/%#x", tc.name, v6, h, d), func(t *testing.T) {
						e.checkShift(t, h, s.pkt(), d[0], d[1], keyOf(h, s))
					})
				}
			}
		}
	}
}

// checkShift runs pkt through the hook's program with a kernel-mode flow k whose deltas for
// the hook's direction are seqD, ackD, and compares with rewrite.Shift.
func (e *env) checkShift(t *testing.T, h Hook, pkt []byte, seqD, ackD uint32, k FlowKey) {
	t.Helper()
	dir := h.Dir()
	v := FlowValue{Ifindex: uint32(e.x), Mode: ModeKernel}
	v.SeqDelta[dir], v.AckDelta[dir] = seqnum.Delta(seqD), seqnum.Delta(ackD)
	// The other direction's deltas must not be used.
	v.SeqDelta[1-dir], v.AckDelta[1-dir] = 0xdeadbeef, 0x0badf00d
	if err := e.dp.Put(k, v); err != nil {
		t.Fatal(err)
	}
	defer e.dp.Delete(k)
	want, r, _ := goShift(pkt, seqD, ackD)
	if r != rewrite.ReasonNone {
		t.Fatalf("rewrite.Shift: %v", r)
	}
	in := e.frame(h, pkt)
	ret, out, _ := e.run(t, e.prog(h), in, e.x, 0)
	if ret != actOK {
		t.Fatalf("program returned %d, want TC_ACT_OK", ret)
	}
	if !bytes.Equal(out, e.frame(h, want)) {
		t.Fatalf("program output differs from rewrite.Shift\n got % x\nwant % x", head(out), head(e.frame(h, want)))
	}
	// A check that shares no arithmetic with either: the full RFC 1071 sum over the segment.
	if !tcpChecksumValid(out[EthHeaderLen:]) {
		t.Fatal("the rewritten segment's TCP checksum does not verify")
	}
	got, ok, err := e.dp.Lookup(k)
	if err != nil || !ok {
		t.Fatalf("Lookup: %v %v", ok, err)
	}
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	if got.Packets[dir] != 1 || got.Bytes[dir] != uint64(p.PayloadLen) || got.Packets[1-dir] != 0 || got.LastSeen == 0 {
		t.Fatalf("counters: packets %v bytes %v last_seen %d; want 1 packet of %d bytes in dir %d", got.Packets, got.Bytes, got.LastSeen, p.PayloadLen, dir)
	}
}

func head(b []byte) []byte { return b[:min(len(b), 14+40+60)] }

// TestClientHooks_RandomSegmentsMatchRewrite is TestClientHooks_ShiftMatchesRewrite over random
// segments, as rewrite's TestOracle_RandomSegments builds them.
func TestClientHooks_RandomSegmentsMatchRewrite(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewPCG(10, 1624))
	n := 400
	if testing.Short() {
		n = 60
	}
	for i := range n {
		s := randomSegment(rng)
		h := HookIngress
		if rng.IntN(2) == 0 {
			h = HookEgress
			s = s.reversed()
		}
		seqD, ackD := rng.Uint32(), rng.Uint32()
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			e.checkShift(t, h, s.pkt(), seqD, ackD, keyOf(h, s))
		})
	}
}

// randomSegment returns a data segment (no SYN, FIN, RST) with random options that fit.
func randomSegment(rng *rand.Rand) seg {
	s := seg{v6: rng.IntN(2) == 1, seq: rng.Uint32(), ack: rng.Uint32(), win: uint16(rng.Uint32()),
		sport: uint16(1 + rng.IntN(65535)), dport: uint16(1 + rng.IntN(65535))}
	if s.v6 {
		s.src, s.dst = client6, server6
	} else {
		s.src, s.dst = client4, server4
	}
	if rng.IntN(5) != 0 {
		s.flags |= flagACK
	}
	if rng.IntN(2) == 0 {
		s.flags |= flagPSH
	}
	var opts []byte
	for {
		var o []byte
		switch rng.IntN(7) {
		case 0:
			o = []byte{1}
		case 1:
			o = []byte{2, 4, 5, 0xb4}
		case 2:
			o = []byte{3, 3, 7}
		case 3:
			o = []byte{4, 2}
		case 4:
			o = optTimestamps(rng.Uint32(), rng.Uint32())
		default:
			edges := make([]uint32, 2*(1+rng.IntN(4)))
			for j := range edges {
				edges[j] = s.ack + uint32(rng.IntN(1<<20)) - 1<<19
			}
			o = optSACK(edges...)
		}
		if len(opts)+len(o) > 40 {
			break
		}
		opts = append(opts, o...)
	}
	// Pad with NOPs rather than EOLs half the time, so that the walk goes to the end.
	for rng.IntN(2) == 0 && len(opts)%4 != 0 {
		opts = append(opts, 1)
	}
	s.opts = opts
	s.payload = make([]byte, rng.IntN(1400))
	for j := range s.payload {
		s.payload[j] = byte(rng.Uint32())
	}
	return s
}

// TestClientHooks_ToDaemon checks what must go to the daemon: redirected to the TAP, the
// metadata right, nothing but the Ethernet header changed; and that tap_ingress, given the
// frame back, restores the original Ethernet header exactly, marks it and sends it on to X.
func TestClientHooks_ToDaemon(t *testing.T) {
	e := newEnv(t)
	data := []byte("payload")
	kernel := FlowValue{Mode: ModeKernel, SeqDelta: [2]seqnum.Delta{100, 200}, AckDelta: [2]seqnum.Delta{300, 400}}
	daemon := kernel
	daemon.Mode = ModeDaemon
	tests := []struct {
		name   string
		s      seg
		flow   *FlowValue // nil: no flow
		reason Reason
		icmp   bool // s is the quote of an ICMP error
	}{
		{"syn", seg{seq: 1, flags: flagSYN, opts: []byte{2, 4, 5, 0xb4}}, &kernel, ReasonFlags, false},
		{"syn-ack", seg{seq: 1, ack: 2, flags: flagSYN | flagACK}, &kernel, ReasonFlags, false},
		{"fin", seg{seq: 1, ack: 2, flags: flagFIN | flagACK}, &kernel, ReasonFlags, false},
		{"rst", seg{seq: 1, flags: flagRST}, &kernel, ReasonFlags, false},
		{"daemon mode", seg{seq: 1, ack: 2, flags: flagACK, payload: data}, &daemon, ReasonDaemonMode, false},
		{"no flow", seg{seq: 1, ack: 2, flags: flagACK, payload: data}, nil, ReasonNoFlow, false},
		{"no flow syn", seg{seq: 1, flags: flagSYN}, nil, ReasonNoFlow, false},
		{"bad option length", seg{seq: 1, ack: 2, flags: flagACK, opts: []byte{1, 1, 8, 1}}, &kernel, ReasonUnparsed, false},
		{"option past the header", seg{seq: 1, ack: 2, flags: flagACK, opts: []byte{1, 1, 8, 10}}, &kernel, ReasonUnparsed, false},
		{"sack length not 2+8n", seg{seq: 1, ack: 2, flags: flagACK, opts: []byte{1, 1, 5, 6, 0, 0, 0, 1}}, &kernel, ReasonUnparsed, false},
		{"data offset below 5", seg{seq: 1, ack: 2, flags: flagACK, doff: 4}, &kernel, ReasonUnparsed, false},
		{"data offset past the segment", seg{seq: 1, ack: 2, flags: flagACK, doff: 15}, &kernel, ReasonUnparsed, false},
		{"icmp error quoting a flow", seg{seq: 1, ack: 2, flags: flagACK, payload: data}, &kernel, ReasonICMP, true},
		{"icmp error quoting no flow", seg{seq: 1, ack: 2, flags: flagACK}, nil, ReasonICMP, true},
	}
	v4only := []struct {
		name   string
		s      seg
		reason Reason
	}{
		{"ipv4 first fragment", seg{seq: 1, ack: 2, flags: flagACK, moreFrags: true, payload: data}, ReasonUnparsed},
		{"ipv4 options", seg{seq: 1, ack: 2, flags: flagACK, ipOpts: []byte{1, 1, 1, 0}}, ReasonUnparsed},
	}
	for _, tc := range v4only {
		tests = append(tests, struct {
			name   string
			s      seg
			flow   *FlowValue
			reason Reason
			icmp   bool
		}{tc.name, tc.s, &kernel, tc.reason, false})
	}
	tests = append(tests, struct {
		name   string
		s      seg
		flow   *FlowValue
		reason Reason
		icmp   bool
	}{"ipv6 extension header", seg{v6: true, seq: 1, ack: 2, flags: flagACK, destOpts: true}, &kernel, ReasonUnparsed, false})

	for _, tc := range tests {
		for _, v6 := range []bool{false, true} {
			if (tc.s.moreFrags || tc.s.ipOpts != nil) && v6 || tc.s.destOpts && !v6 {
				continue
			}
			for _, h := range []Hook{HookIngress, HookEgress} {
				t.Run(fmt.Sprintf("%s/v6=%t/%v", tc.name, v6, h), func(t *testing.T) {
					s := tc.s
					s.v6 = v6
					if h == HookEgress {
						s = s.reversed()
					}
					k := keyOf(h, s)
					if tc.flow != nil {
						v := *tc.flow
						v.Ifindex = uint32(e.x)
						if err := e.dp.Put(k, v); err != nil {
							t.Fatal(err)
						}
						defer e.dp.Delete(k)
					}
					pkt := s.pkt()
					if tc.icmp {
						// A router quotes the segment back toward its sender.
						src, _ := s.endpoints()
						pkt = icmpErr(v6, map[bool]uint8{false: 3, true: 2}[v6], src, pkt[:min(len(pkt), 68)])
					}
					e.checkToDaemon(t, h, pkt, tc.reason)
					if tc.flow != nil {
						if v, _, _ := e.dp.Lookup(k); v.Packets != [2]uint64{} {
							t.Fatalf("a packet for the daemon was counted as the kernel's: %v", v.Packets)
						}
					}
				})
			}
		}
	}
}

func (e *env) checkToDaemon(t *testing.T, h Hook, pkt []byte, reason Reason) {
	t.Helper()
	in := e.frame(h, pkt)
	before := e.dp.Stats()
	ret, out, _ := e.run(t, e.prog(h), in, e.x, 0)
	if ret != actRedirect {
		t.Fatalf("program returned %d, want TC_ACT_REDIRECT", ret)
	}
	if got := e.dp.Stats()[reason] - before[reason]; got != 1 {
		t.Fatalf("counter %s moved by %d, want 1", Stat(reason), got)
	}
	m, ok := ReadMeta(out)
	if !ok || m != (Meta{Hook: h, Reason: reason, Ifindex: e.x}) {
		t.Fatalf("metadata %+v (ok %t), want %v %v %d; frame % x", m, ok, h, reason, e.x, out[:14])
	}
	if out[0] != 0x5e || out[1] != byte(h)|byte(reason)<<2 || binary.BigEndian.Uint32(out[2:6]) != uint32(e.x) {
		t.Fatalf("metadata bytes % x", out[:6])
	}
	wantSrc := in[6:12]
	if h == HookEgress {
		wantSrc = in[0:6] // the client's MAC, kept for the way back
	}
	if !bytes.Equal(out[6:12], wantSrc) || !bytes.Equal(out[12:], in[12:]) {
		t.Fatalf("more than the metadata changed\n got % x\nwant % x", head(out), head(in))
	}
	// The daemon writes the frame back as it came; tap_ingress restores it and sends it on.
	ret, back, mark := e.run(t, e.dp.objs.TapIngress, out, e.tap, 0x1)
	if ret != actRedirect {
		t.Fatalf("tap_ingress returned %d, want TC_ACT_REDIRECT", ret)
	}
	if !bytes.Equal(back, in) {
		t.Fatalf("tap_ingress did not restore the frame\n got % x\nwant % x", head(back), head(in))
	}
	if mark != 0x1|testMark {
		t.Fatalf("mark %#x after tap_ingress, want %#x", mark, 0x1|testMark)
	}
}

// TestClientHooks_PassUntouched checks what must pass byte for byte, and which counter says
// why.
func TestClientHooks_PassUntouched(t *testing.T) {
	e := newEnv(t)
	kernel := FlowValue{Mode: ModeKernel, SeqDelta: [2]seqnum.Delta{100, 200}, AckDelta: [2]seqnum.Delta{300, 400}}
	data := seg{seq: 1, ack: 2, flags: flagACK, payload: []byte("x")}
	arp := make([]byte, 28)
	tests := []struct {
		name  string
		v6    bool
		frame func(h Hook) ([]byte, func())
		mark  uint32
		stat  Stat
	}{
		{"written back by the daemon", false, func(h Hook) ([]byte, func()) {
			return e.frame(h, data.pkt()), func() {}
		}, testMark | 0x3, StatPassedMark},
		{"server not intercepted", false, func(h Hook) ([]byte, func()) {
			s := data
			s.src, s.dst = client4, outside4
			if h == HookEgress {
				s = s.reversed()
			}
			return e.frame(h, s.pkt()), func() {}
		}, 0, StatPassedNotIntercepted},
		{"server not intercepted v6", true, func(h Hook) ([]byte, func()) {
			s := data
			s.v6, s.src, s.dst = true, client6, outside6
			if h == HookEgress {
				s = s.reversed()
			}
			return e.frame(h, s.pkt()), func() {}
		}, 0, StatPassedNotIntercepted},
		{"flow of another interface", false, func(h Hook) ([]byte, func()) {
			s := data
			if h == HookEgress {
				s = s.reversed()
			}
			k := keyOf(h, s)
			v := kernel
			v.Ifindex = uint32(e.x + 1000)
			e.dp.Put(k, v)
			return e.frame(h, s.pkt()), func() { e.dp.Delete(k) }
		}, 0, StatPassedOtherIface},
		{"reply of another interface's flow", false, func(h Hook) ([]byte, func()) {
			s := data
			if h == HookEgress {
				s = s.reversed()
			}
			// X is that flow's server side: the tuple seen here, reversed, is the flow.
			k := keyOf(h, s.reversed())
			k = KeyOf(func() (netip.AddrPort, netip.AddrPort) { c, sv := keyOf(h, s).Endpoints(); return sv, c }())
			v := kernel
			v.Ifindex = uint32(e.x + 1000)
			e.dp.Put(k, v)
			return e.frame(h, s.pkt()), func() { e.dp.Delete(k) }
		}, 0, StatPassedReplyElsewhere},
		{"arp", false, func(h Hook) ([]byte, func()) {
			f := e.frame(h, arp)
			binary.BigEndian.PutUint16(f[12:], 0x0806)
			return f, func() {}
		}, 0, StatPassedNotIP},
		{"udp", false, func(h Hook) ([]byte, func()) {
			s := data
			s.proto = 17
			if h == HookEgress {
				s = s.reversed()
			}
			return e.frame(h, s.pkt()), func() {}
		}, 0, StatPassedNotTCP},
		{"icmp echo", false, func(h Hook) ([]byte, func()) {
			p := icmpErr(false, 8, server4, nil)
			return e.frame(h, p), func() {}
		}, 0, StatPassedNotTCP},
		{"icmpv6 echo", true, func(h Hook) ([]byte, func()) {
			p := icmpErr(true, 128, server6, nil)
			return e.frame(h, p), func() {}
		}, 0, StatPassedNotTCP},
	}
	for _, tc := range tests {
		for _, h := range []Hook{HookIngress, HookEgress} {
			t.Run(fmt.Sprintf("%s/%v", tc.name, h), func(t *testing.T) {
				in, done := tc.frame(h)
				defer done()
				before := e.dp.Stats()
				ret, out, mark := e.run(t, e.prog(h), in, e.x, tc.mark)
				if ret != actOK || !bytes.Equal(out, in) {
					t.Fatalf("returned %d, untouched %t; want TC_ACT_OK, untouched", ret, bytes.Equal(out, in))
				}
				if mark != tc.mark&^testMark {
					t.Fatalf("mark %#x, want %#x: only our bit is cleared", mark, tc.mark&^testMark)
				}
				if got := e.dp.Stats()[tc.stat] - before[tc.stat]; got != 1 {
					t.Fatalf("counter %s moved by %d, want 1", tc.stat, got)
				}
			})
		}
	}
}

// TestTapIngress_RefusesBadMetadata: anything on the TAP without valid metadata is dropped.
func TestTapIngress_RefusesBadMetadata(t *testing.T) {
	e := newEnv(t)
	good := e.frame(HookIngress, seg{seq: 1, ack: 2, flags: flagACK}.pkt())
	good[0], good[1] = 0x5e, byte(HookIngress)
	binary.BigEndian.PutUint32(good[2:], uint32(e.x))
	tests := []struct {
		name  string
		edit  func(f []byte)
		stat  Stat
		short bool
	}{
		{"bad magic", func(f []byte) { f[0] = 0x02 }, StatTapDroppedBadMeta, false},
		{"hook 0", func(f []byte) { f[1] = 0 }, StatTapDroppedBadMeta, false},
		{"hook 3", func(f []byte) { f[1] = 3 }, StatTapDroppedBadMeta, false},
		{"unknown interface", func(f []byte) { binary.BigEndian.PutUint32(f[2:], uint32(e.x+1000)) }, StatTapDroppedNoIface, false},
		{"the TAP itself", func(f []byte) { binary.BigEndian.PutUint32(f[2:], uint32(e.tap)) }, StatTapDroppedNoIface, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := bytes.Clone(good)
			tc.edit(f)
			before := e.dp.Stats()
			ret, _, _ := e.run(t, e.dp.objs.TapIngress, f, e.tap, 0)
			if ret != actShot {
				t.Fatalf("tap_ingress returned %d, want TC_ACT_SHOT", ret)
			}
			if got := e.dp.Stats()[tc.stat] - before[tc.stat]; got != 1 {
				t.Fatalf("counter %s moved by %d, want 1", tc.stat, got)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		ret, out, mark := e.run(t, e.dp.objs.TapIngress, bytes.Clone(good), e.tap, 0)
		if ret != actRedirect || mark != testMark || !bytes.Equal(out[:6], e.xmac) {
			t.Fatalf("returned %d, mark %#x, dst % x", ret, mark, out[:6])
		}
	})
}

// TestClientHooks_TrackWindow checks the window state the programs keep, in each sender's own
// sequence space.
func TestClientHooks_TrackWindow(t *testing.T) {
	e := newEnv(t)
	const sdC, sdS = 1000, 50000 // the client's and the server's offsets
	v := FlowValue{Ifindex: uint32(e.x), Mode: ModeKernel}
	v.SetOffsets([2]seqnum.Delta{sdC, sdS})
	v.Window[S2C].Scale, v.Window[S2C].Flags = 7, WindowScale
	c2s := seg{seq: 5000, ack: 9000 + sdS, flags: flagACK, win: 100, payload: make([]byte, 300)}
	k := keyOf(HookIngress, c2s)
	if err := e.dp.Put(k, v); err != nil {
		t.Fatal(err)
	}
	e.run(t, e.prog(HookIngress), e.frame(HookIngress, c2s.pkt()), e.x, 0)
	c2s.seq, c2s.payload = 4000, make([]byte, 10) // old data: end must not go back
	e.run(t, e.prog(HookIngress), e.frame(HookIngress, c2s.pkt()), e.x, 0)
	s2c := seg{seq: 9000, ack: 5300 + sdC, flags: flagACK, win: 200, payload: make([]byte, 1000)}.reversed()
	e.run(t, e.prog(HookEgress), e.frame(HookEgress, s2c.pkt()), e.x, 0)
	got, _, _ := e.dp.Lookup(k)
	want := [2]Window{
		{End: 5300, MaxWin: 100, MaxEnd: 5300 + 200<<7, Flags: WindowEnd | WindowMaxEnd},
		{End: 10000, MaxWin: 200 << 7, MaxEnd: 9000 + 100, Scale: 7, Flags: WindowScale | WindowEnd | WindowMaxEnd},
	}
	if got.Window != want {
		t.Fatalf("window state\n got %+v\nwant %+v", got.Window, want)
	}
	// Put keeps what the kernel wrote, and takes the scale from the daemon.
	v.Window[C2S].Scale, v.Window[C2S].Flags = 3, WindowScale
	if err := e.dp.Put(k, v); err != nil {
		t.Fatal(err)
	}
	again, _, _ := e.dp.Lookup(k)
	want[C2S].Scale, want[C2S].Flags = 3, want[C2S].Flags|WindowScale
	if again.Window != want || again.Packets != got.Packets || again.Bytes != got.Bytes || again.LastSeen != got.LastSeen {
		t.Fatalf("Put lost kernel state:\n got %+v\nwant window %+v packets %v", again, want, got.Packets)
	}
}
