package netns_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// Benchmark workloads, each run per set-up per round: long enough for TCP to reach steady state
// on veth, short enough that all rounds fit in a few minutes. On two shared cores one run of a
// bulk flow varies by a factor of two and drifts over minutes (the scheduler decides where
// sender, receiver and daemon run), so the set-ups are interleaved, round after round, and each
// ratio is the median of the ratios measured within one round.
const (
	benchSeconds = 3
	benchRounds  = 5
	benchFlows   = 8
	// Ports the benchmark rule matches: iperf3's, sockperf's, the connection-rate echo's.
	iperfPort    = 5201
	sockperfPort = 11111
	echoPort     = 7777
)

// benchSample is one set-up's measurements in one round.
type benchSample struct {
	bulk, par float64 // Gbit/s, iperf3 receiver side
	p50, p99  float64 // µs, sockperf ping-pong round trip, 64 bytes
	cps       float64 // new connections per second (connect, 1 byte each way, close)
	ttl       uint8   // TTL the server saw on the client's SYN
}

// benchSetup is one way of crossing the gateway.
type benchSetup struct {
	name     string
	datapath string // "": no seqshiftd (kernel forwarding)
	samples  []benchSample
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// TestBenchmarkThroughput compares, on one topology in one run, plain kernel forwarding with
// seqshiftd on each datapath (kernel, then tun), `random` ISNs both ways: iperf3 bulk with one
// flow and with 8, sockperf request/response p50 and p99, new connections per second, and the
// TTL the server sees. It prints a markdown table. Run with -throughput (make bench-net).
func TestBenchmarkThroughput(t *testing.T) {
	if !*throughput {
		t.Skip("throughput benchmark: pass -throughput (make bench-net)")
	}
	requireTool(t, "iperf3")
	requireTool(t, "sockperf")
	rules := fmt.Sprintf(`
  - name: bench
    match: {server_ports: [%d, %d, %d]}
    client_isn: random
    server_isn: random`, iperfPort, sockperfPort, echoPort)
	e := newEnv(t, netlab.Options{}, config{Offload: true, OnStop: "restore", Rules: rules})
	// Thousands of connections a second: let the client reuse its TIME_WAIT ports (as busy
	// clients do) rather than run out of them mid-measurement.
	for k, v := range map[string]string{"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"} {
		if err := e.lab.Client.Sysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	addr := e.lab.ServerAddr4.String()
	e.background(t, e.lab.Server, "iperf3", "-s", "-B", addr, "-p", strconv.Itoa(iperfPort))
	e.background(t, e.lab.Server, "sockperf", "server", "--tcp", "-i", addr, "-p", strconv.Itoa(sockperfPort))
	echo := e.echoServer(t, net.JoinHostPort(addr, strconv.Itoa(echoPort)))
	time.Sleep(300 * time.Millisecond) // the servers bind

	setups := []*benchSetup{
		{name: "kernel forwarding (no seqshiftd)"},
		{name: "seqshiftd, datapath kernel", datapath: "kernel"},
		{name: "seqshiftd, datapath tun", datapath: "tun"},
	}
	for round := range benchRounds {
		for _, s := range setups {
			var d *daemonProc
			if s.datapath != "" {
				// Each datapath with the intercept list it needs: the kernel one only the
				// client-facing interface (README, Design), the TUN one both directions.
				e.writeConfig(config{Offload: true, OnStop: "restore", Rules: rules, Datapath: s.datapath,
					ClientSideOnly: s.datapath == "kernel"})
				d = e.start()
			}
			var m benchSample
			m.bulk = e.iperf(t, addr, 1)
			m.par = e.iperf(t, addr, benchFlows)
			m.p50, m.p99 = e.sockperf(t, addr)
			m.cps = e.connRate(t, echo, benchSeconds*time.Second)
			m.ttl = e.synTTL(t, echo)
			if d != nil {
				if fl := e.flows(t); len(fl) == 0 {
					t.Errorf("%s: no flow tracked: the benchmark measured the wrong path", s.name)
				}
				if err := d.stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
				if out, code := e.cli("teardown"); code != 0 {
					t.Fatalf("teardown: %s", out)
				}
			}
			s.samples = append(s.samples, m)
			t.Logf("round %d, %s: bulk %.2f Gbit/s, %d flows %.2f Gbit/s, RTT p50 %.1f µs p99 %.1f µs, %.0f conn/s, TTL %d",
				round+1, s.name, m.bulk, benchFlows, m.par, m.p50, m.p99, m.cps, m.ttl)
		}
	}
	fmt.Print(benchTable(setups)) // unindented, to paste into the README
}

// benchTable renders the medians and the within-round ratios to the first set-up.
func benchTable(setups []*benchSetup) string {
	base := setups[0]
	var b strings.Builder
	b.WriteString("\n| set-up | bulk Gbit/s | ratio | 8 flows Gbit/s | ratio | RTT p50 µs | ratio | RTT p99 µs | ratio | conn/s | ratio | TTL |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range setups {
		var v, r [5][]float64
		for k, m := range s.samples {
			bm := base.samples[k]
			cur := [5]float64{m.bulk, m.par, m.p50, m.p99, m.cps}
			ref := [5]float64{bm.bulk, bm.par, bm.p50, bm.p99, bm.cps}
			for i := range cur {
				v[i] = append(v[i], cur[i])
				r[i] = append(r[i], cur[i]/ref[i])
			}
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f× | %.1f | %.2f× | %.0f | %.2f | %d |\n", s.name,
			medianOf(v[0]), medianOf(r[0]), medianOf(v[1]), medianOf(r[1]), medianOf(v[2]), medianOf(r[2]),
			medianOf(v[3]), medianOf(r[3]), medianOf(v[4]), medianOf(r[4]), s.samples[len(s.samples)-1].ttl)
	}
	fmt.Fprintf(&b, "\nveth namespaces client—gateway—server on this machine, `random` ISNs both ways; %d interleaved rounds of "+
		"iperf3 (1 flow, -P %d) and sockperf ping-pong (64 B) for %d s each, and %d s of new connections "+
		"(connect, 1 byte each way, close); medians, every ratio taken within its round.\n",
		benchRounds, benchFlows, benchSeconds, benchSeconds)
	return b.String()
}

// background runs a server command in ns until the test ends.
func (e *env) background(t testing.TB, ns *netlab.NS, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
}

// iperf runs iperf3 from the client with n parallel flows and returns the receiver's Gbit/s.
func (e *env) iperf(t testing.TB, addr string, n int) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), (benchSeconds+20)*time.Second)
	defer cancel()
	out, err := e.lab.Client.Command(ctx, "iperf3", "-c", addr, "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(benchSeconds), "-P", strconv.Itoa(n), "-J").Output()
	if err != nil {
		t.Fatalf("iperf3 -P %d: %v: %s", n, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
		t.Fatalf("iperf3 output: %v %s", err, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

var percentile = regexp.MustCompile(`percentile (\d+\.\d+) =\s+([\d.]+)`)

// sockperf runs a TCP ping-pong of 64-byte messages and returns the round trip's p50 and p99 in µs.
func (e *env) sockperf(t testing.TB, addr string) (p50, p99 float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), (benchSeconds+20)*time.Second)
	defer cancel()
	out, err := e.lab.Client.Command(ctx, "sockperf", "ping-pong", "--tcp", "-i", addr, "-p", strconv.Itoa(sockperfPort),
		"-t", strconv.Itoa(benchSeconds), "-m", "64", "--full-rtt").CombinedOutput()
	if err != nil {
		t.Fatalf("sockperf: %v: %s", err, out)
	}
	for _, m := range percentile.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "50.000":
			p50 = v
		case "99.000":
			p99 = v
		}
	}
	if p50 == 0 || p99 == 0 {
		t.Fatalf("no percentiles in sockperf's output: %s", out)
	}
	return p50, p99
}

