package tcpwindow

import (
	"testing"
	"unsafe"

	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

const (
	syn    = flagSYN
	synack = flagSYN | flagACK
	ack    = flagACK
	finack = flagFIN | flagACK
	rst    = flagRST
	rstack = flagRST | flagACK
)

// handshake tracks a client SYN (isn c, window scale 7), the server's SYN-ACK (isn s, scale 9)
// and the client's ACK, as a test's starting point.
func handshake(t *testing.T, c, s seqnum.Value) *Conn {
	t.Helper()
	var w Conn
	steps := []struct {
		d       int
		seg     Segment
		opening bool
	}{
		{0, Segment{Seq: c, Flags: syn, Window: 64240, Opts: OptWScale | OptSACKPerm, WScale: 7}, true},
		{1, Segment{Seq: s, Ack: c + 1, Flags: synack, Window: 65160, Opts: OptWScale | OptSACKPerm, WScale: 9}, true},
		{0, Segment{Seq: c + 1, Ack: s + 1, Flags: ack, Window: 502}, true},
	}
	for i, st := range steps {
		if v := w.Track(st.d, &st.seg, st.opening); v != Accept {
			t.Fatalf("handshake step %d: %v", i, v)
		}
	}
	return &w
}

func TestSide_LayoutIsTheKernelMapRecord(t *testing.T) {
	var s Side
	if got := unsafe.Sizeof(s); got != 16 {
		t.Fatalf("Side is %d bytes, want 16", got)
	}
	offs := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"End", unsafe.Offsetof(s.End), 0},
		{"MaxEnd", unsafe.Offsetof(s.MaxEnd), 4},
		{"MaxWin", unsafe.Offsetof(s.MaxWin), 8},
		{"Scale", unsafe.Offsetof(s.Scale), 12},
		{"Flags", unsafe.Offsetof(s.Flags), 13},
	}
	for _, o := range offs {
		if o.got != o.want {
			t.Errorf("offset of %s = %d, want %d", o.name, o.got, o.want)
		}
	}
	if got := unsafe.Sizeof(Conn{}); got != 32 {
		t.Errorf("Conn is %d bytes, want 32", got)
	}
}

func TestTrack_HandshakeLearnsScaleAndAssuresOnlyAfterBothAck(t *testing.T) {
	var c, s seqnum.Value = 0xfffffff0, 1000 // the client's sequence space wraps during the test
	w := handshake(t, c, s)
	cs, ss := w.Load(0), w.Load(1)
	if cs.Scale != 7 || ss.Scale != 9 {
		t.Errorf("scales %d/%d, want 7/9", cs.Scale, ss.Scale)
	}
	if cs.End != c+1 || ss.End != s+1 {
		t.Errorf("ends %#x/%d, want %#x/%d", cs.End, ss.End, c+1, s+1)
	}
	if want := s + 1 + 502<<7; ss.MaxEnd != want {
		t.Errorf("server MaxEnd %d, want ack + 502<<7 = %d", ss.MaxEnd, want)
	}
	if w.Assured() {
		t.Fatal("assured after the handshake alone: the server has sent nothing but its SYN-ACK")
	}
	// The client's request, then the server's ACK of it: now each side has had something
	// acknowledged outside a SYN.
	if v := w.Track(0, &Segment{Seq: c + 1, Ack: s + 1, Flags: ack, Len: 100, Window: 502}, false); v != Accept {
		t.Fatalf("request: %v", v)
	}
	if v := w.Track(1, &Segment{Seq: s + 1, Ack: c + 101, Flags: ack, Window: 128}, false); v != Accept {
		t.Fatalf("server ACK: %v", v)
	}
	if !w.Assured() {
		t.Fatal("not assured after both sides acknowledged data")
	}
}

func TestTrack_ScalingNeedsBothSYNs(t *testing.T) {
	var w Conn
	w.Track(0, &Segment{Seq: 1, Flags: syn, Window: 1000, Opts: OptWScale, WScale: 7}, true)
	w.Track(1, &Segment{Seq: 500, Ack: 2, Flags: synack, Window: 1000}, true)
	if a, b := w.Load(0).Scale, w.Load(1).Scale; a != 0 || b != 0 {
		t.Fatalf("scales %d/%d after a SYN-ACK without the option, want 0/0", a, b)
	}
}

