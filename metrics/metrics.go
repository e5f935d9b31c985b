// Package metrics exposes seqshiftd's counters to Prometheus on an HTTP /metrics endpoint.
//
// The datapath keeps its own plain counters; this package reads them only when Prometheus
// scrapes: counter families through their counter.Set (described once by their owner, exposed
// here with no code per counter), and the daemon's other figures through a Snapshot it fills. It must never cost the datapath anything per
// packet: nothing here is called per packet, no Prometheus counter is incremented by the
// datapath, and every label value comes from a fixed set (reasons, states, directions) or from
// the configured rule names, so the number of series is bounded by the configuration.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/counter"
)

// Dir is a direction of a connection; its values match flowtable.Dir so the daemon can convert.
type Dir uint8

// Directions.
const (
	ClientToServer Dir = iota
	ServerToClient
)

// String returns the direction's label value, "c2s" or "s2c" as in the flows listing.
func (d Dir) String() string {
	switch d {
	case ClientToServer:
		return "c2s"
	case ServerToClient:
		return "s2c"
	}
	return "unknown"
}

// RuleDir keys rewritten traffic by rule name and direction.
type RuleDir struct {
	Rule string
	Dir  Dir
}

// RuleMode keys per-rule counts by rule name and mode ("observe" or "active").
type RuleMode struct {
	Rule, Mode string
}

// RuleOutcome keys connection counts by rule, mode and outcome (admitted, picked_up, tcp_md5,
// tcp_ao, refused: the datapath names them).
type RuleOutcome struct {
	Rule, Mode, Outcome string
}

// Traffic is a packet and byte count. Packets are as read from the TUN (with offload a GSO
// super-packet counts once); bytes are TCP payload bytes, what the application sent.
type Traffic struct {
	Packets, Bytes uint64
}

// Snapshot is what the daemon reports at each scrape. Counters must only ever grow while the
// daemon runs (Prometheus handles the reset at restart); a rule that disappears on reload may
// simply be left out. Maps keyed by reason or state should list every value of their fixed set,
// zeros included, so that rate() works from the first increment.
type Snapshot struct {
	// Version labels seqshiftd_build_info; empty leaves that metric out.
	Version string

	// Rewritten is traffic whose sequence numbers were shifted, per rule and direction.
	Rewritten map[RuleDir]Traffic
	// Observed is traffic of flows an observing rule admitted (not one byte rewritten), per
	// rule and direction: what Rewritten would have counted had the rule been active.
	Observed map[RuleDir]Traffic
	// RuleConnections counts the connections each rule matched, per mode and outcome.
	RuleConnections map[RuleOutcome]uint64
	// RuleMalformed counts malformed packets of each rule's flows, per mode.
	RuleMalformed map[RuleMode]uint64

	// FlowsActive counts tracked flows by state (flowtable.State strings).
	FlowsActive map[string]int
	// FlowsCreated counts flows admitted at a SYN.
	FlowsCreated uint64
	// FlowsExpired counts flows removed by their state's timeout; FlowsEvicted those removed
	// early to make room.
	FlowsExpired, FlowsEvicted uint64

	// ReloadsOK and ReloadsFailed count SIGHUP reloads by outcome.
	ReloadsOK, ReloadsFailed uint64
	// LastReloadFailed is true while the most recent reload has failed and the previous policy
	// is still in force.
	LastReloadFailed bool
	// PolicyGeneration is the generation of the policy in force (1 at start, +1 per reload).
	PolicyGeneration uint64

	// FlowsLimit is the flow table's capacity: the sum of FlowsActive over it is how full the
	// table is, which "table nearly full" alerts on.
	FlowsLimit int
	// SteeringInstalled is true while the datapath's steering is in place: every policy rule
	// and route, or every tc program of the kernel datapath; false means intercepted traffic
	// bypasses it.
	SteeringInstalled bool
	// Snapshots is false when no state_file is configured; the snapshot metrics are then left
	// out rather than reported as forever stale.
	Snapshots bool
	// SnapshotLastSuccess is when the flow snapshot was last written; zero before the first.
	SnapshotLastSuccess time.Time
	// SnapshotFailures counts snapshot writes that failed.
	SnapshotFailures uint64
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Prefix+name, help, labels, nil)
}

// Prefix starts every metric name.
const Prefix = "seqshiftd_"

