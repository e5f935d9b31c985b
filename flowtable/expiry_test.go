package flowtable

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestDefaultTimeouts(t *testing.T) {
	d := DefaultTimeouts()
	want := [NumStates]time.Duration{75 * time.Second, 60 * time.Second, 5 * 24 * time.Hour, 2 * time.Minute,
		time.Hour, 30 * time.Second, 2 * time.Minute, 10 * time.Second}
	if d.table() != want {
		t.Fatalf("defaults %v", d.table())
	}
	// Zero and negative fields mean the default.
	to := Timeouts{Established: time.Hour, Close: -1}
	if to.For(StateEstablished) != time.Hour || to.For(StateClose) != 10*time.Second || to.For(StateSynSent) != 75*time.Second {
		t.Fatalf("For: %v", to.table())
	}
	tab := New(Config{Timeouts: to})
	if got := tab.Timeouts(); got.Established != time.Hour || got.SynRecv != 60*time.Second {
		t.Fatalf("table timeouts %+v", got)
	}
}

// TestExpiry_PerStateTimeouts puts one flow in each state and moves a fake clock: each goes
// when its own state's timeout passes, not before.
func TestExpiry_PerStateTimeouts(t *testing.T) {
	to := Timeouts{SynSent: 10 * time.Second, SynRecv: 20 * time.Second, Established: 300 * time.Second,
		FinWait: 40 * time.Second, CloseWait: 200 * time.Second, LastAck: 30 * time.Second,
		TimeWait: 50 * time.Second, Close: 5 * time.Second}
	tab, clk, rm := newTestTable(t, Config{MaxFlows: 64, Timeouts: to})
	est := []seg{{c2s, SYN, 0, 0}, {s2c, SYN | ACK, 0, 0}, {c2s, ACK, 0, 0}}
	paths := [NumStates][]seg{
		StateSynSent:     nil,
		StateSynRecv:     est[:2],
		StateEstablished: est,
		StateFinWait:     append(est[:3:3], seg{c2s, FIN, 0, 0}),
		StateCloseWait:   append(est[:3:3], seg{c2s, FIN, 0, 0}, seg{s2c, ACK, 0, 0}),
		StateLastAck:     append(est[:3:3], seg{c2s, FIN, 0, 0}, seg{s2c, FIN, 0, 0}),
		StateTimeWait:    append(est[:3:3], seg{c2s, FIN, 0, 0}, seg{s2c, FIN, 0, 0}, seg{c2s, ACK, 0, 0}),
		StateClose:       append(est[:3:3], seg{c2s, RST, 0, 0}),
	}
	var flows [NumStates]*Flow
	for st := range NumStates {
		f, _ := tab.Admit(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), 1000+uint16(st)), ap("198.19.0.1:443"), Init{})
		for _, sg := range paths[st] {
			f.Observe(sg.d, sg.flags, sg.n)
		}
		if f.State() != st {
			t.Fatalf("set-up: %v is %v", st, f.State())
		}
		flows[st] = f
	}
	for sec := 1; sec <= 301; sec++ {
		clk.Advance(time.Second)
		tab.expireAll()
		for st, f := range flows {
			gone := f.removed()
			if want := time.Duration(sec)*time.Second > to.For(State(st)); gone != want {
				t.Fatalf("after %ds: %v removed=%v, want %v", sec, State(st), gone, want)
			}
		}
	}
	if got := len(rm.list()); got != int(NumStates) || tab.Stats().Expired != uint64(NumStates) {
		t.Fatalf("OnRemove %d times, stats %+v", got, tab.Stats())
	}
	checkInvariants(t, tab)
}

func TestExpiry_TrafficKeepsFlowAlive(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8, Timeouts: Timeouts{Established: time.Minute}})
	f, _ := tab.Adopt(ap("198.18.0.1:1"), ap("198.19.0.1:2"), Init{})
	for range 10 {
		clk.Advance(50 * time.Second)
		tab.expireAll() // also advances the coarse clock Observe reads
		f.Observe(s2c, ACK, 0)
	}
	if f.removed() {
		t.Fatal("an active flow expired")
	}
	clk.Advance(61 * time.Second)
	tab.expireAll()
	if !f.removed() {
		t.Fatal("an idle flow survived its timeout")
	}
}

func TestSetTimeouts_AppliesToLiveFlows(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8})
	f, _ := tab.Adopt(ap("198.18.0.1:1"), ap("198.19.0.1:2"), Init{})
	assure(f)
	clk.Advance(time.Hour)
	tab.expireAll()
	if f.removed() {
		t.Fatal("expired under the 5-day default")
	}
	tab.SetTimeouts(Timeouts{Established: 30 * time.Minute})
	tab.expireAll()
	if !f.removed() {
		t.Fatal("reloaded timeout not applied")
	}
}

// TestExpiry_BoundedSlices checks that one expiry step looks at no more than its budget and
// that successive steps sweep the whole table.
func TestExpiry_BoundedSlices(t *testing.T) {
	const n = 5000
	tab, clk, _ := newTestTable(t, Config{MaxFlows: n, Shards: 4})
	for i := range n {
		tab.Admit(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 1), ap("198.19.0.1:443"), Init{})
	}
	clk.Advance(time.Hour)
	slots := tab.slots()
	steps, total := 0, 0
	for total < n {
		got := tab.expire(sliceSlots)
		if got > sliceSlots {
			t.Fatalf("a step of %d slots removed %d flows", sliceSlots, got)
		}
		total += got
		if steps++; steps > 2*slots/sliceSlots+2*len(tab.shards) {
			t.Fatalf("%d steps removed only %d of %d flows", steps, total, n)
		}
	}
	if steps < slots/sliceSlots/2 {
		t.Fatalf("%d steps removed everything: slices not bounded", steps)
	}
	// Emptied shards shrink back.
	for i := 0; i < 2*len(tab.shards); i++ {
		tab.expire(tab.slots())
	}
	if got := tab.slots(); got > len(tab.shards)*minGroups*groupSlots {
		t.Fatalf("%d slots left for an empty table", got)
	}
	checkInvariants(t, tab)
}

func TestRunExpiry_RemovesInBackground(t *testing.T) {
	clk := newFakeClock()
	removed := make(chan *Flow, 1)
	tab := New(Config{MaxFlows: 8, Clock: clk, OnRemove: func(f *Flow) { removed <- f }})
	f, _ := tab.Admit(ap("198.18.0.1:1"), ap("198.19.0.1:2"), Init{})
	clk.Advance(76 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		tab.RunExpiry(ctx, time.Millisecond)
		close(done)
	}()
	select {
	case g := <-removed:
		if g != f {
			t.Fatalf("removed %v", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunExpiry did not expire the flow")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunExpiry did not return after cancel")
	}
}
