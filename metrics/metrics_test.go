package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/seqshiftd/seqshiftd/counter"
)

// fullSnapshot sets every field, so the expected text below covers every metric.
func fullSnapshot(s *Snapshot) {
	*s = Snapshot{
		Version: "1.2.3",
		Rewritten: map[RuleDir]Traffic{
			{"legacy-plc", ClientToServer}:   {Packets: 10, Bytes: 1500},
			{"legacy-plc", ServerToClient}:   {Packets: 8, Bytes: 900},
			{"reproducible", ClientToServer}: {Packets: 1 << 40, Bytes: 1 << 50},
		},
		FlowsActive:      map[string]int{"established": 12, "syn_sent": 0, "time_wait": 3},
		FlowsCreated:     100,
		FlowsExpired:     80,
		FlowsEvicted:     1,
		ReloadsOK:        3,
		ReloadsFailed:    1,
		LastReloadFailed: true,
		PolicyGeneration: 4,

		FlowsLimit:          1000,
		SteeringInstalled:   true,
		Snapshots:           true,
		SnapshotLastSuccess: time.Unix(1700000000, 500_000_000),
		SnapshotFailures:    2,
	}
}

// A counter.Set like the datapath's: families with and without labels, one with two labels.
var (
	testPassed = &counter.Desc{Name: "passed_packets_total", Help: "Packets written back without a rewrite, by reason.",
		Labels: []string{"reason"}, Values: counter.Each("not_tcp", "no_flow"), Status: "passed_%s"}
	testICMP = &counter.Desc{Name: "icmp_translated_packets_total",
		Help: "ICMP errors quoting a rewritten TCP segment whose quoted sequence numbers were translated.", Status: "icmp_translated"}
	testErrors = &counter.Desc{Name: "datapath_errors_total", Help: "Failed reads from and writes to the TUN device, by operation (read, write).",
		Labels: []string{"op"}, Values: counter.Each("read", "write"), Status: "%s_errors"}
	testKernel = &counter.Desc{Name: "kernel_passed_packets_total", Help: "Packets the kernel datapath passed, by reason and direction.",
		Labels: []string{"reason", "direction"}, Values: [][]string{{"no_flow", "c2s"}, {"no_flow", "s2c"}}}
	testTable = counter.NewTable(testPassed, testICMP, testErrors, testKernel)
)

type testSet struct{ b *counter.Block }

func (s testSet) Descs() []*counter.Desc { return testTable.Descs() }
func (s testSet) Values() [][]uint64     { return testTable.Sum([]*counter.Block{s.b}) }

func fullSet() testSet {
	b := testTable.NewBlock()
	b.Add(testPassed, 0, 50)
	b.Add(testPassed, 1, 6)
	b.Add(testICMP, 0, 9)
	b.Add(testErrors, 1, 2)
	b.Add(testKernel, 1, 1<<40)
	return testSet{b}
}

const setExposition = `
# HELP seqshiftd_datapath_errors_total Failed reads from and writes to the TUN device, by operation (read, write).
# TYPE seqshiftd_datapath_errors_total counter
seqshiftd_datapath_errors_total{op="read"} 0
seqshiftd_datapath_errors_total{op="write"} 2
# HELP seqshiftd_icmp_translated_packets_total ICMP errors quoting a rewritten TCP segment whose quoted sequence numbers were translated.
# TYPE seqshiftd_icmp_translated_packets_total counter
seqshiftd_icmp_translated_packets_total 9
# HELP seqshiftd_kernel_passed_packets_total Packets the kernel datapath passed, by reason and direction.
# TYPE seqshiftd_kernel_passed_packets_total counter
seqshiftd_kernel_passed_packets_total{direction="c2s",reason="no_flow"} 0
seqshiftd_kernel_passed_packets_total{direction="s2c",reason="no_flow"} 1.099511627776e+12
# HELP seqshiftd_passed_packets_total Packets written back without a rewrite, by reason.
# TYPE seqshiftd_passed_packets_total counter
seqshiftd_passed_packets_total{reason="no_flow"} 6
seqshiftd_passed_packets_total{reason="not_tcp"} 50
`

