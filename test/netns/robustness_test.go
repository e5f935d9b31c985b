package netns_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/internal/inetsum"
	"github.com/seqshiftd/seqshiftd/netlab"
)

// tcpHeader builds a TCP header (flags ACK) with the given data offset word count and options,
// checksummed over what is actually sent.
func tcpHeader(src, dst netip.AddrPort, seq uint32, doff uint8, opts []byte, payload int) []byte {
	b := make([]byte, 20+len(opts)+payload)
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], seq^0x5a5a5a5a)
	b[12] = doff << 4
	b[13] = 0x10
	binary.BigEndian.PutUint16(b[14:], 512)
	copy(b[20:], opts)
	binary.BigEndian.PutUint16(b[16:], ^inetsum.Sum(b, inetsum.Pseudo(src.Addr(), dst.Addr(), 6, len(b))))
	return b
}

// malformedTCP returns TCP segments (without IP header) that seqshiftd must count as malformed.
func malformedTCP(src, dst netip.AddrPort, seq uint32) [][]byte {
	nop := func(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }
	return [][]byte{
		tcpHeader(src, dst, seq, 3, nil, 0),                              // data offset below 5
		tcpHeader(src, dst, seq, 15, nil, 8),                             // data offset past the segment
		tcpHeader(src, dst, seq, 6, nop([]byte{8, 0}), 0),                // option length 0
		tcpHeader(src, dst, seq, 6, nop([]byte{2, 40}), 0),               // option running past the header
		tcpHeader(src, dst, seq, 7, nop([]byte{5, 7, 1, 2, 3, 4, 5}), 0), // SACK length not 2+8n
		tcpHeader(src, dst, seq, 5, nil, 0)[:12],                         // truncated header
	}
}

// malformedICMP returns ICMP(v6) errors (without IP header) quoting a TCP segment of the
// reverse direction badly: truncated inside the quoted IP header, or with too little TCP.
func malformedICMP(src, dst netip.AddrPort, v6 bool) [][]byte {
	// The quoted packet travelled from dst to src.
	var qip []byte
	if v6 {
		qip = make([]byte, 40)
		qip[0] = 0x60
		binary.BigEndian.PutUint16(qip[4:], 1400)
		qip[6], qip[7] = 6, 64
		copy(qip[8:], dst.Addr().AsSlice())
		copy(qip[24:], src.Addr().AsSlice())
	} else {
		qip = make([]byte, 20)
		qip[0] = 0x45
		binary.BigEndian.PutUint16(qip[2:], 1400)
		qip[6] = 0x40
		qip[8], qip[9] = 64, 6
		copy(qip[12:], dst.Addr().AsSlice())
		copy(qip[16:], src.Addr().AsSlice())
	}
	ports := make([]byte, 4)
	binary.BigEndian.PutUint16(ports[0:], dst.Port())
	binary.BigEndian.PutUint16(ports[2:], src.Port())
	quotes := [][]byte{
		append(append([]byte(nil), qip...), ports...), // TCP quote too short for the seq
		qip[:10], // truncated quoted IP header
	}
	if !v6 {
		bad := append([]byte(nil), qip...)
		bad[0] = 0x4f // IHL 60 bytes, only 20 present
		quotes = append(quotes, append(bad, ports...))
	}
	var out [][]byte
	for _, q := range quotes {
		m := make([]byte, 8, 8+len(q))
		if v6 {
			m[0] = 2 // packet too big
			binary.BigEndian.PutUint32(m[4:], 1280)
		} else {
			m[0], m[1] = 3, 4 // fragmentation needed
			binary.BigEndian.PutUint16(m[6:], 1200)
		}
		m = append(m, q...)
		if !v6 { // the kernel checksums ICMPv6 raw sockets itself
			binary.BigEndian.PutUint16(m[2:], ^inetsum.Sum(m, 0))
		}
		out = append(out, m)
	}
	// Shorter than the ICMP header itself (4 bytes: the least an ICMPv6 raw socket accepts).
	if v6 {
		out = append(out, []byte{2, 0, 0, 0})
	} else {
		out = append(out, []byte{3, 4, 0, 0})
	}
	return out
}

// rawSender sends raw TCP and ICMP payloads from the client namespace (the kernel adds the IP
// header, so the packets are routable and only their TCP or ICMP part is broken).
type rawSender struct {
	tcp, icmp int
	v6        bool
}

func newRawSender(t *testing.T, ns *netlab.NS, v6 bool) *rawSender {
	t.Helper()
	r := &rawSender{v6: v6}
	err := ns.Do(func() (err error) {
		fam, icmp := unix.AF_INET, unix.IPPROTO_ICMP
		if v6 {
			fam, icmp = unix.AF_INET6, unix.IPPROTO_ICMPV6
		}
		if r.tcp, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP); err != nil {
			return err
		}
		r.icmp, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, icmp)
		return err
	})
	if err != nil {
		t.Fatalf("raw sockets: %v", err)
	}
	t.Cleanup(func() { unix.Close(r.tcp); unix.Close(r.icmp) })
	return r
}

