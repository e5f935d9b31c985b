package tun

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
)

// steerThrough sends everything the gateway receives from either peer into dev by policy
// routing (a minimal stand-in for package steering, which this package must not import).
func steerThrough(t testing.TB, dev string) {
	t.Helper()
	const table = 100
	nstest.WriteSysctl(t, "net/ipv4/conf/"+dev+"/rp_filter", "0")
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Table: table, Dst: defaultDst(fam)}
		if err := netlink.RouteAdd(r); err != nil {
			t.Fatalf("default dev %s table %d: %v", dev, table, err)
		}
		for _, iif := range []string{"gc", "gs"} {
			rule := netlink.NewRule()
			rule.Family, rule.IifName, rule.Table, rule.Priority = fam, iif, table, 100
			if err := netlink.RuleAdd(rule); err != nil {
				t.Fatalf("rule iif %s: %v", iif, err)
			}
		}
	}
}

func defaultDst(family int) *net.IPNet {
	if family == netlink.FAMILY_V6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}
