package steering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/tun"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
)

func TestConfig_RejectsInvalid(t *testing.T) {
	ok := Config{TunName: "sst0", Intercepts: []Intercept{{Iface: "ic0", To: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}}}}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no TUN", func(c *Config) { c.TunName = "" }},
		{"main table", func(c *Config) { c.Table = 254 }},
		{"local table", func(c *Config) { c.Table = 255 }},
		{"negative table", func(c *Config) { c.Table = -1 }},
		{"priority after main", func(c *Config) { c.Priority = 32766 }},
		{"protocol boot", func(c *Config) { c.Protocol = 3 }},
		{"protocol too big", func(c *Config) { c.Protocol = 256 }},
		{"intercept the TUN", func(c *Config) { c.Intercepts[0].Iface = "sst0" }},
		{"interface name too long", func(c *Config) { c.Intercepts[0].Iface = "a-very-long-name0" }},
		{"invalid prefix", func(c *Config) { c.Intercepts[0].To = []netip.Prefix{{}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.Intercepts = []Intercept{{Iface: "ic0", To: slices.Clone(ok.Intercepts[0].To)}}
			tc.edit(&c)
			if _, err := c.plan(); err == nil {
				t.Errorf("%+v accepted", c)
			}
			if _, err := Install(c, nil); err == nil {
				t.Errorf("Install(%+v) succeeded", c)
			}
		})
	}
	if _, err := ok.plan(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestConfig_Defaults(t *testing.T) {
	id, err := Config{TunName: "sst0"}.ids()
	if err != nil {
		t.Fatal(err)
	}
	if id != (ids{DefaultTable, DefaultPriority, DefaultProtocol}) || id != (ids{5813, 5813, 213}) {
		t.Errorf("defaults %+v", id)
	}
	id, _ = Config{Table: 7, Priority: 8, Protocol: 9}.ids()
	if id != (ids{7, 8, 9}) {
		t.Errorf("explicit values not kept: %+v", id)
	}
}

// gateway sets up a fresh namespace as a gateway with two intercept interfaces (veth pairs
// ic0 and ic1, peers left dangling in the same namespace) and an open seqshiftd TUN.
func gateway(t *testing.T) tun.Device {
	t.Helper()
	nstest.SetUp(t)
	ip(t, "link", "set", "lo", "up")
	for _, name := range []string{"ic0", "ic1"} {
		ip(t, "link", "add", name, "type", "veth", "peer", "name", name+"p")
		ip(t, "link", "set", name, "up")
		ip(t, "link", "set", name+"p", "up")
	}
	ip(t, "addr", "add", "198.18.9.2/24", "dev", "ic0")
	d, err := tun.Open(tun.Config{Name: "sst0", Offload: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func testConfig() Config {
	return Config{TunName: "sst0", Intercepts: []Intercept{
		{Iface: "ic0", To: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:2:0:1::/64")}},
		{Iface: "ic1", To: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("2001:2:0:2::/64")}},
	}}
}

// ip runs ip(8) in the test's namespace (the child inherits the locked thread's namespace).
func ip(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func sysctl(t testing.TB, path string) string {
	t.Helper()
	v, err := readSysctl(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dump is every rule and route of the namespace, as ip(8) prints them.
func dump(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule", "show"}, {"-6", "rule", "show"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		fmt.Fprintf(&b, "## ip %s\n%s", strings.Join(args, " "), ip(t, args...))
	}
	return b.String()
}

func TestInstall_RulesRoutesAndSysctls(t *testing.T) {
	gateway(t)
	nstest.WriteSysctl(t, "net/ipv4/conf/sst0/rp_filter", "1")
	nstest.WriteSysctl(t, "net/ipv4/conf/all/rp_filter", "1")
	nstest.WriteSysctl(t, "net/ipv4/ip_forward", "0")
	nstest.WriteSysctl(t, "net/ipv6/conf/all/forwarding", "0")
	cfg := testConfig()
	cfg.Intercepts = append(cfg.Intercepts, Intercept{Iface: "ic9", To: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}})

	rep, err := Install(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}

	// Rules, through netlink.
	rules, err := netlink.RuleListFiltered(netlink.FAMILY_ALL, &netlink.Rule{Table: DefaultTable, Priority: DefaultPriority},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PRIORITY)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range rules {
		if rules[i].Protocol != DefaultProtocol {
			t.Errorf("rule %s has protocol %d", describeRule(&rules[i]), rules[i].Protocol)
		}
		got = append(got, fmt.Sprintf("%s %s %s", rules[i].IifName, rules[i].Dst, protoName(rules[i].IPProto)))
	}
	want := []string{
		"ic0 198.18.0.0/24 tcp", "ic0 198.18.0.0/24 icmp", "ic0 2001:2:0:1::/64 tcp", "ic0 2001:2:0:1::/64 ipv6-icmp",
		"ic1 198.18.1.0/24 tcp", "ic1 198.18.1.0/24 icmp", "ic1 2001:2:0:2::/64 tcp", "ic1 2001:2:0:2::/64 ipv6-icmp",
		"ic9 198.19.0.0/16 tcp", "ic9 198.19.0.0/16 icmp",
		// The host's own ICMP errors toward every intercepted prefix, to be translated too.
		"lo 198.18.0.0/24 icmp", "lo 2001:2:0:1::/64 ipv6-icmp", "lo 198.18.1.0/24 icmp",
		"lo 2001:2:0:2::/64 ipv6-icmp", "lo 198.19.0.0/16 icmp",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n got %q\nwant %q", got, want)
	}
	if rep.Rules != len(want) || rep.Routes != 4 || len(rep.Removed) != 0 {
		t.Errorf("report counts rules %d routes %d removed %v", rep.Rules, rep.Routes, rep.Removed)
	}

	// The same, as an administrator sees them.
	rules4 := ip(t, "-4", "rule", "show")
	for _, l := range []string{
		"5813: from all to 198.18.0.0/24 iif ic0 ipproto tcp lookup 5813 proto 213",
		"5813: from all to 198.18.0.0/24 iif ic0 ipproto icmp lookup 5813 proto 213",
		"5813: from all to 198.19.0.0/16 iif ic9 [detached] ipproto tcp lookup 5813 proto 213",
		"5813: from all to 198.18.1.0/24 iif lo ipproto icmp lookup 5813 proto 213",
	} {
		if !slices.Contains(lines(rules4), l) {
			t.Errorf("ip rule lacks %q:\n%s", l, rules4)
		}
	}
	if l := "5813: from all to 2001:2:0:2::/64 iif ic1 ipproto ipv6-icmp lookup 5813 proto 213"; !slices.Contains(lines(ip(t, "-6", "rule", "show")), l) {
		t.Errorf("ip -6 rule lacks %q", l)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-4", "route", "show", "table", "5813"}, []string{
			"default dev sst0 proto 213 scope link metric 1",
			"blackhole default proto 213 metric 2147483647",
		}},
		{[]string{"-6", "route", "show", "table", "5813"}, []string{
			"default dev sst0 proto 213 metric 1 pref medium",
			"blackhole default dev lo proto 213 metric 2147483647 pref medium",
		}},
	} {
		if got := lines(ip(t, tc.args...)); !slices.Equal(got, tc.want) {
			t.Errorf("ip %s:\n got %q\nwant %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}

	// Sysctls: only the TUN's own changed, and reported; host-wide ones warned about.
	if v := sysctl(t, "net/ipv4/conf/sst0/rp_filter"); v != "0" {
		t.Errorf("sst0 rp_filter = %s, want 0", v)
	}
	if v := sysctl(t, "net/ipv4/conf/all/rp_filter"); v != "1" {
		t.Errorf("all.rp_filter = %s: Install must not change it", v)
	}
	if v := sysctl(t, "net/ipv4/ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s: Install must not change it", v)
	}
	wantChange := SysctlChange{Key: "net.ipv4.conf.sst0.rp_filter", Old: "1", New: "0"}
	if !slices.Contains(rep.Sysctls, wantChange) {
		t.Errorf("report sysctls %v lack %v", rep.Sysctls, wantChange)
	}
	// The host's own ICMP errors come back from the TUN with its own address as the source.
	if v := sysctl(t, "net/ipv4/conf/sst0/accept_local"); v != "1" {
		t.Errorf("sst0 accept_local = %s, want 1", v)
	}
	for _, w := range []string{"net.ipv4.conf.all.rp_filter=1", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", "ic9 does not exist"} {
		if !slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("no warning about %q in %q", w, rep.Warnings)
		}
	}

	core, logs := observer.New(zapcore.InfoLevel)
	rep.Log(zap.New(core))
	if logs.FilterMessage("sysctl changed").FilterField(zap.String("key", "net.ipv4.conf.sst0.rp_filter")).Len() != 1 ||
		logs.FilterLevelExact(zapcore.WarnLevel).Len() != len(rep.Warnings) || logs.FilterMessage("steering installed").Len() != 1 {
		t.Errorf("Report.Log wrote %v", logs.All())
	}

	if ok, err := Installed(cfg); !ok || err != nil {
		t.Errorf("Installed = %v, %v after Install", ok, err)
	}
}

func TestInstall_SetsTunForwardingAndIPv6(t *testing.T) {
	gateway(t)
	nstest.WriteSysctl(t, "net/ipv4/ip_forward", "1")
	nstest.WriteSysctl(t, "net/ipv6/conf/all/forwarding", "1")
	nstest.WriteSysctl(t, "net/ipv4/conf/all/rp_filter", "2")
	nstest.WriteSysctl(t, "net/ipv4/conf/sst0/forwarding", "0")
	nstest.WriteSysctl(t, "net/ipv6/conf/sst0/disable_ipv6", "1")
	rep, err := Install(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []SysctlChange{
		{Key: "net.ipv4.conf.sst0.forwarding", Old: "0", New: "1"},
		{Key: "net.ipv6.conf.sst0.disable_ipv6", Old: "1", New: "0"},
	}
	for _, w := range want {
		if !slices.Contains(rep.Sysctls, w) {
			t.Errorf("report sysctls %v lack %v", rep.Sysctls, w)
		}
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings on a well-configured host: %q", rep.Warnings)
	}
}

func TestInstall_IsIdempotentAndReplacesOnlyLeftovers(t *testing.T) {
	gateway(t)
	// A crashed run with an older configuration left these (same table, priority, protocol)...
	ip(t, "rule", "add", "iif", "ic0", "to", "198.18.5.0/24", "ipproto", "tcp", "lookup", "5813", "priority", "5813", "protocol", "213")
	ip(t, "rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "ipproto", "tcp", "fwmark", "7", "lookup", "5813", "priority", "5813", "protocol", "213")
	ip(t, "route", "add", "198.18.5.0/24", "dev", "ic0", "table", "5813", "proto", "213")
	ip(t, "-6", "route", "add", "blackhole", "default", "table", "5813", "metric", "9", "proto", "213")
	// ...and these belong to someone else.
	foreign := [][]string{
		{"rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "ipproto", "tcp", "lookup", "5813", "priority", "5813", "protocol", "static"},
		{"rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "ipproto", "tcp", "lookup", "5813", "priority", "5812", "protocol", "213"},
		{"rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "ipproto", "tcp", "lookup", "100", "priority", "5813", "protocol", "213"},
		{"route", "add", "198.18.6.0/24", "dev", "ic0", "table", "5813", "proto", "static"},
		{"route", "add", "198.18.6.0/24", "dev", "ic0", "table", "100", "proto", "213"},
	}
	for _, args := range foreign {
		ip(t, args...)
	}

	rep, err := Install(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Removed)
	wantRemoved := []string{
		"IPv4 route 198.18.5.0/24 dev ic0 table 5813 metric 0 protocol 213",
		"IPv6 route blackhole default table 5813 metric 9 protocol 213",
		"rule iif ic0 to 198.18.0.0/24 ipproto tcp lookup 5813 priority 5813 protocol 213",
		"rule iif ic0 to 198.18.5.0/24 ipproto tcp lookup 5813 priority 5813 protocol 213",
	}
	if !slices.Equal(rep.Removed, wantRemoved) {
		t.Errorf("removed:\n got %q\nwant %q", rep.Removed, wantRemoved)
	}
	all := dump(t)
	for _, gone := range []string{"198.18.5.0/24", "fwmark", "metric 9 "} {
		if strings.Contains(all, gone) {
			t.Errorf("leftover %q still installed:\n%s", gone, all)
		}
	}
	for _, want := range []string{
		"5813: from all to 198.18.0.0/24 iif ic0 ipproto tcp lookup 5813 proto static",
		"5812: from all to 198.18.0.0/24 iif ic0 ipproto tcp lookup 5813 proto 213",
		"5813: from all to 198.18.0.0/24 iif ic0 ipproto tcp lookup 100 proto 213",
		"198.18.6.0/24 dev ic0 table 5813 proto static scope link",
		"198.18.6.0/24 dev ic0 table 100 proto 213 scope link",
	} {
		if !slices.Contains(lines(all), want) {
			t.Errorf("foreign %q was touched:\n%s", want, all)
		}
	}

	// Again: nothing to change, nothing changed.
	before := dump(t)
	rep, err = Install(testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 || len(rep.Sysctls) != 0 {
		t.Errorf("second Install removed %q, changed %v", rep.Removed, rep.Sysctls)
	}
	if after := dump(t); after != before {
		t.Errorf("second Install changed the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestInstall_FailClosedWhenTunVanishes(t *testing.T) {
	d := gateway(t)
	nstest.WriteSysctl(t, "net/ipv4/ip_forward", "1")
	cfg := testConfig()
	if _, err := Install(cfg, nil); err != nil {
		t.Fatal(err)
	}
	get := func(proto string) (string, error) {
		out, err := exec.Command("ip", "route", "get", "198.18.0.5", "from", "198.18.9.1", "iif", "ic0", "ipproto", proto).CombinedOutput()
		return string(out), err
	}
	if out, err := get("tcp"); err != nil || !strings.Contains(out, "dev sst0 table 5813") {
		t.Fatalf("TCP to an intercepted prefix is not routed into the TUN: %v %s", err, out)
	}

	d.Close() // the daemon stops or crashes: the kernel deletes the TUN and its routes

	for _, tc := range []struct{ fam, want string }{
		{"-4", "blackhole default proto 213 metric 2147483647"},
		{"-6", "blackhole default dev lo proto 213 metric 2147483647 pref medium"},
	} {
		if got := lines(ip(t, tc.fam, "route", "show", "table", "5813")); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("ip %s route show table 5813 without the TUN = %q, want only %q", tc.fam, got, tc.want)
		}
	}
	// Blackholed on input: the kernel answers EINVAL rather than a route.
	if out, err := get("tcp"); err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("TCP to an intercepted prefix without the TUN: %v %s, want blackholed", err, out)
	}
	if out, _ := get("udp"); strings.Contains(out, "Invalid argument") {
		t.Errorf("UDP is not intercepted but was blackholed: %s", out)
	}
	if ok, err := Installed(cfg); ok || err != nil {
		t.Errorf("Installed = %v, %v without the TUN", ok, err)
	}
	// The rules stay, so steered traffic keeps hitting the blackhole.
	if n := strings.Count(ip(t, "rule", "show"), "lookup 5813 proto 213"); n != 6 {
		t.Errorf("%d IPv4 rules left after the TUN vanished, want 6 (tcp, icmp and the host's own icmp, per prefix)", n)
	}
}

func TestInstalled_DetectsAMissingRule(t *testing.T) {
	gateway(t)
	cfg := testConfig()
	if _, err := Install(cfg, nil); err != nil {
		t.Fatal(err)
	}
	ip(t, "-6", "rule", "del", "iif", "ic1", "to", "2001:2:0:2::/64", "ipproto", "ipv6-icmp", "lookup", "5813", "priority", "5813", "protocol", "213")
	if ok, err := Installed(cfg); ok || err != nil {
		t.Errorf("Installed = %v, %v with a rule missing", ok, err)
	}
	ip(t, "-6", "route", "del", "default", "dev", "sst0", "table", "5813")
	if _, err := Install(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := Installed(cfg); !ok || err != nil {
		t.Errorf("Installed = %v, %v after reinstalling", ok, err)
	}
}

func TestRemove_LeavesTheNamespaceAsBefore(t *testing.T) {
	d := gateway(t)
	ip(t, "rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "ipproto", "tcp", "lookup", "5813", "priority", "5813", "protocol", "static")
	ip(t, "rule", "add", "iif", "ic0", "to", "198.18.0.0/24", "lookup", "5813", "priority", "5813")
	ip(t, "-6", "rule", "add", "iif", "ic1", "lookup", "5813", "priority", "5814", "protocol", "213")
	ip(t, "route", "add", "198.18.6.0/24", "dev", "ic0", "table", "5813", "proto", "static")
	ip(t, "-6", "route", "add", "2001:2:6::/64", "dev", "ic0", "table", "5813")
	before := dump(t)

	cfg := testConfig()
	if _, err := Install(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if dump(t) == before {
		t.Fatal("Install changed nothing")
	}
	for range 2 { // idempotent
		if err := Remove(cfg, zaptest.NewLogger(t)); err != nil {
			t.Fatal(err)
		}
		if after := dump(t); after != before {
			t.Fatalf("Remove did not restore the namespace:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	if ok, err := Installed(cfg); ok || err != nil {
		t.Errorf("Installed = %v, %v after Remove", ok, err)
	}

	// And after a crash: the TUN is gone, the rules and blackholes are left; teardown needs no TUN.
	if _, err := Install(cfg, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := Remove(Config{}, nil); err != nil { // defaults are enough to find everything
		t.Fatal(err)
	}
	after := dump(t)
	if strings.Contains(after, "proto 213 metric") || strings.Count(after, "proto 213") != 1 {
		t.Errorf("seqshiftd objects left after teardown without the TUN:\n%s", after)
	}
}

// e2eRelay stands in for the datapath: it writes every packet back and counts what it saw.
type e2eRelay struct {
	wg           sync.WaitGroup
	tcp4, tcp6   atomic.Int64
	icmp4, icmp6 atomic.Int64
	udp, other   atomic.Int64
	readErr      atomic.Pointer[error]
}

func startE2ERelay(t *testing.T, d tun.Device) *e2eRelay {
	r := &e2eRelay{}
	for q := range d.Queues() {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			bufs, sizes := make([][]byte, 16), make([]int, 16)
			for i := range bufs {
				bufs[i] = make([]byte, tun.MaxPacket)
			}
			for {
				n, err := d.Read(q, bufs, sizes)
				if err != nil {
					if !errors.Is(err, os.ErrClosed) {
						r.readErr.Store(&err)
					}
					return
				}
				out := make([][]byte, n)
				for i := range n {
					out[i] = bufs[i][:sizes[i]]
					r.count(out[i][tun.HeaderLen:])
				}
				if _, err := d.Write(q, out); err != nil && !errors.Is(err, os.ErrClosed) {
					r.readErr.Store(&err)
				}
			}
		}()
	}
	t.Cleanup(func() {
		d.Close()
		r.wg.Wait()
		if err := r.readErr.Load(); err != nil {
			t.Errorf("relay: %v", *err)
		}
	})
	return r
}

func (r *e2eRelay) count(pkt []byte) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == unix.IPPROTO_TCP:
		r.tcp4.Add(1)
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == unix.IPPROTO_ICMP:
		r.icmp4.Add(1)
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && pkt[6] == unix.IPPROTO_TCP:
		r.tcp6.Add(1)
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && pkt[6] == unix.IPPROTO_ICMPV6:
		r.icmp6.Add(1)
	case len(pkt) >= 20 && (pkt[0]>>4 == 4 && pkt[9] == unix.IPPROTO_UDP || pkt[0]>>4 == 6 && pkt[6] == unix.IPPROTO_UDP):
		r.udp.Add(1)
	default:
		r.other.Add(1)
	}
}

// echo serves one line per connection back to its sender.
func echoServer(t *testing.T, l *nstest.Lab, addr netip.Addr) string {
	ln := nstest.Listen(t, l.Server, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// exchange connects from the client namespace and echoes a message through addr.
func exchange(t *testing.T, l *nstest.Lab, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var c net.Conn
	var err error
	nstest.In(t, l.Client, func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := make([]byte, 100_000) // several segments, and GSO on the way
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo differs")
	}
	return nil
}

// portUnreachable sends a UDP datagram to a closed port of the server and waits for the ICMP
// error to come back to the client as ECONNREFUSED.
func portUnreachable(t *testing.T, l *nstest.Lab, server netip.Addr) error {
	var c net.Conn
	nstest.In(t, l.Client, func() {
		var err error
		if c, err = net.Dial("udp", netip.AddrPortFrom(server, 9).String()); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	buf := make([]byte, 10)
	for range 3 {
		if _, err := c.Write([]byte("x")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		} else if err != nil {
			return nil
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
	}
	return errors.New("no port unreachable came back")
}

// TestSteering_EndToEnd runs client -- gateway -- server with the real TUN in the gateway:
// TCP and the ICMP errors about it cross the TUN both ways; without the TUN the blackhole
// drops intercepted TCP; after Remove the kernel forwards it directly again.
func TestSteering_EndToEnd(t *testing.T) {
	nstest.SetUp(t)
	l := nstest.NewLab(t)
	d, err := tun.Open(tun.Config{Name: "sst0", Queues: 2, Offload: true}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := startE2ERelay(t, d)
	cfg := Config{TunName: "sst0", Intercepts: []Intercept{
		{Iface: "gc", To: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("2001:2:2::/64")}},
		{Iface: "gs", To: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("2001:2:1::/64")}},
	}}
	rep, err := Install(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	rep.Log(zaptest.NewLogger(t))
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings: %q", rep.Warnings)
	}

	addr4, addr6 := echoServer(t, l, nstest.Server4), echoServer(t, l, nstest.Server6)
	for _, addr := range []string{addr4, addr6} {
		if err := exchange(t, l, addr, 10*time.Second); err != nil {
			t.Fatalf("through the TUN to %s: %v", addr, err)
		}
	}
	if r.tcp4.Load() < 4 || r.tcp6.Load() < 4 {
		t.Errorf("relay saw %d IPv4 and %d IPv6 TCP packets; the connections bypassed the TUN", r.tcp4.Load(), r.tcp6.Load())
	}
	for _, srv := range []netip.Addr{nstest.Server4, nstest.Server6} {
		if err := portUnreachable(t, l, srv); err != nil {
			t.Errorf("ICMP error from %s: %v", srv, err)
		}
	}
	if r.icmp4.Load() == 0 || r.icmp6.Load() == 0 {
		t.Errorf("relay saw %d ICMP and %d ICMPv6 packets; ICMP errors bypassed the TUN", r.icmp4.Load(), r.icmp6.Load())
	}
	if r.udp.Load() != 0 {
		t.Errorf("relay saw %d UDP packets: only TCP and ICMP are steered", r.udp.Load())
	}
	t.Logf("relay: tcp4 %d tcp6 %d icmp4 %d icmp6 %d other %d", r.tcp4.Load(), r.tcp6.Load(), r.icmp4.Load(), r.icmp6.Load(), r.other.Load())

	d.Close() // fail-closed: intercepted TCP must now go nowhere
	for _, addr := range []string{addr4, addr6} {
		if err := exchange(t, l, addr, time.Second); err == nil {
			t.Errorf("TCP to %s got through with the TUN gone: forwarded raw", addr)
		}
	}

	if err := Remove(cfg, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{addr4, addr6} {
		if err := exchange(t, l, addr, 10*time.Second); err != nil {
			t.Errorf("after Remove, plain forwarding to %s: %v", addr, err)
		}
	}
}
