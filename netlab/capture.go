package netlab

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/tun"
)

// Segment is one TCP segment as a capture saw it on the wire. Sequence numbers are raw, as sent.
type Segment struct {
	Time       time.Time
	Outgoing   bool // sent by the namespace the capture runs in (else received)
	Src, Dst   netip.AddrPort
	Seq, Ack   uint32
	Flags      uint8
	Window     uint16
	PayloadLen int
	// GSOSize is the segment size of a GSO/GRO super-packet (several segments in one, as the
	// stack hands them around before segmentation), 0 for a plain segment.
	GSOSize int
	MSS     uint16      // 0 unless the segment carries the option
	SACK    [][2]uint32 // SACK (and D-SACK) blocks, [left, right) edges as sent
	MD5     bool        // option 19, TCP-MD5 signature (RFC 2385)
	AO      bool        // option 29, TCP-AO (RFC 5925)
	// TTL is the IPv4 time to live or the IPv6 hop limit the segment carried on this wire:
	// how many routers forwarded it is what tests compare.
	TTL uint8
}

// TCP flags.
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
)

// SegmentSize is the largest payload of the wire segments the packet stands for.
func (s Segment) SegmentSize() int {
	if s.GSOSize > 0 && s.GSOSize < s.PayloadLen {
		return s.GSOSize
	}
	return s.PayloadLen
}

// Has reports whether every flag of f is set.
func (s Segment) Has(f uint8) bool { return s.Flags&f == f }

// String renders the segment like tcpdump does, for test failures.
func (s Segment) String() string {
	fl := ""
	for i, c := range "FSRPA" {
		if s.Flags&(1<<i) != 0 {
			fl += string(c)
		}
	}
	str := fmt.Sprintf("%s > %s [%s] seq %d ack %d win %d len %d", s.Src, s.Dst, fl, s.Seq, s.Ack, s.Window, s.PayloadLen)
	if len(s.SACK) > 0 {
		str += fmt.Sprintf(" sack %v", s.SACK)
	}
	if s.MD5 {
		str += " md5"
	}
	return str
}

// ICMPError is an ICMP or ICMPv6 error that quotes a TCP segment.
type ICMPError struct {
	Time       time.Time
	Outgoing   bool
	Src, Dst   netip.Addr
	Type, Code uint8
	MTU        uint32 // next-hop MTU of a fragmentation-needed / packet-too-big
	// The quoted segment's addresses and sequence number (as it travelled, toward Src).
	QuotedSrc, QuotedDst netip.AddrPort
	QuotedSeq            uint32
}

// Capture records the TCP segments and TCP-quoting ICMP errors crossing one interface.
type Capture struct {
	fd     int
	iface  string
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	segs   []Segment
	icmps  []ICMPError
	frames []rawFrame    // what was recorded, as captured, for WritePcap
	notify chan struct{} // closed and replaced whenever something is recorded
	err    error
	once   sync.Once
}

// vnetHdrLen is the size of struct virtio_net_hdr, which PACKET_VNET_HDR puts before each
// packet: the same header the TUN device carries, so its length is tun's.
const vnetHdrLen = tun.HeaderLen

// snapLen bounds what is copied per packet: headers with options and an ICMP quote, no payload.
const snapLen = 256

// captureFilter is a classic BPF program that accepts IPv4/IPv6 TCP, ICMP and ICMPv6 (no IPv6
// extension headers: the lab never sends any) and truncates them to snapLen.
var captureFilter = []unix.SockFilter{
	/* 0 */ {Code: 0x28, K: 12}, // ldh [12]: ethertype
	/* 1 */ {Code: 0x15, Jt: 0, Jf: 3, K: 0x0800}, // IPv4? else 5
	/* 2 */ {Code: 0x30, K: 23}, // ldb [23]: IPv4 protocol
	/* 3 */ {Code: 0x15, Jt: 5, Jf: 0, K: 6}, // TCP: accept
	/* 4 */ {Code: 0x15, Jt: 4, Jf: 5, K: 1}, // ICMP: accept, else reject
	/* 5 */ {Code: 0x15, Jt: 0, Jf: 4, K: 0x86dd}, // IPv6? else reject
	/* 6 */ {Code: 0x30, K: 20}, // ldb [20]: IPv6 next header
	/* 7 */ {Code: 0x15, Jt: 1, Jf: 0, K: 6}, // TCP: accept
	/* 8 */ {Code: 0x15, Jt: 0, Jf: 1, K: 58}, // ICMPv6: accept, else reject
	/* 9 */ {Code: 0x06, K: snapLen}, // accept, truncated
	/* 10 */ {Code: 0x06, K: 0}, // reject
}

