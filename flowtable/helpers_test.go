package flowtable

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a Clock tests move by hand; it starts at a fixed wall time.
type fakeClock struct{ ns atomic.Int64 }

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeClock() *fakeClock {
	c := new(fakeClock)
	c.ns.Store(epoch.UnixNano())
	return c
}

func (c *fakeClock) Now() int64              { return c.ns.Load() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Time() time.Time         { return time.Unix(0, c.ns.Load()) }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// removals records OnRemove calls.
type removals struct {
	mu    sync.Mutex
	flows []*Flow
}

func (r *removals) hook(f *Flow) {
	r.mu.Lock()
	r.flows = append(r.flows, f)
	r.mu.Unlock()
}

func (r *removals) list() []*Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Flow(nil), r.flows...)
}

// newTestTable returns a table on a fake clock with OnRemove recorded.
func newTestTable(t testing.TB, cfg Config) (*Table, *fakeClock, *removals) {
	t.Helper()
	clk := newFakeClock()
	rm := new(removals)
	cfg.Clock = clk
	cfg.OnRemove = rm.hook
	return New(cfg), clk, rm
}

// handshake takes an admitted flow to established.
func handshake(f *Flow) {
	f.Observe(ClientToServer, FlagSYN, 0)
	f.Observe(ServerToClient, FlagSYN|FlagACK, 0)
	f.Observe(ClientToServer, FlagACK, 0)
}

// assure makes a picked-up flow assured the way the datapath without window tracking does:
// a segment seen in each direction.
func assure(f *Flow) {
	f.Observe(ClientToServer, FlagACK, 0)
	f.Observe(ServerToClient, FlagACK, 0)
}

// checkInvariants verifies the table's bookkeeping against its indexes.
func checkInvariants(t testing.TB, tab *Table) {
	t.Helper()
	var byState [NumStates]int
	total, unassured := 0, 0
	for i := range tab.shards {
		s := &tab.shards[i]
		s.mu.Lock()
		ix := s.idx.Load()
		live, tombs := 0, 0
		for g := range ix.groups {
			ctrl := ix.groups[g].ctrl.Load()
			if byte(ctrl>>56) != ctrlDeleted {
				t.Errorf("shard %d group %d: sentinel byte %#x", i, g, ctrl>>56)
			}
			for j := range ix.groups[g].slots {
				c := byte(ctrl >> (8 * j))
				switch f := ix.groups[g].slots[j].Load(); {
				case c == ctrlEmpty || c == ctrlDeleted:
					if f != nil {
						t.Errorf("shard %d slot %d/%d: free (%#x) but holds %v", i, g, j, c, f)
					}
					if c == ctrlDeleted {
						tombs++
					}
				case f == nil:
					t.Errorf("shard %d slot %d/%d: tag %#x but no flow", i, g, j, c)
				default:
					live++
					if uint64(c) != tag(f.hash) {
						t.Errorf("flow %v: tag %#x, want %#x", f, c, tag(f.hash))
					}
					if f.removed() {
						t.Errorf("shard %d slot %d/%d: removed flow %v still indexed", i, g, j, f)
					}
					if g := tab.shardOf(f.hash); g != s {
						t.Errorf("flow %v in the wrong shard", f)
					}
					lo, hi := f.key.Endpoints()
					var p probe
					p.fill(lo, hi)
					if got, rev := ix.find(&p, f.hash, tab.shift); got != f || rev {
						t.Errorf("flow %v at slot %d/%d not found by probing", f, g, j)
					}
					byState[f.State()]++
					if !f.Assured() {
						unassured++
					}
				}
			}
		}
		if live != s.live || tombs != s.tombs {
			t.Errorf("shard %d: counted live %d tombs %d, book says %d %d", i, live, tombs, s.live, s.tombs)
		}
		if ix.full(live + tombs) {
			t.Errorf("shard %d: %d of %d slots used", i, live+tombs, ix.slots())
		}
		total += live
		s.mu.Unlock()
	}
	st := tab.Stats()
	if st.Unassured != unassured {
		t.Errorf("stats say %d unassured flows; indexes hold %d", st.Unassured, unassured)
	}
	if st.ByState != byState || st.Active != total || int(tab.count.Load()) != total {
		t.Errorf("stats %v active %d count %d; indexes hold %v (%d)", st.ByState, st.Active, tab.count.Load(), byState, total)
	}
}
