package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule is one entry of `rules:`: which new connections it applies to and the ISN mode of each
// side. Rules are tried in file order; the first that matches decides.
type Rule struct {
	Name   string
	Match  Selector
	Client *Side // client_isn: how the client's ISN appears to the server
	Server *Side // server_isn: how the server's ISN appears to the client
	// Observe: the rule's connections are admitted, tracked and planned as if active, and
	// never rewritten (observe: true). Config.Observes also honours the whole policy's switch.
	Observe bool

	line, col int // position of the rule in the file, for warnings
	pos       int // index in Config.Rules, for per-rule counters kept in arrays
}

// Pos returns the rule's index in its Config's Rules: per-rule counters of one policy
// generation are arrays indexed by it, so that counting needs no map and no lock.
func (r *Rule) Pos() int { return r.pos }

// Observes reports whether connections r admits are observed rather than rewritten: the
// rule's own observe key, or the whole policy's. A rule's observe: false does not override a
// policy-wide observe: true, which is the roll-out switch for everything at once.
func (c *Config) Observes(r *Rule) bool { return r != nil && (c.Observe || r.Observe) }

// Observing returns the names of the rules whose connections are observed, in file order.
func (c *Config) Observing() []string {
	var out []string
	for _, r := range c.Rules {
		if c.Observes(r) {
			out = append(out, r.Name)
		}
	}
	return out
}

// Selector is a rule's `match:`. An empty list matches anything.
type Selector struct {
	Clients     []netip.Prefix // the end that sent the SYN
	Servers     []netip.Prefix
	ServerPorts []PortRange

	// Lookup structures built by index, so that a rule listing many prefixes or ports costs a
	// SYN what a short one does. A Selector built without index falls back to the lists.
	clients, servers *prefixSet
	ports            []PortRange // ServerPorts sorted and merged
	indexed          bool
}

// indexThreshold is the list length from which a hash lookup per prefix length beats a scan.
const indexThreshold = 16

// index builds the selector's lookup structures. Sorting and merging are O(n log n); lookups
// are then O(number of distinct prefix lengths) for prefixes, at most 33 or 129, and
// O(log n) for ports.
func (s *Selector) index() {
	s.clients, s.servers = newPrefixSet(s.Clients), newPrefixSet(s.Servers)
	s.ports = mergePorts(s.ServerPorts)
	s.indexed = true
}

// prefixSet answers "is a in one of these prefixes" with one map lookup per distinct prefix
// length of a's family instead of one comparison per prefix. nil means "use the list".
type prefixSet struct {
	set   map[netip.Prefix]struct{}
	lens4 []int // distinct lengths of the IPv4 prefixes
	lens6 []int
}

func newPrefixSet(ps []netip.Prefix) *prefixSet {
	if len(ps) < indexThreshold {
		return nil
	}
	s := &prefixSet{set: make(map[netip.Prefix]struct{}, len(ps))}
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for _, p := range ps {
		p = p.Masked()
		s.set[p] = struct{}{}
		if p.Addr().Is4() && !seen4[p.Bits()] {
			seen4[p.Bits()] = true
			s.lens4 = append(s.lens4, p.Bits())
		} else if p.Addr().Is6() && !seen6[p.Bits()] {
			seen6[p.Bits()] = true
			s.lens6 = append(s.lens6, p.Bits())
		}
	}
	slices.Sort(s.lens4)
	slices.Sort(s.lens6)
	return s
}

func (s *prefixSet) contains(a netip.Addr) bool {
	lens := s.lens6
	if a.Is4() {
		lens = s.lens4
	}
	for _, l := range lens {
		p, _ := a.Prefix(l)
		if _, ok := s.set[p]; ok {
			return true
		}
	}
	return false
}

// mergePorts returns the ranges sorted by their low end with overlapping and adjacent ones
// joined, so that a port is found by binary search and coverage is one pass.
func mergePorts(ps []PortRange) []PortRange {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	merged := out[:0]
	for _, p := range out {
		if n := len(merged); n > 0 && int(p.Lo) <= int(merged[n-1].Hi)+1 {
			merged[n-1].Hi = max(merged[n-1].Hi, p.Hi)
			continue
		}
		merged = append(merged, p)
	}
	return merged
}

// sortedPortsContain finds port in ranges sorted and merged by mergePorts.
func sortedPortsContain(ps []PortRange, port uint16) bool {
	if len(ps) < indexThreshold {
		return portsContain(ps, port)
	}
	i, _ := slices.BinarySearchFunc(ps, port, func(p PortRange, port uint16) int { return int(p.Lo) - int(port) })
	// ps[i-1] is the last range starting at or below port (ps[i] if it starts exactly there).
	if i < len(ps) && ps[i].Lo == port {
		return true
	}
	return i > 0 && port <= ps[i-1].Hi
}

// PortRange is an inclusive range of TCP ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// String returns "502" or "20000-20010".
func (p PortRange) String() string {
	if p.Lo == p.Hi {
		return strconv.Itoa(int(p.Lo))
	}
	return strconv.Itoa(int(p.Lo)) + "-" + strconv.Itoa(int(p.Hi))
}

// Match returns the first rule that applies to a new connection from client to
// server:serverPort, or nil when none does (the connection is forwarded untouched). It never
// allocates.
func (c *Config) Match(client, server netip.Addr, serverPort uint16) *Rule {
	client, server = client.Unmap(), server.Unmap()
	for _, r := range c.Rules {
		if r.Match.matches(client, server, serverPort) {
			return r
		}
	}
	return nil
}

