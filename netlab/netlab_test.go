package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netns"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab tests create network namespaces: run as root (skipped)")
	}
}

func newLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	needRoot(t)
	l, err := New(opts)
	if err != nil {
		t.Fatalf("netlab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// exchange sends n random bytes each way over one connection from the client to the server and
// checks both arrive intact.
func exchange(t *testing.T, l *Lab, server netip.Addr, n int) (client netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	network := "tcp4"
	if server.Is6() {
		network = "tcp6"
	}
	ln, err := l.Server.Listen(network, netip.AddrPortFrom(server, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	up, down := make([]byte, n), make([]byte, n)
	rand.Read(up)
	rand.Read(down)
	var wg sync.WaitGroup
	var serverGot []byte
	var serverErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		wrote := make(chan error, 1)
		go func() { _, err := c.Write(down); wrote <- err }()
		serverGot, serverErr = io.ReadAll(io.LimitReader(c, int64(n)))
		serverErr = errors.Join(serverErr, <-wrote)
	}()
	c, err := l.Client.Dial(ctx, network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(up); wrote <- err }()
	got, err := io.ReadAll(io.LimitReader(c, int64(n)))
	if err = errors.Join(err, <-wrote); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	if sha256.Sum256(got) != sha256.Sum256(down) || !bytes.Equal(serverGot, up) {
		t.Fatalf("data corrupted: client got %d bytes, server got %d", len(got), len(serverGot))
	}
	return netip.MustParseAddrPort(c.LocalAddr().String())
}

// captureEnds captures on the client's and the server's link until the test ends.
func captureEnds(t *testing.T, l *Lab) (client, server *Capture) {
	t.Helper()
	client, err := l.Client.Capture(l.ClientIface)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Server.Capture(l.ServerIface)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func TestNew_ForwardsIPv4AndIPv6ThroughTheGateway(t *testing.T) {
	t.Parallel()
	l := newLab(t, Options{})
	for _, server := range []netip.Addr{l.ServerAddr4, l.ServerAddr6} {
		t.Run(server.String(), func(t *testing.T) {
			cc, sc := captureEnds(t, l)
			client := exchange(t, l, server, 1<<20)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			isSYN := func(s Segment) bool { return s.Src == client && s.Flags&(SYN|ACK) == SYN }
			sent, err := cc.Wait(ctx, func(s Segment) bool { return isSYN(s) && s.Outgoing })
			if err != nil {
				t.Fatal(err)
			}
			seen, err := sc.Wait(ctx, func(s Segment) bool { return isSYN(s) && !s.Outgoing })
			if err != nil {
				t.Fatal(err)
			}
			if sent.Seq != seen.Seq || sent.MSS == 0 {
				t.Errorf("client sent %v, server saw %v", sent, seen)
			}
			if _, err := cc.Wait(ctx, func(s Segment) bool { return s.Dst == client && s.Has(SYN|ACK) && s.Ack == sent.Seq+1 }); err != nil {
				t.Errorf("no SYN-ACK acknowledging the client's ISN: %v", err)
			}
			// The capture may still be behind the socket that already read the data.
			var data int
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				data = 0
				for _, s := range sc.Segments() {
					if s.Src == client {
						data += s.PayloadLen
					}
				}
				if data >= 1<<20 {
					break
				}
			}
			if data < 1<<20 {
				t.Errorf("server capture saw %d payload bytes from the client, want >= %d", data, 1<<20)
			}
		})
	}
}

func TestNew_RouterWithSmallMTUNeedsPathMTUDiscovery(t *testing.T) {
	t.Parallel()
	l := newLab(t, Options{Router: true, RouterMTU: 1280})
	for _, server := range []netip.Addr{l.ServerAddr4, l.ServerAddr6} {
		t.Run(server.String(), func(t *testing.T) {
			cc, sc := captureEnds(t, l)
			client := exchange(t, l, server, 2<<20)
			var icmp *ICMPError
			for _, e := range cc.ICMPErrors() {
				if e.QuotedSrc == client && e.MTU == 1280 {
					icmp = &e
					break
				}
			}
			if icmp == nil {
				t.Fatalf("the client got no fragmentation-needed/packet-too-big with MTU 1280: %+v", cc.ICMPErrors())
			}
			var synMSS uint16
			for _, s := range sc.Segments() {
				if s.Dst == client && s.Has(SYN|ACK) {
					synMSS = s.MSS
				}
				if s.Src == client && s.SegmentSize() > 1280-40 {
					t.Fatalf("a segment larger than the path MTU reached the server: %v", s)
				}
			}
			if synMSS < 1400 {
				t.Errorf("server advertised MSS %d; the lab should advertise a 1500-byte link's", synMSS)
			}
		})
	}
}

func TestImpair_DropsAndReordersInBothDirections(t *testing.T) {
	t.Parallel()
	l := newLab(t, Options{Router: true})
	im, err := l.Impair(Impairment{Loss: 0.02, Reorder: 0.02, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := l.Client.Capture(l.ClientIface)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	exchange(t, l, l.ServerAddr4, 4<<20)
	exchange(t, l, l.ServerAddr6, 4<<20)
	st := im.Stats()
	for d := range 2 {
		if st.Dropped[d] == 0 || st.Reordered[d] == 0 || st.Passed[d] == 0 {
			t.Errorf("direction %d: %+v", d, st)
		}
	}
	sacks := 0
	for _, s := range cc.Segments() {
		sacks += len(s.SACK)
	}
	if sacks == 0 {
		t.Error("no SACK block crossed the client's link despite loss")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	before := im.Stats()
	exchange(t, l, l.ServerAddr4, 1<<20)
	if im.Stats() != before {
		t.Error("traffic still crossed the impairer after Close")
	}
}

func TestClose_RemovesEveryNamespaceAndIsIdempotent(t *testing.T) {
	needRoot(t)
	l, err := New(Options{Router: true})
	if err != nil {
		t.Fatal(err)
	}
	names := l.Namespaces()
	if len(names) != 4 {
		t.Fatalf("namespaces %v", names)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists: %v", n.Name, err)
		}
	}
}

func TestNew_FailureRemovesWhatItMadeOnly(t *testing.T) {
	needRoot(t)
	name := "netlab-" + strconv.Itoa(os.Getpid()) + "-dup"
	first := newLab(t, Options{Name: name})
	if _, err := New(Options{Name: name}); err == nil {
		t.Fatal("a second lab with the same name was created")
	}
	for _, n := range first.Namespaces() {
		if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); err != nil {
			t.Errorf("the failed New removed the first lab's %s: %v", n.Name, err)
		}
	}
	exchange(t, first, first.ServerAddr4, 1024)
}

func TestDo_RunsInsideAndRestoresTheThread(t *testing.T) {
	needRoot(t)
	l := newLab(t, Options{})
	home, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	var inside bool
	err = l.Gateway.Do(func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = !cur.Equal(home)
		_, err = net.InterfaceByName(GatewayClientIface)
		return err
	})
	if err != nil || !inside {
		t.Fatalf("Do: inside=%v err=%v", inside, err)
	}
	if want := errors.New("boom"); !errors.Is(l.Client.Do(func() error { return want }), want) {
		t.Error("Do lost fn's error")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a panic in fn did not reach the caller")
			}
		}()
		_ = l.Client.Do(func() error { panic("boom") })
	}()
	// Every thread the runtime hands out afterwards must be back in the home namespace.
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := netns.Get()
			if err != nil {
				t.Error(err)
				return
			}
			defer cur.Close()
			if !cur.Equal(home) {
				t.Error("a thread was left in a lab namespace")
			}
		}()
	}
	wg.Wait()
	if err := (&NS{Name: "netlab-no-such-namespace"}).Sysctl("net.ipv4.ip_forward", "1"); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}
	if v, err := l.Gateway.ReadSysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Errorf("gateway ip_forward = %q, %v", v, err)
	}
	if v, err := l.Client.ReadSysctl("net.ipv6.conf.eth0.accept_dad"); err != nil || v != "0" {
		t.Errorf("client accept_dad = %q, %v", v, err)
	}
	out, err := l.Server.Run(context.Background(), "ip", "-o", "addr", "show", "dev", ServerIface)
	if err != nil || !bytes.Contains([]byte(out), []byte(l.ServerAddr6.String())) {
		t.Errorf("ip addr in the server namespace: %q, %v", out, err)
	}
}

