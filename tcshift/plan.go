package tcshift

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// Plan returns, one line each, what Load and Attach would put in place for cfg, from the same
// hook table Attach works through: on the TAP and on every client-facing interface a clsact
// qdisc (added only where there is none) and our filters, then the maps and what they are
// filled with. It touches nothing: `seqshiftd check --plan`. The tc lines read like the
// listing a test takes of the attached state: "tc IFACE ingress PRIO/HANDLE NAME".
func Plan(cfg Config) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var out []string
	links := []string{cfg.TapName}
	for _, x := range cfg.Ifaces {
		links = append(links, x.Name)
	}
	for i, name := range links {
		hooks := clientHooks
		if i == 0 {
			hooks = tapHooks
		}
		out = append(out, fmt.Sprintf("tc %s qdisc clsact", name))
		for _, h := range hooks {
			hook := "ingress"
			if h.parent == netlink.HANDLE_MIN_EGRESS {
				hook = "egress"
			}
			out = append(out, fmt.Sprintf("tc %s %s %d/%#x %s", name, hook, cfg.priority(), filterHandle, h.name))
		}
	}
	flows := fmt.Sprintf("bpf map %s: %d entries", bpfMapFlows, cfg.MaxFlows)
	if cfg.PinDir != "" {
		flows += ", pinned at " + cfg.flowsPin()
	}
	out = append(out, flows)
	for _, x := range cfg.Ifaces {
		for _, p := range x.To {
			out = append(out, fmt.Sprintf("bpf map %s: %s to %s", bpfMapIntercept, x.Name, p.Masked()))
		}
	}
	out = append(out, fmt.Sprintf("skb mark %#x on what the daemon writes back", cfg.Mark))
	return out, nil
}
