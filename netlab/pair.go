package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A gateway pair: two gateways on shared client and server segments, with keepalived (VRRP)
// moving one virtual address per segment and family between them, the way redundant gateways
// are deployed:
//
//	                        switch (two bridges)
//	client ── br-client ──┬── gateway A (priority 200) ──┬── br-server ── server
//	                      └── gateway B (priority 100) ──┘
//
// The client's and the server's next hop is the virtual address of their segment. All four
// virtual addresses are in one VRRP sync group, so they move together: a gateway that holds the
// client side also holds the server side, as a gateway that rewrites both directions must.
// keepalived runs in each gateway namespace from the Debian package, with its own configuration,
// pid files and log under a directory of the pair's own; Close kills it and removes everything.

// PairOptions shape a pair.
type PairOptions struct {
	// Name prefixes the namespace names (NAME-cl, NAME-sv, NAME-sw, NAME-ga, NAME-gb); unique
	// among the labs alive on the host. Empty: "netlab-PID-N", which RemoveStale recognises.
	Name string
	// AdvertInterval is the VRRP advertisement interval (VRRPv3: a multiple of 10 ms, at most
	// 40 s); the backup takes over about 3.6 of them after the master falls silent. 0: 1 s,
	// keepalived's default and what pairs commonly run.
	AdvertInterval time.Duration
	// Keepalived is the keepalived binary; empty: looked up in PATH.
	Keepalived string
}

// Interface names inside the switch namespace (each end's own side keeps the Lab's names).
const (
	SwitchClientBridge = "br-client"
	SwitchServerBridge = "br-server"
)

// VRRP priorities. A is preferred: master at start and again when it returns (preemption).
const (
	PriorityA = 200
	PriorityB = 100
)

// Pair is a running pair topology. Its exported fields are read-only.
type Pair struct {
	Name                   string // prefix of the namespace names
	Client, Server, Switch *NS
	A, B                   *Gateway

	ClientIface, ServerIface               string // the client's and the server's link
	GatewayClientIface, GatewayServerIface string // each gateway's links, the same names in both

	ClientAddr4, ServerAddr4, ClientAddr6, ServerAddr6         netip.Addr
	ClientPrefix4, ServerPrefix4, ClientPrefix6, ServerPrefix6 netip.Prefix
	// The virtual addresses, the client's and the server's next hop.
	ClientVIP4, ClientVIP6, ServerVIP4, ServerVIP6 netip.Addr

	AdvertInterval time.Duration

	dir        string // keepalived's configurations, pid files and logs
	keepalived string
	mu         sync.Mutex
	closed     bool
	all        []*NS
}

// Gateway is one gateway of a pair.
type Gateway struct {
	Name     string // "A" or "B"
	NS       *NS
	Priority int
	// Its own (not virtual) addresses on the client and the server segment.
	ClientAddr4, ClientAddr6, ServerAddr4, ServerAddr6 netip.Addr

	pair               *Pair
	swClient, swServer string // its ports on the switch's bridges
	conf, log          string
	runs               int
	pidFiles           []string // of the running keepalived: main, VRRP, checkers

	mu   sync.Mutex
	cut  bool // its switch ports are down
	vrrp *exec.Cmd
	done chan struct{} // closed when vrrp has exited
}