// TestTrack_Rules is one row per acceptance rule, each on a fresh connection after the
// handshake of client ISN 1000, server ISN 5000000, plus 100 bytes from the client acknowledged.
func TestTrack_Rules(t *testing.T) {
	var c, s seqnum.Value = 1000, 5000000
	setup := func(t *testing.T) *Conn {
		w := handshake(t, c, s)
		w.Track(0, &Segment{Seq: c + 1, Ack: s + 1, Flags: ack, Len: 100, Window: 502}, false)
		w.Track(1, &Segment{Seq: s + 1, Ack: c + 101, Flags: ack, Window: 128}, false)
		return w
	}
	// Client end c+101; the server's window is 128<<9 = 65536; the client's 502<<7 = 64256.
	cases := []struct {
		name    string
		d       int
		seg     Segment
		opening bool
		want    Verdict
	}{
		{"next data in window", 0, Segment{Seq: c + 101, Ack: s + 1, Flags: ack, Len: 1000}, false, Accept},
		{"data at the right edge", 0, Segment{Seq: c + 101 + 65536, Ack: s + 1, Flags: ack}, false, Accept},
		{"data beyond the window", 0, Segment{Seq: c + 101 + 65537, Ack: s + 1, Flags: ack, Len: 10}, false, DropSeqAhead},
		{"retransmission of acked data", 0, Segment{Seq: c + 1, Ack: s + 1, Flags: ack, Len: 100}, false, Accept},
		{"data more than a window old", 0, Segment{Seq: c - 80000, Ack: s + 1, Flags: ack, Len: 100}, false, DropSeqBehind},
		{"ack of data never sent", 1, Segment{Seq: s + 1, Ack: c + 102, Flags: ack}, false, DropAckAhead},
		{"ack far in the past", 1, Segment{Seq: s + 1, Ack: c - 70000, Flags: ack}, false, DropAckBehind},
		{"SACK edge beyond what was sent", 1, Segment{Seq: s + 1, Ack: c + 1, Flags: ack, Opts: OptSACK, SACK: c + 200}, false, DropAckAhead},
		{"keep-alive (seq one below)", 0, Segment{Seq: c + 100, Ack: s + 1, Flags: ack}, false, Accept},
		{"exact RST closes", 0, Segment{Seq: c + 101, Flags: rst}, false, Accept},
		{"exact RST|ACK with ack 0 closes", 0, Segment{Seq: c + 101, Flags: rstack}, false, Accept},
		{"RST in window, not exact", 0, Segment{Seq: c + 5000, Flags: rst}, false, RSTInWindow},
		{"RST beyond the window", 0, Segment{Seq: c + 101 + 70000, Flags: rst}, false, DropRST},
		{"RST far behind", 0, Segment{Seq: c - 1000000, Flags: rst}, false, DropRST},
		{"server RST exact", 1, Segment{Seq: s + 1, Flags: rst}, false, Accept},
		{"SYN on a live connection", 0, Segment{Seq: 777, Flags: syn}, false, SYNOnLive},
		{"SYN-ACK on a live connection", 1, Segment{Seq: 777, Ack: c + 101, Flags: synack}, false, SYNOnLive},
		{"FIN in window", 0, Segment{Seq: c + 101, Ack: s + 1, Flags: finack}, false, Accept},
		{"FIN acking the future", 0, Segment{Seq: c + 101, Ack: s + 100, Flags: finack}, false, DropAckAhead},
		{"FIN beyond the window", 0, Segment{Seq: c + 200000, Ack: s + 1, Flags: finack}, false, DropSeqAhead},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := setup(t)
			before := [2]Side{w.Load(0), w.Load(1)}
			got := w.Track(tc.d, &tc.seg, tc.opening)
			if got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
			if got != Accept {
				if after := [2]Side{w.Load(0), w.Load(1)}; after != before {
					t.Errorf("a %v segment changed the record:\n before %+v\n after  %+v", got, before, after)
				}
			}
		})
	}
}

