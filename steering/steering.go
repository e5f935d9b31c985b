// Package steering installs the policy routing that sends intercepted TCP through seqshiftd's
// TUN device, and takes it away again.
//
// For every intercept interface and destination prefix it adds one rule per protocol:
//
//	ip rule add iif IFACE to PREFIX ipproto tcp       lookup TABLE priority P protocol X
//	ip rule add iif IFACE to PREFIX ipproto icmp      ...   (ipv6-icmp for IPv6 prefixes)
//
// ICMP is steered too because an error about a rewritten connection (fragmentation needed,
// packet too big, unreachable) quotes its TCP header with shifted sequence numbers, which must
// be translated back before the host receives it. That includes the errors this host itself
// sends, e.g. a fragmentation-needed when its own outgoing link is the narrowest of the path:
// they quote the packet as it was forwarded out of the TUN, in the other side's sequence
// space, and are steered by one more rule per prefix, for locally generated ICMP:
//
//	ip rule add iif lo to PREFIX ipproto icmp         ...   (ipv6-icmp for IPv6 prefixes)
//
// They then come back from the TUN with this host's own source address, which is why the TUN
// accepts local sources (accept_local). Table TABLE holds, per address family:
//
//	default dev TUN metric 1          proto X
//	blackhole default metric 2^31-1   proto X
//
// The blackhole is the fail-closed guarantee: when the TUN disappears (daemon stopped, crashed,
// restarting) the kernel removes its route and intercepted packets hit the blackhole. Were they
// forwarded instead, the peers would see raw sequence numbers, and a small offset could be taken
// as in-window data. Packets the daemon writes back enter with iif TUN, match no rule and follow
// the main table; a steered packet is thus forwarded twice by this host, and its TTL or hop
// limit drops by 2 here.
//
// Everything installed carries the table number, the rule priority and the protocol tag, so
// Install replaces a crashed run's leftovers and Remove deletes exactly seqshiftd's objects. The
// package must never change a rule or route it did not install, and never changes host-wide
// sysctls: it changes only the TUN's own and reports what an administrator should fix.
package steering

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const (
	// TunMetric and BlackholeMetric order the two default routes of the table: the TUN route
	// wins while it exists, the blackhole catches everything once it is gone. The blackhole's is
	// the largest metric that fits a 32-bit int, so that anything else added there wins too.
	TunMetric       = 1
	BlackholeMetric = 1<<31 - 1
)

// Intercept names an interface whose arriving traffic to the given prefixes goes through the TUN.
type Intercept struct {
	Iface string
	To    []netip.Prefix
}

// Config says what to steer where. Zero Table, Priority and Protocol take the defaults.
type Config struct {
	TunName    string
	Table      int
	Priority   int
	Protocol   int
	Intercepts []Intercept
}

// SysctlChange is one sysctl Install wrote.
type SysctlChange struct {
	Key      string // dotted, as sysctl(8) prints it
	Old, New string
}

func (c SysctlChange) String() string { return c.Key + ": " + c.Old + " -> " + c.New }

// Report is what Install did and what it found wanting.
type Report struct {
	TunName                   string
	Table, Priority, Protocol int
	Rules, Routes             int            // seqshiftd's rules and routes in place afterwards
	Removed                   []string       // leftovers of an earlier run that were not wanted any more
	Sysctls                   []SysctlChange // every sysctl changed, old -> new
	Warnings                  []string       // host settings that will stop steered traffic
}

// Log writes the report: a summary, each sysctl change and each leftover at info, each warning
// at warn.
func (r Report) Log(log *zap.Logger) {
	log.Info("steering installed", zap.String("tun", r.TunName), zap.Int("table", r.Table),
		zap.Int("priority", r.Priority), zap.Int("protocol", r.Protocol),
		zap.Int("rules", r.Rules), zap.Int("routes", r.Routes))
	for _, s := range r.Sysctls {
		log.Info("sysctl changed", zap.String("key", s.Key), zap.String("old", s.Old), zap.String("new", s.New))
	}
	for _, s := range r.Removed {
		log.Info("removed leftover of an earlier run", zap.String("object", s))
	}
	for _, w := range r.Warnings {
		log.Warn(w)
	}
}

// ids are the three numbers that make an object seqshiftd's.
type ids struct{ table, priority, protocol int }

func (c Config) ids() (ids, error) {
	id := ids{c.Table, c.Priority, c.Protocol}
	if id.table == 0 {
		id.table = DefaultTable
	}
	if id.priority == 0 {
		id.priority = DefaultPriority
	}
	if id.protocol == 0 {
		id.protocol = DefaultProtocol
	}
	if err := CheckTable(int64(id.table)); err != nil {
		return id, fmt.Errorf("steering: table: %w", err)
	}
	if err := CheckPriority(int64(id.priority)); err != nil {
		return id, fmt.Errorf("steering: priority: %w", err)
	}
	if err := CheckProtocol(int64(id.protocol)); err != nil {
		return id, fmt.Errorf("steering: protocol: %w", err)
	}
	return id, nil
}

