package tcshift

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/seqshiftd/seqshiftd/internal/inetsum"
	"github.com/seqshiftd/seqshiftd/internal/nstest"
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"
)

// Test packets are built byte by byte with checksums computed in full, never incrementally;
// what the programs produce is compared with rewrite.Shift's output, byte for byte.

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	server4 = netip.MustParseAddr("198.19.0.2")
	client6 = netip.MustParseAddr("2001:2::2")
	server6 = netip.MustParseAddr("2001:2:0:1::2")
	router4 = netip.MustParseAddr("198.19.255.1")
	router6 = netip.MustParseAddr("2001:2:0:ff::1")
	// outside4/6 are servers no intercept entry covers.
	outside4 = netip.MustParseAddr("198.18.200.9")
	outside6 = netip.MustParseAddr("2001:2:0:2::9")

	serverPrefixes = []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:2:0:1::/64")}
	clientMAC      = net.HardwareAddr{0x02, 0xc1, 0x1e, 0x47, 0x00, 0x01}
)

// tc actions (linux/pkt_cls.h).
const (
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

const testMark = 0x100

// TCP flags.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

// seg describes a TCP segment (or, with proto, another IP packet) to build.
type seg struct {
	v6           bool
	src, dst     netip.Addr // zero: client to server
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	win          uint16
	opts         []byte // raw TCP options, padded with EOL to a multiple of 4
	payload      []byte
	ipOpts       []byte // raw IPv4 options, padded with EOL to a multiple of 4
	destOpts     bool   // IPv6: a destination-options extension header before TCP
	moreFrags    bool   // IPv4: MF set (a first fragment)
	proto        uint8  // zero: TCP
	doff         int    // non-zero: data offset in 4-byte words, whatever the options
}

func pad4(b []byte) []byte {
	out := append([]byte(nil), b...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// reversed returns the segment as the server would send it: addresses and ports swapped.
func (s seg) reversed() seg {
	s.src, s.dst = s.endpoints()
	s.src, s.dst = s.dst, s.src
	s.sport, s.dport = s.ports()
	s.sport, s.dport = s.dport, s.sport
	return s
}

func (s seg) endpoints() (netip.Addr, netip.Addr) {
	if s.src.IsValid() {
		return s.src, s.dst
	}
	if s.v6 {
		return client6, server6
	}
	return client4, server4
}

func (s seg) ports() (uint16, uint16) {
	if s.sport == 0 {
		return 40000, 443
	}
	return s.sport, s.dport
}

// pkt returns the IP packet.
func (s seg) pkt() []byte {
	src, dst := s.endpoints()
	sport, dport := s.ports()
	proto := s.proto
	if proto == 0 {
		proto = 6
	}
	opts := pad4(s.opts)
	l4 := make([]byte, 20+len(opts)+len(s.payload))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], s.seq)
	binary.BigEndian.PutUint32(l4[8:], s.ack)
	doff := (20 + len(opts)) / 4
	if s.doff != 0 {
		doff = s.doff
	}
	l4[12] = byte(doff << 4)
	l4[13] = s.flags
	win := s.win
	if win == 0 {
		win = 64240
	}
	binary.BigEndian.PutUint16(l4[14:], win)
	copy(l4[20:], opts)
	copy(l4[20+len(opts):], s.payload)

	var pkt []byte
	var off int
	if s.v6 {
		nh := proto
		var chain []byte
		if s.destOpts {
			chain = []byte{nh, 0, 1, 4, 0, 0, 0, 0} // PadN
			nh = 60
		}
		pkt = make([]byte, 40+len(chain)+len(l4))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(chain)+len(l4)))
		pkt[6], pkt[7] = nh, 64
		a, b := src.As16(), dst.As16()
		copy(pkt[8:], a[:])
		copy(pkt[24:], b[:])
		copy(pkt[40:], chain)
		off = 40 + len(chain)
	} else {
		ipOpts := pad4(s.ipOpts)
		hl := 20 + len(ipOpts)
		pkt = make([]byte, hl+len(l4))
		pkt[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		if s.moreFrags {
			binary.BigEndian.PutUint16(pkt[6:], 0x2000)
		}
		pkt[8], pkt[9] = 64, proto
		a, b := src.As4(), dst.As4()
		copy(pkt[12:], a[:])
		copy(pkt[16:], b[:])
		copy(pkt[20:], ipOpts)
		binary.BigEndian.PutUint16(pkt[10:], ^inetsum.Sum(pkt[:hl], 0))
		off = hl
	}
	copy(pkt[off:], l4)
	if proto == 6 {
		binary.BigEndian.PutUint16(pkt[off+16:], ^inetsum.Sum(pkt[off:], inetsum.Pseudo(src, dst, 6, len(l4))))
	}
	return pkt
}