// The metric names follow https://prometheus.io/docs/practices/naming/: a seqshiftd_ prefix,
// base units, _total on counters, and one metric with a label where the label values add up to
// a meaningful total (all reasons a packet was passed, both outcomes of a reload). Counter
// families of a counter.Set are named by their owner, under the same rules.
var (
	descBuildInfo = desc("build_info",
		"A metric with a constant value of 1 labelled with the running seqshiftd's version.", "version")
	descRewrittenPackets = desc("rewritten_packets_total",
		"Packets of rewritten flows, by rule and direction (c2s: from the client). With TUN offload a GSO super-packet counts once.",
		"rule", "direction")
	descRewrittenBytes = desc("rewritten_bytes_total",
		"TCP payload bytes of the packets whose sequence numbers were shifted, by rule and direction.",
		"rule", "direction")
	descObservedPackets = desc("observed_packets_total",
		"Packets of observed flows (an observing rule's: tracked, never rewritten), by rule and direction. With TUN offload a GSO super-packet counts once.",
		"rule", "direction")
	descObservedBytes = desc("observed_bytes_total",
		"TCP payload bytes of the packets of observed flows, by rule and direction.",
		"rule", "direction")
	descRuleConnections = desc("rule_connections_total",
		"TCP connections each rule matched, by mode (observe, active) and outcome (admitted at the SYN, picked_up mid-stream, tcp_md5 and tcp_ao: exempt because signed, refused: the flow table was full).",
		"rule", "mode", "outcome")
	descRuleMalformed = desc("rule_malformed_packets_total",
		"Packets of a rule's flows that could not be parsed or rewritten, by rule and mode (those whose addresses or ports cannot be read name no flow and are in malformed_packets_total only).",
		"rule", "mode")
	descFlowsActive = desc("flows_active",
		"TCP connections currently tracked, by state.", "state")
	descFlowsCreated = desc("flows_created_total",
		"TCP connections admitted to the flow table at their SYN.")
	descFlowsExpired = desc("flows_expired_total",
		"Tracked connections removed when their state's timeout ran out.")
	descFlowsEvicted = desc("flows_evicted_total",
		"Tracked connections removed early to make room for new ones.")
	descReloads = desc("config_reloads_total",
		"Policy reloads (SIGHUP), by result (success, failure).", "result")
	descLastReloadOK = desc("config_last_reload_successful",
		"1 unless the most recent policy reload failed and the previous policy is still in force.")
	descGeneration = desc("policy_generation",
		"Generation of the policy in force: 1 at start, incremented by each successful reload.")
	descFlowsLimit = desc("flows_limit",
		"Capacity of the flow table (flows.max); sum(seqshiftd_flows_active) / this is how full it is.")
	descSteering = desc("steering_installed",
		"1 while the datapath's steering is in place (policy rules and routes, or the kernel datapath's tc programs); 0 means intercepted traffic bypasses it.")
	descSnapshotOK = desc("snapshot_last_success_timestamp_seconds",
		"Unix time of the last successful flow snapshot write (0: none yet). Present only when state_file is set.")
	descSnapshotFailures = desc("snapshot_failures_total",
		"Flow snapshot writes that failed. Present only when state_file is set.")
)

// defaultMinInterval is how long one Snapshot answers scrapes: filling it may walk the whole flow
// table, so several Prometheus servers scraping at once must not multiply that cost.
const defaultMinInterval = time.Second

// collector turns Snapshots into metrics at scrape time.
type collector struct {
	source      func(*Snapshot)
	minInterval time.Duration

	mu    sync.Mutex // serialises calls to source and guards the cache
	last  Snapshot
	taken time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBuildInfo, descRewrittenPackets, descRewrittenBytes, descObservedPackets, descObservedBytes,
		descRuleConnections, descRuleMalformed, descFlowsActive, descFlowsCreated,
		descFlowsExpired, descFlowsEvicted, descReloads, descLastReloadOK, descGeneration,
		descFlowsLimit, descSteering, descSnapshotOK, descSnapshotFailures,
	} {
		ch <- d
	}
}