// Capture starts capturing TCP segments on iface, an interface of n. It has started when it
// returns; Close stops it.
func (n *NS) Capture(iface string) (*Capture, error) {
	c := &Capture{fd: -1, iface: iface, stop: make(chan struct{}), done: make(chan struct{}), notify: make(chan struct{})}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		// Protocol 0: nothing is queued until bind, which happens after the filter is attached,
		// so no unfiltered packet can slip in first.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		c.fd = fd
		prog := unix.SockFprog{Len: uint16(len(captureFilter)), Filter: &captureFilter[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("attach filter: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<20)
		}
		// The virtio-net header in front of each packet tells a GSO super-packet's segment size.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind to %s: %w", iface, err)
		}
		return nil
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("capture on %s/%s: %w", n.Name, iface, err)
	}
	go c.loop()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, vnetHdrLen+snapLen)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		now := time.Now()
		out := false
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			out = ll.Pkttype == unix.PACKET_OUTGOING
		}
		if n < vnetHdrLen {
			continue
		}
		gso := 0
		if buf[1] != 0 { // gso_type != VIRTIO_NET_HDR_GSO_NONE
			gso = int(binary.NativeEndian.Uint16(buf[4:6]))
		}
		wire := n - vnetHdrLen // the captured length (the filter truncates); IP lengths say the rest
		n = min(n, len(buf))
		c.record(buf[vnetHdrLen:n], wire, gso, now, out)
	}
}

func (c *Capture) record(frame []byte, wire, gso int, now time.Time, out bool) {
	if len(frame) < 14 {
		return
	}
	seg, icmp, kind := decodeFrame(frame, wire)
	if kind == 0 {
		return
	}
	c.mu.Lock()
	c.frames = append(c.frames, rawFrame{t: now, data: bytes.Clone(frame), wire: wire})
	switch kind {
	case 1:
		seg.Time, seg.Outgoing, seg.GSOSize = now, out, gso
		c.segs = append(c.segs, seg)
	case 2:
		icmp.Time, icmp.Outgoing = now, out
		c.icmps = append(c.icmps, icmp)
	}
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

// Segments returns a copy of the TCP segments seen so far, in arrival order.
func (c *Capture) Segments() []Segment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Segment(nil), c.segs...)
}

// ICMPErrors returns a copy of the TCP-quoting ICMP errors seen so far.
func (c *Capture) ICMPErrors() []ICMPError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ICMPError(nil), c.icmps...)
}

// Wait returns the first segment seen (so far or later) for which match is true, or ctx's error.
func (c *Capture) Wait(ctx context.Context, match func(Segment) bool) (Segment, error) {
	next := 0
	for {
		c.mu.Lock()
		segs, ch := c.segs[next:], c.notify
		next = len(c.segs)
		c.mu.Unlock()
		for _, s := range segs {
			if match(s) {
				return s, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Segment{}, fmt.Errorf("capture on %s: %w", c.iface, ctx.Err())
		}
	}
}

// Drops returns how many packets the kernel dropped because the capture's buffer was full
// (since the last call). Only valid before Close.
func (c *Capture) Drops() (uint32, error) {
	var st unix.TpacketStats
	l := uint32(unsafe.Sizeof(st))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(c.fd), unix.SOL_PACKET, unix.PACKET_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return st.Drops, nil
}

// Close stops the capture; what was seen stays readable. Safe to call twice.
func (c *Capture) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		<-c.done // the loop notices within one receive timeout
		err = unix.Close(c.fd)
		c.mu.Lock()
		err = errors.Join(c.err, err)
		c.mu.Unlock()
	})
	return err
}