// tcpChecksumValid verifies the TCP checksum of an IPv4 packet without options or an IPv6
// packet without extension headers, summing it in full.
func tcpChecksumValid(pkt []byte) bool {
	if pkt[0]>>4 == 4 {
		src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		return inetsum.Sum(pkt[20:], inetsum.Pseudo(src, dst, 6, len(pkt)-20)) == 0xffff
	}
	src, dst := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
	return inetsum.Sum(pkt[40:], inetsum.Pseudo(src, dst, 6, len(pkt)-40)) == 0xffff
}

// icmpErr builds an ICMP or ICMPv6 error from a router to dst quoting quote.
func icmpErr(v6 bool, typ uint8, dst netip.Addr, quote []byte) []byte {
	msg := make([]byte, 8+len(quote))
	msg[0] = typ
	binary.BigEndian.PutUint32(msg[4:], 1280)
	copy(msg[8:], quote)
	if v6 {
		pkt := make([]byte, 40+len(msg))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(msg)))
		pkt[6], pkt[7] = 58, 64
		a, b := router6.As16(), dst.As16()
		copy(pkt[8:], a[:])
		copy(pkt[24:], b[:])
		copy(pkt[40:], msg)
		binary.BigEndian.PutUint16(pkt[42:], ^inetsum.Sum(pkt[40:], inetsum.Pseudo(router6, dst, 58, len(msg))))
		return pkt
	}
	pkt := make([]byte, 20+len(msg))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8], pkt[9] = 64, 1
	a, b := router4.As4(), dst.As4()
	copy(pkt[12:], a[:])
	copy(pkt[16:], b[:])
	binary.BigEndian.PutUint16(pkt[10:], ^inetsum.Sum(pkt[:20], 0))
	copy(pkt[20:], msg)
	binary.BigEndian.PutUint16(pkt[22:], ^inetsum.Sum(pkt[20:], 0))
	return pkt
}

func optTimestamps(val, ecr uint32) []byte {
	b := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], val)
	binary.BigEndian.PutUint32(b[8:], ecr)
	return b
}

func optSACK(edges ...uint32) []byte {
	b := []byte{5, byte(2 + 4*len(edges))}
	for _, e := range edges {
		b = binary.BigEndian.AppendUint32(b, e)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// env is a private network namespace with a client-facing veth x0 (its peer x0p) and a TAP,
// and a Datapath loaded for them (not attached: the tests run the programs directly).
type env struct {
	ns   netns.NsHandle
	dp   *Datapath
	cfg  Config
	x    int // ifindex of x0
	xmac net.HardwareAddr
	tap  int
}

// needRoot skips a test that must load BPF programs and make namespaces.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_BPF, CAP_NET_ADMIN) to load tc programs in a private netns")
	}
}