// echoServer accepts connections in the server namespace and answers each one's byte once.
func (e *env) echoServer(t testing.TB, addr string) string {
	t.Helper()
	ln, err := e.lab.Server.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err == nil {
					c.Write(b[:])
				}
			}()
		}
	}()
	return addr
}

// connRate opens connections to the echo server from four workers in the client namespace for
// d, each connect, one byte each way, close, and returns the completed connections per second.
func (e *env) connRate(t testing.TB, addr string, d time.Duration) float64 {
	t.Helper()
	var done atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start := time.Now()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.lab.Client.Do(func() error {
				var b [1]byte
				for time.Now().Before(stop) {
					c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
					if err != nil {
						failed.Add(1)
						continue
					}
					c.SetDeadline(time.Now().Add(3 * time.Second))
					// SO_LINGER 0 would send RSTs; a normal close is what clients do.
					if _, err := c.Write(b[:]); err == nil {
						if _, err := io.ReadFull(c, b[:]); err == nil {
							done.Add(1)
						}
					}
					c.Close()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Logf("%d connections failed (local port exhaustion or timeouts)", n)
	}
	return float64(done.Load()) / time.Since(start).Seconds()
}

// synTTL opens one connection and returns the TTL its SYN had on the server's wire.
func (e *env) synTTL(t testing.TB, addr string) uint8 {
	t.Helper()
	cs := e.capture(t)
	defer cs.client.Close()
	defer cs.server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.lab.Client.Dial(ctx, "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	c.Write([]byte{1})
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	syn, err := cs.server.Wait(ctx, func(s netlab.Segment) bool {
		return s.Src.String() == local && s.Flags&(netlab.SYN|netlab.ACK) == netlab.SYN
	})
	if err != nil {
		t.Fatalf("no SYN from %s on the server's wire: %v", local, err)
	}
	return syn.TTL
}
