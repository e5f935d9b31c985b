package tcshift

import (
	"fmt"
	"sort"
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
	"github.com/seqshiftd/seqshiftd/seqnum"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
)

// tcState lists every qdisc and filter on the named links, as "link qdisc TYPE" and
// "link ingress|egress prio/handle NAME".
func tcState(t *testing.T, links ...string) []string {
	t.Helper()
	var out []string
	for _, name := range links {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		qs, err := netlink.QdiscList(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.Type() == "clsact" || q.Type() == "ingress" {
				out = append(out, fmt.Sprintf("%s qdisc %s", name, q.Type()))
			}
		}
		for _, p := range []struct {
			parent uint32
			name   string
		}{{netlink.HANDLE_MIN_INGRESS, "ingress"}, {netlink.HANDLE_MIN_EGRESS, "egress"}} {
			fs, err := netlink.FilterList(l, p.parent)
			if err != nil {
				continue // no clsact
			}
			for _, f := range fs {
				n := f.Type()
				if bf, ok := f.(*netlink.BpfFilter); ok {
					n = bf.Name
				}
				out = append(out, fmt.Sprintf("%s %s %d/%#x %s", name, p.name, f.Attrs().Priority, f.Attrs().Handle, n))
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestAttach_InstallsReplacesAndDetachesOnlyOurs(t *testing.T) {
	e := newEnv(t)
	if ok, err := Installed(e.cfg); ok || err != nil {
		t.Fatalf("Installed before Attach = %t, %v", ok, err)
	}
	if err := e.dp.Attach(); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	want := []string{
		"tap0 ingress 1/0x5813 seqshiftd_tap_ingress",
		"tap0 qdisc clsact",
		"x0 egress 1/0x5813 seqshiftd_client_egress",
		"x0 ingress 1/0x5813 seqshiftd_client_ingress",
		"x0 qdisc clsact",
	}
	if got := tcState(t, "x0", "tap0"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after Attach:\n got %q\nwant %q", got, want)
	}
	if ok, err := Installed(e.cfg); !ok || err != nil {
		t.Fatalf("Installed after Attach = %t, %v", ok, err)
	}
	// Someone else's filter on the same hook must survive everything we do.
	other := filterAt(e.x, placement{netlink.HANDLE_MIN_INGRESS, "someone_else"}, 7)
	other.Handle = 1
	other.Fd = e.dp.objs.TapIngress.FD()
	if err := netlink.FilterAdd(other); err != nil {
		t.Fatal(err)
	}
	// A second Attach (a restarted daemon) replaces ours in place: still one of each.
	dp2, err := Load(e.cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	if err := dp2.Attach(); err != nil {
		t.Fatalf("second Attach: %v", err)
	}
	want2 := append([]string{"x0 ingress 7/0x1 someone_else"}, want...)
	sort.Strings(want2)
	if got := tcState(t, "x0", "tap0"); fmt.Sprint(got) != fmt.Sprint(want2) {
		t.Fatalf("after a second Attach:\n got %q\nwant %q", got, want2)
	}
	// The filters now run dp2's programs.
	info, _ := dp2.objs.ClientIngress.Info()
	id, _ := info.ID()
	for _, f := range ourFilters(e.cfg, []string{"x0"}) {
		if f.filter.Name == "seqshiftd_client_ingress" && f.filter.Id != int(id) {
			t.Fatalf("x0 ingress runs program %d, want the new %d", f.filter.Id, id)
		}
	}
	// dp2 did not create the qdiscs: its Detach leaves them. e.dp did: its Detach removes the
	// TAP's (empty) one and keeps x0's, which holds someone else's filter.
	if err := dp2.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if ok, err := Installed(e.cfg); ok || err != nil {
		t.Fatalf("Installed after Detach = %t, %v", ok, err)
	}
	if got := tcState(t, "x0", "tap0"); fmt.Sprint(got) != fmt.Sprint([]string{"tap0 qdisc clsact", "x0 ingress 7/0x1 someone_else", "x0 qdisc clsact"}) {
		t.Fatalf("after dp2.Detach: %q", got)
	}
	if err := e.dp.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if got := tcState(t, "x0", "tap0"); fmt.Sprint(got) != fmt.Sprint([]string{"x0 ingress 7/0x1 someone_else", "x0 qdisc clsact"}) {
		t.Fatalf("after Detach: %q", got)
	}
	if err := netlink.FilterDel(other); err != nil {
		t.Fatal(err)
	}
	// Now empty, and created by e.dp's Attach: a second Detach removes it.
	if err := e.dp.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if got := tcState(t, "x0", "tap0"); len(got) != 0 {
		t.Fatalf("left behind: %q", got)
	}
}

func TestDetach_FromConfigAlone(t *testing.T) {
	e := newEnv(t)
	if err := e.dp.Attach(); err != nil {
		t.Fatal(err)
	}
	e.dp.Close() // the daemon died; its filters stay
	if ok, err := Installed(e.cfg); !ok || err != nil {
		t.Fatalf("Installed after Close = %t, %v: filters must outlive the process", ok, err)
	}
	if err := Detach(e.cfg); err != nil {
		t.Fatalf("Detach(cfg): %v", err)
	}
	if ok, err := Installed(e.cfg); ok || err != nil {
		t.Fatalf("Installed after Detach(cfg) = %t, %v", ok, err)
	}
	// Without a record of who created them, the empty clsact qdiscs stay.
	if got := tcState(t, "x0", "tap0"); fmt.Sprint(got) != fmt.Sprint([]string{"tap0 qdisc clsact", "x0 qdisc clsact"}) {
		t.Fatalf("after Detach(cfg): %q", got)
	}
	// Detaching again, or from interfaces that are gone, is not an error.
	cfg := e.cfg
	cfg.Ifaces = append(cfg.Ifaces, Iface{Name: "gone0"})
	if err := Detach(cfg); err != nil {
		t.Fatalf("second Detach(cfg): %v", err)
	}
}

func TestAttach_RefusesIngressQdisc(t *testing.T) {
	e := newEnv(t)
	l, _ := netlink.LinkByName("x0")
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscAdd(q); err != nil {
		t.Fatal(err)
	}
	if err := e.dp.Attach(); err == nil {
		t.Fatal("Attach succeeded over an ingress qdisc")
	}
	if got := tcState(t, "x0"); fmt.Sprint(got) != fmt.Sprint([]string{"x0 qdisc ingress"}) {
		t.Fatalf("someone else's ingress qdisc changed: %q", got)
	}
	e.dp.Detach()
}

func TestPreviousFlows_CarriesAPreviousInstancesFlows(t *testing.T) {
	e := newEnv(t)
	k1 := KeyOf(mustAddrPort("198.18.0.2:1000"), mustAddrPort("198.19.0.2:443"))
	k2 := KeyOf(mustAddrPort("[2001:2::2]:1000"), mustAddrPort("[2001:2:0:1::2]:443"))
	v := FlowValue{Ifindex: uint32(e.x), Mode: ModeKernel, SeqDelta: [2]seqnum.Delta{1, 2}, Packets: [2]uint64{3, 4}}
	for _, k := range []FlowKey{k1, k2} {
		if err := e.dp.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.dp.Attach(); err != nil {
		t.Fatal(err)
	}
	e.dp.Close() // crash

	dp2, err := Load(e.cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	got := map[FlowKey]FlowValue{}
	if err := dp2.PreviousFlows(func(k FlowKey, v FlowValue) { got[k] = v }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[k1] != v || got[k2] != v {
		t.Fatalf("PreviousFlows = %v", got)
	}
	if err := dp2.Attach(); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := dp2.PreviousFlows(func(FlowKey, FlowValue) { n++ }); err != nil || n != 0 {
		t.Fatalf("PreviousFlows after our own Attach: %d flows, %v; want none", n, err)
	}
	dp2.Detach()
}

func TestRange_ReadsEveryFlowInBatches(t *testing.T) {
	e := newEnv(t)
	const n = 3*rangeBatch + 7
	for i := range n {
		k := KeyOf(mustAddrPort(fmt.Sprintf("198.18.%d.%d:%d", i/250, i%250+1, 1000+i)), mustAddrPort("198.19.0.2:443"))
		if err := e.dp.Put(k, FlowValue{Ifindex: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint32]bool{}
	if err := e.dp.Range(func(k FlowKey, v *FlowValue) bool { seen[v.Ifindex] = true; return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("Range saw %d flows, want %d", len(seen), n)
	}
	calls := 0
	if err := e.dp.Range(func(FlowKey, *FlowValue) bool { calls++; return calls < 5 }); err != nil || calls != 5 {
		t.Fatalf("Range went on after false: %d calls, %v", calls, err)
	}
	// Full map: Put fails rather than evicting anything.
	small := e.cfg
	small.MaxFlows = 1
	dp, err := Load(small, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := dp.Put(KeyOf(mustAddrPort("198.18.0.2:1"), mustAddrPort("198.19.0.2:1")), FlowValue{}); err != nil {
		t.Fatal(err)
	}
	if err := dp.Put(KeyOf(mustAddrPort("198.18.0.2:2"), mustAddrPort("198.19.0.2:1")), FlowValue{}); err == nil {
		t.Fatal("Put into a full map succeeded")
	}
	if _, ok, _ := dp.Lookup(KeyOf(mustAddrPort("198.18.0.2:1"), mustAddrPort("198.19.0.2:1"))); !ok {
		t.Fatal("the first flow was evicted")
	}
}

func TestLoad_RefusesBadConfig(t *testing.T) {
	good := Config{Ifaces: []Iface{{Name: "x0"}}, TapName: "tap0", Mark: 1, MaxFlows: 10}
	for name, edit := range map[string]func(*Config){
		"no interfaces":    func(c *Config) { c.Ifaces = nil },
		"no tap":           func(c *Config) { c.TapName = "" },
		"zero mark":        func(c *Config) { c.Mark = 0 },
		"zero max flows":   func(c *Config) { c.MaxFlows = 0 },
		"interface twice":  func(c *Config) { c.Ifaces = append(c.Ifaces, Iface{Name: "x0"}) },
		"tap as interface": func(c *Config) { c.Ifaces = append(c.Ifaces, Iface{Name: "tap0"}) },
	} {
		c := good
		edit(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoad_RefusesATUNForTheTAP(t *testing.T) {
	needRoot(t)
	nstest.SetUp(t)
	mkLinks(t, "x0", "tap0")
	tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI}
	if err := netlink.LinkAdd(tun); err != nil {
		t.Fatal(err)
	}
	for _, f := range tun.Fds {
		f.Close()
	}
	for _, tc := range []struct{ tap, iface string }{{"tun0", "x0"}, {"tap0", "lo"}, {"tap0", "nosuch0"}, {"nosuch0", "x0"}} {
		cfg := Config{Ifaces: []Iface{{Name: tc.iface}}, TapName: tc.tap, Mark: 1, MaxFlows: 10}
		dp, err := Load(cfg, zaptest.NewLogger(t))
		if err == nil {
			dp.Close()
			t.Errorf("Load with TAP %s and interface %s succeeded", tc.tap, tc.iface)
			continue
		}
		t.Logf("TAP %s, interface %s: %v", tc.tap, tc.iface, err)
	}
}