func newEnv(t testing.TB) *env {
	t.Helper()
	needRoot(t)
	ns := nstest.SetUp(t)
	mkLinks(t, "x0", "tap0")
	cfg := Config{
		Ifaces:   []Iface{{Name: "x0", To: serverPrefixes}},
		TapName:  "tap0",
		Mark:     testMark,
		MaxFlows: 1024,
	}
	dp, err := Load(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	x, err := netlink.LinkByName("x0")
	if err != nil {
		t.Fatal(err)
	}
	tap, err := netlink.LinkByName("tap0")
	if err != nil {
		t.Fatal(err)
	}
	return &env{ns: ns, dp: dp, cfg: cfg, x: x.Attrs().Index, xmac: x.Attrs().HardwareAddr, tap: tap.Attrs().Index}
}

// mkLinks makes, in the current namespace, a veth x (peer x+"p") and a TAP, both up.
func mkLinks(t testing.TB, x, tap string) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: x}, PeerName: x + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", x, err)
	}
	tt := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI}
	if err := netlink.LinkAdd(tt); err != nil {
		t.Fatalf("add tap %s: %v", tap, err)
	}
	for _, f := range tt.Fds {
		f.Close() // persistent: the device stays, and dies with the namespace
	}
	for _, n := range []string{x, x + "p", tap} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
}

// skbContext is the start of struct __sk_buff that BPF_PROG_TEST_RUN lets a test set (mark,
// ifindex) and reports back; the rest must be zero.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex                                           uint32
	_                                                                           [192 - 44]byte
}

// run runs prog on frame as received on (or sent from) ifindex with the given mark, in the
// env's namespace whichever goroutine calls it (fuzz inputs run on goroutines of their own).
func (e *env) run(t testing.TB, prog *ebpf.Program, frame []byte, ifindex int, mark uint32) (ret uint32, out []byte, outMark uint32) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if !orig.Equal(e.ns) {
		if err := netns.Set(e.ns); err != nil {
			t.Fatal(err)
		}
		defer netns.Set(orig)
	}
	var ctxOut skbContext
	opts := ebpf.RunOptions{
		Data:       frame,
		DataOut:    make([]byte, len(frame)+256),
		Context:    skbContext{Mark: mark, Ifindex: uint32(ifindex)},
		ContextOut: &ctxOut,
	}
	ret, err = prog.Run(&opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut, ctxOut.Mark
}

// frame wraps an IP packet in the Ethernet header it has at hook h of X: from the client to X
// at ingress, from X to the client at egress.
func (e *env) frame(h Hook, pkt []byte) []byte {
	f := make([]byte, EthHeaderLen+len(pkt))
	dst, src := e.xmac, clientMAC
	if h == HookEgress {
		dst, src = clientMAC, e.xmac
	}
	copy(f[0:], dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
	}
	copy(f[EthHeaderLen:], pkt)
	return f
}

func (e *env) prog(h Hook) *ebpf.Program {
	if h == HookEgress {
		return e.dp.objs.ClientEgress
	}
	return e.dp.objs.ClientIngress
}

// keyOf returns the flow key of a built segment seen at hook h.
func keyOf(h Hook, s seg) FlowKey {
	src, dst := s.endpoints()
	sport, dport := s.ports()
	if h == HookEgress {
		return KeyOf(netip.AddrPortFrom(dst, dport), netip.AddrPortFrom(src, sport))
	}
	return KeyOf(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport))
}

// goShift is what the daemon's datapath does to pkt: rewrite.Classify, then rewrite.Shift with
// a complete checksum. It returns the rewritten copy and Shift's verdict.
func goShift(pkt []byte, seqD, ackD uint32) ([]byte, rewrite.Reason, rewrite.Kind) {
	out := bytes.Clone(pkt)
	var p rewrite.Packet
	rewrite.Classify(out, &p)
	if p.Kind != rewrite.KindTCP {
		return out, rewrite.ReasonNotRewritable, p.Kind
	}
	return out, rewrite.Shift(out, &p, seqnum.Delta(seqD), seqnum.Delta(ackD), false), p.Kind
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
