package flowtable

import (
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// conn drives a connection through a flow with real numbers, as the datapath would hand them
// to Track: before the shift, so a c2s segment's ack is in the client's view of the server's
// space (server + offS) and an s2c segment's ack in the server's view of the client's.
type conn struct {
	t          *testing.T
	f          *Flow
	c, s       seqnum.Value // next sequence number of client and server (their own spaces)
	offC, offS seqnum.Delta
}

const (
	cISN = 0xfffff000 // wraps during the tests
	sISN = 7000
)

// newConn admits a flow with offsets 1000 (client) and 2000000 (server) and tracks the SYN.
func newConn(t *testing.T, tab *Table) *conn {
	t.Helper()
	f, err := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{ClientOffset: 1000, Server: ServerPlan{Value: 2000000}, ClientISN: cISN})
	if err != nil {
		t.Fatal(err)
	}
	k := &conn{t: t, f: f, c: cISN, s: sISN, offC: 1000, offS: 2000000}
	k.want(k.send(c2s, tcpwindow.Segment{Seq: cISN, Flags: FlagSYN, Window: 64240, Opts: tcpwindow.OptWScale, WScale: 7}), tcpwindow.Accept)
	k.c++
	return k
}

func (k *conn) send(d Dir, seg tcpwindow.Segment) tcpwindow.Verdict {
	k.t.Helper()
	return k.f.Track(d, &seg)
}

func (k *conn) want(got, want tcpwindow.Verdict) {
	k.t.Helper()
	if got != want {
		k.t.Fatalf("verdict %v, want %v (state %v)", got, want, k.f.State())
	}
}

// fromClient is a segment from the client with its current numbers and the given payload.
func (k *conn) fromClient(flags uint8, n seqnum.Size) tcpwindow.Segment {
	return tcpwindow.Segment{Seq: k.c, Ack: k.s.Add(k.offS), Flags: flags, Len: n, Window: 500}
}

func (k *conn) fromServer(flags uint8, n seqnum.Size) tcpwindow.Segment {
	return tcpwindow.Segment{Seq: k.s, Ack: k.c.Add(k.offC), Flags: flags, Len: n, Window: 500}
}

// establish completes the handshake and exchanges one request and response, so that the flow
// is assured.
func (k *conn) establish() {
	k.t.Helper()
	k.want(k.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k.c.Add(k.offC), Flags: FlagSYN | FlagACK, Window: 65160, Opts: tcpwindow.OptWScale, WScale: 9}), tcpwindow.Accept)
	k.s++
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
	k.want(k.send(c2s, k.fromClient(FlagACK, 100)), tcpwindow.Accept)
	k.c += 100
	k.want(k.send(s2c, k.fromServer(FlagACK, 300)), tcpwindow.Accept)
	k.s += 300
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
	if !k.f.Assured() || k.f.State() != StateEstablished {
		k.t.Fatalf("after a request and a response: %v assured %v", k.f.State(), k.f.Assured())
	}
}

func TestTrack_BlindSegmentsChangeNoState(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.establish()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		var seg tcpwindow.Segment
		d := Dir(i & 1)
		switch i % 4 {
		case 0: // RST with any sequence number but the exact one
			seg = tcpwindow.Segment{Seq: seqnum.Value(rng.Uint32()), Flags: FlagRST}
			if seg.Seq == k.c || seg.Seq == k.s {
				continue
			}
		case 1: // SYN on the live tuple
			seg = tcpwindow.Segment{Seq: seqnum.Value(rng.Uint32()), Flags: FlagSYN, Window: 1000}
		case 2: // SYN-ACK "restart" acknowledging a guess
			seg = tcpwindow.Segment{Seq: seqnum.Value(rng.Uint32()), Ack: seqnum.Value(rng.Uint32()), Flags: FlagSYN | FlagACK, Window: 1000}
		case 3: // FIN|ACK with guessed numbers
			seg = tcpwindow.Segment{Seq: seqnum.Value(rng.Uint32()), Ack: seqnum.Value(rng.Uint32()), Flags: FlagFIN | FlagACK, Window: 1000}
		}
		v := k.f.Track(d, &seg)
		if v == tcpwindow.Accept || v == tcpwindow.Restart {
			// Only an in-window guess may be taken; with random numbers over 2^32 that is
			// about one in 2^16 for a FIN (window and ack both), far rarer here.
			t.Fatalf("blind %+v from %v: %v", seg, d, v)
		}
		if k.f.State() != StateEstablished || k.f.Offset(c2s) != 1000 || k.f.Offset(s2c) != 2000000 {
			t.Fatalf("blind %+v (%v) changed the flow: %v offsets %d/%d", seg, v, k.f.State(), k.f.Offset(c2s), k.f.Offset(s2c))
		}
	}
	// The genuine connection goes on.
	k.want(k.send(c2s, k.fromClient(FlagACK, 10)), tcpwindow.Accept)
}