// decodeFrame decodes an Ethernet frame; kind is 1 for a TCP segment, 2 for an ICMP error quoting
// TCP, 0 for anything else. wire is the frame's length on the wire (frame may be truncated).
func decodeFrame(frame []byte, wire int) (seg Segment, icmp ICMPError, kind int) {
	eth := binary.BigEndian.Uint16(frame[12:14])
	pkt := frame[14:]
	wire -= 14
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	var l4Wire int // L4 length as the IP header states it (or as the wire shows when it says 0)
	var ttl uint8
	switch eth {
	case 0x0800:
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			return
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl {
			return
		}
		if off := binary.BigEndian.Uint16(pkt[6:8]) & 0x1fff; off != 0 {
			return // non-first fragment
		}
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if total == 0 { // a GSO super-packet beyond 64 KiB
			total = wire
		}
		proto, ttl = pkt[9], pkt[8]
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		l4, l4Wire = pkt[ihl:], total-ihl
	case 0x86dd:
		if len(pkt) < 40 || pkt[0]>>4 != 6 {
			return
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if plen == 0 {
			plen = wire - 40
		}
		proto, ttl = pkt[6], pkt[7]
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		l4, l4Wire = pkt[40:], plen
	default:
		return
	}
	switch proto {
	case 6:
		var ok bool
		if seg, ok = decodeTCP(l4, l4Wire, src, dst); ok {
			seg.TTL = ttl
			kind = 1
		}
	case 1, 58:
		var ok bool
		if icmp, ok = decodeICMP(l4, proto == 58, src, dst); ok {
			kind = 2
		}
	}
	return
}

func decodeTCP(b []byte, wire int, src, dst netip.Addr) (Segment, bool) {
	if len(b) < 20 {
		return Segment{}, false
	}
	doff := int(b[12]>>4) * 4
	if doff < 20 || len(b) < doff {
		return Segment{}, false
	}
	s := Segment{
		Src:        netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[0:2])),
		Dst:        netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[2:4])),
		Seq:        binary.BigEndian.Uint32(b[4:8]),
		Ack:        binary.BigEndian.Uint32(b[8:12]),
		Flags:      b[13],
		Window:     binary.BigEndian.Uint16(b[14:16]),
		PayloadLen: max(wire-doff, 0),
	}
	opts := b[20:doff]
	for len(opts) > 0 {
		kind := opts[0]
		if kind == 0 {
			break
		}
		if kind == 1 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			break // malformed options: keep what was decoded
		}
		o := opts[:opts[1]]
		switch kind {
		case 2:
			if len(o) == 4 {
				s.MSS = binary.BigEndian.Uint16(o[2:4])
			}
		case 5:
			for blk := o[2:]; len(blk) >= 8; blk = blk[8:] {
				s.SACK = append(s.SACK, [2]uint32{binary.BigEndian.Uint32(blk[0:4]), binary.BigEndian.Uint32(blk[4:8])})
			}
		case 19:
			s.MD5 = true
		case 29:
			s.AO = true
		}
		opts = opts[len(o):]
	}
	return s, true
}

func decodeICMP(b []byte, v6 bool, src, dst netip.Addr) (ICMPError, bool) {
	if len(b) < 8 {
		return ICMPError{}, false
	}
	e := ICMPError{Src: src, Dst: dst, Type: b[0], Code: b[1]}
	if v6 {
		if e.Type >= 128 { // informational, not an error
			return ICMPError{}, false
		}
		if e.Type == 2 {
			e.MTU = binary.BigEndian.Uint32(b[4:8])
		}
	} else {
		switch e.Type {
		case 3, 4, 5, 11, 12:
		default:
			return ICMPError{}, false
		}
		if e.Type == 3 && e.Code == 4 {
			e.MTU = uint32(binary.BigEndian.Uint16(b[6:8]))
		}
	}
	q := b[8:]
	var qsrc, qdst netip.Addr
	var tcp []byte
	if v6 {
		if len(q) < 40 || q[6] != 6 {
			return ICMPError{}, false
		}
		qsrc = netip.AddrFrom16([16]byte(q[8:24]))
		qdst = netip.AddrFrom16([16]byte(q[24:40]))
		tcp = q[40:]
	} else {
		if len(q) < 20 || q[9] != 6 {
			return ICMPError{}, false
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < 20 || len(q) < ihl {
			return ICMPError{}, false
		}
		qsrc = netip.AddrFrom4([4]byte(q[12:16]))
		qdst = netip.AddrFrom4([4]byte(q[16:20]))
		tcp = q[ihl:]
	}
	if len(tcp) < 8 {
		return ICMPError{}, false
	}
	e.QuotedSrc = netip.AddrPortFrom(qsrc, binary.BigEndian.Uint16(tcp[0:2]))
	e.QuotedDst = netip.AddrPortFrom(qdst, binary.BigEndian.Uint16(tcp[2:4]))
	e.QuotedSeq = binary.BigEndian.Uint32(tcp[4:8])
	return e, true
}