// NewPair builds a pair topology. keepalived is not started: start each gateway's with StartVRRP
// once whatever must run before it becomes master (seqshiftd) runs. On any error everything
// made so far is removed again.
func NewPair(opts PairOptions) (*Pair, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: network namespaces need root")
	}
	ka := opts.Keepalived
	if ka == "" {
		var err error
		if ka, err = exec.LookPath("keepalived"); err != nil {
			return nil, fmt.Errorf("netlab: keepalived is not installed (apt-get install keepalived): %w", err)
		}
	}
	adv := opts.AdvertInterval
	if adv == 0 {
		adv = time.Second
	}
	if adv < 10*time.Millisecond || adv > 40*time.Second || adv%(10*time.Millisecond) != 0 {
		return nil, fmt.Errorf("netlab: AdvertInterval %s is not a multiple of 10ms in 10ms..40s (VRRPv3)", adv)
	}
	name := opts.Name
	if name == "" {
		name = fmt.Sprintf("netlab-%d-%d", os.Getpid(), labSeq.Add(1))
	}
	dir, err := os.MkdirTemp("", name+"-vrrp-")
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	p := &Pair{
		ClientIface: ClientIface, ServerIface: ServerIface,
		GatewayClientIface: GatewayClientIface, GatewayServerIface: GatewayServerIface,
		ClientAddr4: host(clientNet4, 2), ClientAddr6: host(clientNet6, 2),
		ServerAddr4: host(serverNet4, 2), ServerAddr6: host(serverNet6, 2),
		ClientPrefix4: clientNet4, ClientPrefix6: clientNet6,
		ServerPrefix4: serverNet4, ServerPrefix6: serverNet6,
		ClientVIP4: host(clientNet4, 1), ClientVIP6: host(clientNet6, 1),
		ServerVIP4: host(serverNet4, 1), ServerVIP6: host(serverNet6, 1),
		Name:           name,
		AdvertInterval: adv,
		dir:            dir,
		keepalived:     ka,
	}
	gw := func(n string, prio int, b byte) *Gateway {
		low := strings.ToLower(n)
		return &Gateway{
			Name: n, Priority: prio, pair: p,
			ClientAddr4: host(clientNet4, b), ClientAddr6: host(clientNet6, b),
			ServerAddr4: host(serverNet4, b), ServerAddr6: host(serverNet6, b),
			swClient: low + "-cl", swServer: low + "-sv",
			conf: filepath.Join(dir, "keepalived-"+n+".conf"),
			log:  filepath.Join(dir, "keepalived-"+n+".log"),
		}
	}
	p.A, p.B = gw("A", PriorityA, 11), gw("B", PriorityB, 12)
	if err := p.build(name); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

func (p *Pair) build(name string) error {
	var err error
	mk := func(suffix string) *NS {
		if err != nil {
			return nil
		}
		var n *NS
		if n, err = createNamed(name + "-" + suffix); err == nil {
			p.all = append(p.all, n)
		}
		return n
	}
	p.Client, p.Server, p.Switch = mk("cl"), mk("sv"), mk("sw")
	p.A.NS, p.B.NS = mk("ga"), mk("gb")
	if err != nil {
		return err
	}
	for _, n := range p.all {
		forward := n == p.A.NS || n == p.B.NS
		if err := n.Do(func() error { return baseSysctls(forward) }); err != nil {
			return fmt.Errorf("namespace %s: %w", n.Name, err)
		}
	}
	// The switch only bridges: no addresses, and no IPv6 of its own sending router
	// solicitations and MLD reports onto the segments.
	if err := p.Switch.Do(func() error {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := writeSysctl(k, "1"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("namespace %s: %w", p.Switch.Name, err)
	}
	for _, br := range []string{SwitchClientBridge, SwitchServerBridge} {
		if err := bridge(p.Switch, br); err != nil {
			return err
		}
	}
	ports := []struct {
		ns            *NS
		iface, port   string
		bridge        string
		addr4, addr6  netip.Addr
		net4, net6    netip.Prefix
		defaultRoutes bool
		via4, via6    netip.Addr
	}{
		{p.Client, ClientIface, "cl", SwitchClientBridge, p.ClientAddr4, p.ClientAddr6, clientNet4, clientNet6, true, p.ClientVIP4, p.ClientVIP6},
		{p.Server, ServerIface, "sv", SwitchServerBridge, p.ServerAddr4, p.ServerAddr6, serverNet4, serverNet6, true, p.ServerVIP4, p.ServerVIP6},
		{p.A.NS, GatewayClientIface, p.A.swClient, SwitchClientBridge, p.A.ClientAddr4, p.A.ClientAddr6, clientNet4, clientNet6, false, netip.Addr{}, netip.Addr{}},
		{p.A.NS, GatewayServerIface, p.A.swServer, SwitchServerBridge, p.A.ServerAddr4, p.A.ServerAddr6, serverNet4, serverNet6, false, netip.Addr{}, netip.Addr{}},
		{p.B.NS, GatewayClientIface, p.B.swClient, SwitchClientBridge, p.B.ClientAddr4, p.B.ClientAddr6, clientNet4, clientNet6, false, netip.Addr{}, netip.Addr{}},
		{p.B.NS, GatewayServerIface, p.B.swServer, SwitchServerBridge, p.B.ServerAddr4, p.B.ServerAddr6, serverNet4, serverNet6, false, netip.Addr{}, netip.Addr{}},
	}
	for _, pt := range ports {
		if err := veth(pt.ns, p.Switch, pt.iface, pt.port, 1500); err != nil {
			return err
		}
		if err := enslave(p.Switch, pt.port, pt.bridge); err != nil {
			return err
		}
		if err := addAddr(pt.ns, pt.iface, netip.PrefixFrom(pt.addr4, pt.net4.Bits())); err != nil {
			return err
		}
		if err := addAddr(pt.ns, pt.iface, netip.PrefixFrom(pt.addr6, pt.net6.Bits())); err != nil {
			return err
		}
		if pt.defaultRoutes {
			if err := addRoute(pt.ns, netip.Prefix{}, pt.via4, 0); err != nil {
				return err
			}
			if err := addRoute(pt.ns, netip.Prefix{}, pt.via6, 0); err != nil {
				return err
			}
		}
	}
	for _, g := range []*Gateway{p.A, p.B} {
		if err := os.WriteFile(g.conf, []byte(g.keepalivedConf()), 0o600); err != nil {
			return fmt.Errorf("gateway %s: %w", g.Name, err)
		}
	}
	return nil
}

// bridge makes a bridge in n that floods multicast to every port: with snooping and no MLD
// querier on the segment, VRRPv3's ff02::12 and neighbour discovery could otherwise be pruned.
func bridge(n *NS, name string) error {
	h, err := n.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	snoop := false
	la := netlink.NewLinkAttrs()
	la.Name = name
	br := &netlink.Bridge{LinkAttrs: la, MulticastSnooping: &snoop}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", n.Name, name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("%s: bridge %s up: %w", n.Name, name, err)
	}
	return nil
}

func enslave(n *NS, port, bridge string) error {
	h, err := n.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	pl, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", n.Name, port, err)
	}
	bl, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", n.Name, bridge, err)
	}
	if err := h.LinkSetMaster(pl, bl); err != nil {
		return fmt.Errorf("%s: %s into %s: %w", n.Name, port, bridge, err)
	}
	return nil
}