func TestTrack_RSTRules(t *testing.T) {
	cases := []struct {
		name      string
		d         Dir
		seq       func(k *conn) seqnum.Value
		want      tcpwindow.Verdict
		wantState State
	}{
		{"exact from the client closes", c2s, func(k *conn) seqnum.Value { return k.c }, tcpwindow.Accept, StateClose},
		{"exact from the server closes", s2c, func(k *conn) seqnum.Value { return k.s }, tcpwindow.Accept, StateClose},
		{"in window, not exact: challenge ACK, no close", c2s, func(k *conn) seqnum.Value { return k.c + 1000 }, tcpwindow.RSTInWindow, StateEstablished},
		{"out of window: dropped", c2s, func(k *conn) seqnum.Value { return k.c + 1<<30 }, tcpwindow.DropRST, StateEstablished},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
			k := newConn(t, tab)
			k.establish()
			k.want(k.send(tc.d, tcpwindow.Segment{Seq: tc.seq(k), Flags: FlagRST}), tc.want)
			if k.f.State() != tc.wantState {
				t.Fatalf("state %v, want %v", k.f.State(), tc.wantState)
			}
		})
	}
}

func TestTrack_FINsCloseOnlyWhenAcknowledged(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.establish()
	// Forged FIN|ACKs: beyond the window, acknowledging the future, behind sent data.
	for _, seg := range []tcpwindow.Segment{
		{Seq: k.c + 1<<20, Ack: k.s.Add(k.offS), Flags: FlagFIN | FlagACK},
		{Seq: k.c, Ack: k.s.Add(k.offS) + 5000, Flags: FlagFIN | FlagACK},
		{Seq: k.c - 50, Ack: k.s.Add(k.offS), Flags: FlagFIN | FlagACK},
	} {
		if v := k.f.Track(c2s, &seg); v.ChangesState() || k.f.State() != StateEstablished {
			t.Fatalf("forged %+v: %v, state %v", seg, v, k.f.State())
		}
	}
	k.want(k.send(c2s, k.fromClient(FlagFIN|FlagACK, 0)), tcpwindow.Accept)
	k.c++
	if k.f.State() != StateFinWait {
		t.Fatalf("after the client's FIN: %v", k.f.State())
	}
	// An ACK from the server that does not cover the FIN leaves fin_wait.
	seg := k.fromServer(FlagACK, 0)
	seg.Ack--
	k.want(k.send(s2c, seg), tcpwindow.Accept)
	if k.f.State() != StateFinWait {
		t.Fatalf("an ACK short of the FIN moved to %v", k.f.State())
	}
	k.want(k.send(s2c, k.fromServer(FlagACK, 0)), tcpwindow.Accept)
	if k.f.State() != StateCloseWait {
		t.Fatalf("after the FIN's ACK: %v", k.f.State())
	}
	k.want(k.send(s2c, k.fromServer(FlagFIN|FlagACK, 0)), tcpwindow.Accept)
	k.s++
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
	if k.f.State() != StateTimeWait {
		t.Fatalf("after both FINs acknowledged: %v", k.f.State())
	}
}

