package netlab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options shape a lab.
type Options struct {
	// Name prefixes the lab's namespace names (NAME-cl, NAME-gw, NAME-sv, NAME-rt); it must be
	// unique among the labs alive on the host. Empty: "netlab-PID-N".
	Name string
	// Router puts a router namespace between the gateway and the server.
	Router bool
	// RouterMTU is the MTU of the router—server link (0: 1500). The server's routes still
	// advertise the MSS of a 1500-byte link, so the client sends full-size segments and has to
	// learn the smaller path MTU from the router's ICMP errors.
	RouterMTU int
}

// Interface names. Each namespace has its own, so every lab uses the same ones.
const (
	ClientIface        = "eth0"      // the client's link to the gateway
	ServerIface        = "eth0"      // the server's link to the gateway (or the router)
	GatewayClientIface = "gw-client" // the gateway's link to the client
	GatewayServerIface = "gw-server" // the gateway's link to the server (or the router)
	RouterGatewayIface = "rt-gateway"
	RouterServerIface  = "rt-server"
)

// Lab is a running topology. All of its fields are read-only.
type Lab struct {
	Client, Gateway, Server, Router *NS // Router is nil unless Options.Router

	// Interface names, for configs and captures (the constants above, copied for convenience).
	ClientIface, ServerIface               string
	GatewayClientIface, GatewayServerIface string
	RouterGatewayIface, RouterServerIface  string // empty without a router

	ClientAddr4, ServerAddr4, ClientAddr6, ServerAddr6         netip.Addr
	ClientPrefix4, ServerPrefix4, ClientPrefix6, ServerPrefix6 netip.Prefix

	// The gateway's own addresses on the client side and on the server (or transit) side.
	GatewayClientAddr4, GatewayClientAddr6 netip.Addr
	GatewayServerAddr4, GatewayServerAddr6 netip.Addr
	// With a router: the gateway—router link and the router's address on it.
	TransitPrefix4, TransitPrefix6 netip.Prefix
	RouterAddr4, RouterAddr6       netip.Addr

	// MTU of the router—server link (1500 without a router).
	RouterMTU int

	mu        sync.Mutex
	closed    bool
	all       []*NS
	impairers []*Impairer
}

var labSeq atomic.Uint64

// Address plan. /24 and /64 per link, host .1/::1 on the side toward the gateway.
var (
	clientNet4  = netip.MustParsePrefix("198.18.1.0/24")
	clientNet6  = netip.MustParsePrefix("2001:2:0:1::/64")
	serverNet4  = netip.MustParsePrefix("198.18.2.0/24")
	serverNet6  = netip.MustParsePrefix("2001:2:0:2::/64")
	transitNet4 = netip.MustParsePrefix("198.18.3.0/24")
	transitNet6 = netip.MustParsePrefix("2001:2:0:3::/64")
)

// host returns the address with the prefix's last byte set to b (a /24 or /64 host).
func host(p netip.Prefix, b byte) netip.Addr {
	s := p.Addr().AsSlice()
	s[len(s)-1] = b
	a, _ := netip.AddrFromSlice(s)
	return a
}