// vrrpInstance is one VRRP instance of the pair: a segment and a family.
type vrrpInstance struct {
	name, iface string
	vrid        int
	vip         netip.Prefix
}

func (p *Pair) instances() []vrrpInstance {
	return []vrrpInstance{
		{"client4", GatewayClientIface, 41, netip.PrefixFrom(p.ClientVIP4, clientNet4.Bits())},
		{"client6", GatewayClientIface, 61, netip.PrefixFrom(p.ClientVIP6, clientNet6.Bits())},
		{"server4", GatewayServerIface, 42, netip.PrefixFrom(p.ServerVIP4, serverNet4.Bits())},
		{"server6", GatewayServerIface, 62, netip.PrefixFrom(p.ServerVIP6, serverNet6.Bits())},
	}
}

// keepalivedConf is g's configuration: one instance per segment and family, all four in one
// sync group, VRRPv3 (the only version with IPv6, and with sub-second intervals).
func (g *Gateway) keepalivedConf() string {
	p := g.pair
	var b strings.Builder
	fmt.Fprintf(&b, "# generated by netlab for pair %s, gateway %s\n", p.Name, g.Name)
	fmt.Fprintf(&b, "global_defs {\n    router_id %s\n    vrrp_version 3\n}\n", g.NS.Name)
	b.WriteString("vrrp_sync_group gateway {\n    group {\n")
	for _, in := range p.instances() {
		fmt.Fprintf(&b, "        %s\n", in.name)
	}
	b.WriteString("    }\n}\n")
	adv := strconv.FormatFloat(p.AdvertInterval.Seconds(), 'f', -1, 64)
	for _, in := range p.instances() {
		fmt.Fprintf(&b, `vrrp_instance %s {
    state BACKUP
    interface %s
    virtual_router_id %d
    priority %d
    advert_int %s
    virtual_ipaddress {
        %s
    }
}
`, in.name, in.iface, in.vrid, g.Priority, adv, in.vip)
	}
	return b.String()
}