func TestTrack_SYNOnLiveThenRestart(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.establish()
	const newISN = 99
	if k.f.NewConnection(c2s, newISN) {
		t.Fatal("a SYN on an established flow taken as a new connection")
	}
	k.want(k.send(c2s, tcpwindow.Segment{Seq: newISN, Flags: FlagSYN, Window: 1000}), tcpwindow.SYNOnLive)
	// A SYN-ACK that does not acknowledge that SYN is no restart.
	k.want(k.send(s2c, tcpwindow.Segment{Seq: 5, Ack: seqnum.Value(newISN + 2).Add(k.offC), Flags: FlagSYN | FlagACK}), tcpwindow.SYNOnLive)
	if k.f.State() != StateEstablished || k.f.removed() {
		t.Fatal("a forged SYN-ACK changed the flow")
	}
	synack := tcpwindow.Segment{Seq: 5, Ack: seqnum.Value(newISN + 1).Add(k.offC), Flags: FlagSYN | FlagACK, Window: 1000}
	k.want(k.send(s2c, synack), tcpwindow.Restart)
	nf, err := tab.Restart(k.f, Init{ClientOffset: k.offC, Server: ServerPlan{Absolute: true, Value: 1 << 31}})
	if err != nil {
		t.Fatal(err)
	}
	if !k.f.removed() || nf.ClientISN() != newISN || nf.State() != StateSynSent {
		t.Fatalf("restart: old removed %v, new ISN %d state %v", k.f.removed(), nf.ClientISN(), nf.State())
	}
	if v := nf.Track(s2c, &synack); v != tcpwindow.Accept {
		t.Fatalf("the SYN-ACK on the restarted flow: %v", v)
	}
	if nf.State() != StateSynRecv || nf.Offset(s2c) != 1<<31-5 {
		t.Fatalf("restarted flow %v, server offset %d", nf.State(), nf.Offset(s2c))
	}
}

func TestTrack_SimultaneousOpen(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
	a, b := ap("198.18.0.1:5000"), ap("198.19.0.1:6000")
	f, err := tab.Admit(a, b, Init{ClientOffset: 10, Server: ServerPlan{Absolute: true, Value: 1000000}, ClientISN: 100})
	if err != nil {
		t.Fatal(err)
	}
	track := func(d Dir, seg tcpwindow.Segment, want tcpwindow.Verdict, st State) {
		t.Helper()
		if v := f.Track(d, &seg); v != want || f.State() != st {
			t.Fatalf("%v %+v: %v in %v, want %v in %v", d, seg, v, f.State(), want, st)
		}
	}
	track(c2s, tcpwindow.Segment{Seq: 100, Flags: FlagSYN, Window: 1000}, tcpwindow.Accept, StateSynSent)
	// B's own SYN crosses A's: the same connection, not a new one with the roles swapped.
	if f.NewConnection(s2c, 5000) {
		t.Fatal("the other side's SYN in syn_sent taken as a new connection")
	}
	if g, dir, _ := tab.Lookup(b, a); g != f || dir != s2c {
		t.Fatal("lookup from B")
	}
	track(s2c, tcpwindow.Segment{Seq: 5000, Flags: FlagSYN, Window: 1000}, tcpwindow.Accept, StateSynRecv)
	if f.Offset(s2c) != 1000000-5000 {
		t.Fatalf("B's ISN not resolved from its SYN: offset %d", f.Offset(s2c))
	}
	// Both answer with SYN-ACKs (acks as on the wire before the shift).
	track(c2s, tcpwindow.Segment{Seq: 100, Ack: 1000000 + 1, Flags: FlagSYN | FlagACK, Window: 1000}, tcpwindow.Accept, StateSynRecv)
	track(s2c, tcpwindow.Segment{Seq: 5000, Ack: 101 + 10, Flags: FlagSYN | FlagACK, Window: 1000}, tcpwindow.Accept, StateSynRecv)
	track(c2s, tcpwindow.Segment{Seq: 101, Ack: 1000000 + 1, Flags: FlagACK, Window: 1000}, tcpwindow.Accept, StateEstablished)
	track(s2c, tcpwindow.Segment{Seq: 5001, Ack: 101 + 10, Flags: FlagACK, Window: 1000}, tcpwindow.Accept, StateEstablished)
	if !f.Assured() {
		t.Fatal("not assured after both sides acknowledged the other's SYN in ACKs")
	}
	if st := tab.Stats(); st.Created != 1 || st.Replaced != 0 {
		t.Fatalf("stats %+v: the flow was replaced", st)
	}
}