func TestDecodeFrame_AgreesWithGopacket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 502, Seq: 0xfffffff0, Ack: 1000, ACK: true, PSH: true, Window: 512,
			Options: []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindSACK, OptionLength: 18, OptionData: []byte{0, 0, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x30, 0, 0, 0, 0x40, 0}},
				{OptionType: 19, OptionLength: 18, OptionData: make([]byte, 16)},
			}}
		var ip gopacket.SerializableLayer
		if v6 {
			eth.EthernetType = layers.EthernetTypeIPv6
			l3 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
				SrcIP: net.ParseIP("2001:2:0:1::2"), DstIP: net.ParseIP("2001:2:0:2::2")}
			tcp.SetNetworkLayerForChecksum(l3)
			ip = l3
		} else {
			eth.EthernetType = layers.EthernetTypeIPv4
			l3 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
				SrcIP: net.IPv4(198, 18, 1, 2), DstIP: net.IPv4(198, 18, 2, 2)}
			tcp.SetNetworkLayerForChecksum(l3)
			ip = l3
		}
		buf := gopacket.NewSerializeBuffer()
		payload := gopacket.Payload(bytes.Repeat([]byte{'x'}, 300))
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, payload); err != nil {
			t.Fatal(err)
		}
		frame := buf.Bytes()
		seg, _, kind := decodeFrame(frame[:min(len(frame), snapLen)], len(frame))
		if kind != 1 {
			t.Fatalf("v6=%v: kind %d", v6, kind)
		}
		if seg.Seq != 0xfffffff0 || seg.Ack != 1000 || seg.Flags != ACK|PSH || seg.PayloadLen != 300 || !seg.MD5 || seg.Src.Port() != 40000 || seg.Window != 512 {
			t.Errorf("v6=%v: %v", v6, seg)
		}
		if len(seg.SACK) != 2 || seg.SACK[0] != [2]uint32{0x1000, 0x2000} || seg.SACK[1] != [2]uint32{0x3000, 0x4000} {
			t.Errorf("v6=%v: SACK %v", v6, seg.SACK)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6}, 60)
	f.Fuzz(func(t *testing.T, frame []byte, wire int) {
		if len(frame) < 14 {
			return
		}
		decodeFrame(frame, wire)
	})
}
