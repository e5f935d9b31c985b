package flowtable

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestAdmit_PortReuseReplacesEntry(t *testing.T) {
	tab, _, rm := newTestTable(t, Config{MaxFlows: 8})
	c, s := ap("198.18.0.1:40000"), ap("198.19.0.1:443")
	old, _ := tab.Admit(c, s, Init{ClientISN: 1000, ClientOffset: 5, Rule: "a", Generation: 1})
	handshake(old)
	old.Observe(c2s, FIN, 0)
	old.Observe(s2c, FIN, 0)
	old.Observe(c2s, ACK, 0)
	if old.State() != StateTimeWait {
		t.Fatalf("state %v", old.State())
	}
	// The client reuses the port: the datapath sees a SYN with a new ISN and admits it.
	nf, err := tab.Admit(c, s, Init{ClientISN: 9000, ClientOffset: 6, Rule: "b", Generation: 2})
	if err != nil {
		t.Fatal(err)
	}
	if nf == old || nf.State() != StateSynSent || nf.ClientISN() != 9000 || nf.Offset(c2s) != 6 || nf.Rule() != "b" {
		t.Fatalf("new flow %v isn %d offset %d rule %q", nf, nf.ClientISN(), nf.Offset(c2s), nf.Rule())
	}
	if f, d, ok := tab.Lookup(s, c); !ok || f != nf || d != s2c {
		t.Fatalf("lookup after reuse: %v %v %v", f, d, ok)
	}
	if got := rm.list(); len(got) != 1 || got[0] != old {
		t.Fatalf("OnRemove got %v, want the old flow", got)
	}
	if !old.removed() {
		t.Fatal("old flow not marked removed")
	}
	old.Observe(c2s, SYN, 0) // a datapath goroutine still holding it: harmless
	st := tab.Stats()
	if st.Active != 1 || st.Created != 2 || st.Replaced != 1 || st.ByState[StateSynSent] != 1 || st.ByState[StateTimeWait] != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The server end opening a connection back on the same tuple also replaces it, and the
	// roles follow the new SYN.
	back, _ := tab.Admit(s, c, Init{})
	if f, d, ok := tab.Lookup(s, c); !ok || f != back || d != c2s || back.Client() != s {
		t.Fatalf("reverse reuse: %v %v %v", f, d, ok)
	}
	checkInvariants(t, tab)
}

func TestAdopt_ReturnsExistingEntry(t *testing.T) {
	tab, _, rm := newTestTable(t, Config{MaxFlows: 8})
	c, s := ap("[2001:2::1]:40000"), ap("[2001:2::2]:443")
	f, _ := tab.Admit(c, s, Init{ClientOffset: 1})
	// Adopt from either orientation finds the same connection and changes nothing.
	for _, pair := range [][2]netip.AddrPort{{c, s}, {s, c}} {
		g, err := tab.Adopt(pair[0], pair[1], Init{ClientOffset: 2})
		if err != nil || g != f || g.Offset(c2s) != 1 || g.State() != StateSynSent {
			t.Fatalf("Adopt returned %v (%v), offset %d", g, err, g.Offset(c2s))
		}
	}
	if st := tab.Stats(); st.Active != 1 || st.Adopted != 0 || len(rm.list()) != 0 {
		t.Fatalf("stats %+v removals %d", st, len(rm.list()))
	}
}

func TestAdmit_FullOfEstablishedReturnsErrFull(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 3, Shards: 2})
	for i := range 3 {
		f, err := tab.Admit(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(1000+i)), ap("198.19.0.1:443"), Init{})
		if err != nil {
			t.Fatal(err)
		}
		handshake(f)
	}
	_, err := tab.Admit(ap("198.18.0.2:1"), ap("198.19.0.1:443"), Init{})
	if err != ErrFull { // unwrapped, compared without errors.Is
		t.Fatalf("err = %v, want ErrFull", err)
	}
	if _, err := tab.Adopt(ap("198.18.0.2:1"), ap("198.19.0.1:443"), Init{}); err != ErrFull {
		t.Fatalf("Adopt err = %v, want ErrFull", err)
	}
	if st := tab.Stats(); st.Refused != 2 || st.Active != 3 || st.Evicted != 0 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, tab)
}

