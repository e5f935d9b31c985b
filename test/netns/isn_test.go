package netns_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// This test runs the plain TUN (offload off); the others run with offload.
func TestClientISN_FixedIsWhatTheServerSees(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: false, Rules: `
  - name: legacy-plc
    match: {server_ports: [502]}
    client_isn: fixed 1000
    server_isn: keep`})
	e.start()
	fams(t, func(t *testing.T, v6 bool) {
		cs := e.capture(t)
		srv := e.listen(t, v6, 502, nil)
		p := e.connect(t, srv, nil)
		h := cs.handshake(t, p.client)
		if h.ServerSYN.Seq != 1000 {
			t.Errorf("server saw the client's ISN as %d, want 1000 (%s)", h.ServerSYN.Seq, h)
		}
		if h.ClientSYNACK.Ack != h.ClientSYN.Seq+1 {
			t.Errorf("client's SYN-ACK acknowledges %d, want its own ISN+1 = %d (%s)", h.ClientSYNACK.Ack, h.ClientSYN.Seq+1, h)
		}
		if h.ServerSYNACK.Ack != 1001 {
			t.Errorf("server acknowledged %d, want 1001 (%s)", h.ServerSYNACK.Ack, h)
		}
		if h.ClientSYNACK.Seq != h.ServerSYNACK.Seq {
			t.Errorf("server_isn keep: client saw the server's ISN as %d, server sent %d", h.ClientSYNACK.Seq, h.ServerSYNACK.Seq)
		}
		if err := stream(p, streamOpts{C2S: 1 << 20, S2C: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		cs.verify(t)
	})
}

func TestServerISN_ModesAreWhatTheClientSees(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: srv-fixed
    match: {server_ports: [6001]}
    client_isn: keep
    server_isn: fixed 3000000000
  - name: srv-random
    match: {server_ports: [6002]}
    client_isn: random
    server_isn: random
  - name: srv-range
    match: {server_ports: [6003]}
    client_isn: fixed 4294967000
    server_isn: range 100000-200000`})
	e.start()
	modes := []struct {
		name  string
		port  uint16
		check func(h handshake) error
	}{
		{"fixed", 6001, func(h handshake) error {
			if h.ClientSYNACK.Seq != 3000000000 {
				return fmt.Errorf("client saw server ISN %d, want 3000000000", h.ClientSYNACK.Seq)
			}
			if h.ServerSYN.Seq != h.ClientSYN.Seq {
				return fmt.Errorf("client_isn keep: server saw %d, client sent %d", h.ServerSYN.Seq, h.ClientSYN.Seq)
			}
			return nil
		}},
		{"random", 6002, func(h handshake) error {
			if h.ClientSYNACK.Seq == h.ServerSYNACK.Seq || h.ServerSYN.Seq == h.ClientSYN.Seq {
				return fmt.Errorf("random ISNs left an ISN unchanged")
			}
			return nil
		}},
		{"range", 6003, func(h handshake) error {
			if s := h.ClientSYNACK.Seq; s < 100000 || s > 200000 {
				return fmt.Errorf("client saw server ISN %d, want within 100000-200000", s)
			}
			if h.ServerSYN.Seq != 4294967000 {
				return fmt.Errorf("server saw client ISN %d, want 4294967000 (wraps during the transfer)", h.ServerSYN.Seq)
			}
			return nil
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fams(t, func(t *testing.T, v6 bool) {
				cs := e.capture(t)
				srv := e.listen(t, v6, m.port, nil)
				p := e.connect(t, srv, nil)
				h := cs.handshake(t, p.client)
				if err := m.check(h); err != nil {
					t.Errorf("%v (%s)", err, h)
				}
				if h.ClientSYNACK.Ack != h.ClientSYN.Seq+1 || h.ServerSYNACK.Ack != h.ServerSYN.Seq+1 {
					t.Errorf("an end saw an ACK outside its own space: %s", h)
				}
				if err := stream(p, streamOpts{C2S: 2 << 20, S2C: 2 << 20}); err != nil {
					t.Fatal(err)
				}
				cs.verify(t)
			})
		})
	}
}

func TestFlowsAndStatus_ShowTheLiveFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: shown
    match: {server_ports: [7001]}
    client_isn: fixed 1000
    server_isn: fixed 5000`})
	e.start()
	cs := e.capture(t)
	srv := e.listen(t, false, 7001, nil)
	p := e.connect(t, srv, nil)
	if err := stream(p, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	h := cs.handshake(t, p.client)

	f, ok := findFlow(e.flows(t), p.client)
	if !ok {
		t.Fatalf("seqshiftd flows does not list %s", p.client)
	}
	if f.Server != p.server || f.Rule != "shown" || f.State != "established" || f.Exempt != "" {
		t.Errorf("flow: %+v", f)
	}
	if want := 1000 - h.ClientSYN.Seq; f.OffsetC2S != want {
		t.Errorf("offset_c2s %d, want 1000 - client ISN = %d", f.OffsetC2S, want)
	}
	if want := 5000 - h.ServerSYNACK.Seq; f.OffsetS2C != want {
		t.Errorf("offset_s2c %d, want 5000 - server ISN = %d", f.OffsetS2C, want)
	}
	if f.PacketsC2S == 0 || f.PacketsS2C == 0 || f.BytesC2S < 64<<10 || f.BytesS2C < 64<<10 {
		t.Errorf("flow counters: %+v", f)
	}
	verifyOffsets(t, cs.verify(t), f)

	st, code := e.status(t)
	if code != 0 || !st.Steering || st.FlowsActive < 1 || st.Generation != 1 || st.LastReloadError != "" {
		t.Errorf("status (exit %d): %+v", code, st)
	}
	if st.Counters["rewritten_packets_c2s"] == 0 || st.Counters["rewritten_packets_s2c"] == 0 {
		t.Errorf("status counters: %v", st.Counters)
	}

	// The human-readable forms show the same.
	out, code := e.cli("flows")
	if code != 0 || !strings.Contains(out, "shown") || !strings.Contains(out, p.client.String()) {
		t.Errorf("seqshiftd flows (exit %d):\n%s", code, out)
	}
	out, code = e.cli("status")
	if code != 0 || !strings.Contains(out, "installed") {
		t.Errorf("seqshiftd status (exit %d):\n%s", code, out)
	}
}
