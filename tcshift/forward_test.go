package tcshift

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
)

// TestForwarding_ShiftsARealConnection runs the programs attached in a client -- gateway --
// server lab, with a stand-in for the daemon on the TAP that shifts with rewrite.Shift what it
// is sent (SYN, SYN-ACK, FIN) and writes it back. The flow is in kernel mode from the start,
// so every data segment is shifted by the programs and the handshake by the stand-in: if
// either side's numbers were off, or a segment were forwarded unshifted, the real stacks at
// both ends would not complete the transfer.
func TestForwarding_ShiftsARealConnection(t *testing.T) {
	f := newForwardLab(t)
	// No subtests: they run on goroutines of their own, outside the locked thread that is in
	// the gateway's namespace.
	for i, srv := range []netip.Addr{nstest.Server4, nstest.Server6} {
		if peer := f.transfer(t, srv, uint16(40000+i)); peer.Addr() != clientOf(srv) {
			t.Fatalf("%v: the server saw %v", srv, peer)
		}
	}
}

// TestForwarding_NATGatewayFirewall is the same through a typical NAT gateway's firewall:
// forward policy drop, established and related accepted, invalid dropped, client side to
// server side accepted, masquerade toward the servers. The kernel sees each intercepted
// packet once, in one sequence space: nothing is invalid, conntrack holds one entry per
// connection, and the server sees the masqueraded address.
func TestForwarding_NATGatewayFirewall(t *testing.T) {
	f := newForwardLab(t)
	nft(t, `
table inet seqshiftd_test {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state invalid counter drop
		ct state established,related accept
		iifname "gc" oifname "gs" accept
	}
	chain postrouting {
		type nat hook postrouting priority 100;
		oifname "gs" masquerade
	}
}`)
	for i, srv := range []netip.Addr{nstest.Server4, nstest.Server6} {
		port := uint16(41000 + i)
		peer := f.transfer(t, srv, port)
		gw := netip.MustParseAddr("198.18.2.1")
		if srv.Is6() {
			gw = netip.MustParseAddr("2001:2:2::1")
		}
		if peer.Addr() != gw {
			t.Fatalf("%v: the server saw %v, want the masqueraded %v", srv, peer, gw)
		}
		// -o extended prints one line per entry; the summary goes to stderr.
		out, err := exec.Command("conntrack", "-L", "-p", "tcp", "--orig-port-src", fmt.Sprint(port), "-o", "extended").Output()
		if err != nil {
			t.Fatalf("conntrack -L: %v", err)
		}
		t.Logf("conntrack: %s", out)
		if n := strings.Count(string(out), "\n"); n != 1 {
			t.Fatalf("%v: conntrack holds %d entries for the connection, want 1:\n%s", srv, n, out)
		}
	}
	out := nft(t, "list chain inet seqshiftd_test forward")
	if !strings.Contains(out, "ct state invalid counter packets 0 bytes 0 drop") {
		t.Fatalf("invalid packets were dropped:\n%s", out)
	}
}

func nft(t *testing.T, script string) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping: nft not installed")
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	return string(out)
}

func clientOf(srv netip.Addr) netip.Addr {
	if srv.Is6() {
		return nstest.Client6
	}
	return nstest.Client4
}

// forwardLab is the lab of the forwarding tests: nstest's client -- gateway -- server with the
// programs attached to the gateway's client-facing gc and a TAP whose queue the test holds.
type forwardLab struct {
	lab *nstest.Lab
	dp  *Datapath
	tap *os.File
	tt  *netlink.Tuntap
	gc  int
}

func newForwardLab(t *testing.T) *forwardLab {
	needRoot(t)
	nstest.SetUp(t)
	lab := nstest.NewLab(t)
	// Not persistent: the test holds the queue's fd, as the daemon does.
	tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tap0"}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI, NonPersist: true, Queues: 1}
	if err := netlink.LinkAdd(tt); err != nil {
		t.Fatalf("add tap: %v", err)
	}
	t.Cleanup(func() {
		for _, f := range tt.Fds {
			f.Close()
		}
	})
	if err := netlink.LinkSetUp(tt); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Ifaces:   []Iface{{Name: "gc", To: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("2001:2:2::/64")}}},
		TapName:  "tap0",
		Mark:     testMark,
		MaxFlows: 16,
	}
	dp, err := Load(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	if err := dp.Attach(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Detach() })
	gc, err := netlink.LinkByName("gc")
	if err != nil {
		t.Fatal(err)
	}
	return &forwardLab{lab: lab, dp: dp, tap: tt.Fds[0], tt: tt, gc: gc.Attrs().Index}
}

