package netns_test

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// Benchmark durations: long enough for TCP to reach steady state on veth, short enough that
// all rounds fit in a couple of minutes. On two shared cores one run of a bulk flow varies by
// a factor of two and drifts over minutes (the scheduler decides where sender, receiver and
// daemon run), so the set-ups are interleaved, round after round, and each ratio is the median
// of the ratios measured within one round.
const (
	benchBulk      = 3 * time.Second
	benchParallel  = 3 * time.Second
	benchRounds    = 5
	benchRoundTrip = 3000
	benchFlows     = 8
)

// benchSample is one set-up's measurements in one round.
type benchSample struct {
	bulk, par float64 // Gbit/s
	p50, p99  time.Duration
}

// benchSetup is one way of crossing the gateway.
type benchSetup struct {
	name    string
	daemon  bool
	offload bool
	samples []benchSample
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// TestBenchmarkThroughput compares, on one topology in one run, plain kernel forwarding with
// seqshiftd rewriting every segment (offload on, then off): one bulk flow, 8 parallel flows, and
// request/response latency. It prints a markdown table. Run with -throughput (make bench-net).
func TestBenchmarkThroughput(t *testing.T) {
	if !*throughput {
		t.Skip("throughput benchmark: pass -throughput (make bench-net)")
	}
	const rules = `
  - name: bench
    match: {server_ports: [5201]}
    client_isn: fixed 1000
    server_isn: fixed 5000`
	e := newEnv(t, netlab.Options{}, config{Offload: true, OnStop: "restore", Rules: rules})
	srv := e.listen(t, false, 5201, nil)

	setups := []*benchSetup{
		{name: "kernel forwarding (no seqshiftd)"},
		{name: "seqshiftd, offload on", daemon: true, offload: true},
		{name: "seqshiftd, offload off (plain TUN)", daemon: true},
	}
	for round := range benchRounds {
		for _, s := range setups {
			var d *daemonProc
			if s.daemon {
				e.writeConfig(config{Offload: s.offload, OnStop: "restore", Rules: rules})
				d = e.start()
			}
			var m benchSample
			m.bulk = bulk(t, e, srv, 1, benchBulk)
			m.par = bulk(t, e, srv, benchFlows, benchParallel)
			m.p50, m.p99, _ = roundTrips(t, e, srv, benchRoundTrip)
			if d != nil {
				st, _ := e.status(t)
				if st.Counters["rewritten_packets_c2s"] == 0 || st.Counters["rewritten_packets_s2c"] == 0 {
					t.Errorf("%s: nothing was rewritten (%v): the benchmark measured the wrong path", s.name, st.Counters)
				}
				if err := d.stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			s.samples = append(s.samples, m)
			t.Logf("round %d, %s: bulk %.2f Gbit/s, %d flows %.2f Gbit/s, RTT p50 %v p99 %v",
				round+1, s.name, m.bulk, benchFlows, m.par, m.p50, m.p99)
		}
	}

	base := setups[0]
	var b strings.Builder
	fmt.Fprintf(&b, "\n| set-up | bulk Gbit/s | ratio | %d flows Gbit/s | ratio | RTT p50 | RTT p99 | bulk ratio per round |\n", benchFlows)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range setups {
		var bulkV, parV, p50V, p99V, bulkR, parR []float64
		var perRound []string
		for k, m := range s.samples {
			bulkV, parV = append(bulkV, m.bulk), append(parV, m.par)
			p50V, p99V = append(p50V, us(m.p50)), append(p99V, us(m.p99))
			r := m.bulk / base.samples[k].bulk
			bulkR, parR = append(bulkR, r), append(parR, m.par/base.samples[k].par)
			perRound = append(perRound, fmt.Sprintf("%.2f", r))
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.1f µs | %.1f µs | %s |\n", s.name,
			medianOf(bulkV), medianOf(bulkR), medianOf(parV), medianOf(parR),
			medianOf(p50V), medianOf(p99V), strings.Join(perRound, " "))
	}
	fmt.Fprintf(&b, "\nveth namespaces client—gateway—server on this machine; Go sender and receiver in the same process; "+
		"%d interleaved rounds of bulk %v, %d parallel flows %v and %d round trips of 64 bytes; "+
		"medians, ratios taken within each round.\n", benchRounds, benchBulk, benchFlows, benchParallel, benchRoundTrip)
	fmt.Print(b.String()) // unindented, to paste into the README
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// bulk runs n client→server flows for d and returns the receivers' aggregate goodput in Gbit/s.
func bulk(t *testing.T, e *env, srv *server, n int, d time.Duration) float64 {
	t.Helper()
	pairs := make([]*pair, n)
	for i := range pairs {
		pairs[i] = e.connect(t, srv, nil)
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for _, p := range pairs {
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			p.c.SetWriteDeadline(stop)
			for time.Now().Before(stop) {
				if _, err := p.c.Write(buf); err != nil {
					break
				}
			}
			p.c.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer wg.Done()
			p.s.SetReadDeadline(stop.Add(5 * time.Second))
			n, _ := io.CopyBuffer(io.Discard, p.s, make([]byte, 256<<10))
			total.Add(n)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, p := range pairs {
		p.Close()
	}
	return float64(total.Load()) * 8 / elapsed.Seconds() / 1e9
}

// roundTrips measures n 64-byte request/response exchanges over one connection.
func roundTrips(t *testing.T, e *env, srv *server, n int) (p50, p99, avg time.Duration) {
	t.Helper()
	p := e.connect(t, srv, nil)
	defer p.Close()
	deadline := time.Now().Add(60 * time.Second)
	p.c.SetDeadline(deadline)
	p.s.SetDeadline(deadline)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(p.s, buf); err != nil {
				return
			}
			if _, err := p.s.Write(buf); err != nil {
				return
			}
		}
	}()
	req, resp := make([]byte, 64), make([]byte, 64)
	rtts := make([]time.Duration, 0, n)
	var sum time.Duration
	for range n {
		start := time.Now()
		if _, err := p.c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.c, resp); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		rtts = append(rtts, rtt)
		sum += rtt
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], rtts[len(rtts)*99/100], sum / time.Duration(n)
}
