package steering

import (
	"github.com/vishvananda/netlink"
)

// Plan returns, one line each, what Install would put in place for cfg, built from the same
// plan Install works from: the policy rules, the steering table's routes (the TUN route and the
// fail-closed blackhole behind it, per address family) and the sysctls it sets on the TUN. It
// touches nothing and needs no TUN: `seqshiftd check --plan`.
//
// Two things are decided only when Install runs, and the lines say so: IPv6 routes are also
// installed when IPv6 is enabled on the TUN although no IPv6 prefix is intercepted, and the
// TUN's IPv4 forwarding is set only when net.ipv4.ip_forward is 1 (otherwise Install warns).
func Plan(cfg Config) ([]string, error) {
	p, err := cfg.plan()
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range p.rules {
		out = append(out, describeRule(&p.rules[i]))
	}
	fams := []int{netlink.FAMILY_V4}
	if p.families[netlink.FAMILY_V6] {
		fams = append(fams, netlink.FAMILY_V6)
	}
	for _, fam := range fams {
		out = append(out, describeRouteVia(p.tunRoute(fam, 0), p.tun), describeRouteVia(p.blackhole(fam), ""))
	}
	if !p.families[netlink.FAMILY_V6] {
		out = append(out, "IPv6 routes as above too if IPv6 is enabled on "+p.tun)
	}
	out = append(out, "sysctl "+sysctlKey(confPath(4, p.tun, "rp_filter"))+" = 0")
	if p.families[netlink.FAMILY_V4] {
		out = append(out, "sysctl "+sysctlKey(confPath(4, p.tun, "forwarding"))+" = 1 (if net.ipv4.ip_forward = 1)",
			"sysctl "+sysctlKey(confPath(4, p.tun, "accept_local"))+" = 1")
	}
	if p.families[netlink.FAMILY_V6] {
		out = append(out, "sysctl "+sysctlKey(confPath(6, p.tun, "disable_ipv6"))+" = 0")
	}
	return out, nil
}

// CheckHost reports what would make Install fail on this host for cfg before it touched
// anything, for `seqshiftd check`: an invalid cfg, or IPv6 prefixes with IPv6 disabled.
func CheckHost(cfg Config) error {
	p, err := cfg.plan()
	if err != nil {
		return err
	}
	return p.hostProblem()
}
