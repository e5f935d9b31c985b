package tun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/internal/nstest"
)

func TestPartialChecksum(t *testing.T) {
	for _, tc := range []struct {
		buf  []byte
		want bool
	}{
		{nil, false},
		{make([]byte, HeaderLen-1), false},
		{[]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, true},
		{[]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x45}, false},
		{[]byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}, true},
	} {
		if got := PartialChecksum(tc.buf); got != tc.want {
			t.Errorf("PartialChecksum(%x) = %v, want %v", tc.buf, got, tc.want)
		}
	}
}

func TestOpen_RejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "x", Queues: 257},
		{Name: "x", Queues: -1},
		{Name: "x", MTU: 67},
		{Name: "x", MTU: 65536},
		{Name: "a-name-that-is-too-long"},
	} {
		if d, err := Open(cfg, nil); err == nil {
			d.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
}

func TestOpen_CreatesMultiQueueLink(t *testing.T) {
	for _, offload := range []bool{false, true} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			nstest.SetUp(t)
			d, err := Open(Config{Name: "sst%d", MTU: 1400, Queues: 2, Offload: offload}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Name() != "sst0" || d.Queues() != 2 || d.MTU() != 1400 || d.Offload() != offload {
				t.Errorf("device = %s queues %d mtu %d offload %v", d.Name(), d.Queues(), d.MTU(), d.Offload())
			}
			link, err := netlink.LinkByName("sst0")
			if err != nil {
				t.Fatal(err)
			}
			tt, ok := link.(*netlink.Tuntap)
			if !ok {
				t.Fatalf("link is %T, want *netlink.Tuntap", link)
			}
			want := netlink.TUNTAP_NO_PI | netlink.TUNTAP_MULTI_QUEUE
			if offload {
				want |= netlink.TUNTAP_VNET_HDR
			}
			if tt.Mode != netlink.TUNTAP_MODE_TUN || tt.Flags != want || tt.Queues != 2 || !tt.NonPersist {
				t.Errorf("tuntap mode %v flags %#x queues %d non-persistent %v; want tun, %#x, 2, true",
					tt.Mode, tt.Flags, tt.Queues, tt.NonPersist, want)
			}
			if tt.MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("mtu %d flags %v: want 1400 and up", tt.MTU, link.Attrs().Flags)
			}
			// No IPv6 link-local address, hence no DAD, RS or MLD traffic into the TUN.
			addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			if len(addrs) != 0 {
				t.Errorf("addresses on a fresh TUN: %v", addrs)
			}
		})
	}
}

func TestOpen_RejectsExistingName(t *testing.T) {
	nstest.SetUp(t)
	d, err := Open(Config{Name: "sst0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d2, err := Open(Config{Name: "sst0", Queues: 2}, nil); err == nil {
		d2.Close()
		t.Fatal("second Open of sst0 succeeded: it would have joined the first device's queues")
	}
	if link, err := netlink.LinkByName("sst0"); err != nil {
		t.Fatal(err)
	} else if q := link.(*netlink.Tuntap).Queues; q != 1 {
		t.Errorf("sst0 has %d queues after the refused Open, want 1", q)
	}
}

func TestClose_UnblocksReadersAndDeletesLink(t *testing.T) {
	nstest.SetUp(t)
	d, err := Open(Config{Name: "sst0", Queues: 2, Offload: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for q := range 2 {
		go func() {
			bufs, sizes := [][]byte{make([]byte, MaxPacket)}, make([]int, 1)
			_, err := d.Read(q, bufs, sizes)
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let both readers park in the poller
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("blocked Read returned %v, want os.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock a reader")
		}
	}
	if _, err := d.Read(0, [][]byte{make([]byte, 10)}, []int{0}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v, want os.ErrClosed", err)
	}
	if _, err := d.Write(1, [][]byte{make([]byte, 40)}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := netlink.LinkByName("sst0"); err == nil {
		t.Error("sst0 still exists after Close: routes through it would outlive the daemon")
	}
}

func TestRead_DeletedInterfaceIsErrDeviceGone(t *testing.T) {
	nstest.SetUp(t)
	d, err := Open(Config{Name: "sst0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	link, err := netlink.LinkByName("sst0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Read(0, [][]byte{make([]byte, MaxPacket)}, []int{0})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDeviceGone) || !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read on a deleted interface = %v, want ErrDeviceGone (an os.ErrClosed)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read on a deleted interface blocked")
	}
}

// relay is the datapath reduced to its I/O: every queue reads batches and writes them back
// unchanged, recording what the virtio-net headers said.
type relay struct {
	dev     Device
	wg      sync.WaitGroup
	packets [MaxQueues]atomic.Int64
	gso     atomic.Int64 // super-packets (gso_type != NONE)
	largest atomic.Int64 // largest packet, header excluded
	bad     atomic.Pointer[string]
}

func startRelay(t testing.TB, dev Device, family int) *relay {
	r := &relay{dev: dev}
	for q := range dev.Queues() {
		r.wg.Add(1)
		go r.serve(q, family)
	}
	t.Cleanup(func() {
		dev.Close()
		r.wg.Wait()
	})
	return r
}

func (r *relay) serve(q int, family int) {
	defer r.wg.Done()
	bufs, sizes := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket)
	}
	out := make([][]byte, 0, len(bufs))
	for {
		n, err := r.dev.Read(q, bufs, sizes)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				r.fail(fmt.Sprintf("queue %d read: %v", q, err))
			}
			return
		}
		out = out[:0]
		for i := range n {
			pkt := bufs[i][:sizes[i]]
			r.inspect(pkt, family)
			out = append(out, pkt)
		}
		r.packets[q].Add(int64(n))
		if _, err := r.dev.Write(q, out); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				r.fail(fmt.Sprintf("queue %d write: %v", q, err))
			}
			return
		}
	}
}