func (id ids) owns(r *netlink.Rule) bool {
	return r.Table == id.table && r.Priority == id.priority && int(r.Protocol) == id.protocol
}

// plan is a validated Config: the exact rules wanted and the TUN they lead to.
type plan struct {
	ids
	tun      string
	ifaces   []string
	rules    []netlink.Rule
	families map[int]bool // families with prefixes to intercept
}

func (c Config) plan() (*plan, error) {
	id, err := c.ids()
	if err != nil {
		return nil, err
	}
	if c.TunName == "" || len(c.TunName) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("steering: TUN name %q: must be 1..%d bytes", c.TunName, unix.IFNAMSIZ-1)
	}
	p := &plan{ids: id, tun: c.TunName, families: map[int]bool{}}
	seen := map[string]bool{}
	for _, ic := range c.Intercepts {
		if ic.Iface == "" || len(ic.Iface) >= unix.IFNAMSIZ {
			return nil, fmt.Errorf("steering: intercept interface %q: must be 1..%d bytes", ic.Iface, unix.IFNAMSIZ-1)
		}
		if ic.Iface == c.TunName {
			return nil, fmt.Errorf("steering: intercept interface %s is the TUN itself: packets written back would loop", ic.Iface)
		}
		p.ifaces = append(p.ifaces, ic.Iface)
		for _, pfx := range ic.To {
			if !pfx.IsValid() {
				return nil, fmt.Errorf("steering: intercept %s: invalid prefix", ic.Iface)
			}
			if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
				pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
			}
			pfx = pfx.Masked()
			fam, icmp := netlink.FAMILY_V4, unix.IPPROTO_ICMP
			if pfx.Addr().Is6() {
				fam, icmp = netlink.FAMILY_V6, unix.IPPROTO_ICMPV6
			}
			p.families[fam] = true
			rules := []struct {
				iif   string
				proto int
			}{{ic.Iface, unix.IPPROTO_TCP}, {ic.Iface, icmp}, {localIif, icmp}}
			for _, rr := range rules {
				r := netlink.NewRule()
				r.Family, r.IifName, r.IPProto = fam, rr.iif, rr.proto
				r.Dst = &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())}
				r.Table, r.Priority, r.Protocol = id.table, id.priority, uint8(id.protocol)
				if k := ruleKey(r); !seen[k] {
					seen[k] = true
					p.rules = append(p.rules, *r)
				}
			}
		}
	}
	return p, nil
}

// localIif is the input interface policy routing gives packets this host originates.
const localIif = "lo"

// ruleKey identifies a rule by what seqshiftd sets; rules carrying any other selector or
// action get a key no wanted rule has, so a tampered leftover is replaced, not trusted.
func ruleKey(r *netlink.Rule) string {
	dst := "all"
	if r.Dst != nil {
		if pfx, ok := prefixOf(r.Dst); ok {
			dst = pfx.String()
		}
	}
	extra := r.Src != nil || r.OifName != "" || r.Mark != 0 || r.Mask != nil || r.Invert ||
		r.Goto >= 0 || r.Tos != 0 || r.TunID != 0 || r.Flow >= 0 || r.SuppressPrefixlen >= 0 ||
		r.SuppressIfgroup >= 0 || r.Dport != nil || r.Sport != nil || r.UIDRange != nil ||
		(r.Type != 0 && r.Type != unix.RTN_UNICAST) // FR_ACT_TO_TBL; listings leave it 0
	return fmt.Sprintf("%d iif %s to %s ipproto %d lookup %d priority %d protocol %d extra %v",
		r.Family, r.IifName, dst, r.IPProto, r.Table, r.Priority, r.Protocol, extra)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func describeRule(r *netlink.Rule) string {
	dst := "all"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	return fmt.Sprintf("rule iif %s to %s ipproto %s lookup %d priority %d protocol %d",
		orAll(r.IifName), dst, protoName(r.IPProto), r.Table, r.Priority, r.Protocol)
}

func describeRoute(r *netlink.Route) string {
	dev := ""
	if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil && r.Type != unix.RTN_BLACKHOLE {
		dev = link.Attrs().Name
	}
	return describeRouteVia(r, dev)
}

// describeRouteVia describes r as leading to the device named dev ("" for none).
func describeRouteVia(r *netlink.Route, dev string) string {
	kind := "default"
	if r.Type == unix.RTN_BLACKHOLE {
		kind = "blackhole default"
	} else if dev != "" {
		kind += " dev " + dev
	}
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			kind = strings.Replace(kind, "default", r.Dst.String(), 1)
		}
	}
	return fmt.Sprintf("%s route %s table %d metric %d protocol %d", familyName(r.Family), kind, r.Table, r.Priority, r.Protocol)
}