// TestAssured_BlindHandshakeStaysUnassured is issue 11's first attack: a spoofed SYN, the
// server's SYN-ACK, and an ACK that dies after the gateway. The flow is established but
// unassured: evicted before a closing flow, and gone after the unassured timeout.
func TestAssured_BlindHandshakeStaysUnassured(t *testing.T) {
	tab, clk, rm := newTestTable(t, Config{MaxFlows: 3})
	k := newConn(t, tab)
	k.want(k.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k.c.Add(k.offC), Flags: FlagSYN | FlagACK, Window: 65160}), tcpwindow.Accept)
	k.s++
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
	k.want(k.send(c2s, k.fromClient(FlagACK, 50)), tcpwindow.Accept) // and data, which the server never gets
	if k.f.State() != StateEstablished || k.f.Assured() || tab.Stats().Unassured != 1 {
		t.Fatalf("junk flow: %v assured %v stats %+v", k.f.State(), k.f.Assured(), tab.Stats())
	}
	// A real connection that closed, and a live one.
	closing, _ := tab.Admit(ap("198.18.0.2:1"), ap("198.19.0.1:443"), Init{})
	handshake(closing)
	closing.Observe(c2s, FlagRST, 0)
	live, _ := tab.Admit(ap("198.18.0.3:1"), ap("198.19.0.1:443"), Init{})
	handshake(live)
	if _, err := tab.Admit(ap("198.18.0.4:1"), ap("198.19.0.1:443"), Init{}); err != nil {
		t.Fatal(err)
	}
	if got := rm.list(); len(got) != 1 || got[0] != k.f {
		t.Fatalf("evicted %v, want the unassured flow first", got)
	}
	// And the unassured timeout, on a table with room.
	tab2, clk2, _ := newTestTable(t, Config{MaxFlows: 8})
	k2 := newConn(t, tab2)
	k2.want(k2.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k2.c.Add(k2.offC), Flags: FlagSYN | FlagACK, Window: 65160}), tcpwindow.Accept)
	k2.s++
	k2.want(k2.send(c2s, k2.fromClient(FlagACK, 0)), tcpwindow.Accept)
	clk2.Advance(DefaultTimeouts().Unassured - time.Second)
	tab2.expireAll()
	if k2.f.removed() {
		t.Fatal("expired before the unassured timeout")
	}
	clk2.Advance(2 * time.Second)
	tab2.expireAll()
	if !k2.f.removed() {
		t.Fatal("an unassured established flow survived the unassured timeout")
	}
	_ = clk
}

func TestSnapshot_KeepsWindowsAndAssured(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.establish()
	junk, _ := tab.Adopt(ap("198.18.0.9:9"), ap("198.19.0.1:443"), Init{})
	path := filepath.Join(t.TempDir(), "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}
	tab2 := New(Config{MaxFlows: 8, Clock: clk})
	if n, err := tab2.Restore(path); n != 2 || err != nil {
		t.Fatalf("Restore = %d, %v", n, err)
	}
	f, _, _ := tab2.Lookup(k.f.Client(), k.f.Server())
	// The edges come back as they were, judged liberally: the connection went on while the
	// daemon was down, so its next segments may lie beyond them.
	liberal := func(s tcpwindow.Side) tcpwindow.Side { s.Flags |= tcpwindow.FlagLiberal; return s }
	if !f.Assured() || f.Window(c2s) != liberal(k.f.Window(c2s)) || f.Window(s2c) != liberal(k.f.Window(s2c)) {
		t.Fatalf("restored %v assured %v windows %+v %+v, want %+v %+v", f, f.Assured(), f.Window(c2s), f.Window(s2c), liberal(k.f.Window(c2s)), liberal(k.f.Window(s2c)))
	}
	if j, _, _ := tab2.Lookup(junk.Client(), junk.Server()); j.Assured() || tab2.Stats().Unassured != 1 {
		t.Fatal("an unassured flow came back assured")
	}
	// The restored flow goes on with its numbers: a blind RST still does nothing.
	k.f = f
	k.want(k.send(c2s, tcpwindow.Segment{Seq: k.c + 5, Flags: FlagRST}), tcpwindow.RSTInWindow)
	k.want(k.send(c2s, k.fromClient(FlagACK, 10)), tcpwindow.Accept)
}

// TestRestore_ReadsVersion1 reads a version-1 file (no windows, no assured byte): its
// synchronised flows come back assured, with windows to be learned.
func TestRestore_ReadsVersion1(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8})
	est, _ := tab.Admit(ap("198.18.0.1:1"), ap("198.19.0.1:443"), Init{ClientOffset: 3})
	handshake(est)
	tab.Admit(ap("198.18.0.2:1"), ap("198.19.0.1:443"), Init{})
	path := filepath.Join(t.TempDir(), "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}
	v2, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, toVersion1(t, v2), 0o600); err != nil {
		t.Fatal(err)
	}
	tab2 := New(Config{MaxFlows: 8, Clock: clk})
	if n, err := tab2.Restore(path); n != 2 || err != nil {
		t.Fatalf("Restore v1 = %d, %v", n, err)
	}
	f, _, _ := tab2.Lookup(est.Client(), est.Server())
	if f.Offset(c2s) != 3 || !f.Assured() || f.Window(c2s).Seen() {
		t.Fatalf("v1 established flow: offset %d assured %v window %+v", f.Offset(c2s), f.Assured(), f.Window(c2s))
	}
	if st := tab2.Stats(); st.Unassured != 1 {
		t.Fatalf("v1 embryonic flow should be unassured: %+v", st)
	}
	// Its windows are learned as on a pick-up.
	if v := f.Track(c2s, &tcpwindow.Segment{Seq: 500, Ack: 900, Flags: FlagACK, Len: 10, Window: 100}); v != tcpwindow.Accept {
		t.Fatalf("first segment after a v1 restore: %v", v)
	}
}