// Matches reports whether the rule's selector applies to a connection from client to
// server:serverPort, regardless of the rules before it.
func (r *Rule) Matches(client, server netip.Addr, serverPort uint16) bool {
	return r.Match.matches(client.Unmap(), server.Unmap(), serverPort)
}

// matches checks the cheapest selector first: most rules are told apart by port.
func (s *Selector) matches(client, server netip.Addr, port uint16) bool {
	if !s.indexed {
		if len(s.ServerPorts) > 0 && !portsContain(s.ServerPorts, port) {
			return false
		}
		return prefixesContain(s.Servers, server) && prefixesContain(s.Clients, client)
	}
	if len(s.ports) > 0 && !sortedPortsContain(s.ports, port) {
		return false
	}
	return setContains(s.servers, s.Servers, server) && setContains(s.clients, s.Clients, client)
}

// setContains uses the set when the list was long enough to get one.
func setContains(set *prefixSet, list []netip.Prefix, a netip.Addr) bool {
	if set == nil {
		return prefixesContain(list, a)
	}
	return set.contains(a)
}

func portsContain(ps []PortRange, port uint16) bool {
	for _, p := range ps {
		if p.Lo <= port && port <= p.Hi {
			return true
		}
	}
	return false
}

// prefixesContain reports whether a is in one of ps; an empty list contains everything.
func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// covers reports whether every connection s2 matches is also matched by s: then a rule with s
// placed before a rule with s2 shadows it completely. It costs O(len(s2's lists)) when s is
// indexed (each of s2's prefixes is looked up, not compared with each of s's), so checking one
// rule against another is never quadratic in their list lengths.
func (s *Selector) covers(s2 *Selector) bool {
	ix := s
	if !s.indexed {
		ix = &Selector{Clients: s.Clients, Servers: s.Servers, ServerPorts: s.ServerPorts}
		ix.index()
	}
	return coversPorts(ix.ports, s2.ServerPorts) &&
		coversPrefixes(ix.servers, s.Servers, s2.Servers) && coversPrefixes(ix.clients, s.Clients, s2.Clients)
}

// coversPorts reports whether each range of b lies within a, given as mergePorts returns it
// (so ranges of a that only cover one of b's together, being merged, count too).
func coversPorts(a, b []PortRange) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	for _, rb := range b {
		i, found := slices.BinarySearchFunc(a, rb.Lo, func(p PortRange, port uint16) int { return int(p.Lo) - int(port) })
		if !found {
			i--
		}
		if i < 0 || rb.Hi > a[i].Hi {
			return false
		}
	}
	return true
}

// coversPrefixes reports whether each prefix of b lies within one of a's (list, with set its
// index when it has one).
func coversPrefixes(set *prefixSet, a, b []netip.Prefix) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	for _, pb := range b {
		if !prefixCovered(set, a, pb) {
			return false
		}
	}
	return true
}

func prefixCovered(set *prefixSet, a []netip.Prefix, pb netip.Prefix) bool {
	if set == nil {
		for _, pa := range a {
			if pa.Addr().BitLen() == pb.Addr().BitLen() && pa.Bits() <= pb.Bits() && pa.Contains(pb.Addr()) {
				return true
			}
		}
		return false
	}
	lens := set.lens6
	if pb.Addr().Is4() {
		lens = set.lens4
	}
	for _, l := range lens {
		if l > pb.Bits() {
			break
		}
		p, _ := pb.Addr().Prefix(l)
		if _, ok := set.set[p]; ok {
			return true
		}
	}
	return false
}

// parsePrefix reads a CIDR prefix or a bare address (a single host). It refuses what would
// silently never match: host bits set, zones, IPv4-mapped IPv6.
func parsePrefix(s string) (netip.Prefix, string) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Sprintf("%q is not a prefix such as 198.18.2.0/24 or 2001:2::/48", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, fmt.Sprintf("%q is not a prefix such as 198.18.2.0/24 or 2001:2::/48", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return p, fmt.Sprintf("%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix", s)
	}
	if m := p.Masked(); m != p {
		return p, fmt.Sprintf("%q has host bits set; did you mean %s?", s, m)
	}
	return p, ""
}

// parsePort reads 502 or "20000-20010".
func parsePort(s string) (PortRange, string) {
	bad := fmt.Sprintf("%q is not a port 1..65535 or a range such as \"20000-20010\"", s)
	one := func(t string) (uint16, string) {
		if t == "" || t[0] < '0' || t[0] > '9' {
			return 0, bad
		}
		v, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return 0, fmt.Sprintf("port %s is out of range 1..65535", t)
			}
			return 0, bad
		}
		if v < 1 || v > 65535 {
			return 0, fmt.Sprintf("port %s is out of range 1..65535", t)
		}
		return uint16(v), ""
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		p, msg := one(s)
		return PortRange{p, p}, msg
	}
	a, msg := one(lo)
	if msg == "" {
		var b uint16
		if b, msg = one(hi); msg == "" {
			if a > b {
				return PortRange{}, fmt.Sprintf("port range %q: the low end %d is above the high end %d", s, a, b)
			}
			return PortRange{a, b}, ""
		}
	}
	return PortRange{}, msg
}

// validName keeps rule names usable as metrics labels and in the flows listing.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