// transfer echoes 1 MiB from the client's port to srv through a kernel-mode flow and returns
// the client address the server saw.
func (f *forwardLab) transfer(t *testing.T, srv netip.Addr, port uint16) netip.AddrPort {
	// The client's numbers are shifted by +0x10000000, the server's by -12345; the deltas
	// follow by flowtable's sign rules.
	v := FlowValue{Ifindex: uint32(f.gc), Mode: ModeKernel}
	v.SetOffsets([2]seqnum.Delta{0x10000000, seqnum.Delta(12345).Neg()})
	ln := nstest.Listen(t, f.lab.Server, srv)
	client := netip.AddrPortFrom(clientOf(srv), port)
	server := netip.AddrPortFrom(srv, uint16(ln.Addr().(*net.TCPAddr).Port))
	k := KeyOf(client, server)
	if err := f.dp.Put(k, v); err != nil {
		t.Fatal(err)
	}
	defer f.dp.Delete(k)
	var toDaemon atomic.Int64
	stop := standInDaemon(t, f.tap, v, &toDaemon)
	defer stop()

	data := make([]byte, 1<<20)
	for j := range data {
		data[j] = byte(j * 7)
	}
	peer := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- netip.AddrPort{}
			return
		}
		defer c.Close()
		peer <- c.RemoteAddr().(*net.TCPAddr).AddrPort()
		io.Copy(c, c) // echo
	}()
	var conn net.Conn
	var err error
	nstest.In(t, f.lab.Client, func() {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 5 * time.Second}
		conn, err = d.Dial("tcp", server.String())
	})
	if err != nil {
		t.Fatalf("dial through the gateway: %v", err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		conn.Write(data)
		conn.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	conn.Close()
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo through the gateway: %d of %d bytes, %v", len(got), len(data), err)
	}
	fv, _, _ := f.dp.Lookup(k)
	// Most of the data is shifted in the kernel; the last of it may ride on a FIN, which goes
	// to the daemon.
	if fv.Packets[C2S] == 0 || fv.Packets[S2C] == 0 || fv.Bytes[C2S] < uint64(len(data)/2) || fv.Bytes[S2C] < uint64(len(data)/2) {
		t.Fatalf("the kernel shifted too little: packets %v bytes %v", fv.Packets, fv.Bytes)
	}
	s := f.dp.Stats()
	t.Logf("kernel: packets %v bytes %v; daemon saw %d frames; stats rewritten %d/%d, to daemon (flags) %d, returned %d/%d",
		fv.Packets, fv.Bytes, toDaemon.Load(), s[StatRewrittenC2S], s[StatRewrittenS2C], s[StatToDaemonFlags], s[StatTapReturnedC2S], s[StatTapReturnedS2C])
	if toDaemon.Load() == 0 || s[StatTapReturnedC2S] == 0 || s[StatTapReturnedS2C] == 0 {
		t.Fatal("the handshake did not go through the daemon")
	}
	return <-peer
}

// TestForwarding_OutlivesTheDaemon: when the daemon dies (its TAP gone, its Datapath closed),
// an established kernel-mode connection keeps flowing through the programs and maps the
// attached filters hold, and a new connection is dropped (fail-closed), not forwarded.
func TestForwarding_OutlivesTheDaemon(t *testing.T) {
	f := newForwardLab(t)
	v := FlowValue{Ifindex: uint32(f.gc), Mode: ModeKernel}
	v.SetOffsets([2]seqnum.Delta{0x7fff0000, 0x1234})
	ln := nstest.Listen(t, f.lab.Server, nstest.Server4)
	server := netip.AddrPortFrom(nstest.Server4, uint16(ln.Addr().(*net.TCPAddr).Port))
	client := netip.AddrPortFrom(nstest.Client4, 42000)
	if err := f.dp.Put(KeyOf(client, server), v); err != nil {
		t.Fatal(err)
	}
	var toDaemon atomic.Int64
	stop := standInDaemon(t, f.tap, v, &toDaemon)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	var conn net.Conn
	var err error
	nstest.In(t, f.lab.Client, func() {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 5 * time.Second}
		conn, err = d.Dial("tcp", server.String())
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	echo := func(n int) error {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j * 13)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		errc := make(chan error, 1)
		go func() { _, err := conn.Write(data); errc <- err }()
		got := make([]byte, n)
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if err := <-errc; err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return errors.New("echo differs")
		}
		return nil
	}
	if err := echo(64 << 10); err != nil {
		t.Fatalf("before the daemon dies: %v", err)
	}
	// The daemon dies: its TAP goes with its queue's fd, its Datapath is closed.
	stop()
	for _, fd := range f.tt.Fds {
		fd.Close()
	}
	f.dp.Close()
	if _, err := netlink.LinkByName("tap0"); err == nil {
		t.Fatal("the TAP outlived its fd")
	}
	if err := echo(1 << 20); err != nil {
		t.Fatalf("after the daemon died, the established connection stopped: %v", err)
	}
	// A new connection needs the daemon: its SYN is redirected to a TAP that is gone.
	nstest.In(t, f.lab.Client, func() {
		d := net.Dialer{Timeout: time.Second}
		var c net.Conn
		if c, err = d.Dial("tcp", server.String()); err == nil {
			c.Close()
		}
	})
	if err == nil {
		t.Fatal("a new connection went through without the daemon")
	}
}

// standInDaemon reads frames from the TAP, shifts TCP segments by the flow's deltas for the
// direction their hook says (what the daemon does for SYN, FIN and RST), and writes them back.
func standInDaemon(t *testing.T, tap *os.File, v FlowValue, n *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			m, err := tap.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Logf("tap read: %v", err)
				}
				return
			}
			f := buf[:m]
			meta, ok := ReadMeta(f)
			if !ok {
				continue // e.g. IPv6 router solicitations of the TAP itself
			}
			n.Add(1)
			d := C2S
			if meta.Hook == HookEgress {
				d = S2C
			}
			var p rewrite.Packet
			rewrite.Classify(f[EthHeaderLen:], &p)
			if p.Kind == rewrite.KindTCP {
				rewrite.Shift(f[EthHeaderLen:], &p, seqnum.Delta(v.SeqDelta[d]), seqnum.Delta(v.AckDelta[d]), false)
			}
			if _, err := tap.Write(f); err != nil {
				t.Logf("tap write: %v", err)
				return
			}
		}
	}()
	return func() {
		// Closing the fd does not wake a blocked read on a TAP; a deadline does.
		tap.SetReadDeadline(time.Now())
		<-done
		tap.SetReadDeadline(time.Time{})
	}
}