func (r *relay) fail(msg string) { r.bad.CompareAndSwap(nil, &msg) }

// inspect checks a read packet's virtio-net header against the packet behind it.
func (r *relay) inspect(buf []byte, family int) {
	ip := buf
	if r.dev.Offload() {
		ip = buf[HeaderLen:]
	}
	for {
		old := r.largest.Load()
		if int64(len(ip)) <= old || r.largest.CompareAndSwap(old, int64(len(ip))) {
			break
		}
	}
	if !r.dev.Offload() || len(ip) == 0 || ip[0]>>4 != byte(family) {
		return
	}
	h := vnetHdr(buf)
	ipHdrLen, proto, wantGSO := 40, ip[6], uint8(gsoTCPv6)
	if family == 4 {
		ipHdrLen, proto, wantGSO = int(ip[0]&0xf)*4, ip[9], gsoTCPv4
	}
	if proto != unix.IPPROTO_TCP || !h.gso() {
		return
	}
	r.gso.Add(1)
	tcpHdrLen := int(ip[ipHdrLen+12]>>4) * 4
	switch {
	case h.gsoType()&^gsoECN != wantGSO:
		r.fail(fmt.Sprintf("gso_type %d for IPv%d TCP", h.gsoType(), family))
	case !h.needsCsum() || int(h.csumStart()) != ipHdrLen || h.csumOffset() != 16:
		r.fail(fmt.Sprintf("GSO packet flags %#x csum_start %d csum_offset %d, want NEEDS_CSUM %d 16",
			h.flags(), h.csumStart(), h.csumOffset(), ipHdrLen))
	case h.gsoSize() == 0 || len(ip) <= ipHdrLen+tcpHdrLen+int(h.gsoSize()):
		r.fail(fmt.Sprintf("GSO packet of %d bytes with gso_size %d", len(ip), h.gsoSize()))
	case int(h.hdrLen()) > ipHdrLen+tcpHdrLen || int(h.hdrLen()) < ipHdrLen:
		r.fail(fmt.Sprintf("hdr_len %d for %d bytes of IP+TCP headers", h.hdrLen(), ipHdrLen+tcpHdrLen))
	}
}

