package netns_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/netlab"
)

// server is a listener in the server namespace whose accepted connections are handed out in order.
type server struct {
	ln    net.Listener
	conns chan net.Conn
	addr  netip.AddrPort
}

// listen opens a listener on the server's address of the family, at port (0: any).
func (e *env) listen(t testing.TB, v6 bool, port uint16, lc *net.ListenConfig) *server {
	t.Helper()
	network, addr := "tcp4", e.lab.ServerAddr4
	if v6 {
		network, addr = "tcp6", e.lab.ServerAddr6
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	ln, err := e.lab.Server.ListenWith(context.Background(), lc, network, netip.AddrPortFrom(addr, port).String())
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &server{ln: ln, conns: make(chan net.Conn, 64), addr: netip.MustParseAddrPort(ln.Addr().String())}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(s.conns)
				return
			}
			select {
			case s.conns <- c:
			default:
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range s.conns {
			c.Close()
		}
	})
	return s
}

// pair is one connection through the gateway: the client's end and the server's end.
type pair struct {
	c, s           net.Conn
	client, server netip.AddrPort // as the client sees them (no NAT: the server sees the same)
}

func (p *pair) Close() {
	p.c.Close()
	p.s.Close()
}

// connect opens a connection from the client to srv (d nil: a plain dialer).
func (e *env) connect(t testing.TB, srv *server, d *net.Dialer) *pair {
	t.Helper()
	p, err := e.tryConnect(t, srv, d, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) tryConnect(t testing.TB, srv *server, d *net.Dialer, timeout time.Duration) (*pair, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if d == nil {
		d = &net.Dialer{}
	}
	network := "tcp4"
	if srv.addr.Addr().Is6() {
		network = "tcp6"
	}
	c, err := e.lab.Client.DialWith(ctx, d, network, srv.addr.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", srv.addr, err)
	}
	select {
	case s := <-srv.conns:
		p := &pair{c: c, s: s, client: netip.MustParseAddrPort(c.LocalAddr().String()), server: srv.addr}
		t.Cleanup(p.Close)
		return p, nil
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("server did not accept the connection from %s", c.LocalAddr())
	}
}

// streamOpts shape a transfer over a pair.
type streamOpts struct {
	C2S, S2C int64         // bytes each way
	Rate     float64       // bytes per second per direction; 0: as fast as possible
	Timeout  time.Duration // whole transfer; 0: 30s
}

// stream sends pseudo-random bytes both ways at once and checks by SHA-256 that each receiver
// got exactly what its peer sent. It half-closes nothing: the pair stays usable.
func stream(p *pair, o streamOpts) error {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	deadline := time.Now().Add(o.Timeout)
	p.c.SetDeadline(deadline)
	p.s.SetDeadline(deadline)
	defer p.c.SetDeadline(time.Time{})
	defer p.s.SetDeadline(time.Time{})
	seed := rand.Uint64()
	type res struct {
		sum [32]byte
		n   int64
		err error
	}
	run := func(f func() res) chan res {
		ch := make(chan res, 1)
		go func() { ch <- f() }()
		return ch
	}
	send := func(c net.Conn, n int64, seed uint64) res {
		h := sha256.New()
		src := io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n)
		var sent int64
		buf := make([]byte, 64<<10)
		start := time.Now()
		for sent < n {
			k, _ := io.ReadFull(src, buf[:min(int64(len(buf)), n-sent)])
			h.Write(buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				return res{n: sent, err: fmt.Errorf("write after %d bytes: %w", sent, err)}
			}
			sent += int64(k)
			if o.Rate > 0 {
				if ahead := time.Duration(float64(sent)/o.Rate*float64(time.Second)) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
		return res{sum: [32]byte(h.Sum(nil)), n: sent}
	}
	recv := func(c net.Conn, n int64) res {
		h := sha256.New()
		got, err := io.CopyN(h, c, n)
		if err != nil {
			err = fmt.Errorf("read after %d of %d bytes: %w", got, n, err)
		}
		return res{sum: [32]byte(h.Sum(nil)), n: got, err: err}
	}
	cs := run(func() res { return send(p.c, o.C2S, seed) })
	sr := run(func() res { return recv(p.s, o.C2S) })
	ss := run(func() res { return send(p.s, o.S2C, seed+1) })
	cr := run(func() res { return recv(p.c, o.S2C) })
	a, b, c, d := <-cs, <-sr, <-ss, <-cr
	var errs []error
	for _, r := range []struct {
		what string
		r    res
	}{{"client send", a}, {"server receive", b}, {"server send", c}, {"client receive", d}} {
		if r.r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.what, r.r.err))
		}
	}
	if len(errs) == 0 {
		if a.sum != b.sum {
			errs = append(errs, fmt.Errorf("client→server: SHA-256 differs (%d bytes sent, %d received)", a.n, b.n))
		}
		if c.sum != d.sum {
			errs = append(errs, fmt.Errorf("server→client: SHA-256 differs (%d bytes sent, %d received)", c.n, d.n))
		}
	}
	return errors.Join(errs...)
}