// TestEviction_Order fills a table with a flow in every state and admits more: embryonic
// flows go first (oldest first), then time_wait/close (least recently seen first), and flows
// that may still carry data never.
func TestEviction_Order(t *testing.T) {
	tab, clk, rm := newTestTable(t, Config{MaxFlows: 8, Shards: 1})
	client := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 40000)
	}
	server := ap("198.19.0.1:443")
	mk := func(i int, segs ...seg) *Flow {
		t.Helper()
		clk.Advance(time.Second)
		f, err := tab.Admit(client(i), server, Init{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sg := range segs {
			f.Observe(sg.d, sg.flags, sg.n)
		}
		return f
	}
	est := []seg{{c2s, SYN, 0, 0}, {s2c, SYN | ACK, 0, 0}, {c2s, ACK, 0, 0}}
	established := mk(1, est...)
	close := mk(2, append(est, seg{s2c, RST, 0, 0})...)                                              // seen at +2s
	timeWait := mk(3, append(est, seg{c2s, FIN, 0, 0}, seg{s2c, FIN, 0, 0}, seg{c2s, ACK, 0, 0})...) // +3s
	finWait := mk(4, append(est, seg{c2s, FIN, 0, 0})...)
	closeWait := mk(5, append(est, seg{c2s, FIN, 0, 0}, seg{s2c, ACK, 0, 0})...)
	lastAck := mk(6, append(est, seg{c2s, FIN, 0, 0}, seg{s2c, FIN, 0, 0})...)
	synSent := mk(7)
	synRecv := mk(8, seg{c2s, SYN, 0, 0}, seg{s2c, SYN | ACK, 0, 0})
	// The close flow was admitted first but seen last: eviction among closed flows goes by
	// last-seen, so time_wait (seen at +3s) goes before close (seen now).
	clk.Advance(time.Second)
	tab.tick()
	close.Observe(c2s, RST, 0)

	var adopted []*Flow
	for i := 10; i < 14; i++ {
		f, err := tab.Adopt(client(i), server, Init{})
		if err != nil {
			t.Fatalf("adopt %d: %v", i, err)
		}
		assure(f)
		adopted = append(adopted, f)
	}
	want := []*Flow{synSent, synRecv, timeWait, close}
	got := rm.list()
	if len(got) != len(want) {
		t.Fatalf("evicted %d flows: %v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("eviction %d: %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := tab.Admit(client(20), server, Init{}); err != ErrFull {
		t.Fatalf("admit into a table of live connections: %v", err)
	}
	for _, f := range append([]*Flow{established, finWait, closeWait, lastAck}, adopted...) {
		if g, _, ok := tab.Lookup(f.Client(), f.Server()); !ok || g != f {
			t.Errorf("%v was evicted", f)
		}
	}
	if st := tab.Stats(); st.Evicted != 4 || st.Refused != 1 || st.Active != 8 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, tab)
}

// TestEviction_SynFloodKeepsEstablished floods a half-full table with SYNs from distinct
// tuples: every established connection survives and every flood SYN is admitted at the
// expense of an older one, while the early-drop queues stay bounded.
func TestEviction_SynFloodKeepsEstablished(t *testing.T) {
	const max, live, flood = 2000, 1000, 50000
	tab, _, rm := newTestTable(t, Config{MaxFlows: max})
	var est []*Flow
	for i := range live {
		f, err := tab.Admit(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 40000), ap("198.19.0.1:443"), Init{})
		if err != nil {
			t.Fatal(err)
		}
		handshake(f)
		est = append(est, f)
	}
	for i := range flood {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), uint16(1024+i>>16))
		if _, err := tab.Admit(src, ap("198.19.0.1:80"), Init{}); err != nil {
			t.Fatalf("flood SYN %d: %v", i, err)
		}
	}
	for _, f := range est {
		if g, _, ok := tab.Lookup(f.Server(), f.Client()); !ok || g != f || f.removed() {
			t.Fatalf("established %v lost to the flood", f)
		}
	}
	st := tab.Stats()
	if st.ByState[StateEstablished] != live || st.Active != max || st.Evicted != flood-(max-live) {
		t.Fatalf("stats %+v", st)
	}
	if n := len(rm.list()); uint64(n) != st.Evicted {
		t.Fatalf("OnRemove called %d times for %d evictions", n, st.Evicted)
	}
	queued := 0
	for i := range tab.shards {
		queued += len(tab.shards[i].queue) - tab.shards[i].qhead
	}
	if queued > 2*(max-live)+64*len(tab.shards) {
		t.Fatalf("early-drop queues hold %d entries for %d embryonic flows", queued, max-live)
	}
	checkInvariants(t, tab)
}

