package flowtable

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// benchFlows is the population of the big benchmarks: the one million live flows.
const benchFlows = 1_000_000

// benchEndpoints returns the i-th distinct connection: three in four IPv4 clients in
// 198.18.0.0/15 talking to one server, one in four IPv6 clients in 2001:2::/48.
func benchEndpoints(i int) (client, server netip.AddrPort) {
	if i%4 == 3 {
		a := [16]byte{0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(1024+i%50000)),
			netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 15: 1}), 443)
	}
	a := [4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)}
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(1024+i>>17)),
		netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 255, 254}), 443)
}

var big struct {
	once    sync.Once
	table   *Table
	queries [][2]netip.AddrPort // every flow once, in a scattered order, half of them reversed
}

// bigTable returns a table of benchFlows established flows, built once per test binary.
func bigTable(b *testing.B) (*Table, [][2]netip.AddrPort) {
	big.once.Do(func() {
		t := New(Config{MaxFlows: benchFlows})
		for i := range benchFlows {
			c, s := benchEndpoints(i)
			if _, err := t.Adopt(c, s, Init{ClientOffset: seqnum.Delta(i), Server: ServerPlan{Value: 7}, Rule: "bench", Generation: 1}); err != nil {
				panic(err)
			}
		}
		q := make([][2]netip.AddrPort, benchFlows)
		for i := range q {
			// 611953 is prime to 10^6, so this visits every flow once in a cache-hostile order.
			c, s := benchEndpoints(i * 611953 % benchFlows)
			if i&1 == 1 {
				c, s = s, c
			}
			q[i] = [2]netip.AddrPort{c, s}
		}
		big.table, big.queries = t, q
	})
	return big.table, big.queries
}

// lookupSets are the access patterns of the 1M-flow lookup benchmarks: each op looks up the
// next flow of a set scattered over the whole million, alternating directions. With 256 flows
// in the set, the index groups and flows it touches stay in cache and TLB: the table's own
// cost at that occupancy, as for connections busy right now among many idle ones. With all
// of them, every lookup waits on two DRAM accesses, each after a TLB miss (index group, then
// flow): what the memory system costs, not the table.
var lookupSets = []struct {
	name string
	n    int
}{{"active256", 256}, {"active4k", 4096}, {"all1M", benchFlows}}

func BenchmarkLookup1M(b *testing.B) {
	t, all := bigTable(b)
	for _, set := range lookupSets {
		q := all[:set.n]
		b.Run(set.name, func(b *testing.B) {
			b.ReportAllocs()
			j := 0
			for b.Loop() {
				if _, _, ok := t.Lookup(q[j][0], q[j][1]); !ok {
					b.Fatal("miss")
				}
				if j++; j == len(q) {
					j = 0
				}
			}
		})
	}
}

func BenchmarkLookup1MParallel(b *testing.B) {
	t, all := bigTable(b)
	for _, set := range lookupSets {
		q := all[:set.n]
		b.Run(set.name, func(b *testing.B) {
			var start atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				j := int(start.Add(int64(len(q)/8))) % len(q)
				for pb.Next() {
					if _, _, ok := t.Lookup(q[j][0], q[j][1]); !ok {
						b.Fatal("miss")
					}
					if j++; j == len(q) {
						j = 0
					}
				}
			})
		})
	}
}

func BenchmarkLookupMiss1M(b *testing.B) {
	t, _ := bigTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c, s := benchEndpoints(benchFlows + i%benchFlows)
		if _, _, ok := t.Lookup(c, s); ok {
			b.Fatal("hit")
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	t := New(Config{MaxFlows: 16})
	c, s := benchEndpoints(1)
	f, _ := t.Adopt(c, s, Init{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f.Observe(Dir(i&1), FlagACK, 1400)
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	t := New(Config{MaxFlows: 1024})
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// One flow per goroutine, as the TUN queues spread connections over cores.
		c, s := benchEndpoints(int(next.Add(1)))
		f, _ := t.Adopt(c, s, Init{})
		for pb.Next() {
			f.Observe(ClientToServer, FlagACK, 1400)
		}
	})
}

// BenchmarkAdmit measures inserting new connections (growing the indexes as it goes); every
// 2^20 flows it starts over with a fresh table, outside the timer.
func BenchmarkAdmit(b *testing.B) {
	const per = 1 << 20
	var t *Table
	b.ReportAllocs()
	for i := range b.N {
		if i%per == 0 {
			b.StopTimer()
			t = New(Config{MaxFlows: per})
			b.StartTimer()
		}
		c, s := benchEndpoints(i % per)
		if _, err := t.Admit(c, s, Init{ClientISN: uint32(i), Rule: "bench", Generation: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryPerFlow reports the heap a table of benchFlows flows takes, per flow.
func BenchmarkMemoryPerFlow(b *testing.B) {
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t := New(Config{MaxFlows: benchFlows})
		for i := range benchFlows {
			c, s := benchEndpoints(i)
			f, err := t.Admit(c, s, Init{ClientISN: uint32(i), Rule: "bench", Generation: 1})
			if err != nil {
				b.Fatal(err)
			}
			f.Observe(ServerToClient, FlagSYN|FlagACK, 0)
			f.Observe(ClientToServer, FlagACK, 0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/benchFlows, "B/flow")
		runtime.KeepAlive(t)
	}
}