// toVersion1 rewrites a version-2 snapshot as version 1: the same records without the
// assured byte and the windows, a new trailer.
func toVersion1(t testing.TB, b []byte) []byte {
	t.Helper()
	out := append([]byte(nil), b[:headerLen]...)
	out[8] = 1
	b = b[headerLen:]
	n := 0
	for b[0] == tagRecord {
		fixed := b[:1+recordLenV1-1-2]
		rest := b[1+recordLenV1-1-2+windowLen:]
		nameLen := int(rest[0]) | int(rest[1])<<8
		out = append(out, fixed...)
		out = append(out, rest[:2+nameLen]...)
		b = rest[2+nameLen:]
		n++
	}
	out = append(out, tagEnd)
	out = append(out, byte(n), 0, 0, 0, 0, 0, 0, 0)
	crc := crc32Castagnoli(out)
	return append(out, byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24))
}

func BenchmarkTrack(b *testing.B) {
	tab := New(Config{MaxFlows: 8})
	f, _ := tab.Admit(ap("198.18.0.1:1"), ap("198.19.0.1:443"), Init{ClientOffset: 1, Server: ServerPlan{Value: 2}})
	f.Track(c2s, &tcpwindow.Segment{Seq: 1, Flags: FlagSYN, Window: 65535, Opts: tcpwindow.OptWScale, WScale: 7})
	f.Track(s2c, &tcpwindow.Segment{Seq: 1000, Ack: 2 + 1, Flags: FlagSYN | FlagACK, Window: 65535, Opts: tcpwindow.OptWScale, WScale: 7})
	seg := tcpwindow.Segment{Seq: 2, Ack: 1001 + 2, Flags: FlagACK, Len: 1448, Window: 1000}
	b.ReportAllocs()
	for b.Loop() {
		if f.Track(c2s, &seg) != tcpwindow.Accept {
			b.Fatal("not accepted")
		}
		seg.Seq += 1448
		f.Track(s2c, &tcpwindow.Segment{Seq: 1001, Ack: seg.Seq + 1, Flags: FlagACK, Window: 1000})
	}
}

func crc32Castagnoli(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// TestTrack_BlindSegmentsKeepNoFlowAlive: SYNs and out-of-window segments on an unassured
// flow do not restart its idle time, so junk cannot be kept alive by more junk.
func TestTrack_BlindSegmentsKeepNoFlowAlive(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.want(k.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k.c.Add(k.offC), Flags: FlagSYN | FlagACK, Window: 65160}), tcpwindow.Accept)
	k.s++
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
	for range 10 {
		clk.Advance(time.Minute)
		tab.tick()
		k.want(k.send(c2s, tcpwindow.Segment{Seq: 12345, Flags: FlagSYN, Window: 1000}), tcpwindow.SYNOnLive)
		k.want(k.send(c2s, tcpwindow.Segment{Seq: k.c + 1<<30, Ack: k.s.Add(k.offS), Flags: FlagACK, Len: 10}), tcpwindow.DropSeqAhead)
		tab.expireAll()
	}
	if !k.f.removed() {
		t.Fatal("an unassured flow fed only blind segments for 10 minutes is still there")
	}
	if c := k.f.Counters(c2s); c.Packets != 2+10 {
		t.Errorf("c2s packets %d, want the 2 handshake segments and the 10 forwarded SYNs", c.Packets)
	}
}

