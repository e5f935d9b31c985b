package netns_test

import (
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// sackCheck counts the SACK edges a receiving end saw and reports any outside [isn+1, isn+1+n]:
// the sequence space of the data that end itself sent.
func sackCheck(t *testing.T, who string, segs []netlab.Segment, from, to netlab.Segment, isn uint32, n int64) int {
	t.Helper()
	count, bad := 0, 0
	for _, s := range segs {
		if s.Outgoing || s.Src != from.Src || s.Dst != to.Src || len(s.SACK) == 0 {
			continue
		}
		for _, b := range s.SACK {
			count++
			if !within(b[0], isn, 1, n+1) || !within(b[1], isn, 1, n+1) || b[1]-b[0] > 1<<30 {
				if bad++; bad <= 5 {
					t.Errorf("%s saw SACK block [%d, %d) outside its own sequence space [%d, %d]: %v",
						who, b[0], b[1], isn+1, isn+1+uint32(n), s)
				}
			}
		}
	}
	return count
}

func TestLossAndReorder_SACKEdgesStayInEachSidesSpace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{Router: true}, config{Offload: true, Rules: `
  - name: lossy
    match: {server_ports: [8001]}
    client_isn: fixed 4026531840
    server_isn: fixed 1879048192`})
	e.start()
	im, err := e.lab.Impair(netlab.Impairment{Loss: 0.02, Reorder: 0.03})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	fams(t, func(t *testing.T, v6 bool) {
		cs := e.capture(t)
		srv := e.listen(t, v6, 8001, nil)
		p := e.connect(t, srv, nil)
		const n = 6 << 20
		err := stream(p, streamOpts{C2S: n, S2C: n, Timeout: 30 * time.Second})
		h := cs.handshake(t, p.client)
		// The client receives the server's SACKs about client data: its own space starts at the
		// ISN it chose. The server's view of its own data starts at the ISN it chose.
		cSACK := sackCheck(t, "client", cs.client.Segments(), h.ClientSYNACK, h.ClientSYN, h.ClientSYN.Seq, n)
		sSACK := sackCheck(t, "server", cs.server.Segments(), h.ServerSYN, h.ServerSYNACK, h.ServerSYNACK.Seq, n)
		if cSACK == 0 || sSACK == 0 {
			t.Errorf("SACK blocks seen: by the client %d, by the server %d; the loss should have produced some (impairer %+v)", cSACK, sSACK, im.Stats())
		}
		t.Logf("SACK blocks checked: client %d, server %d; impairer %+v", cSACK, sSACK, im.Stats())
		if err != nil {
			t.Fatalf("transfer with loss and reordering: %v", err)
		}
		cs.verify(t)
	})
	st := im.Stats()
	for d, name := range []string{"toward the server", "toward the client"} {
		if st.Dropped[d] == 0 || st.Reordered[d] == 0 {
			t.Errorf("the impairer dropped %d and reordered %d packets %s; the test proved nothing", st.Dropped[d], st.Reordered[d], name)
		}
	}
}

func TestPathMTU_DiscoveryWorksThroughTheGateway(t *testing.T) {
	t.Parallel()
	const mtu = 1280
	e := newEnv(t, netlab.Options{Router: true, RouterMTU: mtu}, config{Offload: true, Rules: `
  - name: pmtu
    match: {server_ports: [8002]}
    client_isn: fixed 1000
    server_isn: random`})
	e.start()
	fams(t, func(t *testing.T, v6 bool) {
		cs := e.capture(t)
		srv := e.listen(t, v6, 8002, nil)
		p := e.connect(t, srv, nil)
		const n = 4 << 20
		err := stream(p, streamOpts{C2S: n, S2C: 256 << 10, Timeout: 20 * time.Second})
		h := cs.handshake(t, p.client)
		if h.ServerSYNACK.MSS < 1400 {
			t.Fatalf("server advertised MSS %d: the path MTU would never be probed", h.ServerSYNACK.MSS)
		}
		// The router's error quotes the segment as it left the gateway, in the server's view of
		// the client's space; the client must receive it in its own.
		got := 0
		for _, ic := range cs.client.ICMPErrors() {
			if ic.Outgoing || ic.QuotedSrc != p.client || ic.MTU != mtu {
				continue
			}
			got++
			if !within(ic.QuotedSeq, h.ClientSYN.Seq, 1, n+1) {
				t.Errorf("client received an ICMP error quoting seq %d, outside its own space from ISN %d", ic.QuotedSeq, h.ClientSYN.Seq)
			}
		}
		if got == 0 {
			t.Errorf("the client received no ICMP error with MTU %d for %s", mtu, p.client)
		}
		for _, s := range cs.server.Segments() {
			if s.Src == p.client && s.SegmentSize() > mtu-40 {
				t.Fatalf("a segment larger than the path reached the server: %v (gso %d)", s, s.GSOSize)
			}
		}
		if err != nil {
			t.Fatalf("bulk transfer over a %d-byte path: %v", mtu, err)
		}
		cs.verify(t)
	})
	st, _ := e.status(t)
	if st.Counters["icmp_translated"] == 0 {
		t.Errorf("status counts no translated ICMP error: %v", st.Counters)
	}
}
