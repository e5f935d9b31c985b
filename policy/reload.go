package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// RestartNeeded lists the settings, by their name in the file (e.g. "tun.name"), whose value
// in c differs from the running configuration but that only take effect at start: the TUN,
// the steering, the sockets, the state file, the flow table's size and the log format. Every
// other setting, and every rule, applies on reload.
func (c *Config) RestartNeeded(running *Config) []string {
	if running == nil {
		return nil
	}
	var out []string
	diff := func(name string, differs bool) {
		if differs {
			out = append(out, name)
		}
	}
	diff("datapath", c.Datapath != running.Datapath)
	diff("kernel.mark", c.Kernel.Mark != running.Kernel.Mark)
	diff("kernel.pin_dir", c.Kernel.PinDir != running.Kernel.PinDir)
	diff("tun.name", c.Tun.Name != running.Tun.Name)
	diff("tun.mtu", c.Tun.MTU != running.Tun.MTU)
	diff("tun.queues", c.Tun.Queues != running.Tun.Queues)
	diff("tun.offload", c.Tun.Offload != running.Tun.Offload)
	diff("intercept", !slices.Equal(interceptSet(c.Intercept), interceptSet(running.Intercept)))
	diff("state_file", c.StateFile != running.StateFile)
	diff("control_socket", c.ControlSocket != running.ControlSocket)
	diff("metrics_listen", c.MetricsListen != running.MetricsListen)
	diff("log.format", c.Log.Format != running.Log.Format)
	diff("flows.max", c.Flows.Max != running.Flows.Max)
	diff("steering.table", c.Steering.Table != running.Steering.Table)
	diff("steering.priority", c.Steering.Priority != running.Steering.Priority)
	diff("steering.protocol", c.Steering.Protocol != running.Steering.Protocol)
	return out
}

// interceptSet is the intercept list as the sorted set of steering rules it makes, so that
// reordering or splitting entries is not mistaken for a change.
func interceptSet(ics []Intercept) []string {
	var out []string
	for _, ic := range ics {
		for _, p := range ic.To {
			out = append(out, ic.Iface+" "+p.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Inherit carries state from the policy in force into c before c replaces it: a sequential
// side of a rule with the same name and the same START and STEP shares the old rule's
// counter, so a reload neither restarts the sequence nor, while the old policy still serves a
// batch, hands out an ISN twice. A changed spec starts afresh at its START.
func (c *Config) Inherit(old *Config) {
	if old == nil {
		return
	}
	byName := make(map[string]*Rule, len(old.Rules))
	for _, r := range old.Rules {
		byName[r.Name] = r
	}
	for _, r := range c.Rules {
		o, ok := byName[r.Name]
		if !ok {
			continue
		}
		if sameSequence(r.Client, o.Client) {
			r.Client.seq = o.Client.seq
		}
		if sameSequence(r.Server, o.Server) {
			r.Server.seq = o.Server.seq
		}
	}
}

// Warnings lists what is valid but probably not meant: no intercept at all, and rules that
// can never match because an earlier rule matches everything they do. Check adds the rest of
// what `seqshiftd check` reports.
func (c *Config) Warnings() []Finding {
	var out []Finding
	if len(c.Intercept) == 0 {
		line, col := c.pos("intercept")
		out = append(out, Finding{Line: line, Col: col, Msg: "no intercept entries: no traffic is steered through seqshiftd"})
	}
	// Each pair costs the length of the later rule's lists (covers looks them up in the
	// earlier rule's index), but there are n²/2 pairs: past a budget the check stops and says
	// so, rather than let a file of many thousand rules make `check` take minutes.
	budget := shadowBudget
rules:
	for j, r := range c.Rules {
		for _, e := range c.Rules[:j] {
			budget -= 1 + len(r.Match.Clients) + len(r.Match.Servers) + len(r.Match.ServerPorts)
			if budget < 0 {
				out = append(out, Finding{Line: r.line, Col: r.col, Msg: fmt.Sprintf("rules from %q on were not checked for shadowing (more than %d comparisons)", r.Name, shadowBudget)})
				break rules
			}
			if e.Match.covers(&r.Match) {
				out = append(out, Finding{Line: r.line, Col: r.col, Msg: fmt.Sprintf("rule %q can never match: rule %q (line %d) before it matches every connection it does",
					r.Name, e.Name, e.line)})
				break
			}
		}
	}
	return out
}

// shadowBudget bounds the work of the shadowed-rule warning: a fraction of a second.
const shadowBudget = 20_000_000

// Summary describes each rule on one line, for `seqshiftd check`.
func (c *Config) Summary() []string {
	out := make([]string, 0, len(c.Rules))
	for _, r := range c.Rules {
		var b strings.Builder
		fmt.Fprintf(&b, "rule %s: match", r.Name)
		m := &r.Match
		if len(m.Clients) == 0 && len(m.Servers) == 0 && len(m.ServerPorts) == 0 {
			b.WriteString(" any")
		}
		if len(m.Clients) > 0 {
			b.WriteString(" clients=" + joinPrefixes(m.Clients))
		}
		if len(m.Servers) > 0 {
			b.WriteString(" servers=" + joinPrefixes(m.Servers))
		}
		if len(m.ServerPorts) > 0 {
			ps := make([]string, len(m.ServerPorts))
			for i, p := range m.ServerPorts {
				ps[i] = p.String()
			}
			b.WriteString(" server_ports=" + strings.Join(ps, ","))
		}
		fmt.Fprintf(&b, "; client_isn: %s; server_isn: %s", r.Client, r.Server)
		switch {
		case r.Client.Keep() && r.Server.Keep():
			b.WriteString(" (tracked, not shifted)")
		case r.Client.Stateless() && r.Server.Stateless():
			b.WriteString(" (can pick up flows mid-stream)")
		}
		if c.Observes(r) {
			b.WriteString("; OBSERVE: tracked and counted with the offsets it would give, nothing rewritten")
		}
		out = append(out, b.String())
	}
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