// TestAckedInKernel_AssuresOnlyAFlowWhoseClientAckedTheServer: with the kernel datapath the
// daemon sees the handshake only; the server's acknowledgements of the client's data go
// through the programs, which report them (AckedInKernel). A flow whose handshake was completed
// by a blind third ACK is assured by that report alone only if the server's SYN was acked too,
// and an embryonic flow never.
func TestAckedInKernel_AssuresOnlyAFlowWhoseClientAckedTheServer(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
	k := newConn(t, tab)
	k.f.AckedInKernel(c2s)
	if k.f.Assured() || tab.Stats().Unassured != 1 {
		t.Fatalf("a flow in syn_sent was assured by a kernel report (unassured gauge %d)", tab.Stats().Unassured)
	}
	k.want(k.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k.c.Add(k.offC), Flags: FlagSYN | FlagACK, Window: 65160, Opts: tcpwindow.OptWScale, WScale: 9}), tcpwindow.Accept)
	k.s++
	k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept) // the third ACK: the server's SYN is acked
	if k.f.Assured() {
		t.Fatal("assured at the third ACK, before the server acknowledged anything")
	}
	k.f.AckedInKernel(c2s)
	if !k.f.Assured() || tab.Stats().Unassured != 0 {
		t.Fatalf("after the kernel reported the server's acks: assured %v, unassured gauge %d", k.f.Assured(), tab.Stats().Unassured)
	}
	k.f.AckedInKernel(c2s) // idempotent: the gauge moves once
	if tab.Stats().Unassured != 0 {
		t.Fatalf("unassured gauge %d after a second report", tab.Stats().Unassured)
	}
}

// TestConfirm_APickUpOfAConnectionForwardedUnshiftedStaysUnshifted: a flow picked up from a
// client segment is confirmed by the server's first acknowledgement. Acknowledging the client's
// number plus the offset means the connection was being shifted (offsets kept); acknowledging
// the raw number means it was forwarded unshifted all along (offsets zeroed). A segment the
// probe's own way decides nothing.
func TestConfirm_APickUpOfAConnectionForwardedUnshiftedStaysUnshifted(t *testing.T) {
	const seq uint32 = 0xfffffff0 // wraps: distances are taken modulo 2^32
	for _, tc := range []struct {
		name      string
		ack       uint32 // as the server sends it
		unshifted bool
	}{
		{"shifted: the server acks the shifted number", wrapAdd(seq, 1000+20), false},
		{"unshifted: the server acks the raw number", wrapAdd(seq, 20), true},
		{"unshifted: the server lags behind the raw number", seq - 3000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
			f, err := tab.Adopt(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{ClientOffset: 1000, Server: ServerPlan{Value: 2000000}})
			if err != nil {
				t.Fatal(err)
			}
			if ok, _ := f.Confirm(c2s, 1); !ok || f.Unconfirmed() {
				t.Fatal("a flow never probed is not confirmed")
			}
			f.Probe(c2s, seq)
			if ok, _ := f.Confirm(c2s, 12345); ok || !f.Unconfirmed() {
				t.Fatal("a segment the probe's way confirmed the flow")
			}
			ok, unshifted := f.Confirm(s2c, tc.ack)
			if !ok || f.Unconfirmed() || unshifted != tc.unshifted {
				t.Fatalf("Confirm = %v, %v (unconfirmed %v), want confirmed, unshifted %v", ok, unshifted, f.Unconfirmed(), tc.unshifted)
			}
			want := [2]seqnum.Delta{1000, 2000000}
			if tc.unshifted {
				want = [2]seqnum.Delta{}
			}
			if got := f.Offsets(); got != want {
				t.Errorf("offsets %v, want %v", got, want)
			}
			if ok, u := f.Confirm(s2c, seq); !ok || u {
				t.Error("a confirmed flow was decided again")
			}
		})
	}
}

func wrapAdd(a uint32, b int64) uint32 { return a + uint32(b) }
