package flowtable

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// TestConcurrent_Stress runs the datapath's calls (Lookup, Admit, Adopt, Observe, Track,
// ResolveServerISN) on several goroutines against expiry, eviction, Range, Stats and
// Snapshot, on a small table with few shards so that they collide. Under -race it checks the
// memory model; in any mode it checks that a live flow is never missed by a lookup while its
// shard is rewritten around it, that OnRemove sees every removed flow exactly once and no live
// one, and that the bookkeeping adds up at the end.
func TestConcurrent_Stress(t *testing.T) {
	ops := 20000
	if testing.Short() {
		ops = 2000
	}
	clk := newFakeClock()
	var mu sync.Mutex
	removedSet := map[*Flow]int{}
	tab := New(Config{
		MaxFlows: 600, Shards: 4, Clock: clk,
		Timeouts: Timeouts{SynSent: 2 * time.Second, SynRecv: 2 * time.Second, Established: time.Hour,
			FinWait: 3 * time.Second, CloseWait: 3 * time.Second, LastAck: time.Second, TimeWait: time.Second, Close: time.Second},
		OnRemove: func(f *Flow) {
			mu.Lock()
			removedSet[f]++
			mu.Unlock()
		},
	})
	server := ap("198.19.0.1:443")
	// Pinned connections stay established (assured: both sides seen) with traffic: never
	// evicted, never expired, and always found.
	var pinned []*Flow
	for i := range 100 {
		f, err := tab.Adopt(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 1000), server, Init{})
		if err != nil {
			t.Fatal(err)
		}
		assure(f)
		pinned = append(pinned, f)
	}
	created := make([][]*Flow, 3)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 3 { // churn: new connections over a small tuple space, so reuse happens
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range ops {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 2, byte(rng.IntN(256))}), uint16(2000+rng.IntN(4)))
				f, dir, ok := tab.Lookup(c, server)
				switch {
				case !ok || rng.IntN(8) == 0:
					var err error
					if rng.IntN(4) == 0 {
						f, err = tab.Adopt(c, server, Init{ClientOffset: 5, Rule: "adopt"})
					} else {
						f, err = tab.Admit(c, server, Init{ClientISN: rng.Uint32(), Server: ServerPlan{Absolute: true, Value: 7}, Rule: "r"})
					}
					if err != nil {
						continue
					}
					created[g] = append(created[g], f)
					dir = c2s
				}
				switch rng.IntN(7) {
				case 6: // a segment with numbers, through the window tracker (from any side)
					flags := [...]uint8{SYN, SYN | ACK, ACK, FIN | ACK, RST}[rng.IntN(5)]
					f.Track(Dir(rng.IntN(2)), &tcpwindow.Segment{
						Seq: seqnum.Value(rng.Uint32() % 4096), Ack: seqnum.Value(rng.Uint32() % 4096),
						Flags: flags, Len: seqnum.Size(rng.IntN(100)), Window: 1000,
					})
				case 0:
					f.Observe(dir.Reverse(), SYN|ACK, 0)
					f.ResolveServerISN(rng.Uint32())
				case 1:
					f.Observe(dir, FIN, 0)
				case 2:
					f.Observe(dir, RST, 0)
				default:
					f.Observe(dir, PSH, rng.IntN(1500))
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // lookups of pinned flows from both sides
		defer wg.Done()
		for i := range 4 * ops {
			p := pinned[i%len(pinned)]
			src, dst, want := p.Client(), p.Server(), c2s
			if i&1 == 1 {
				src, dst, want = dst, src, s2c
			}
			f, dir, ok := tab.Lookup(src, dst)
			if !ok || f != p || dir != want {
				t.Errorf("pinned %v: lookup %v %v %v", p, f, dir, ok)
				return
			}
			f.Observe(dir, ACK, 0)
		}
	}()
	var side sync.WaitGroup
	side.Add(1)
	go func() { // the clock, expiry, and the control-plane readers
		defer side.Done()
		path := filepath.Join(t.TempDir(), "flows.state")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(300 * time.Millisecond)
			tab.expire(sliceSlots)
			tab.Stats()
			n := 0
			tab.Range(func(f *Flow) bool { n++; return true })
			if i%200 == 0 {
				if err := tab.Snapshot(path); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	side.Wait()

	// Every created flow is now either live in the table or was handed to OnRemove, once.
	live := map[*Flow]bool{}
	tab.Range(func(f *Flow) bool { live[f] = true; return true })
	mu.Lock()
	defer mu.Unlock()
	for f, n := range removedSet {
		if n != 1 || live[f] || !f.removed() {
			t.Fatalf("%v: OnRemove %d times, live %v", f, n, live[f])
		}
	}
	all := map[*Flow]bool{} // Adopt may return a flow another goroutine created
	for _, fs := range created {
		for _, f := range fs {
			all[f] = true
			if live[f] == (removedSet[f] == 1) {
				t.Fatalf("%v: live %v, removed %d times", f, live[f], removedSet[f])
			}
		}
	}
	total := len(all)
	for _, p := range pinned {
		if !live[p] {
			t.Fatalf("pinned %v lost", p)
		}
	}
	st := tab.Stats()
	if st.Created+st.Adopted != uint64(total+len(pinned)) || st.Expired+st.Evicted+st.Replaced != uint64(len(removedSet)) {
		t.Fatalf("stats %+v; %d created, %d removed", st, total+len(pinned), len(removedSet))
	}
	t.Logf("%d flows created, %d removed (%d expired, %d evicted, %d replaced), %d refused, %d live",
		total, len(removedSet), st.Expired, st.Evicted, st.Replaced, st.Refused, st.Active)
	checkInvariants(t, tab)
}