func orAll(s string) string {
	if s == "" {
		return "all"
	}
	return s
}

func protoName(p int) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "ipv6-icmp"
	case 0:
		return "any"
	}
	return fmt.Sprint(p)
}

func familyName(f int) string {
	if f == netlink.FAMILY_V6 {
		return "IPv6"
	}
	return "IPv4"
}

// routeFamilies are the families whose table routes Install maintains: IPv4 always, IPv6
// unless IPv6 is off on the TUN (or the host) and no IPv6 prefix needs it.
func (p *plan) routeFamilies() []int {
	if p.families[netlink.FAMILY_V6] || ipv6On(p.tun) {
		return []int{netlink.FAMILY_V4, netlink.FAMILY_V6}
	}
	return []int{netlink.FAMILY_V4}
}

func ipv6On(iface string) bool {
	v, err := readSysctl(confPath(6, iface, "disable_ipv6"))
	return err == nil && v == "0"
}

func defaultDst(family int) *net.IPNet {
	if family == netlink.FAMILY_V6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

func (p *plan) tunRoute(family, index int) *netlink.Route {
	r := &netlink.Route{
		Family: family, Dst: defaultDst(family), LinkIndex: index, Table: p.table,
		Priority: TunMetric, Protocol: netlink.RouteProtocol(p.protocol), Type: unix.RTN_UNICAST,
	}
	if family == netlink.FAMILY_V4 {
		r.Scope = netlink.SCOPE_LINK // as `ip route add default dev TUN` makes it
	}
	return r
}

func (p *plan) blackhole(family int) *netlink.Route {
	return &netlink.Route{
		Family: family, Dst: defaultDst(family), Table: p.table, Priority: BlackholeMetric,
		Protocol: netlink.RouteProtocol(p.protocol), Type: unix.RTN_BLACKHOLE,
	}
}

func isDefault(r *netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// wanted reports whether a route listed from the table is one Install puts there.
func (p *plan) wanted(r *netlink.Route, tunIndex int) bool {
	if !isDefault(r) || r.Gw != nil || len(r.MultiPath) != 0 || r.Src != nil {
		return false
	}
	switch r.Type {
	case unix.RTN_BLACKHOLE:
		return r.Priority == BlackholeMetric
	case unix.RTN_UNICAST:
		return r.Priority == TunMetric && r.LinkIndex == tunIndex
	}
	return false
}

// Install makes the steering for cfg current: it adds the table's routes, then the rules, then
// deletes any of seqshiftd's rules and routes (same table, priority and protocol) that cfg no
// longer wants. In that order there is no moment when a steered packet finds an empty table and
// falls through to the main one. It sets the TUN's sysctls and reports host settings that would
// stop steered traffic. The TUN must exist.
func Install(cfg Config, log *zap.Logger) (Report, error) {
	if log == nil {
		log = zap.NewNop()
	}
	p, err := cfg.plan()
	if err != nil {
		return Report{}, err
	}
	rep := Report{TunName: p.tun, Table: p.table, Priority: p.priority, Protocol: p.protocol}
	link, err := netlink.LinkByName(p.tun)
	if err != nil {
		return rep, fmt.Errorf("steering: TUN %s: %w", p.tun, err)
	}
	tunIndex := link.Attrs().Index

	// The TUN must accept what is written back before anything is steered into it.
	if err := rep.tuneSysctls(p); err != nil {
		return rep, err
	}
	for _, name := range p.ifaces {
		if _, err := netlink.LinkByName(name); err != nil {
			rep.warn("intercept interface %s does not exist: its rules take effect when it appears", name)
		}
	}

	families := p.routeFamilies()
	for _, fam := range families {
		// Blackhole first: from its first packet, the table never lets one through raw.
		for _, r := range []*netlink.Route{p.blackhole(fam), p.tunRoute(fam, tunIndex)} {
			if err := netlink.RouteReplace(r); err != nil {
				return rep, fmt.Errorf("steering: install %s: %w", describeRoute(r), err)
			}
		}
	}

	existing, err := listRules()
	if err != nil {
		return rep, err
	}
	have := map[string]bool{}
	for i := range existing {
		if p.owns(&existing[i]) {
			have[ruleKey(&existing[i])] = true
		}
	}
	want := map[string]bool{}
	for i := range p.rules {
		r := &p.rules[i]
		k := ruleKey(r)
		want[k] = true
		if have[k] {
			continue
		}
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return rep, fmt.Errorf("steering: install %s: %w", describeRule(r), err)
		}
	}
	rep.Rules = len(p.rules)

	for i := range existing {
		r := &existing[i]
		if !p.owns(r) || want[ruleKey(r)] {
			continue
		}
		if err := netlink.RuleDel(r); err != nil && !gone(err) {
			return rep, fmt.Errorf("steering: remove leftover %s: %w", describeRule(r), err)
		}
		rep.Removed = append(rep.Removed, describeRule(r))
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := p.listRoutes(fam)
		if err != nil {
			return rep, err
		}
		for i := range routes {
			r := &routes[i]
			if p.wanted(r, tunIndex) {
				rep.Routes++
				continue
			}
			desc := describeRoute(r)
			if err := netlink.RouteDel(r); err != nil && !gone(err) {
				return rep, fmt.Errorf("steering: remove leftover %s: %w", desc, err)
			}
			rep.Removed = append(rep.Removed, desc)
		}
	}
	log.Debug("steering in place", zap.Int("rules", rep.Rules), zap.Int("routes", rep.Routes))
	return rep, nil
}

// Remove deletes every rule with seqshiftd's table, priority and protocol, and every route in
// its table with its protocol; nothing else. Rules go first, so that no steered packet meets a
// half-emptied table. Removing what is not there is not an error.
func Remove(cfg Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	id, err := cfg.ids()
	if err != nil {
		return err
	}
	p := &plan{ids: id}
	rules, err := listRules()
	if err != nil {
		return err
	}
	var nRules, nRoutes int
	for i := range rules {
		r := &rules[i]
		if !p.owns(r) {
			continue
		}
		if err := netlink.RuleDel(r); err != nil && !gone(err) {
			return fmt.Errorf("steering: remove %s: %w", describeRule(r), err)
		}
		nRules++
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := p.listRoutes(fam)
		if err != nil {
			return err
		}
		for i := range routes {
			r := &routes[i]
			if err := netlink.RouteDel(r); err != nil && !gone(err) {
				return fmt.Errorf("steering: remove %s: %w", describeRoute(r), err)
			}
			nRoutes++
		}
	}
	log.Info("steering removed", zap.Int("table", id.table), zap.Int("priority", id.priority),
		zap.Int("protocol", id.protocol), zap.Int("rules", nRules), zap.Int("routes", nRoutes))
	return nil
}

// Installed reports whether every rule of cfg and the table's TUN and blackhole routes are in
// place. A missing TUN means not installed (and, thanks to the blackhole, not forwarding).
func Installed(cfg Config) (bool, error) {
	p, err := cfg.plan()
	if err != nil {
		return false, err
	}
	link, err := netlink.LinkByName(p.tun)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, fmt.Errorf("steering: TUN %s: %w", p.tun, err)
	}
	rules, err := listRules()
	if err != nil {
		return false, err
	}
	have := map[string]bool{}
	for i := range rules {
		if p.owns(&rules[i]) {
			have[ruleKey(&rules[i])] = true
		}
	}
	for i := range p.rules {
		if !have[ruleKey(&p.rules[i])] {
			return false, nil
		}
	}
	for _, fam := range p.routeFamilies() {
		routes, err := p.listRoutes(fam)
		if err != nil {
			return false, err
		}
		var tunRoute, blackhole bool
		for i := range routes {
			r := &routes[i]
			if p.wanted(r, link.Attrs().Index) {
				tunRoute = tunRoute || r.Type == unix.RTN_UNICAST
				blackhole = blackhole || r.Type == unix.RTN_BLACKHOLE
			}
		}
		if !tunRoute || !blackhole {
			return false, nil
		}
	}
	return true, nil
}

// listRules dumps the rules of both families, retrying a dump a concurrent change interrupted.
func listRules() ([]netlink.Rule, error) {
	var err error
	for range 5 {
		var rules []netlink.Rule
		if rules, err = netlink.RuleList(netlink.FAMILY_ALL); err == nil {
			return rules, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("steering: list rules: %w", err)
}

// listRoutes returns seqshiftd's routes of one family: its table, its protocol.
func (p *plan) listRoutes(family int) ([]netlink.Route, error) {
	if family == netlink.FAMILY_V6 {
		if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
			return nil, nil // IPv6 disabled on the host: there can be no such routes
		}
	}
	filter := &netlink.Route{Table: p.table, Protocol: netlink.RouteProtocol(p.protocol)}
	var err error
	for range 5 {
		var routes []netlink.Route
		routes, err = netlink.RouteListFiltered(family, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err == nil {
			return routes, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("steering: list %s routes of table %d: %w", familyName(family), p.table, err)
}

// gone tells a delete that found nothing to delete (someone else was faster) from a failure.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