// New builds a lab. On any error everything it made is removed again.
func New(opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: network namespaces need root")
	}
	name := opts.Name
	if name == "" {
		name = fmt.Sprintf("netlab-%d-%d", os.Getpid(), labSeq.Add(1))
	}
	mtu := opts.RouterMTU
	if mtu == 0 {
		mtu = 1500
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("netlab: RouterMTU %d out of range", mtu)
	}
	l := &Lab{
		ClientIface: ClientIface, ServerIface: ServerIface,
		GatewayClientIface: GatewayClientIface, GatewayServerIface: GatewayServerIface,
		ClientAddr4: host(clientNet4, 2), ClientAddr6: host(clientNet6, 2),
		ServerAddr4: host(serverNet4, 2), ServerAddr6: host(serverNet6, 2),
		ClientPrefix4: clientNet4, ClientPrefix6: clientNet6,
		ServerPrefix4: serverNet4, ServerPrefix6: serverNet6,
		GatewayClientAddr4: host(clientNet4, 1), GatewayClientAddr6: host(clientNet6, 1),
		GatewayServerAddr4: host(serverNet4, 1), GatewayServerAddr6: host(serverNet6, 1),
		RouterMTU: 1500,
	}
	if opts.Router {
		l.RouterGatewayIface, l.RouterServerIface = RouterGatewayIface, RouterServerIface
		l.TransitPrefix4, l.TransitPrefix6 = transitNet4, transitNet6
		l.GatewayServerAddr4, l.GatewayServerAddr6 = host(transitNet4, 1), host(transitNet6, 1)
		l.RouterAddr4, l.RouterAddr6 = host(transitNet4, 2), host(transitNet6, 2)
		l.RouterMTU = mtu
	}
	if err := l.build(name, opts.Router); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) build(name string, withRouter bool) error {
	var err error
	mk := func(suffix string) *NS {
		if err != nil {
			return nil
		}
		var n *NS
		if n, err = createNamed(name + "-" + suffix); err == nil {
			l.all = append(l.all, n)
		}
		return n
	}
	l.Client, l.Gateway, l.Server = mk("cl"), mk("gw"), mk("sv")
	if withRouter {
		l.Router = mk("rt")
	}
	if err != nil {
		return err
	}
	for _, n := range l.all {
		forward := n == l.Gateway || n == l.Router
		if err := n.Do(func() error { return baseSysctls(forward) }); err != nil {
			return fmt.Errorf("namespace %s: %w", n.Name, err)
		}
	}

	// The server-side neighbour of the gateway: the server itself or the router.
	next := l.Server
	nextIface := ServerIface
	if withRouter {
		next, nextIface = l.Router, RouterGatewayIface
	}
	links := []struct {
		a, b           *NS
		aIface, bIface string
		mtu            int
	}{
		{l.Gateway, l.Client, GatewayClientIface, ClientIface, 1500},
		{l.Gateway, next, GatewayServerIface, nextIface, 1500},
	}
	if withRouter {
		links = append(links, struct {
			a, b           *NS
			aIface, bIface string
			mtu            int
		}{l.Router, l.Server, RouterServerIface, ServerIface, l.RouterMTU})
	}
	for _, lk := range links {
		if err := veth(lk.a, lk.b, lk.aIface, lk.bIface, lk.mtu); err != nil {
			return err
		}
	}

	// Addresses.
	type addr struct {
		ns    *NS
		iface string
		p     netip.Prefix
	}
	at := func(ns *NS, iface string, a netip.Addr, p netip.Prefix) addr {
		return addr{ns, iface, netip.PrefixFrom(a, p.Bits())}
	}
	addrs := []addr{
		at(l.Client, ClientIface, l.ClientAddr4, clientNet4), at(l.Client, ClientIface, l.ClientAddr6, clientNet6),
		at(l.Gateway, GatewayClientIface, l.GatewayClientAddr4, clientNet4), at(l.Gateway, GatewayClientIface, l.GatewayClientAddr6, clientNet6),
		at(l.Server, ServerIface, l.ServerAddr4, serverNet4), at(l.Server, ServerIface, l.ServerAddr6, serverNet6),
	}
	if withRouter {
		addrs = append(addrs,
			at(l.Gateway, GatewayServerIface, l.GatewayServerAddr4, transitNet4), at(l.Gateway, GatewayServerIface, l.GatewayServerAddr6, transitNet6),
			at(l.Router, RouterGatewayIface, l.RouterAddr4, transitNet4), at(l.Router, RouterGatewayIface, l.RouterAddr6, transitNet6),
			at(l.Router, RouterServerIface, host(serverNet4, 1), serverNet4), at(l.Router, RouterServerIface, host(serverNet6, 1), serverNet6),
		)
	} else {
		addrs = append(addrs,
			at(l.Gateway, GatewayServerIface, l.GatewayServerAddr4, serverNet4), at(l.Gateway, GatewayServerIface, l.GatewayServerAddr6, serverNet6))
	}
	for _, a := range addrs {
		if err := addAddr(a.ns, a.iface, a.p); err != nil {
			return err
		}
	}

	// Routes. The server advertises the MSS of a 1500-byte link whatever its own MTU, so that a
	// small MTU in the middle is found by path-MTU discovery rather than avoided by the MSS.
	type route struct {
		ns     *NS
		dst    netip.Prefix // invalid: default
		via    netip.Addr
		advMSS int
	}
	routes := []route{
		{l.Client, netip.Prefix{}, l.GatewayClientAddr4, 0},
		{l.Client, netip.Prefix{}, l.GatewayClientAddr6, 0},
		{l.Server, netip.Prefix{}, host(serverNet4, 1), 1460},
		{l.Server, netip.Prefix{}, host(serverNet6, 1), 1440},
	}
	if withRouter {
		routes = append(routes,
			route{l.Gateway, serverNet4, l.RouterAddr4, 0}, route{l.Gateway, serverNet6, l.RouterAddr6, 0},
			route{l.Router, clientNet4, l.GatewayServerAddr4, 0}, route{l.Router, clientNet6, l.GatewayServerAddr6, 0})
	}
	for _, r := range routes {
		if err := addRoute(r.ns, r.dst, r.via, r.advMSS); err != nil {
			return err
		}
	}
	return nil
}

