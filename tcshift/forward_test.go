package tcshift

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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
	needRoot(t)
	nstest.SetUp(t)
	lab := nstest.NewLab(t)
	// Not persistent: the test holds the queue's fd, as the daemon does.
	tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tap0"}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI, NonPersist: true, Queues: 1}
	if err := netlink.LinkAdd(tt); err != nil {
		t.Fatalf("add tap: %v", err)
	}
	tap := tt.Fds[0]
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
	defer dp.Close()
	if err := dp.Attach(); err != nil {
		t.Fatal(err)
	}
	defer dp.Detach()
	gc, _ := netlink.LinkByName("gc")

	for i, srv := range []netip.Addr{nstest.Server4, nstest.Server6} {
		cli := nstest.Client4
		if srv.Is6() {
			cli = nstest.Client6
		}
		t.Run(fmt.Sprint(srv), func(t *testing.T) {
			// The client's numbers are shifted by +0x10000000, the server's by -12345; the
			// deltas follow by flowtable's sign rules.
			v := FlowValue{Ifindex: uint32(gc.Attrs().Index), Mode: ModeKernel}
			v.SetOffsets([2]seqnum.Delta{0x10000000, seqnum.Delta(12345).Neg()})
			ln := nstest.Listen(t, lab.Server, srv)
			client := netip.AddrPortFrom(cli, uint16(40000+i))
			k := KeyOf(client, netip.AddrPortFrom(srv, uint16(ln.Addr().(*net.TCPAddr).Port)))
			if err := dp.Put(k, v); err != nil {
				t.Fatal(err)
			}
			defer dp.Delete(k)
			var toDaemon atomic.Int64
			stop := standInDaemon(t, tap, v, &toDaemon)
			defer stop()

			data := make([]byte, 1<<20)
			for j := range data {
				data[j] = byte(j * 7)
			}
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c) // echo
			}()
			var conn net.Conn
			nstest.In(t, lab.Client, func() {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 5 * time.Second}
				conn, err = d.Dial("tcp", netip.AddrPortFrom(srv, uint16(ln.Addr().(*net.TCPAddr).Port)).String())
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
			fv, _, _ := dp.Lookup(k)
			// Most of the data is shifted in the kernel; the last of it may ride on a FIN,
			// which goes to the daemon.
			if fv.Packets[C2S] == 0 || fv.Packets[S2C] == 0 || fv.Bytes[C2S] < uint64(len(data)/2) || fv.Bytes[S2C] < uint64(len(data)/2) {
				t.Fatalf("the kernel shifted too little: packets %v bytes %v", fv.Packets, fv.Bytes)
			}
			s := dp.Stats()
			t.Logf("kernel: packets %v bytes %v; daemon saw %d frames; stats rewritten %d/%d, to daemon (flags) %d, returned %d/%d",
				fv.Packets, fv.Bytes, toDaemon.Load(), s[StatRewrittenC2S], s[StatRewrittenS2C], s[StatToDaemonFlags], s[StatTapReturnedC2S], s[StatTapReturnedS2C])
			if toDaemon.Load() == 0 || s[StatTapReturnedC2S] == 0 || s[StatTapReturnedS2C] == 0 {
				t.Fatal("the handshake did not go through the daemon")
			}
		})
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
				rewrite.Shift(f[EthHeaderLen:], &p, v.SeqDelta[d], v.AckDelta[d], false)
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