// SetKeepalivedConf replaces the configuration the next StartVRRP runs keepalived with (e.g. a
// deployment's file with the lab's interface names). It must use the pair's virtual addresses
// and interface names for WaitMaster to mean anything.
func (g *Gateway) SetKeepalivedConf(text string) error {
	if err := os.WriteFile(g.conf, []byte(text), 0o600); err != nil {
		return fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	return nil
}

// KeepalivedConf returns the configuration StartVRRP runs keepalived with.
func (g *Gateway) KeepalivedConf() string {
	b, err := os.ReadFile(g.conf)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// KeepalivedLog returns what g's keepalived has logged so far (all of its runs), for failures.
func (g *Gateway) KeepalivedLog() string {
	b, err := os.ReadFile(g.log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// StartVRRP starts keepalived (VRRP only, in the foreground, logging to the pair's directory)
// in g's namespace. It returns once keepalived runs; it becomes master or backup on its own.
func (g *Gateway) StartVRRP() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.vrrp != nil {
		return fmt.Errorf("gateway %s: keepalived already running", g.Name)
	}
	g.runs++
	g.pidFiles = g.pidFiles[:0]
	pid := func(kind string) string {
		f := filepath.Join(g.pair.dir, fmt.Sprintf("keepalived-%s-%d-%s.pid", g.Name, g.runs, kind))
		g.pidFiles = append(g.pidFiles, f)
		return f
	}
	logf, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	defer logf.Close()
	// Its own pid files: the defaults under /run are one per host, and keepalived refuses to
	// start while the file names a live process.
	cmd := exec.Command("ip", "netns", "exec", g.NS.Name, g.pair.keepalived,
		"--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"--use-file", g.conf, "--pid", pid("main"), "--vrrp_pid", pid("vrrp"), "--checkers_pid", pid("checkers"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that its VRRP child goes with it; and killed with the test
	// process should that die before Close (`ip netns exec` execs keepalived, which keeps the
	// setting).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("gateway %s: start keepalived: %w", g.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	g.vrrp, g.done = cmd, done
	// keepalived writes its VRRP child's pid file once the child runs.
	vrrpPid := g.pidFiles[1]
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			g.vrrp = nil
			return fmt.Errorf("gateway %s: keepalived exited at start-up: %s", g.Name, tailLines(g.KeepalivedLog(), 20))
		default:
		}
		if _, err := os.Stat(vrrpPid); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway %s: keepalived's VRRP process not running after 10s: %s", g.Name, tailLines(g.KeepalivedLog(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// KillVRRP kills g's keepalived outright (SIGKILL), as a crash or a power loss does: it sends no
// priority-0 advertisement and leaves its virtual addresses configured, so the backup takes
// over only when its master-down timer expires. Killing a keepalived that does not run is not
// an error.
func (g *Gateway) KillVRRP() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.killVRRPLocked()
}

func (g *Gateway) killVRRPLocked() error {
	if g.vrrp == nil {
		return nil
	}
	var errs []error
	// The group first (keepalived and the children it forked), then every pid it wrote, in
	// case a child left the group.
	if err := unix.Kill(-g.vrrp.Process.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("kill keepalived group %d: %w", g.vrrp.Process.Pid, err))
	}
	pids := []int{g.vrrp.Process.Pid}
	for _, f := range g.pidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && isKeepalived(pid) {
			_ = unix.Kill(pid, unix.SIGKILL)
			pids = append(pids, pid)
		}
		_ = os.Remove(f)
	}
	// Gone means reaped or a zombie: a killed process holds its namespace until it has exited.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for isKeepalived(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if isKeepalived(pid) {
			errs = append(errs, fmt.Errorf("gateway %s: keepalived %d still runs 5s after SIGKILL", g.Name, pid))
		}
	}
	select {
	case <-g.done:
	case <-time.After(time.Until(deadline)):
		errs = append(errs, fmt.Errorf("gateway %s: keepalived not reaped 5s after SIGKILL", g.Name))
	}
	g.vrrp = nil
	return errors.Join(errs...)
}

// isKeepalived reports a live (not zombie) keepalived process; it also guards the kill of a pid
// read from a file against the pid having been reused.
func isKeepalived(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so cut at the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+3 > len(s) {
		return false
	}
	return s[open+1:end] == "keepalived" && s[end+2] != 'Z'
}

// CutLinks takes g's two switch ports down, as pulling its cables would: g sees no carrier, the
// segments no longer reach it.
func (g *Gateway) CutLinks() error { return g.setPorts(false) }

// RestoreLinks brings g's switch ports up again.
func (g *Gateway) RestoreLinks() error { return g.setPorts(true) }

func (g *Gateway) setPorts(up bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, err := g.pair.Switch.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, port := range []string{g.swClient, g.swServer} {
		l, err := h.LinkByName(port)
		if err != nil {
			return fmt.Errorf("switch port %s: %w", port, err)
		}
		set := h.LinkSetDown
		if up {
			set = h.LinkSetUp
		}
		if err := set(l); err != nil {
			return fmt.Errorf("switch port %s up=%t: %w", port, up, err)
		}
	}
	g.cut = !up
	return nil
}

