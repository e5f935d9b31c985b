package datapath

import (
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/policy"
)

// Per-rule counts of what happened to connections, by the mode the rule was in (observe or
// active): what an operator reads before switching an observed rule live. Traffic per rule is
// not here: each flow counts its own packets, and the daemon sums flows at scrape time.
//
// They are events the flow table cannot show afterwards (a refused connection is no flow; a
// flow picked up and gone left no trace), so the datapath counts them as they happen: one
// atomic add in an array that belongs to the policy generation in force, indexed by the rule's
// position in it (policy.Rule.Pos). No lock and no map on the datapath, and nothing per packet
// except for malformed packets of a known flow.

// RuleEvent indexes the per-rule counters.
type RuleEvent uint8

// What is counted per rule and mode. The connection outcomes are disjoint: each connection the
// rule matched is counted once, in the one that applies.
const (
	RuleAdmitted  RuleEvent = iota // admitted at its SYN (rewritten, or observed)
	RulePickedUp                   // picked up mid-stream (stateless rules only)
	RuleTCPMD5                     // admitted at its SYN but exempt: TCP-MD5 signs the numbers
	RuleTCPAO                      // admitted at its SYN but exempt: TCP-AO signs the numbers
	RuleRefused                    // not admitted: the flow table was full (flows.when_full decides)
	RuleMalformed                  // a packet of one of its flows that could not be parsed or rewritten (rewrite.Endpoints names its flow)
	NumRuleEvents
)

var ruleEventNames = [NumRuleEvents]string{"admitted", "picked_up", "tcp_md5", "tcp_ao", "refused", "malformed"}

// String returns the event's label, e.g. "picked_up".
func (e RuleEvent) String() string {
	if e < NumRuleEvents {
		return ruleEventNames[e]
	}
	return "unknown"
}

// Mode is whether a rule's connections were rewritten or only observed.
type Mode uint8

// Modes.
const (
	ModeActive Mode = iota
	ModeObserve
	numModes
)

// String returns "active" or "observe", the label in status and metrics.
func (m Mode) String() string {
	if m == ModeObserve {
		return "observe"
	}
	return "active"
}

// modeOf is the mode a flow was admitted in: an observed flow is exempt for that reason. (An
// MD5/AO flow under an observing rule is counted as observe when admitted; its later malformed
// packets, if any, are counted as active, since its flow no longer says.)
func modeOf(f *flowtable.Flow) Mode {
	if f.Exempt() == flowtable.ExemptObserve {
		return ModeObserve
	}
	return ModeActive
}

// RuleMode names a rule in one mode.
type RuleMode struct {
	Rule string
	Mode Mode
}

// RuleCounts are one rule's counts in one mode, indexed by RuleEvent.
type RuleCounts [NumRuleEvents]uint64

// ruleCounts are one policy generation's counters: [rule position][mode][event].
type ruleCounts struct {
	cfg *policy.Config
	pos map[string]int // rule name to position, for events of a flow whose rule is known by name
	n   [][numModes][NumRuleEvents]atomic.Uint64
}

func newRuleCounts(cfg *policy.Config) *ruleCounts {
	rc := &ruleCounts{cfg: cfg, pos: make(map[string]int, len(cfg.Rules)),
		n: make([][numModes][NumRuleEvents]atomic.Uint64, len(cfg.Rules))}
	for _, r := range cfg.Rules {
		rc.pos[r.Name] = r.Pos()
	}
	return rc
}

// count adds one event for rule r (nil: nothing to count) in mode m.
func (rc *ruleCounts) count(r *policy.Rule, m Mode, e RuleEvent) {
	if r == nil || r.Pos() >= len(rc.n) {
		return
	}
	rc.n[r.Pos()][m][e].Add(1)
}

// countFlow adds one event for f's rule, found by name in this generation (a rule dropped by a
// reload since f was admitted is not counted), in the mode f was admitted in.
func (rc *ruleCounts) countFlow(f *flowtable.Flow, e RuleEvent) {
	if f.Rule() == "" {
		return
	}
	if i, ok := rc.pos[f.Rule()]; ok {
		rc.n[i][modeOf(f)][e].Add(1)
	}
}

// add adds this generation's counts into m.
func (rc *ruleCounts) add(m map[RuleMode]RuleCounts) {
	for i, r := range rc.cfg.Rules {
		for mode := range numModes {
			var c RuleCounts
			nonzero := false
			for e := range NumRuleEvents {
				c[e] = rc.n[i][mode][e].Load()
				nonzero = nonzero || c[e] != 0
			}
			k := RuleMode{Rule: r.Name, Mode: mode}
			_, seen := m[k]
			// A rule in its current mode is listed with zeros, so that rate() works from the
			// first connection; the other mode only once it has counts.
			if !nonzero && !seen && (mode == ModeObserve) != rc.cfg.Observes(r) {
				continue
			}
			t := m[k]
			for e := range c {
				t[e] += c[e]
			}
			m[k] = t
		}
	}
}

// ruleHistory keeps every generation's counters: the current one and the one before are read
// live (a datapath goroutine may still finish a batch under the previous policy); older ones
// are folded into base, as nothing counts into them any more.
type ruleHistory struct {
	mu   sync.Mutex
	base map[RuleMode]RuleCounts
	prev *ruleCounts
	cur  *ruleCounts
}

// install makes rc the current generation's counters.
func (h *ruleHistory) install(rc *ruleCounts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.prev != nil {
		if h.base == nil {
			h.base = make(map[RuleMode]RuleCounts)
		}
		h.prev.add(h.base)
	}
	h.prev, h.cur = h.cur, rc
}

// totals returns every rule's counts since start, by mode. Rules that left the policy keep
// their last counts; counts only grow.
func (h *ruleHistory) totals() map[RuleMode]RuleCounts {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[RuleMode]RuleCounts, len(h.base)+2*len(h.cur.cfg.Rules))
	for k, v := range h.base {
		m[k] = v
	}
	if h.prev != nil {
		h.prev.add(m)
	}
	h.cur.add(m)
	return m
}

// RuleCounts returns, per rule and mode, the connections its flows were admitted, picked up,
// exempted or refused in and their malformed packets, since start.
func (e *Engine) RuleCounts() map[RuleMode]RuleCounts { return e.rules.totals() }

// install attaches p's per-rule counters and says, at info, which rules observe: once per
// policy, never per connection.
func (e *Engine) install(p *Policy) {
	if p.rules == nil {
		p.rules = newRuleCounts(p.Config)
	}
	e.rules.mu.Lock()
	wasObserving := e.rules.cur != nil && len(e.rules.cur.cfg.Observing()) > 0
	e.rules.mu.Unlock()
	e.rules.install(p.rules)
	switch names := p.Config.Observing(); {
	case len(names) > 0:
		e.log.Info("rules in observe mode: their connections are tracked and planned, never rewritten",
			zap.Uint64("generation", p.Generation), zap.Bool("whole_policy", p.Config.Observe), zap.Strings("rules", names))
	case wasObserving:
		e.log.Info("no rule observes any more: new connections are rewritten; observed ones stay unshifted until they end",
			zap.Uint64("generation", p.Generation))
	}
}