func TestSetCollector_ExposesEveryCounterOfTheSet(t *testing.T) {
	m := New(nil, fullSet())
	names := []string{"seqshiftd_datapath_errors_total", "seqshiftd_icmp_translated_packets_total",
		"seqshiftd_kernel_passed_packets_total", "seqshiftd_passed_packets_total"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(setExposition), names...); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(m.Registry(), names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestRegister_RefusesAFamilyExposedTwice(t *testing.T) {
	m := New(nil, fullSet())
	if err := m.Register(fullSet()); err == nil {
		t.Error("a second set with the same families was registered")
	}
}

const fullExposition = `
# HELP seqshiftd_build_info A metric with a constant value of 1 labelled with the running seqshiftd's version.
# TYPE seqshiftd_build_info gauge
seqshiftd_build_info{version="1.2.3"} 1
# HELP seqshiftd_config_last_reload_successful 1 unless the most recent policy reload failed and the previous policy is still in force.
# TYPE seqshiftd_config_last_reload_successful gauge
seqshiftd_config_last_reload_successful 0
# HELP seqshiftd_config_reloads_total Policy reloads (SIGHUP), by result (success, failure).
# TYPE seqshiftd_config_reloads_total counter
seqshiftd_config_reloads_total{result="failure"} 1
seqshiftd_config_reloads_total{result="success"} 3
# HELP seqshiftd_flows_active TCP connections currently tracked, by state.
# TYPE seqshiftd_flows_active gauge
seqshiftd_flows_active{state="established"} 12
seqshiftd_flows_active{state="syn_sent"} 0
seqshiftd_flows_active{state="time_wait"} 3
# HELP seqshiftd_flows_created_total TCP connections admitted to the flow table at their SYN.
# TYPE seqshiftd_flows_created_total counter
seqshiftd_flows_created_total 100
# HELP seqshiftd_flows_evicted_total Tracked connections removed early to make room for new ones.
# TYPE seqshiftd_flows_evicted_total counter
seqshiftd_flows_evicted_total 1
# HELP seqshiftd_flows_expired_total Tracked connections removed when their state's timeout ran out.
# TYPE seqshiftd_flows_expired_total counter
seqshiftd_flows_expired_total 80
# HELP seqshiftd_flows_limit Capacity of the flow table (flows.max); sum(seqshiftd_flows_active) / this is how full it is.
# TYPE seqshiftd_flows_limit gauge
seqshiftd_flows_limit 1000
# HELP seqshiftd_policy_generation Generation of the policy in force: 1 at start, incremented by each successful reload.
# TYPE seqshiftd_policy_generation gauge
seqshiftd_policy_generation 4
# HELP seqshiftd_rewritten_bytes_total TCP payload bytes of the packets whose sequence numbers were shifted, by rule and direction.
# TYPE seqshiftd_rewritten_bytes_total counter
seqshiftd_rewritten_bytes_total{direction="c2s",rule="legacy-plc"} 1500
seqshiftd_rewritten_bytes_total{direction="c2s",rule="reproducible"} 1.125899906842624e+15
seqshiftd_rewritten_bytes_total{direction="s2c",rule="legacy-plc"} 900
# HELP seqshiftd_rewritten_packets_total Packets of rewritten flows, by rule and direction (c2s: from the client). With TUN offload a GSO super-packet counts once.
# TYPE seqshiftd_rewritten_packets_total counter
seqshiftd_rewritten_packets_total{direction="c2s",rule="legacy-plc"} 10
seqshiftd_rewritten_packets_total{direction="c2s",rule="reproducible"} 1.099511627776e+12
seqshiftd_rewritten_packets_total{direction="s2c",rule="legacy-plc"} 8
# HELP seqshiftd_snapshot_failures_total Flow snapshot writes that failed. Present only when state_file is set.
# TYPE seqshiftd_snapshot_failures_total counter
seqshiftd_snapshot_failures_total 2
# HELP seqshiftd_snapshot_last_success_timestamp_seconds Unix time of the last successful flow snapshot write (0: none yet). Present only when state_file is set.
# TYPE seqshiftd_snapshot_last_success_timestamp_seconds gauge
seqshiftd_snapshot_last_success_timestamp_seconds 1.7000000005e+09
# HELP seqshiftd_steering_installed 1 while the datapath's steering is in place (policy rules and routes, or the kernel datapath's tc programs); 0 means intercepted traffic bypasses it.
# TYPE seqshiftd_steering_installed gauge
seqshiftd_steering_installed 1
`

// TestCollector_SnapshotMetricsOnlyWithAStateFile: without state_file nothing is ever written,
// and a snapshot timestamp of 0 would read as "stale for 50 years" to the alert.
func TestCollector_SnapshotMetricsOnlyWithAStateFile(t *testing.T) {
	m := New(func(s *Snapshot) { fullSnapshot(s); s.Snapshots = false })
	n, err := testutil.GatherAndCount(m.Registry(), "seqshiftd_snapshot_last_success_timestamp_seconds", "seqshiftd_snapshot_failures_total")
	if err != nil || n != 0 {
		t.Errorf("%d snapshot series without a state file (%v)", n, err)
	}
}

func TestCollector_ExposesEverySnapshotField(t *testing.T) {
	m := New(fullSnapshot)
	if err := testutil.CollectAndCompare(m.collector, strings.NewReader(fullExposition)); err != nil {
		t.Error(err)
	}
}

func TestCollector_NamesPassPromlint(t *testing.T) {
	m := New(fullSnapshot)
	problems, err := testutil.CollectAndLint(m.collector)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollector_SeriesFollowTheSnapshotOnly(t *testing.T) {
	// Label values come only from what the daemon reports: a rule removed by a reload disappears
	// at the next scrape instead of lingering, and nothing accumulates across scrapes.
	rules := []string{"a", "b", "c"}
	var mu sync.Mutex
	m := New(func(s *Snapshot) {
		mu.Lock()
		defer mu.Unlock()
		s.Rewritten = make(map[RuleDir]Traffic)
		for _, r := range rules {
			s.Rewritten[RuleDir{r, ClientToServer}] = Traffic{1, 1}
			s.Rewritten[RuleDir{r, ServerToClient}] = Traffic{1, 1}
		}
	})
	m.collector.minInterval = 0
	if n := testutil.CollectAndCount(m.collector, "seqshiftd_rewritten_packets_total"); n != 6 {
		t.Errorf("%d rewritten series for 3 rules, want 6", n)
	}
	mu.Lock()
	rules = []string{"a"}
	mu.Unlock()
	if n := testutil.CollectAndCount(m.collector, "seqshiftd_rewritten_packets_total"); n != 2 {
		t.Errorf("%d rewritten series after reloading to 1 rule, want 2", n)
	}
}

func TestCollector_EmptySnapshotHasFixedSeriesOnly(t *testing.T) {
	m := New(func(*Snapshot) {})
	const want = `
# HELP seqshiftd_flows_created_total TCP connections admitted to the flow table at their SYN.
# TYPE seqshiftd_flows_created_total counter
seqshiftd_flows_created_total 0
# HELP seqshiftd_config_last_reload_successful 1 unless the most recent policy reload failed and the previous policy is still in force.
# TYPE seqshiftd_config_last_reload_successful gauge
seqshiftd_config_last_reload_successful 1
`
	if err := testutil.CollectAndCompare(m.collector, strings.NewReader(want),
		"seqshiftd_flows_created_total", "seqshiftd_config_last_reload_successful", "seqshiftd_build_info", "seqshiftd_passed_packets_total"); err != nil {
		t.Error(err)
	}
}

func TestCollector_ConcurrentScrapesShareOneSnapshot(t *testing.T) {
	var calls atomic.Int32
	m := New(func(s *Snapshot) {
		calls.Add(1)
		time.Sleep(20 * time.Millisecond) // walking a big flow table
		fullSnapshot(s)
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := m.Registry().Gather(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("source called %d times for 8 concurrent scrapes, want 1", n)
	}
	m.collector.mu.Lock()
	m.collector.taken = time.Now().Add(-2 * defaultMinInterval)
	m.collector.mu.Unlock()
	m.Registry().Gather()
	if n := calls.Load(); n != 2 {
		t.Errorf("source called %d times after the snapshot aged, want 2", n)
	}
}

func TestNew_NilSourceServesRuntimeMetrics(t *testing.T) {
	m := New(nil)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"go_goroutines", "process_open_fds", "seqshiftd_flows_created_total"} {
		if !names[want] {
			t.Errorf("no %s among %d families", want, len(names))
		}
	}
}

// serve runs ServeListener on a loopback port and returns its base URL and a stop function that
// returns Serve's result.
func serve(t *testing.T, m *Metrics) (string, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln, zaptest.NewLogger(t)) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Serve did not return after its context was cancelled")
		}
	})
	t.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), stop
}

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestServe_ScrapeOverHTTP(t *testing.T) {
	m := New(fullSnapshot)
	base, stop := serve(t, m)
	code, ctype, body := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("GET /metrics: %d %s", code, ctype)
	}
	for _, want := range []string{
		`seqshiftd_rewritten_packets_total{direction="c2s",rule="legacy-plc"} 10`,
		`seqshiftd_build_info{version="1.2.3"} 1`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
		"promhttp_metric_handler_requests_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if err := testutil.ScrapeAndCompare(base+"/metrics", strings.NewReader(fullExposition),
		"seqshiftd_rewritten_packets_total", "seqshiftd_passed_packets_total", "seqshiftd_config_reloads_total"); err != nil {
		t.Error(err)
	}
	if code, _, body := get(t, base+"/"); code != http.StatusOK || !strings.Contains(body, "/metrics") {
		t.Errorf("GET /: %d %q", code, body)
	}
	if code, _, _ := get(t, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/: %d, want 404: only /metrics is served", code)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("endpoint still answers after Serve returned")
	}
}

