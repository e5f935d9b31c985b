package policy

import (
	"fmt"
	"net/netip"
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

	line, col int // position of the rule in the file, for warnings
}

// Selector is a rule's `match:`. An empty list matches anything.
type Selector struct {
	Clients     []netip.Prefix // the end that sent the SYN
	Servers     []netip.Prefix
	ServerPorts []PortRange
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
	if len(s.ServerPorts) > 0 && !portsContain(s.ServerPorts, port) {
		return false
	}
	return prefixesContain(s.Servers, server) && prefixesContain(s.Clients, client)
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
// placed before a rule with s2 shadows it completely.
func (s *Selector) covers(s2 *Selector) bool {
	return coversPorts(s.ServerPorts, s2.ServerPorts) &&
		coversPrefixes(s.Servers, s2.Servers) && coversPrefixes(s.Clients, s2.Clients)
}

func coversPorts(a, b []PortRange) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	// Each of b's ranges must lie within one of a's. Adjacent ranges in a that only cover b
	// together are missed: the check is meant to be cheap, not complete.
	for _, rb := range b {
		in := false
		for _, ra := range a {
			if ra.Lo <= rb.Lo && rb.Hi <= ra.Hi {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
}

func coversPrefixes(a, b []netip.Prefix) bool {
	if len(a) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	for _, pb := range b {
		in := false
		for _, pa := range a {
			if pa.Addr().BitLen() == pb.Addr().BitLen() && pa.Bits() <= pb.Bits() && pa.Contains(pb.Addr()) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return true
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