func TestTrack_HandshakeRules(t *testing.T) {
	const c, s = 1000, 5000000
	synSeg := Segment{Seq: c, Flags: syn, Window: 64240}
	cases := []struct {
		name string
		run  func(w *Conn) Verdict
		want Verdict
	}{
		{"SYN retransmission", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(0, &synSeg, true)
		}, Accept},
		{"SYN-ACK acking the SYN", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Seq: s, Ack: c + 1, Flags: synack, Window: 100}, true)
		}, Accept},
		{"SYN-ACK acking something else", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Seq: s, Ack: c + 2, Flags: synack, Window: 100}, true)
		}, DropSYNACK},
		{"RST answering the SYN (seq 0, acks it)", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Ack: c + 1, Flags: rstack}, true)
		}, Accept},
		{"RST answering the SYN with a wrong ack", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Ack: c + 7, Flags: rstack}, true)
		}, DropRST},
		{"blind RST without ACK to a SYN", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Seq: 12345, Flags: rst}, true)
		}, DropRST},
		{"Fast Open: SYN-ACK declining the SYN's data", func(w *Conn) Verdict {
			w.Track(0, &Segment{Seq: c, Flags: syn, Len: 100, Window: 64240}, true)
			return w.Track(1, &Segment{Seq: s, Ack: c + 1, Flags: synack, Window: 100}, true)
		}, Accept},
		{"Fast Open: SYN-ACK taking the SYN's data", func(w *Conn) Verdict {
			w.Track(0, &Segment{Seq: c, Flags: syn, Len: 100, Window: 64240}, true)
			return w.Track(1, &Segment{Seq: s, Ack: c + 101, Flags: synack, Window: 100}, true)
		}, Accept},
		{"simultaneous open: the other SYN", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			return w.Track(1, &Segment{Seq: s, Flags: syn, Window: 100}, true)
		}, Accept},
		{"simultaneous open: both SYN-ACKs", func(w *Conn) Verdict {
			w.Track(0, &synSeg, true)
			w.Track(1, &Segment{Seq: s, Flags: syn, Window: 100}, true)
			if v := w.Track(0, &Segment{Seq: c, Ack: s + 1, Flags: synack, Window: 100}, true); v != Accept {
				return v
			}
			return w.Track(1, &Segment{Seq: s, Ack: c + 1, Flags: synack, Window: 100}, true)
		}, Accept},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w Conn
			if got := tc.run(&w); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTrack_PickUpIsLiberalButRSTMustBeExact(t *testing.T) {
	var w Conn
	// A segment from the client side of a connection whose SYNs were never seen.
	if v := w.Track(0, &Segment{Seq: 1 << 31, Ack: 42, Flags: ack, Len: 10, Window: 100}, false); v != Accept {
		t.Fatalf("first segment: %v", v)
	}
	if r := w.Load(1); r.Flags&FlagInferred == 0 || r.End != 42 {
		t.Fatalf("server side not inferred from the ack: %+v", r)
	}
	// The server has no such connection and answers with RST seq = SEG.ACK: exact.
	if v := w.Track(1, &Segment{Seq: 42, Flags: rst}, false); v != Accept {
		t.Errorf("the server's RST for a junk pick-up: %v, want accept", v)
	}
	if v := w.Track(1, &Segment{Seq: 9999, Flags: rst}, false); v.ChangesState() {
		t.Errorf("a blind RST from the unseen side changes state: %v", v)
	}
	if w.Assured() {
		t.Error("a flow only one side of which was seen is assured")
	}
	// Data far beyond the unscaled window of a pick-up passes (the scale is unknown).
	w.Track(1, &Segment{Seq: 42, Ack: 1<<31 + 10, Flags: ack, Window: 10}, false)
	if v := w.Track(0, &Segment{Seq: 1<<31 + 10 + 100000, Ack: 42, Flags: ack, Len: 10, Window: 100}, false); v != Accept {
		t.Errorf("data beyond an unscaled pick-up window: %v, want accept", v)
	}
	if v := w.Track(0, &Segment{Seq: 1<<31 + 10, Ack: 4242424, Flags: finack}, false); v.ChangesState() {
		t.Errorf("a FIN acknowledging data never sent changes state on a pick-up: %v", v)
	}
}