// snapshot returns a recent Snapshot, asking the source at most once per minInterval. The
// returned value's maps are never written again, so callers may read them without the lock.
func (c *collector) snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.source != nil && (c.taken.IsZero() || time.Since(c.taken) >= c.minInterval) {
		var s Snapshot
		c.source(&s)
		c.last, c.taken = s, time.Now()
	}
	return c.last
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if s.Version != "" {
		gauge(descBuildInfo, 1, s.Version)
	}
	for k, t := range s.Rewritten {
		counter(descRewrittenPackets, t.Packets, k.Rule, k.Dir.String())
		counter(descRewrittenBytes, t.Bytes, k.Rule, k.Dir.String())
	}
	for k, t := range s.Observed {
		counter(descObservedPackets, t.Packets, k.Rule, k.Dir.String())
		counter(descObservedBytes, t.Bytes, k.Rule, k.Dir.String())
	}
	for k, n := range s.RuleConnections {
		counter(descRuleConnections, n, k.Rule, k.Mode, k.Outcome)
	}
	for k, n := range s.RuleMalformed {
		counter(descRuleMalformed, n, k.Rule, k.Mode)
	}
	for state, n := range s.FlowsActive {
		gauge(descFlowsActive, float64(n), state)
	}
	counter(descFlowsCreated, s.FlowsCreated)
	counter(descFlowsExpired, s.FlowsExpired)
	counter(descFlowsEvicted, s.FlowsEvicted)
	counter(descReloads, s.ReloadsOK, "success")
	counter(descReloads, s.ReloadsFailed, "failure")
	lastOK := 1.0
	if s.LastReloadFailed {
		lastOK = 0
	}
	gauge(descLastReloadOK, lastOK)
	gauge(descGeneration, float64(s.PolicyGeneration))
	gauge(descFlowsLimit, float64(s.FlowsLimit))
	gauge(descSteering, boolGauge(s.SteeringInstalled))
	if s.Snapshots {
		ts := 0.0
		if !s.SnapshotLastSuccess.IsZero() {
			ts = float64(s.SnapshotLastSuccess.UnixNano()) / 1e9
		}
		gauge(descSnapshotOK, ts)
		counter(descSnapshotFailures, s.SnapshotFailures)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// setCollector exposes a counter.Set: one metric per Desc, one series per counter, read from
// the set at every scrape (reading is a sum of atomics, so no cache is needed).
type setCollector struct {
	set   counter.Set
	descs []*prometheus.Desc
}

func newSetCollector(s counter.Set) *setCollector {
	c := &setCollector{set: s}
	for _, d := range s.Descs() {
		c.descs = append(c.descs, desc(d.Name, d.Help, d.Labels...))
	}
	return c
}

func (c *setCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *setCollector) Collect(ch chan<- prometheus.Metric) {
	vals := c.set.Values()
	for i, d := range c.set.Descs() {
		for j, v := range vals[i] {
			var labels []string
			if len(d.Labels) != 0 {
				labels = d.Values[j]
			}
			ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.CounterValue, float64(v), labels...)
		}
	}
}

// Metrics is seqshiftd's Prometheus registry: its own, never the global default one, so that
// nothing a library registers behind our back ends up on the endpoint.
type Metrics struct {
	reg       *prometheus.Registry
	collector *collector
}

// New returns the metrics for a daemon whose counters source fills in at scrape time, and
// every counter family of sets. source gets a zero Snapshot each time and must fill it with
// maps of its own that it does not touch afterwards (the Snapshot is shared by the scrapes of
// the next second). It must be safe to call from an HTTP goroutine while the datapath runs; it
// is called at most once per second however many scrapes arrive. A nil source and no sets
// expose only the Go runtime and process metrics. It panics if two families share a name.
func New(source func(*Snapshot), sets ...counter.Set) *Metrics {
	c := &collector{source: source, minInterval: defaultMinInterval}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m := &Metrics{reg: reg, collector: c}
	for _, s := range sets {
		if err := m.Register(s); err != nil {
			panic(err)
		}
	}
	return m
}

// Register exposes the counter families of s from now on, e.g. those of a datapath started
// after New. It fails if a family's name is already exposed.
func (m *Metrics) Register(s counter.Set) error {
	if err := m.reg.Register(newSetCollector(s)); err != nil {
		return fmt.Errorf("metrics: register counters: %w", err)
	}
	return nil
}

// Registry returns the registry, for tests and for registering further collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// HTTP limits: a scrape is one small GET, so anything slower or bigger is a misbehaving client.
const (
	readHeaderTimeout = 5 * time.Second
	scrapeTimeout     = 10 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// Handler returns the HTTP handler serving /metrics and a one-line index page at /.
func (m *Metrics) Handler(log *zap.Logger) http.Handler {
	metrics := promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(log),
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes share one Snapshot per second anyway; this bounds goroutines and encoders.
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout,
	}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "seqshiftd: metrics at /metrics")
	})
	return mux
}

// Serve listens on addr (host:port) and serves the metrics until ctx is done, then shuts the
// server down and returns nil. Any earlier failure, including to listen, is returned.
func (m *Metrics) Serve(ctx context.Context, addr string, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return m.ServeListener(ctx, ln, log)
}

// ServeListener is Serve on a listener the caller opened, e.g. to fail start-up early when the
// address is taken. It closes ln.
func (m *Metrics) ServeListener(ctx context.Context, ln net.Listener, log *zap.Logger) error {
	srv := &http.Server{
		Handler:           m.Handler(log),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		WriteTimeout:      scrapeTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("metrics endpoint listening", zap.Stringer("addr", ln.Addr()))
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics: shut down: %w", err)
	}
	return nil
}