// baseSysctls prepares the calling thread's (new) namespace before any link exists, so that
// links inherit the defaults: no duplicate address detection (addresses usable at once, no flaky
// tentative state), no reverse-path filter (seqshiftd's TUN re-injects packets), forwarding on
// routers, and no ICMP rate limit (path-MTU tests must not wait a second for an error).
func baseSysctls(forward bool) error {
	kv := [][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv6.conf.all.disable_ipv6", "0"},
		{"net.ipv6.conf.default.disable_ipv6", "0"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.icmp_ratelimit", "0"},
		{"net.ipv6.icmp.ratelimit", "0"},
	}
	if forward {
		kv = append(kv,
			[2]string{"net.ipv4.ip_forward", "1"},
			[2]string{"net.ipv6.conf.all.forwarding", "1"},
			[2]string{"net.ipv6.conf.default.forwarding", "1"})
	}
	for _, e := range kv {
		if err := writeSysctl(e[0], e[1]); err != nil {
			return err
		}
	}
	return setUp("lo")
}

// handle returns a netlink handle bound to n (its socket is created inside n).
func (n *NS) handle() (*netlink.Handle, error) {
	nh, err := netns.GetFromPath(netnsDir + "/" + n.Name)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	defer nh.Close()
	h, err := netlink.NewHandleAt(nh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.Name, err)
	}
	return h, nil
}

// Netlink returns a netlink handle operating inside n; the caller closes it (h.Close()).
func (n *NS) Netlink() (*netlink.Handle, error) { return n.handle() }

// setUp brings up a link of the calling thread's namespace.
func setUp(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return netlink.LinkSetUp(link)
}

// veth links a and b. It is created from a's side with its peer placed straight into b, so no
// link ever appears in the root namespace, where names could collide with another lab's.
func veth(a, b *NS, aIface, bIface string, mtu int) error {
	bh, err := netns.GetFromPath(netnsDir + "/" + b.Name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", b.Name, err)
	}
	defer bh.Close()
	ha, err := a.handle()
	if err != nil {
		return err
	}
	defer ha.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = aIface, mtu
	v := &netlink.Veth{LinkAttrs: la, PeerName: bIface, PeerNamespace: netlink.NsFd(int(bh))}
	if err := ha.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s—%s/%s: %w", a.Name, aIface, b.Name, bIface, err)
	}
	hb, err := b.handle()
	if err != nil {
		return err
	}
	defer hb.Close()
	for _, side := range []struct {
		h     *netlink.Handle
		ns    *NS
		iface string
	}{{ha, a, aIface}, {hb, b, bIface}} {
		link, err := side.h.LinkByName(side.iface)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", side.ns.Name, side.iface, err)
		}
		if err := side.h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("%s/%s mtu %d: %w", side.ns.Name, side.iface, mtu, err)
		}
		if err := side.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s/%s up: %w", side.ns.Name, side.iface, err)
		}
	}
	return nil
}

func addAddr(n *NS, iface string, p netip.Prefix) error {
	h, err := n.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", n.Name, iface, err)
	}
	a := &netlink.Addr{IPNet: prefixNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("%s/%s address %s: %w", n.Name, iface, p, err)
	}
	return nil
}

func addRoute(n *NS, dst netip.Prefix, via netip.Addr, advMSS int) error {
	h, err := n.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	if !dst.IsValid() {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if via.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	}
	r := &netlink.Route{Dst: prefixNet(dst), Gw: net.IP(via.AsSlice()), AdvMSS: advMSS}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %s via %s: %w", n.Name, dst, via, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Namespaces returns every namespace of the lab.
func (l *Lab) Namespaces() []*NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*NS(nil), l.all...)
}

// Close stops the lab's impairers and removes its namespaces; their links go with them once no
// process or socket holds them any more (close listeners and stop daemons first). Safe to call
// twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	imps, all := l.impairers, l.all
	l.impairers = nil
	l.mu.Unlock()
	var errs []error
	for _, im := range imps {
		errs = append(errs, im.Close())
	}
	for _, n := range all {
		errs = append(errs, n.remove())
	}
	return errors.Join(errs...)
}

// RemoveStale removes namespaces named PREFIX-PID-... whose process PID no longer exists and in
// which no process runs any more: what a lab killed before its Close left behind. It returns
// the names it removed.
func RemoveStale(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		// A process still inside (the daemon of a `seqshiftd lab --keep`) means someone is
		// using it; removing the name would only orphan the namespace.
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			continue
		}
		if err := (&NS{Name: e.Name()}).remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}