// TestOnRemove_CalledOutsideLocks calls back into the table from OnRemove for each kind of
// removal; a hook run under a shard lock would deadlock.
func TestOnRemove_CalledOutsideLocks(t *testing.T) {
	clk := newFakeClock()
	var tab *Table
	calls := 0
	tab = New(Config{MaxFlows: 2, Shards: 1, Clock: clk, OnRemove: func(f *Flow) {
		calls++
		tab.Lookup(f.Client(), f.Server())
		tab.Adopt(ap("198.18.9.9:9"), ap("198.19.0.1:9"), Init{}) // takes the same shard's lock
		tab.Range(func(*Flow) bool { return true })
		tab.Stats()
	}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, s := ap("198.18.0.1:1"), ap("198.19.0.1:443")
		tab.Admit(c, s, Init{})
		tab.Admit(c, s, Init{}) // replacement
		tab.Admit(ap("198.18.0.2:1"), s, Init{})
		tab.Admit(ap("198.18.0.3:1"), s, Init{}) // eviction
		clk.Advance(time.Hour)
		tab.expireAll() // expiry
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: OnRemove called under a lock")
	}
	if calls < 3 {
		t.Fatalf("OnRemove called %d times, want at least 3", calls)
	}
}

func TestStats_CountsEachKindOfChange(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 100})
	for i := range 10 {
		tab.Admit(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(i+1)), ap("198.19.0.1:443"), Init{})
	}
	for i := range 5 {
		tab.Adopt(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.2"), uint16(i+1)), ap("198.19.0.1:443"), Init{})
	}
	clk.Advance(2 * time.Minute) // syn_sent (75s) expires, established (5 days) does not
	if n := tab.expireAll(); n != 10 {
		t.Fatalf("expired %d", n)
	}
	st := tab.Stats()
	want := Stats{Active: 5, Created: 10, Adopted: 5, Expired: 10, Unassured: 5} // picked up, never confirmed
	want.ByState[StateEstablished] = 5
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	checkInvariants(t, tab)
}

func TestNew_ShardsAndDefaults(t *testing.T) {
	for _, tc := range []struct{ max, shards, want int }{
		{0, 0, 256}, {1 << 20, 0, 256}, {1000, 0, 16}, {100, 3, 4}, {100, 1, 1}, {1 << 30, 0, 4096},
	} {
		tab := New(Config{MaxFlows: tc.max, Shards: tc.shards})
		if len(tab.shards) != tc.want {
			t.Errorf("MaxFlows %d Shards %d: %d shards, want %d", tc.max, tc.shards, len(tab.shards), tc.want)
		}
	}
	if got := New(Config{}).MaxFlows(); got != DefaultMaxFlows {
		t.Errorf("default MaxFlows %d", got)
	}
	if errors.Is(ErrFull, ErrCorrupt) {
		t.Error("errors alias")
	}
}

func TestRange_VisitsEveryLiveFlowOnce(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 5000, Shards: 8})
	want := map[*Flow]bool{}
	for i := range 3000 {
		f, _ := tab.Admit(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 1), ap("198.19.0.1:443"), Init{})
		want[f] = true
	}
	seen := map[*Flow]int{}
	tab.Range(func(f *Flow) bool {
		seen[f]++
		return true
	})
	if len(seen) != len(want) {
		t.Fatalf("Range saw %d flows, want %d", len(seen), len(want))
	}
	for f, n := range seen {
		if !want[f] || n != 1 {
			t.Fatalf("flow %v seen %d times", f, n)
		}
	}
	n := 0
	tab.Range(func(*Flow) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("Range went on after false: %d", n)
	}
}

func ExampleTable_Lookup() {
	tab := New(Config{MaxFlows: 1024})
	client, server := netip.MustParseAddrPort("198.18.0.1:40000"), netip.MustParseAddrPort("198.19.0.1:443")
	tab.Admit(client, server, Init{ClientISN: 1, ClientOffset: 1000})
	f, dir, _ := tab.Lookup(server, client) // a segment from the server
	fmt.Println(dir, f.Offset(dir.Reverse()))
	// Output: s2c 1000
}
