package main

import (
	"github.com/seqshiftd/seqshiftd/datapath"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/metrics"
)

// Observe mode, as status and metrics show it: per rule and mode, the connection outcomes the
// datapath counted (datapath.RuleCounts) and the traffic of observed flows, summed from the
// flows at read time like the rewritten traffic (ruleTraffic).

// observed reports whether a flow's traffic counts as observed: an observing rule admitted or
// picked it up, so nothing of it was rewritten.
func observed(f *flowtable.Flow) bool {
	return f.Rule() != "" && f.Exempt() == flowtable.ExemptObserve
}

// scrapeRules fills the per-rule observe figures of a metrics snapshot.
func (d *daemon) scrapeRules(s *metrics.Snapshot) {
	s.Observed = d.observed.totals(d.table)
	s.RuleConnections = make(map[metrics.RuleOutcome]uint64)
	s.RuleMalformed = make(map[metrics.RuleMode]uint64)
	for k, c := range d.engine.RuleCounts() {
		for e, n := range c {
			ev := datapath.RuleEvent(e)
			if ev == datapath.RuleMalformed {
				s.RuleMalformed[metrics.RuleMode{Rule: k.Rule, Mode: k.Mode.String()}] = n
				continue
			}
			s.RuleConnections[metrics.RuleOutcome{Rule: k.Rule, Mode: k.Mode.String(), Outcome: ev.String()}] = n
		}
	}
}

// addRuleStatus adds the per-rule figures to status's counters, keyed
// rule.NAME.MODE.OUTCOME (e.g. rule.web.observe.admitted) and rule.NAME.observe.packets_c2s,
// so that `status` lists each rule's together.
func (d *daemon) addRuleStatus(counters map[string]uint64) {
	for k, c := range d.engine.RuleCounts() {
		prefix := "rule." + k.Rule + "." + k.Mode.String() + "."
		for e, n := range c {
			counters[prefix+datapath.RuleEvent(e).String()] = n
		}
	}
	for k, t := range d.observed.totals(d.table) {
		prefix := "rule." + k.Rule + ".observe."
		counters[prefix+"packets_"+k.Dir.String()] = t.Packets
		counters[prefix+"bytes_"+k.Dir.String()] = t.Bytes
	}
}
