package steering

import (
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// tuneSysctls sets what forwarding through the TUN needs on the TUN itself and warns about
// host-wide settings it leaves alone.
//
//   - rp_filter 0 on the TUN: packets written back carry the client's source address, which
//     is routed via the intercept interface, not the TUN, so strict reverse-path filtering drops
//     every one of them. The kernel applies max(conf.all, conf.TUN), so all=1 still makes it
//     strict: that is reported, not changed, as it protects every other interface too. Loose
//     mode (2) passes, the source being reachable somewhere.
//
//   - forwarding 1 on the TUN (IPv4): a packet is forwarded only if its input interface
//     forwards, and the written-back packets' input interface is the TUN. A new interface takes
//     conf.default.forwarding, normally equal to ip_forward, so this rarely changes anything.
//
//   - disable_ipv6 0 on the TUN when IPv6 is intercepted: ipv6_rcv drops every packet arriving
//     on an interface with IPv6 disabled.
//
//   - accept_local 1 on the TUN (IPv4): the ICMP errors this host sends about intercepted
//     connections are steered through the TUN too (see the package comment) and come back
//     with one of its own addresses as the source, which IPv4 otherwise drops as martian.
//
// IPv6 DAD, router solicitations and MLD on the TUN are silenced when
// package tun creates it (no link-local address), so nothing here.
func (rep *Report) tuneSysctls(p *plan) error {
	v4, v6 := p.families[netlink.FAMILY_V4], p.families[netlink.FAMILY_V6]
	if err := rep.set(confPath(4, p.tun, "rp_filter"), "0"); err != nil {
		return err
	}
	if all, _ := readSysctl(confPath(4, "all", "rp_filter")); all == "1" && v4 {
		rep.warn("net.ipv4.conf.all.rp_filter=1: the kernel uses max(all, %s)=1, strict reverse-path filtering, on %s and drops every packet seqshiftd writes back; set it to 2 (loose) or 0", p.tun, p.tun)
	}
	if fwd, _ := readSysctl("net/ipv4/ip_forward"); fwd != "1" && v4 {
		rep.warn("net.ipv4.ip_forward=%s: intercepted IPv4 traffic is not forwarded at all; set it to 1", fwd)
	} else if v4 {
		if err := rep.set(confPath(4, p.tun, "forwarding"), "1"); err != nil {
			return err
		}
	}
	if v4 {
		if err := rep.set(confPath(4, p.tun, "accept_local"), "1"); err != nil {
			return err
		}
	}
	if !v6 {
		return nil
	}
	if err := p.hostProblem(); err != nil {
		return err
	}
	if err := rep.set(confPath(6, p.tun, "disable_ipv6"), "0"); err != nil {
		return err
	}
	if fwd, _ := readSysctl("net/ipv6/conf/all/forwarding"); fwd != "1" {
		rep.warn("net.ipv6.conf.all.forwarding=%s: intercepted IPv6 traffic is not forwarded at all; set it to 1", fwd)
	}
	return nil
}

func (rep *Report) warn(format string, args ...any) {
	rep.Warnings = append(rep.Warnings, fmt.Sprintf(format, args...))
}

// set writes value to the sysctl at path (relative to /proc/sys) unless it holds it already,
// and records the change.
func (rep *Report) set(path, value string) error {
	old, err := readSysctl(path)
	if err != nil {
		return fmt.Errorf("steering: %w", err)
	}
	if old == value {
		return nil
	}
	if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("steering: set %s=%s: %w", sysctlKey(path), value, err)
	}
	rep.Sysctls = append(rep.Sysctls, SysctlChange{Key: sysctlKey(path), Old: old, New: value})
	return nil
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", sysctlKey(path), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// confPath is net/ipv{4,6}/conf/IFACE/KEY.
func confPath(ipv int, iface, key string) string {
	return fmt.Sprintf("net/ipv%d/conf/%s/%s", ipv, iface, key)
}

// sysctlKey is a /proc/sys path in sysctl(8)'s dotted form, where a dot inside an interface
// name (eth0.100) becomes a slash.
func sysctlKey(path string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '/':
			return '.'
		case '.':
			return '/'
		}
		return r
	}, path)
}

// hostProblem is why this host cannot carry the plan at all, as Install would find out: IPv6
// prefixes to intercept on a host whose kernel has IPv6 disabled (ipv6.disable=1).
func (p *plan) hostProblem() error {
	if !p.families[netlink.FAMILY_V6] {
		return nil
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return fmt.Errorf("steering: IPv6 prefixes to intercept but IPv6 is disabled on this host")
	}
	return nil
}
