package steering

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
)

// TestPlan_IsWhatInstallInstalls: every rule and route Plan lists is one Install put in place,
// and Install put nothing else there; the sysctls Plan names are those Install set.
func TestPlan_IsWhatInstallInstalls(t *testing.T) {
	gateway(t)
	nstest.WriteSysctl(t, "net/ipv4/ip_forward", "1")
	cfg := testConfig()
	plan, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Install(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var installed []string
	rules, err := listRules()
	if err != nil {
		t.Fatal(err)
	}
	for i := range rules {
		if rules[i].Table == DefaultTable {
			installed = append(installed, describeRule(&rules[i]))
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: DefaultTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for i := range routes {
			installed = append(installed, describeRoute(&routes[i]))
		}
	}
	var planned []string
	var sysctls []string
	for _, l := range plan {
		switch {
		case strings.HasPrefix(l, "sysctl "):
			sysctls = append(sysctls, l)
		case strings.HasPrefix(l, "IPv6 routes as above"):
		default:
			planned = append(planned, l)
		}
	}
	slices.Sort(installed)
	slices.Sort(planned)
	if !slices.Equal(installed, planned) {
		t.Errorf("installed:\n%s\nplanned:\n%s", strings.Join(installed, "\n"), strings.Join(planned, "\n"))
	}
	for _, ch := range rep.Sysctls {
		found := false
		for _, l := range sysctls {
			found = found || strings.HasPrefix(l, "sysctl "+ch.Key+" = "+ch.New)
		}
		if !found {
			t.Errorf("Install set %s, which the plan does not name:\n%s", ch, strings.Join(sysctls, "\n"))
		}
	}
}

func TestCheckHost_RefusesWhatPlanRefuses(t *testing.T) {
	bad := testConfig()
	bad.Intercepts = append(bad.Intercepts, Intercept{Iface: bad.TunName})
	if err := CheckHost(bad); err == nil {
		t.Error("an intercept on the TUN itself passed")
	}
	_, v6err := os.Stat("/proc/sys/net/ipv6")
	if err := CheckHost(testConfig()); (err == nil) != (v6err == nil) {
		t.Errorf("CheckHost with IPv6 prefixes = %v, while /proc/sys/net/ipv6: %v", err, v6err)
	}
}
