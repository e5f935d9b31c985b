package main

import (
	"maps"
	"sync"
	"time"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/metrics"
)

// ruleTraffic keeps per-rule traffic totals for Prometheus without any per-packet cost: the
// flows count their own packets, live flows are summed at scrape time, and a flow's counts move
// into retired when the table removes it.
type ruleTraffic struct {
	counts   func(*flowtable.Flow) bool // which flows this total is of (rewritten, observed)
	mu       sync.Mutex
	retired  map[metrics.RuleDir]metrics.Traffic
	reported map[metrics.RuleDir]metrics.Traffic
}

func newRuleTraffic(counts func(*flowtable.Flow) bool) *ruleTraffic {
	return &ruleTraffic{
		counts:   counts,
		retired:  make(map[metrics.RuleDir]metrics.Traffic),
		reported: make(map[metrics.RuleDir]metrics.Traffic),
	}
}

// rewritten reports whether a flow's traffic counts as rewritten: it has a rule and is not
// exempt. A keep/keep rule still counts; its packets went through the rule.
func rewritten(f *flowtable.Flow) bool {
	return f.Rule() != "" && f.Exempt() == flowtable.ExemptNone
}

// addFlow adds a rewritten flow's counters, both directions, to m.
func addFlow(m map[metrics.RuleDir]metrics.Traffic, f *flowtable.Flow) {
	for _, d := range [...]flowtable.Dir{flowtable.ClientToServer, flowtable.ServerToClient} {
		k := metrics.RuleDir{Rule: f.Rule(), Dir: metrics.Dir(d)}
		c := f.Counters(d)
		t := m[k]
		t.Packets += c.Packets
		t.Bytes += c.Bytes
		m[k] = t
	}
}

// retire is the flow table's OnRemove hook.
func (r *ruleTraffic) retire(f *flowtable.Flow) {
	if !r.counts(f) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	addFlow(r.retired, f)
}

// totals returns retired plus live traffic per rule and direction. A flow removed while the
// table is being walked may be missed for one scrape or, rarely, counted twice; each value is
// clamped to what was reported before so that the counters Prometheus sees never go backwards.
func (r *ruleTraffic) totals(table *flowtable.Table) map[metrics.RuleDir]metrics.Traffic {
	live := make(map[metrics.RuleDir]metrics.Traffic)
	table.Range(func(f *flowtable.Flow) bool {
		if r.counts(f) {
			addFlow(live, f)
		}
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.retired {
		l := live[k]
		live[k] = metrics.Traffic{Packets: l.Packets + t.Packets, Bytes: l.Bytes + t.Bytes}
	}
	for k, t := range live {
		prev := r.reported[k]
		r.reported[k] = metrics.Traffic{Packets: max(t.Packets, prev.Packets), Bytes: max(t.Bytes, prev.Bytes)}
	}
	// Rules whose flows are all gone stay reported at their last value.
	return maps.Clone(r.reported)
}

// scrape fills a metrics snapshot from the flow table and the reload history. The datapath's
// counters are not in it: metrics reads them through their counter.Set.
func (d *daemon) scrape(s *metrics.Snapshot) {
	d.syncKernelNow()
	st := d.table.Stats()
	s.Version = buildVersion()
	s.Rewritten = d.traffic.totals(d.table)
	d.scrapeRules(s)
	s.FlowsActive = make(map[string]int, flowtable.NumStates)
	for i, n := range st.ByState {
		s.FlowsActive[flowtable.State(i).String()] = n
	}
	s.FlowsCreated, s.FlowsExpired, s.FlowsEvicted = st.Created, st.Expired, st.Evicted
	s.PolicyGeneration = d.engine.Policy().Generation
	d.reloadMu.Lock()
	s.ReloadsOK, s.ReloadsFailed = d.reloadsOK, d.reloadsFailed
	s.LastReloadFailed = d.lastReloadErr != ""
	d.reloadMu.Unlock()
	s.FlowsLimit = d.table.Capacity()
	// A few netlink dumps, at most once a second (metrics caches the snapshot): the same check
	// `seqshiftd status` makes.
	installed, err := d.steeringInstalled()
	s.SteeringInstalled = installed && err == nil
	s.Snapshots = d.boot.StateFile != ""
	if ns := d.snapOK.Load(); ns != 0 {
		s.SnapshotLastSuccess = time.Unix(0, ns)
	}
	s.SnapshotFailures = d.snapFailures.Load()
}
