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

// Benchmark durations: long enough for TCP to reach steady state on veth, short enough that the
// three set-ups fit in a couple of minutes.
// On two shared cores one run of a bulk flow varies by a factor of two (the scheduler decides
// where sender, receiver and daemon run), so each figure is the median of benchReps runs.
const (
	benchBulk      = 3 * time.Second
	benchParallel  = 3 * time.Second
	benchReps      = 3
	benchRoundTrip = 3000
	benchFlows     = 8
)

// median runs f benchReps times and returns the median result.
func median(f func() float64) float64 {
	v := make([]float64, benchReps)
	for i := range v {
		v[i] = f()
	}
	slices.Sort(v)
	return v[len(v)/2]
}

type benchResult struct {
	name          string
	bulk, par     float64 // Gbit/s
	p50, p99, avg time.Duration
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

	var results []benchResult
	run := func(name string) benchResult {
		r := benchResult{name: name}
		r.bulk = median(func() float64 { return bulk(t, e, srv, 1, benchBulk) })
		r.par = median(func() float64 { return bulk(t, e, srv, benchFlows, benchParallel) })
		r.p50, r.p99, r.avg = roundTrips(t, e, srv, benchRoundTrip)
		t.Logf("%s: bulk %.2f Gbit/s, %d flows %.2f Gbit/s, RTT p50 %v p99 %v", name, r.bulk, benchFlows, r.par, r.p50, r.p99)
		return r
	}
	results = append(results, run("kernel forwarding (no seqshiftd)"))
	for _, offload := range []bool{true, false} {
		e.writeConfig(config{Offload: offload, OnStop: "restore", Rules: rules})
		d := e.start()
		results = append(results, run(fmt.Sprintf("seqshiftd, offload %s", map[bool]string{true: "on", false: "off"}[offload])))
		st, _ := e.status(t)
		if st.Counters["rewritten_packets_c2s"] == 0 || st.Counters["rewritten_packets_s2c"] == 0 {
			t.Errorf("offload %v: nothing was rewritten (%v): the benchmark measured the wrong path", offload, st.Counters)
		}
		if err := d.stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	var b strings.Builder
	base := results[0]
	fmt.Fprintf(&b, "\n| set-up | bulk Gbit/s | ratio | %d flows Gbit/s | ratio | RTT p50 | RTT p99 | p50 ratio |\n", benchFlows)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.1f µs | %.1f µs | %.2f |\n", r.name,
			r.bulk, r.bulk/base.bulk, r.par, r.par/base.par,
			us(r.p50), us(r.p99), float64(r.p50)/float64(base.p50))
	}
	fmt.Fprintf(&b, "\nveth namespaces client—gateway—server on this machine; Go sender and receiver in the same process; "+
		"median of %d runs of bulk %v and %d parallel flows %v; %d round trips of 64 bytes.\n", benchReps, benchBulk, benchFlows, benchParallel, benchRoundTrip)
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