// startStream runs stream in the background.
func startStream(p *pair, o streamOpts) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- stream(p, o) }()
	return ch
}

func seedBytes(s uint64) (b [32]byte) {
	for i := range 4 {
		for j := range 8 {
			b[i*8+j] = byte(s >> (8 * j))
		}
		s = s*6364136223846793005 + 1442695040888963407
	}
	return b
}

// captures are the two ends' views of the wire.
type captures struct {
	client, server *netlab.Capture
}

// capture starts captures on the client's and the server's link.
func (e *env) capture(t testing.TB) *captures {
	t.Helper()
	cc, err := e.lab.Client.Capture(e.lab.ClientIface)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	sc, err := e.lab.Server.Capture(e.lab.ServerIface)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return &captures{client: cc, server: sc}
}

// handshake is a connection's opening as each end saw it on its own link.
type handshake struct {
	ClientSYN    netlab.Segment // as the client sent it
	ServerSYN    netlab.Segment // as the server received it
	ServerSYNACK netlab.Segment // as the server sent it
	ClientSYNACK netlab.Segment // as the client received it
}

func (h handshake) String() string {
	return fmt.Sprintf("client sent SYN seq %d; server saw SYN seq %d; server sent SYN-ACK seq %d ack %d; client saw SYN-ACK seq %d ack %d",
		h.ClientSYN.Seq, h.ServerSYN.Seq, h.ServerSYNACK.Seq, h.ServerSYNACK.Ack, h.ClientSYNACK.Seq, h.ClientSYNACK.Ack)
}

// handshake finds the connection from client in both captures (waiting up to 5s).
func (cs *captures) handshake(t testing.TB, client netip.AddrPort) handshake {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	syn := func(out bool) func(netlab.Segment) bool {
		return func(s netlab.Segment) bool {
			return s.Src == client && s.Flags&(netlab.SYN|netlab.ACK) == netlab.SYN && s.Outgoing == out
		}
	}
	synack := func(out bool) func(netlab.Segment) bool {
		return func(s netlab.Segment) bool {
			return s.Dst == client && s.Has(netlab.SYN|netlab.ACK) && s.Outgoing == out
		}
	}
	var h handshake
	var err error
	if h.ClientSYN, err = cs.client.Wait(ctx, syn(true)); err != nil {
		t.Fatalf("client's SYN from %s: %v", client, err)
	}
	if h.ServerSYN, err = cs.server.Wait(ctx, syn(false)); err != nil {
		t.Fatalf("server never saw the SYN from %s: %v", client, err)
	}
	if h.ServerSYNACK, err = cs.server.Wait(ctx, synack(true)); err != nil {
		t.Fatalf("server's SYN-ACK to %s: %v", client, err)
	}
	if h.ClientSYNACK, err = cs.client.Wait(ctx, synack(false)); err != nil {
		t.Fatalf("client never saw the SYN-ACK to %s: %v", client, err)
	}
	return h
}

// within reports whether seq lies in [base+lo, base+hi] modulo 2^32.
func within(seq, base uint32, lo, hi int64) bool {
	d := int64(seq - base)
	return d >= lo && d <= hi
}

// serverAddr is the server's address of a family.
func (e *env) serverAddr(v6 bool) netip.Addr {
	if v6 {
		return e.lab.ServerAddr6
	}
	return e.lab.ServerAddr4
}

// findFlow returns the flow of client in fl.
func findFlow(fl []flowInfo, client netip.AddrPort) (flowInfo, bool) {
	for _, f := range fl {
		if f.Client == client {
			return f, true
		}
	}
	return flowInfo{}, false
}

// fams runs f as a subtest for IPv4 and IPv6.
func fams(t *testing.T, f func(t *testing.T, v6 bool)) {
	for _, v6 := range []bool{false, true} {
		name := "IPv4"
		if v6 {
			name = "IPv6"
		}
		t.Run(name, func(t *testing.T) { f(t, v6) })
	}
}

// flowInfo is one line of `seqshiftd flows --json`.
type flowInfo = control.FlowInfo