func (r *rawSender) send(fd int, dst netip.Addr, b []byte) error {
	var sa unix.Sockaddr
	if r.v6 {
		sa = &unix.SockaddrInet6{Addr: dst.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	return unix.Sendto(fd, b, 0, sa)
}

func TestMalformedBurst_DaemonLivesAndTransferIsIntact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Malformed: "pass", Rules: `
  - name: victim
    match: {server_ports: [9101, 9102]}
    client_isn: fixed 1000
    server_isn: fixed 2000000000`})
	d := e.start()
	fams(t, func(t *testing.T, v6 bool) {
		srv := e.listen(t, v6, 9101, nil)
		p := e.connect(t, srv, nil)
		done := startStream(p, streamOpts{C2S: 4 << 20, S2C: 4 << 20, Rate: 4 << 20, Timeout: 30 * time.Second})
		raw := newRawSender(t, e.lab.Client, v6)
		other := netip.AddrPortFrom(p.server.Addr(), 9102)
		sent, failed := 0, 0
		deadline := time.Now().Add(700 * time.Millisecond)
		for i := 0; time.Now().Before(deadline) && i < 400; i++ {
			for _, dst := range []netip.AddrPort{p.server, other} {
				// Random sequence numbers: never inside the live flow's window.
				for _, b := range malformedTCP(p.client, dst, uint32(i)*2654435761) {
					if raw.send(raw.tcp, dst.Addr(), b) != nil {
						failed++
					}
					sent++
				}
				for _, b := range malformedICMP(p.client, dst, v6) {
					if raw.send(raw.icmp, dst.Addr(), b) != nil {
						failed++
					}
					sent++
				}
			}
			time.Sleep(time.Millisecond)
		}
		if failed > sent/2 {
			t.Fatalf("%d of %d raw sends failed", failed, sent)
		}
		if err := <-done; err != nil {
			t.Fatalf("transfer during a burst of %d malformed packets: %v", sent, err)
		}
		t.Logf("sent %d malformed packets (%d send errors)", sent, failed)
	})
	if d.done() {
		t.Fatalf("seqshiftd died: %v", d.err)
	}
	st, code := e.status(t)
	if code != 0 {
		t.Fatalf("status exit %d after the burst", code)
	}
	if st.Counters["malformed"] == 0 {
		t.Errorf("malformed counter is 0 after the burst: %v", st.Counters)
	}
	t.Logf("counters: %v", st.Counters)
}

// md5Control sets a TCP-MD5 key (RFC 2385) for peer on the socket being created.
func md5Control(peer netip.Addr, key string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		sig := unix.TCPMD5Sig{Keylen: uint16(len(key))}
		copy(sig.Key[:], key)
		if peer.Is4() {
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sig.Addr))
			sa.Family, sa.Addr = unix.AF_INET, peer.As4()
		} else {
			sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sig.Addr))
			sa.Family, sa.Addr = unix.AF_INET6, peer.As16()
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("TCP_MD5SIG: %w", serr)
		}
		return nil
	}
}

func TestTCPMD5_FlowIsLeftUntouched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: bgp
    match: {server_ports: [179]}
    client_isn: fixed 1000
    server_isn: fixed 5000`})
	e.start()
	fams(t, func(t *testing.T, v6 bool) {
		const key = "seqshiftd-lab-md5"
		client, server := e.lab.ClientAddr4, e.lab.ServerAddr4
		if v6 {
			client, server = e.lab.ClientAddr6, e.lab.ServerAddr6
		}
		cs := e.capture(t)
		srv := e.listen(t, v6, 179, &net.ListenConfig{Control: md5Control(client, key)})
		p := e.connect(t, srv, &net.Dialer{Control: md5Control(server, key)})
		h := cs.handshake(t, p.client)
		if !h.ClientSYN.MD5 || !h.ServerSYN.MD5 || !h.ClientSYNACK.MD5 {
			t.Fatalf("TCP-MD5 option missing on the wire: %s / %v / %v", h, h.ClientSYN, h.ClientSYNACK)
		}
		if h.ServerSYN.Seq != h.ClientSYN.Seq || h.ClientSYNACK.Seq != h.ServerSYNACK.Seq {
			t.Errorf("a TCP-MD5 flow was rewritten: %s", h)
		}
		// The signatures cover the sequence numbers: data only flows if nothing was shifted.
		if err := stream(p, streamOpts{C2S: 256 << 10, S2C: 256 << 10, Timeout: 20 * time.Second}); err != nil {
			t.Fatal(err)
		}
		f, ok := findFlow(e.flows(t), p.client)
		if !ok || f.Exempt != "tcp_md5" || f.OffsetC2S != 0 || f.OffsetS2C != 0 {
			t.Errorf("flows shows %+v (listed %v), want exempt tcp_md5 with zero offsets", f, ok)
		}
		verifyOffsets(t, cs.verify(t), f)
	})
}