// transfer sends size bytes from client to server over conns connections at once and checks
// that every byte arrived, in order.
func transfer(t testing.TB, l *nstest.Lab, server netip.Addr, conns, size int) {
	t.Helper()
	ln := nstest.Listen(t, l.Server, server)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				_, _ = io.Copy(h, c)
				_, _ = c.Write(h.Sum(nil))
			}()
		}
	}()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs := make([]net.Conn, conns)
	nstest.In(t, l.Client, func() {
		var d net.Dialer
		for i := range cs {
			c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatalf("dial %s: %v", ln.Addr(), err)
			}
			cs[i] = c
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			dl, _ := ctx.Deadline()
			c.SetDeadline(dl)
			if _, err := c.Write(data); err != nil {
				errs <- err
				return
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, want[:]) {
				errs <- fmt.Errorf("server hashed %x, sent %x", got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRelay_TCPThroughTUN forwards real TCP between two namespaces through the device: the
// gateway routes both directions into the TUN, the relay writes every packet back unchanged
// and the kernel forwards it on. With offload the relay must see TCP super-packets whose
// headers describe them correctly, and the kernel must take them back.
func TestRelay_TCPThroughTUN(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offload bool
		server  netip.Addr
	}{
		{"plain/v4", false, nstest.Server4},
		{"plain/v6", false, nstest.Server6},
		{"offload/v4", true, nstest.Server4},
		{"offload/v6", true, nstest.Server6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nstest.SetUp(t)
			l := nstest.NewLab(t)
			const mtu = 1500
			d, err := Open(Config{Name: "sst0", MTU: mtu, Queues: 2, Offload: tc.offload}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			steerThrough(t, d.Name())
			family := 4
			if tc.server.Is6() {
				family = 6
			}
			r := startRelay(t, d, family)

			transfer(t, l, tc.server, 16, 1<<20)

			if msg := r.bad.Load(); msg != nil {
				t.Error(*msg)
			}
			q0, q1 := r.packets[0].Load(), r.packets[1].Load()
			t.Logf("packets per queue %d/%d, GSO super-packets %d, largest %d bytes", q0, q1, r.gso.Load(), r.largest.Load())
			if q0 == 0 || q1 == 0 {
				t.Errorf("16 connections all went to one queue (%d/%d)", q0, q1)
			}
			if tc.offload {
				if r.gso.Load() == 0 || r.largest.Load() <= mtu {
					t.Errorf("no GSO super-packets read with offload (largest %d bytes)", r.largest.Load())
				}
			} else if r.largest.Load() > mtu {
				t.Errorf("packet of %d bytes > MTU %d read without offload", r.largest.Load(), mtu)
			}
		})
	}
}

// udpSource makes the kernel route one UDP datagram into the device per send.
func udpSource(t testing.TB, dev string) int {
	t.Helper()
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 0, 1), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 0, 2}, Port: 9}); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestReadWrite_ZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("skipping: the race detector allocates")
	}
	for _, offload := range []bool{false, true} {
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			nstest.SetUp(t)
			d, err := Open(Config{Name: "sst0", Offload: offload}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			src := udpSource(t, "sst0")
			payload := make([]byte, 100)
			bufs, sizes, out := [][]byte{make([]byte, MaxPacket), make([]byte, MaxPacket)}, make([]int, 2), make([][]byte, 2)
			var failed error
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := unix.Write(src, payload); err != nil {
					failed = err
					return
				}
				n, err := d.Read(0, bufs, sizes)
				if err != nil {
					failed = err
					return
				}
				for i := range n {
					out[i] = bufs[i][:sizes[i]]
				}
				// Our own datagram back in: a martian (local source) the kernel drops.
				if _, err := d.Write(0, out[:n]); err != nil {
					failed = err
				}
			})
			if failed != nil {
				t.Fatal(failed)
			}
			if allocs != 0 {
				t.Errorf("Read+Write allocate %.1f times per call, want 0", allocs)
			}
		})
	}
}

func TestRead_DrainsABatch(t *testing.T) {
	nstest.SetUp(t)
	d, err := Open(Config{Name: "sst0", Offload: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	src := udpSource(t, "sst0")
	for i := range 5 {
		if _, err := unix.Write(src, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes := make([][]byte, 8), make([]int, 8)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket)
	}
	n, err := d.Read(0, bufs, sizes)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("one Read returned %d packets, want the 5 queued", n)
	}
	for i := range n {
		ip := bufs[i][HeaderLen:sizes[i]]
		// 20 bytes IPv4, 8 bytes UDP, 1 byte payload; UDP checksum left to the "hardware".
		if len(ip) != 29 || ip[9] != unix.IPPROTO_UDP || ip[28] != byte(i) {
			t.Errorf("packet %d: %x", i, ip)
		}
		if h := vnetHdr(bufs[i]); h.gso() || binary.BigEndian.Uint16(ip[2:]) != 29 {
			t.Errorf("packet %d: gso_type %d", i, h.gsoType())
		}
	}
}

// BenchmarkRelay_TCP measures one TCP stream from client to server through the gateway:
// forwarded by the kernel alone, and relayed through the TUN with and without offload.
//
//	go test -run '^$' -bench Relay -benchtime 2s ./tun/
func BenchmarkRelay_TCP(b *testing.B) {
	for _, mode := range []string{"kernel", "tun-plain", "tun-offload"} {
		b.Run(mode, func(b *testing.B) {
			nstest.SetUp(b)
			l := nstest.NewLab(b)
			if mode != "kernel" {
				d, err := Open(Config{Name: "sst0", Queues: 2, Offload: mode == "tun-offload"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				steerThrough(b, d.Name())
				startRelay(b, d, 4)
			}
			ln := nstest.Listen(b, l.Server, nstest.Server4)
			received := make(chan int64, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					received <- 0
					return
				}
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				received <- n
			}()
			var c net.Conn
			nstest.In(b, l.Client, func() {
				var err error
				if c, err = net.Dial("tcp", ln.Addr().String()); err != nil {
					b.Fatal(err)
				}
			})
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			var sent int64
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
				sent += int64(len(chunk))
			}
			c.Close()
			if n := <-received; n != sent {
				b.Fatalf("server received %d bytes, want %d", n, sent)
			}
		})
	}
}
