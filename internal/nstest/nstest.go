// Package nstest gives tests a network namespace of their own: a fresh namespace per test for
// the calling goroutine (as vishvananda/netlink's setUpNetlinkTest), peer namespaces, and a
// client -- gateway -- server veth topology. It must never touch the root namespace: every
// object it makes lives in a namespace that dies with the test.
package nstest

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SetUp moves the calling goroutine, locked to its OS thread, into a fresh network
// namespace and returns it to the original one at cleanup (as vishvananda/netlink's
// setUpNetlinkTest). Everything a test creates lives and dies in that namespace; the root
// namespace is never touched. Sockets and netlink requests must be made from this goroutine.
func SetUp(t testing.TB) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_NET_ADMIN) for network namespaces and /dev/net/tun")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: %v", err)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime then discards it with the goroutine rather
			// than reusing a thread stuck in a test namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	return ns
}

// NewPeer makes another fresh namespace without leaving the current one; closed at cleanup.
func NewPeer(t testing.TB) netns.NsHandle {
	t.Helper()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(cur); err != nil {
		t.Fatalf("back to test netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// In runs fn with the (locked) calling thread in ns, then switches back.
func In(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(cur); err != nil {
			panic("cannot return to test netns: " + err.Error())
		}
	}()
	fn()
}

// WriteSysctl sets /proc/sys/PATH in the calling thread's namespace.
func WriteSysctl(t testing.TB, path, value string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0o644); err != nil {
		t.Fatalf("sysctl %s=%s: %v", path, value, err)
	}
}

// MustLink returns the link called name.
func MustLink(t testing.TB, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// AddAddr adds p to link, without IPv6 DAD.
func AddAddr(t testing.TB, h *netlink.Handle, link netlink.Link, p netip.Prefix) {
	t.Helper()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD // no second of DAD before the address is usable
	}
	if err := h.AddrAdd(link, a); err != nil {
		t.Fatalf("addr %s on %s: %v", p, link.Attrs().Name, err)
	}
}

// AddDefaultVia adds a default route via gw in table (0: main).
func AddDefaultVia(t testing.TB, h *netlink.Handle, gw netip.Addr, table int) {
	t.Helper()
	r := &netlink.Route{Gw: gw.AsSlice(), Table: table}
	r.Family = netlink.FAMILY_V4
	if gw.Is6() {
		r.Family = netlink.FAMILY_V6
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("default via %s: %v", gw, err)
	}
}

// Lab is client -- gateway -- server: the calling goroutine's namespace is the gateway, with
// a veth to each peer namespace; clients reach servers only by the gateway forwarding.
//
//	client 198.18.1.2/24 2001:2:1::2/64  c0 === gc  gateway  gs === s0  server 198.18.2.2/24 2001:2:2::2/64
type Lab struct {
	Client, Server netns.NsHandle
}

// The lab's client and server addresses.
var (
	Client4 = netip.MustParseAddr("198.18.1.2")
	Server4 = netip.MustParseAddr("198.18.2.2")
	Client6 = netip.MustParseAddr("2001:2:1::2")
	Server6 = netip.MustParseAddr("2001:2:2::2")
)

// NewLab builds the topology around the calling goroutine's namespace, the gateway.
func NewLab(t testing.TB) *Lab {
	t.Helper()
	l := &Lab{Client: NewPeer(t), Server: NewPeer(t)}
	gw, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	WriteSysctl(t, "net/ipv4/ip_forward", "1")
	WriteSysctl(t, "net/ipv6/conf/all/forwarding", "1")
	WriteSysctl(t, "net/ipv4/conf/all/rp_filter", "0")
	// Link-local addresses are tentative for a second after link-up; the lab needs none of it.
	for _, ns := range []netns.NsHandle{l.Client, l.Server} {
		In(t, ns, func() { WriteSysctl(t, "net/ipv6/conf/default/accept_dad", "0") })
	}
	WriteSysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	for _, side := range []struct {
		ns           netns.NsHandle
		gwIf, peerIf string
		gw4, peer4   string
		gw6, peer6   string
	}{
		{l.Client, "gc", "c0", "198.18.1.1", "198.18.1.2", "2001:2:1::1", "2001:2:1::2"},
		{l.Server, "gs", "s0", "198.18.2.1", "198.18.2.2", "2001:2:2::1", "2001:2:2::2"},
	} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: side.gwIf}, PeerName: side.peerIf, PeerNamespace: netlink.NsFd(side.ns)}
		if err := gw.LinkAdd(veth); err != nil {
			t.Fatalf("veth %s: %v", side.gwIf, err)
		}
		gl := MustLink(t, gw, side.gwIf)
		AddAddr(t, gw, gl, netip.PrefixFrom(netip.MustParseAddr(side.gw4), 24))
		AddAddr(t, gw, gl, netip.PrefixFrom(netip.MustParseAddr(side.gw6), 64))
		if err := gw.LinkSetUp(gl); err != nil {
			t.Fatal(err)
		}
		ph, err := netlink.NewHandleAt(side.ns)
		if err != nil {
			t.Fatal(err)
		}
		pl := MustLink(t, ph, side.peerIf)
		AddAddr(t, ph, pl, netip.PrefixFrom(netip.MustParseAddr(side.peer4), 24))
		AddAddr(t, ph, pl, netip.PrefixFrom(netip.MustParseAddr(side.peer6), 64))
		for _, l := range []netlink.Link{pl, MustLink(t, ph, "lo")} {
			if err := ph.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		AddDefaultVia(t, ph, netip.MustParseAddr(side.gw4), 0)
		AddDefaultVia(t, ph, netip.MustParseAddr(side.gw6), 0)
		ph.Close()
	}
	return l
}

// Listen opens a TCP listener on addr (any port) inside ns; it is closed at cleanup. Sockets
// keep the namespace they were created in, so the listener serves ns from any goroutine.
func Listen(t testing.TB, ns netns.NsHandle, addr netip.Addr) net.Listener {
	t.Helper()
	var ln net.Listener
	In(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String()); err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	return ln
}