func TestServe_SlowHeaderClientIsCutOff(t *testing.T) {
	// ReadHeaderTimeout: a client that opens a connection and dribbles its request line must
	// not hold a server goroutine for ever (Slowloris).
	t.Parallel()
	m := New(nil)
	base, _ := serve(t, m)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
	_ = c.SetReadDeadline(time.Now().Add(readHeaderTimeout + 5*time.Second))
	start := time.Now()
	_, err = io.ReadAll(c)
	if err != nil {
		t.Fatalf("server did not close the connection: %v", err)
	}
	if d := time.Since(start); d > readHeaderTimeout+2*time.Second {
		t.Errorf("connection held %v, want about %v", d, readHeaderTimeout)
	}
}

func TestServe_ListenErrorIsReturned(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = New(nil).Serve(context.Background(), ln.Addr().String(), zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "metrics: listen on "+ln.Addr().String()) {
		t.Errorf("Serve on a taken port = %v", err)
	}
}

func TestDir_LabelValues(t *testing.T) {
	for d, want := range map[Dir]string{ClientToServer: "c2s", ServerToClient: "s2c", 7: "unknown"} {
		if d.String() != want {
			t.Errorf("Dir(%d) = %s, want %s", d, d, want)
		}
	}
}

// The daemon passes a method value func(*Snapshot) to New.
var _ func(func(*Snapshot), ...counter.Set) *Metrics = New