func TestVerdict_NamesAndActions(t *testing.T) {
	seen := map[string]bool{}
	for v := range NumVerdicts {
		n := v.String()
		if n == "" || n == "unknown" || seen[n] {
			t.Errorf("verdict %d has name %q", v, n)
		}
		seen[n] = true
		if v.ChangesState() && !v.Forward() {
			t.Errorf("%v changes state but is dropped", v)
		}
	}
	if !Restart.Forward() || RSTInWindow.ChangesState() || SYNOnLive.ChangesState() || DropRST.Forward() {
		t.Error("actions of the RFC 5961 verdicts are wrong")
	}
}

func TestSegment_ReadOptions(t *testing.T) {
	hdr := make([]byte, 40)
	hdr[12] = 10 << 4
	hdr[13] = synack
	hdr[14], hdr[15] = 0x12, 0x34
	copy(hdr[20:], []byte{1, 3, 3, 20, 4, 2, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0})
	var s Segment
	if !s.Read(hdr, 5) {
		t.Fatal("Read refused a 40-byte header")
	}
	if s.Window != 0x1234 || s.Flags != synack || s.Len != 5 {
		t.Errorf("fields %+v", s)
	}
	if s.Opts != OptWScale|OptSACKPerm|OptSACK || s.WScale != 14 || s.SACK != 9 {
		t.Errorf("options %+v: want wscale capped to 14, SACK-permitted, SACK right edge 9", s)
	}
	if s.Read(hdr[:19], 0) {
		t.Error("Read accepted a 19-byte header")
	}
}

func BenchmarkTrack_DataSegment(b *testing.B) {
	var w Conn
	w.Track(0, &Segment{Seq: 1, Flags: syn, Window: 65535, Opts: OptWScale, WScale: 7}, true)
	w.Track(1, &Segment{Seq: 1000, Ack: 2, Flags: synack, Window: 65535, Opts: OptWScale, WScale: 7}, true)
	seg := Segment{Seq: 2, Ack: 1001, Flags: ack, Len: 1448, Window: 1000}
	back := Segment{Seq: 1001, Flags: ack, Window: 1000}
	b.ReportAllocs()
	for b.Loop() {
		if w.Track(0, &seg, false) != Accept {
			b.Fatal("not accepted")
		}
		seg.Seq += 1448
		back.Ack = seg.Seq
		w.Track(1, &back, false)
	}
}

// TestSegment_ReadFromClassifiedPacket reads a segment the way the datapath will: Classify,
// then the TCP header it located.
func TestSegment_ReadFromClassifiedPacket(t *testing.T) {
	pkt := []byte{
		0x45, 0, 0, 20 + 32 + 3, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1, // IPv4
		0x9c, 0x40, 0x01, 0xbb, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x80, syn, 0xfa, 0xf0, 0, 0, 0, 0, // TCP
		1, 3, 3, 7, 1, 1, 4, 2, 0, 0, 0, 0, // NOP, wscale 7, NOP, NOP, SACK-permitted, EOL
		'a', 'b', 'c', // Fast Open data
	}
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	if p.Kind != rewrite.KindTCP {
		t.Fatalf("classified as %v (%v)", p.Kind, p.Reason)
	}
	var s Segment
	if !s.Read(p.TCPHeader(pkt), p.PayloadLen) {
		t.Fatal("Read refused the classified header")
	}
	want := Segment{Seq: 0x1000, Flags: syn, Len: 3, Window: 0xfaf0, Opts: OptWScale | OptSACKPerm, WScale: 7}
	if s != want {
		t.Fatalf("segment %+v, want %+v", s, want)
	}
}