// isCut reports whether g's links are cut.
func (g *Gateway) isCut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cut
}

// Fail makes g fail as a crashed or powered-off box does: its links are cut first (nothing it
// does from then on reaches the segments), then its keepalived is killed. Whatever else runs in
// g (seqshiftd) is the caller's to stop.
func (g *Gateway) Fail() error {
	return errors.Join(g.CutLinks(), g.KillVRRP())
}

// Recover brings g back as a rebooted box comes back: without the virtual addresses its killed
// keepalived left configured, links up, keepalived started. Start what must run before g can
// become master (seqshiftd) before calling it.
func (g *Gateway) Recover() error {
	if err := g.dropVIPs(); err != nil {
		return err
	}
	if err := g.RestoreLinks(); err != nil {
		return err
	}
	return g.StartVRRP()
}

func (g *Gateway) dropVIPs() error {
	h, err := g.NS.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	for _, in := range g.pair.instances() {
		l, err := h.LinkByName(in.iface)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", g.NS.Name, in.iface, err)
		}
		if err := h.AddrDel(l, &netlink.Addr{IPNet: prefixNet(in.vip)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("%s/%s: remove %s: %w", g.NS.Name, in.iface, in.vip, err)
		}
	}
	return nil
}

// VIPs returns the virtual addresses g holds now.
func (g *Gateway) VIPs() ([]netip.Addr, error) {
	h, err := g.NS.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var held []netip.Addr
	for _, in := range g.pair.instances() {
		l, err := h.LinkByName(in.iface)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", g.NS.Name, in.iface, err)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: addresses: %w", g.NS.Name, in.iface, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == in.vip.Addr() {
				held = append(held, in.vip.Addr())
			}
		}
	}
	return held, nil
}

// Lab returns the pair as seen through g: a Lab whose Gateway is g, for code written against a
// single gateway (configs, captures, connections). It owns nothing: its Close does nothing, and
// it stays valid until the Pair is closed.
func (p *Pair) Lab(g *Gateway) *Lab {
	return &Lab{
		Client: p.Client, Gateway: g.NS, Server: p.Server,
		ClientIface: ClientIface, ServerIface: ServerIface,
		GatewayClientIface: GatewayClientIface, GatewayServerIface: GatewayServerIface,
		ClientAddr4: p.ClientAddr4, ServerAddr4: p.ServerAddr4, ClientAddr6: p.ClientAddr6, ServerAddr6: p.ServerAddr6,
		ClientPrefix4: p.ClientPrefix4, ServerPrefix4: p.ServerPrefix4, ClientPrefix6: p.ClientPrefix6, ServerPrefix6: p.ServerPrefix6,
		GatewayClientAddr4: g.ClientAddr4, GatewayClientAddr6: g.ClientAddr6,
		GatewayServerAddr4: g.ServerAddr4, GatewayServerAddr6: g.ServerAddr6,
		RouterMTU: 1500,
	}
}

// Other returns the pair's other gateway.
func (g *Gateway) Other() *Gateway {
	if g == g.pair.A {
		return g.pair.B
	}
	return g.pair.A
}

// WaitMaster waits until g holds all four virtual addresses and the other gateway none (or its
// links are cut: a crashed keepalived leaves its addresses configured, and a box cut off the
// segments holds them harmlessly), and returns when that was first seen.
func (p *Pair) WaitMaster(ctx context.Context, g *Gateway) (time.Time, error) {
	want := len(p.instances())
	for {
		mine, err := g.VIPs()
		if err != nil {
			return time.Time{}, err
		}
		theirs, err := g.Other().VIPs()
		if err != nil {
			return time.Time{}, err
		}
		if len(mine) == want && (len(theirs) == 0 || g.Other().isCut()) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("gateway %s not master (it holds %v, %s holds %v): %w", g.Name, mine, g.Other().Name, theirs, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Namespaces returns every namespace of the pair.
func (p *Pair) Namespaces() []*NS {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*NS(nil), p.all...)
}

// Close kills both keepalived daemons and removes the namespaces and the pair's directory. Stop
// everything else running in its namespaces first. Safe to call twice.
func (p *Pair) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	all := p.all
	p.mu.Unlock()
	var errs []error
	for _, g := range []*Gateway{p.A, p.B} {
		errs = append(errs, g.KillVRRP())
	}
	for _, n := range all {
		errs = append(errs, n.remove())
	}
	errs = append(errs, os.RemoveAll(p.dir))
	return errors.Join(errs...)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
