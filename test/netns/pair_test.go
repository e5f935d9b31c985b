package netns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// pairDatapaths are the datapaths the pair tests run under, one subtest each. "" leaves the
// `datapath` key out of the config (the daemon's default, the TUN); the kernel datapath adds
// its name here.
var pairDatapaths = []string{""}

// pairMetrics is where each gateway's daemon serves /metrics, inside its own namespace.
const pairMetrics = "127.0.0.1:9617"

// overDatapaths runs f as a subtest per datapath and, inside, per address family, in parallel:
// each has a pair of its own.
func overDatapaths(t *testing.T, f func(t *testing.T, datapath string, v6 bool)) {
	for _, dp := range pairDatapaths {
		name := dp
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			fams(t, func(t *testing.T, v6 bool) {
				t.Parallel()
				f(t, dp, v6)
			})
		})
	}
}

// gatewayPair is a netlab pair with one env (config, key, daemon) per gateway.
type gatewayPair struct {
	p    *netlab.Pair
	a, b *env
}

// newGatewayPair builds the pair and writes both gateways' configs and the key they share, as an
// operator distributes it (same 32 bytes, each gateway its own 0600 file). Nothing runs yet.
func newGatewayPair(t *testing.T, c config) *gatewayPair {
	t.Helper()
	requireSuite(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived is not installed (apt-get install keepalived): skipped")
	}
	p, err := netlab.NewPair(netlab.PairOptions{})
	if err != nil {
		t.Fatalf("netlab.NewPair: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SEQSHIFTD_TEST_LOGS") != "" {
			for _, g := range []*netlab.Gateway{p.A, p.B} {
				var kept []string
				for _, l := range strings.Split(g.KeepalivedLog(), "\n") {
					// The per-packet ARP/NA lines would push the state changes out of the tail.
					if !strings.Contains(l, "Sending gratuitous ARP") && !strings.Contains(l, "Sending unsolicited Neighbour Advert") {
						kept = append(kept, l)
					}
				}
				t.Logf("keepalived %s (tail, without its per-packet ARP/NA lines):\n%s", g.Name, lastLines(strings.Join(kept, "\n"), 40))
			}
		}
		if err := p.Close(); err != nil {
			t.Errorf("pair.Close: %v", err)
		}
	})
	gp := &gatewayPair{p: p, a: envOn(t, p.Lab(p.A), c), b: envOn(t, p.Lab(p.B), c)}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*env{gp.a, gp.b} {
		if err := os.WriteFile(filepath.Join(e.dir, "isn.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return gp
}

// up starts seqshiftd on both gateways, then keepalived (a gateway must not take the VIPs before
// its seqshiftd steers), and waits for A to be master.
func (gp *gatewayPair) up(t *testing.T) {
	t.Helper()
	gp.a.start()
	gp.b.start()
	for _, g := range []*netlab.Gateway{gp.p.A, gp.p.B} {
		if err := g.StartVRRP(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := gp.p.WaitMaster(ctx, gp.p.A); err != nil {
		t.Fatal(err)
	}
}

// failA fails the master as a crash does: links cut, keepalived killed, seqshiftd killed (no
// final snapshot). It returns when that began.
func (gp *gatewayPair) failA(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	if err := gp.p.A.Fail(); err != nil {
		t.Fatal(err)
	}
	if err := gp.a.d.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-gp.a.d.exited
	return at
}

// waitMaster waits (bounded) for g to hold every VIP and returns when it was first seen.
func (gp *gatewayPair) waitMaster(t *testing.T, g *netlab.Gateway) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	at, err := gp.p.WaitMaster(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// counter reads one of `seqshiftd status --json`'s counters on e's gateway.
func counter(t *testing.T, e *env, name string) uint64 {
	t.Helper()
	st, code := e.status(t)
	if code != 0 {
		t.Fatalf("status on %s: exit %d", e.lab.Gateway.Name, code)
	}
	return st.Counters[name]
}

// rewritten returns how many packets e's daemon (this run of it) has rewritten each way: in user
// space, plus, with the kernel datapath, what its programs shifted.
func rewritten(t *testing.T, e *env) [2]uint64 {
	t.Helper()
	st, code := e.status(t)
	if code != 0 {
		t.Fatalf("status on %s: exit %d", e.lab.Gateway.Name, code)
	}
	c := st.Counters
	return [2]uint64{c["rewritten_packets_c2s"] + c["kernel_rewritten_c2s"], c["rewritten_packets_s2c"] + c["kernel_rewritten_s2c"]}
}

// rewroteBoth waits until e's daemon has rewritten at least min packets each way.
func rewroteBoth(t *testing.T, e *env, min uint64, timeout time.Duration) bool {
	t.Helper()
	return waitFor(timeout, func() bool {
		n := rewritten(t, e)
		return n[0] >= min && n[1] >= min
	})
}

// arrivals returns the segments of the connection of client that arrived at the capture's end
// (not those it sent), from the other end.
func arrivals(c *netlab.Capture, client netip.AddrPort) []netlab.Segment {
	var out []netlab.Segment
	for _, s := range c.Segments() {
		if !s.Outgoing && (s.Src == client || s.Dst == client) {
			out = append(out, s)
		}
	}
	return out
}

// longestGap is the longest time without a data-carrying segment among segs within [from, to]
// (the window's edges count as segments), and when it began.
func longestGap(segs []netlab.Segment, from, to time.Time) (gap time.Duration, began time.Time) {
	last := from
	for _, s := range segs {
		if s.PayloadLen == 0 || s.Time.Before(from) {
			continue
		}
		if s.Time.After(to) {
			break
		}
		if d := s.Time.Sub(last); d > gap {
			gap, began = d, last
		}
		last = s.Time
	}
	if d := to.Sub(last); d > gap {
		gap, began = d, last
	}
	return gap, began
}

// spaces are the sequence spaces of one connection as its handshake set them: each end's own
// numbers and the shifted numbers the other end sees.
type spaces struct {
	h        handshake
	c2s, s2c int64 // bytes each way
}

// inClientView reports whether a segment that arrived at the client (from the server) carries
// the numbers the client must see: seq in the server's space as shifted for the client, ack in
// the client's own space.
func (sp spaces) inClientView(s netlab.Segment) bool {
	if !within(s.Seq, sp.h.ClientSYNACK.Seq, 0, sp.s2c+2) {
		return false
	}
	return !s.Has(netlab.ACK) || within(s.Ack, sp.h.ClientSYN.Seq, 0, sp.c2s+2)
}

// inServerView is the same for a segment that arrived at the server, SACK edges included.
func (sp spaces) inServerView(s netlab.Segment) bool {
	if !within(s.Seq, sp.h.ServerSYN.Seq, 0, sp.c2s+2) {
		return false
	}
	if s.Has(netlab.ACK) && !within(s.Ack, sp.h.ServerSYNACK.Seq, 0, sp.s2c+2) {
		return false
	}
	for _, b := range s.SACK {
		if !within(b[0], sp.h.ServerSYNACK.Seq, 0, sp.s2c+2) || !within(b[1], sp.h.ServerSYNACK.Seq, 0, sp.s2c+2) {
			return false
		}
	}
	return true
}

// rawAtServer reports a segment that arrived at the server with the client's own, unshifted
// sequence number: one forwarded by a gateway that did not rewrite it.
func (sp spaces) rawAtServer(s netlab.Segment) bool {
	return s.Src == sp.h.ClientSYN.Src && within(s.Seq, sp.h.ClientSYN.Seq, 1, sp.c2s+2)
}

// sentBy returns the segment of sent that carried seq (the server's own numbers), for showing
// both ends' numbers of one byte.
func sentBy(sent []netlab.Segment, seq uint32) (netlab.Segment, bool) {
	for _, s := range sent {
		if s.Outgoing && s.PayloadLen > 0 && within(seq, s.Seq, 0, int64(s.PayloadLen)-1) {
			return s, true
		}
	}
	return netlab.Segment{}, false
}

// TestPair_KeyedFlowSurvivesFailoverAndPreemption: a bulk transfer both ways under a `keyed`
// rule, through a keepalived pair. The master fails mid-transfer (links cut, keepalived and
// seqshiftd killed); the standby, which never saw the SYN, picks the flow up with the same
// offsets; the master comes back without any state and preempts, picking it up again. Data is
// intact by SHA-256, and every segment either end received, through either gateway, carries the
// numbers of the one sequence space the handshake set up.
func TestPair_KeyedFlowSurvivesFailoverAndPreemption(t *testing.T) {
	overDatapaths(t, func(t *testing.T, datapath string, v6 bool) {
		gp := newGatewayPair(t, config{Offload: true, Datapath: datapath, Rules: `
  - name: keyed
    match: {server_ports: [9100]}
    client_isn: keyed
    server_isn: keyed`})
		gp.up(t)
		a, b, p := gp.a, gp.b, gp.p
		cs := a.capture(t)
		srv := a.listen(t, v6, 9100, nil)
		conn := a.connect(t, srv, nil)
		sp := spaces{h: cs.handshake(t, conn.client), c2s: 30 << 20, s2c: 30 << 20}
		// 1 MiB/s each way for 30 s: long enough to span a failover and a preemption with room
		// to spare; the sender catches up after each stall.
		done := startStream(conn, streamOpts{C2S: sp.c2s, S2C: sp.s2c, Rate: 1 << 20, Timeout: 90 * time.Second})
		offC2S, offS2C := sp.h.ServerSYN.Seq-sp.h.ClientSYN.Seq, sp.h.ClientSYNACK.Seq-sp.h.ServerSYNACK.Seq

		if !rewroteBoth(t, a, 50, 10*time.Second) {
			t.Fatal("A rewrote no data both ways within 10s")
		}
		before, ok := findFlow(a.flows(t), conn.client)
		if !ok || before.OffsetC2S != offC2S || before.OffsetS2C != offS2C {
			t.Fatalf("A's flow %+v (found %t); the handshake shows offsets c2s %d s2c %d", before, ok, offC2S, offS2C)
		}
		if fl := b.flows(t); len(fl) != 0 {
			t.Errorf("the standby tracks %d flows before the failover; it should see no traffic", len(fl))
		}

		failed := gp.failA(t)
		tookOver := gp.waitMaster(t, p.B)
		bBefore := rewritten(t, b)
		if !rewroteBoth(t, b, 50, 30*time.Second) {
			st, _ := b.cli("status")
			fl, _ := b.cli("flows")
			t.Fatalf("B rewrote no data both ways within 30s of the failover\nB's status:\n%s\nB's flows:\n%s", st, fl)
		}
		picked, ok := findFlow(b.flows(t), conn.client)
		if !ok || picked.OffsetC2S != offC2S || picked.OffsetS2C != offS2C {
			t.Fatalf("B picked the flow up as %+v (found %t); A had c2s %d s2c %d", picked, ok, offC2S, offS2C)
		}
		if n := counter(t, b, "flows_adopted"); n < 1 {
			t.Errorf("B flows_adopted = %d, want the flow picked up mid-stream", n)
		}
		time.Sleep(time.Second)

		// A comes back as a rebooted box: seqshiftd first, with no state file, then links and
		// keepalived; it preempts B.
		if err := os.Remove(filepath.Join(a.dir, "flows.state")); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		a.start()
		recovered := time.Now()
		if err := p.A.Recover(); err != nil {
			t.Fatal(err)
		}
		back := gp.waitMaster(t, p.A)
		bAfter := rewritten(t, b)
		if !rewroteBoth(t, a, 50, 30*time.Second) {
			t.Fatal("A rewrote no data both ways within 30s of preempting: did the transfer end before it was back?")
		}
		again, ok := findFlow(a.flows(t), conn.client)
		if !ok || again.OffsetC2S != offC2S || again.OffsetS2C != offS2C {
			t.Errorf("A picked the flow up again as %+v (found %t), want c2s %d s2c %d", again, ok, offC2S, offS2C)
		}
		// The TUN datapath picks the flow up mid-stream; the kernel datapath's programs and map
		// outlived A's daemon, so the new one carries the flow over from the map instead.
		if n, r := counter(t, a, "flows_adopted"), counter(t, a, "flows_recovered"); n+r < 1 {
			t.Errorf("A (restarted without state) flows_adopted = %d, flows_recovered = %d: want the flow picked up or carried over", n, r)
		}
		if err := <-done; err != nil {
			t.Fatalf("transfer across failover and preemption: %v", err)
		}
		end := time.Now()
		for _, e := range []*env{a, b} {
			if n := counter(t, e, "dropped_no_state"); n != 0 {
				t.Errorf("%s dropped %d segments for want of state under a keyed rule", e.lab.Gateway.Name, n)
			}
		}

		// The wire: every segment each end received, whichever gateway forwarded it, is in the
		// one space the handshake set up; each phase carried data both ways.
		atClient, atServer := arrivals(cs.client, conn.client), arrivals(cs.server, conn.client)
		phases := []struct {
			name     string
			from, to time.Time
		}{{"via A", time.Time{}, failed}, {"via B", tookOver, back}, {"via A again", back, end}}
		for _, ph := range phases {
			var dataC, dataS int
			for _, s := range atClient {
				if s.Time.Before(ph.from) || !s.Time.Before(ph.to) {
					continue
				}
				if !sp.inClientView(s) {
					t.Errorf("%s: the client received a segment outside its view of the connection: %v", ph.name, s)
				} else if s.PayloadLen > 0 {
					dataC++
				}
			}
			for _, s := range atServer {
				if s.Time.Before(ph.from) || !s.Time.Before(ph.to) {
					continue
				}
				if !sp.inServerView(s) {
					t.Errorf("%s: the server received a segment outside its view of the connection: %v", ph.name, s)
				} else if s.PayloadLen > 0 {
					dataS++
				}
			}
			if dataC == 0 || dataS == 0 {
				t.Errorf("%s: data segments received by the client %d, by the server %d; want both > 0", ph.name, dataC, dataS)
			}
			t.Logf("%s: %d data segments reached the client, %d the server, all in their own views", ph.name, dataC, dataS)
		}

		// An independent oracle over both wires: verify pairs every segment that crossed either
		// gateway and finds one offset per direction, the one A showed in `flows`.
		r := cs.verify(t)
		verifyOffsets(t, r, before)
		if c := connectionOf(t, r, conn.client); c.ClientToServer.Paired == 0 || c.ServerToClient.Paired == 0 {
			t.Errorf("verify paired %d/%d segments c2s/s2c", c.ClientToServer.Paired, c.ServerToClient.Paired)
		}

		// What the client saw just before the failover and just after, next to what the server
		// sent: the same offset through either gateway.
		show := func(label string, pick func([]netlab.Segment) (netlab.Segment, bool)) {
			r, ok := pick(atClient)
			if !ok {
				t.Errorf("%s: no data segment at the client", label)
				return
			}
			s, ok := sentBy(cs.server.Segments(), r.Seq-offS2C)
			if !ok {
				t.Errorf("%s: the client received seq %d, which no segment the server sent carries (offset %d)", label, r.Seq, offS2C)
				return
			}
			t.Logf("%s: the client received seq %d ack %d len %d; the server had sent those bytes as seq %d (in its segment seq %d len %d, ack %d): offset s2c %d",
				label, r.Seq, r.Ack, r.PayloadLen, r.Seq-offS2C, s.Seq, s.PayloadLen, s.Ack, offS2C)
		}
		show("last before failover (A)", func(segs []netlab.Segment) (netlab.Segment, bool) {
			for i := len(segs) - 1; i >= 0; i-- {
				if segs[i].PayloadLen > 0 && segs[i].Time.Before(failed) {
					return segs[i], true
				}
			}
			return netlab.Segment{}, false
		})
		first := func(after time.Time) func([]netlab.Segment) (netlab.Segment, bool) {
			return func(segs []netlab.Segment) (netlab.Segment, bool) {
				for _, s := range segs {
					if s.PayloadLen > 0 && s.Time.After(after) {
						return s, true
					}
				}
				return netlab.Segment{}, false
			}
		}
		show("first after failover (B)", first(tookOver))
		show("first after preemption (A)", first(back))

		// The stall each receiver saw, and how long VRRP took.
		gapC2S, _ := longestGap(atServer, failed, recovered)
		gapS2C, _ := longestGap(atClient, failed, recovered)
		preC2S, _ := longestGap(atServer, recovered, end)
		preS2C, _ := longestGap(atClient, recovered, end)
		t.Logf("failover: B master %s after A failed; longest silence c2s %s (at the server), s2c %s (at the client); B rewrote %d/%d packets c2s/s2c",
			tookOver.Sub(failed).Round(time.Millisecond), gapC2S.Round(time.Millisecond), gapS2C.Round(time.Millisecond),
			bAfter[0]-bBefore[0], bAfter[1]-bBefore[1])
		t.Logf("preemption: A master %s after it came back; longest silence c2s %s, s2c %s",
			back.Sub(recovered).Round(time.Millisecond), preC2S.Round(time.Millisecond), preS2C.Round(time.Millisecond))
		// VRRP's master-down interval is ~3.6 advertisements (1s here); TCP's backed-off
		// retransmission timer adds up to about as much again (3.2s typical, 6-7s when the
		// takeover just misses a retransmission). The bound catches a flow that only comes back
		// by luck, not a slow machine.
		if gapC2S > 20*time.Second || gapS2C > 20*time.Second {
			t.Errorf("failover stalled the transfer for %s / %s, want under 20s", gapC2S, gapS2C)
		}
		// B forwards until A has the addresses, so preempting costs at most a few lost segments
		// (A resolving its neighbours afresh); measured 0.1-1.2s.
		if preC2S > 4*time.Second || preS2C > 4*time.Second {
			t.Errorf("preemption stalled the transfer for %s / %s, want under 4s", preC2S, preS2C)
			_, began := longestGap(atServer, recovered, end)
			for _, s := range append(cs.client.Segments(), cs.server.Segments()...) {
				if s.Time.After(began.Add(-100*time.Millisecond)) && s.Time.Before(began.Add(preC2S+100*time.Millisecond)) {
					t.Logf("around the stall: %s outgoing %t %v", s.Time.Format("15:04:05.000"), s.Outgoing, s)
				}
			}
		}
	})
}

// TestPair_StatefulFlowIsDroppedAtFailoverNotForwardedRaw: a flow under `random` cannot be
// carried by a gateway that never saw its SYN. After the failover the standby drops its
// segments and counts them (no_state); none reaches the server with the client's raw numbers
// (nor at all), none reaches the client, and the transfer stalls until it times out.
func TestPair_StatefulFlowIsDroppedAtFailoverNotForwardedRaw(t *testing.T) {
	overDatapaths(t, func(t *testing.T, datapath string, v6 bool) {
		gp := newGatewayPair(t, config{Offload: true, Datapath: datapath, Metrics: pairMetrics, Rules: `
  - name: random
    match: {server_ports: [9101]}
    client_isn: random
    server_isn: random`})
		gp.up(t)
		a, b, p := gp.a, gp.b, gp.p
		cs := a.capture(t)
		srv := a.listen(t, v6, 9101, nil)
		conn := a.connect(t, srv, nil)
		sp := spaces{h: cs.handshake(t, conn.client), c2s: 8 << 20, s2c: 8 << 20}
		done := startStream(conn, streamOpts{C2S: sp.c2s, S2C: sp.s2c, Rate: 512 << 10, Timeout: 20 * time.Second})
		if !rewroteBoth(t, a, 50, 10*time.Second) {
			t.Fatal("A rewrote no data both ways within 10s")
		}

		failed := gp.failA(t)
		tookOver := gp.waitMaster(t, p.B)
		// Both ends keep retransmitting until the transfer's deadline; none of it may get through.
		if err := <-done; err == nil {
			t.Error("the random flow's transfer completed across a failover to a gateway without its state")
		} else {
			t.Logf("transfer failed as expected: %v", strings.SplitN(err.Error(), "\n", 2)[0])
		}
		ended := time.Now()

		var raw, through, toClient int
		for _, s := range arrivals(cs.server, conn.client) {
			if s.Time.Before(tookOver) {
				continue
			}
			if sp.rawAtServer(s) {
				raw++
				if raw <= 3 {
					t.Errorf("after the failover the server received the client's raw numbers: %v (client ISN %d)", s, sp.h.ClientSYN.Seq)
				}
			}
			through++
		}
		for _, s := range arrivals(cs.client, conn.client) {
			if !s.Time.Before(tookOver) {
				toClient++
			}
		}
		if through != 0 || toClient != 0 {
			t.Errorf("after the failover %d segments of the flow reached the server (%d with the client's raw numbers), %d the client; want none", through, raw, toClient)
		}
		// verify finds a raw segment as a break of the mapping: what crossed before the failover
		// maps, nothing crossed after it.
		cs.verify(t)
		drops := counter(t, b, "dropped_no_state")
		if drops == 0 {
			t.Error("B counted no dropped_no_state: the flow's retransmissions went somewhere else")
		}
		if fl, ok := findFlow(b.flows(t), conn.client); ok {
			t.Errorf("B tracks the random flow it never saw the SYN of: %+v", fl)
		}
		if n := counter(t, b, "flows_adopted"); n != 0 {
			t.Errorf("B flows_adopted = %d, want 0 under a random rule", n)
		}
		t.Logf("failover: B master %s after A failed; B dropped %d segments (no_state); %d of the flow's reached the server, %d the client in the %s until the transfer gave up",
			tookOver.Sub(failed).Round(time.Millisecond), drops, through, toClient, ended.Sub(tookOver).Round(time.Millisecond))
		const series = `seqshiftd_dropped_packets_total{reason="no_state"}`
		if m := scrape(t, b, pairMetrics); m[series] == 0 {
			t.Errorf("B's /metrics: %s = %v, want the drops (status shows %d)", series, m[series], drops)
		}
	})
}

// deployedKeepalived is deploy/pair/keepalived.conf as gateway g of the lab runs it: the lab's
// interface names, the binary under test and e's config in the track script, and B's priority.
// Everything else, the sync group and the track script included, is the file as shipped.
func deployedKeepalived(t *testing.T, e *env, g *netlab.Gateway) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/pair/keepalived.conf")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, r := range []struct{ old, new string }{
		{"interface eth0", "interface " + e.lab.GatewayClientIface},
		{"interface eth1", "interface " + e.lab.GatewayServerIface},
		{`"/usr/sbin/seqshiftd status -c /etc/seqshiftd/seqshiftd.yaml"`, fmt.Sprintf("%q", *binPath+" status -c "+e.ctl)},
		{"priority 200", fmt.Sprintf("priority %d", g.Priority)},
	} {
		if !strings.Contains(text, r.old) {
			t.Fatalf("deploy/pair/keepalived.conf no longer contains %q", r.old)
		}
		text = strings.ReplaceAll(text, r.old, r.new)
	}
	return text
}

// TestPair_DeployedKeepalivedHandsOverWhenSeqshiftdDies runs deploy/pair/keepalived.conf. Only
// the master's seqshiftd dies (its keepalived and links are fine): fail-closed, the master would
// blackhole the flow, but the track script (`seqshiftd status`) puts its sync group into FAULT,
// B takes the addresses and carries the keyed flow on; once seqshiftd runs again on A (without
// its state), A preempts and picks the flow up. Data intact by SHA-256.
func TestPair_DeployedKeepalivedHandsOverWhenSeqshiftdDies(t *testing.T) {
	overDatapaths(t, func(t *testing.T, datapath string, v6 bool) {
		gp := newGatewayPair(t, config{Offload: true, Datapath: datapath, Rules: `
  - name: keyed
    match: {server_ports: [9102]}
    client_isn: keyed
    server_isn: keyed`})
		a, b, p := gp.a, gp.b, gp.p
		for _, x := range []struct {
			e *env
			g *netlab.Gateway
		}{{a, p.A}, {b, p.B}} {
			if err := x.g.SetKeepalivedConf(deployedKeepalived(t, x.e, x.g)); err != nil {
				t.Fatal(err)
			}
		}
		gp.up(t)
		cs := a.capture(t)
		srv := a.listen(t, v6, 9102, nil)
		conn := a.connect(t, srv, nil)
		sp := spaces{h: cs.handshake(t, conn.client), c2s: 20 << 20, s2c: 20 << 20}
		done := startStream(conn, streamOpts{C2S: sp.c2s, S2C: sp.s2c, Rate: 1 << 20, Timeout: 90 * time.Second})
		if !rewroteBoth(t, a, 50, 10*time.Second) {
			t.Fatal("A rewrote no data both ways within 10s")
		}

		died := time.Now()
		if err := a.d.signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-a.d.exited
		tookOver := gp.waitMaster(t, p.B)
		// With the kernel datapath A's programs outlive its daemon and go on shifting whatever
		// still reaches A (a neighbour cache that has not yet taken keepalived's gratuitous ARP
		// or NA): the same keyed offsets, so nothing breaks, but B need not carry both
		// directions at once. The TUN datapath's A drops everything, so B must.
		carried := rewroteBoth(t, b, 50, 30*time.Second)
		if isKernel := datapath == "kernel" || (datapath == "" && *datapathFlag == "kernel"); !carried && isKernel {
			carried = waitFor(30*time.Second, func() bool { n := rewritten(t, b); return n[0] >= 50 || n[1] >= 50 })
		}
		if !carried {
			t.Fatal("B rewrote no data both ways within 30s of taking over")
		}
		time.Sleep(time.Second)

		if err := os.Remove(filepath.Join(a.dir, "flows.state")); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		a.start()
		restarted := time.Now()
		back := gp.waitMaster(t, p.A)
		if !rewroteBoth(t, a, 50, 30*time.Second) {
			t.Fatal("A rewrote no data both ways within 30s of preempting: did the transfer end before it was back?")
		}
		if err := <-done; err != nil {
			t.Fatalf("transfer across the hand-over and back: %v", err)
		}
		end := time.Now()
		cs.verify(t)
		for _, ph := range []struct {
			name     string
			from, to time.Time
		}{{"via A", time.Time{}, died}, {"via B", tookOver, back}, {"via A again", back, end}} {
			for _, s := range arrivals(cs.client, conn.client) {
				if !s.Time.Before(ph.from) && s.Time.Before(ph.to) && !sp.inClientView(s) {
					t.Errorf("%s: the client received a segment outside its view of the connection: %v", ph.name, s)
				}
			}
			for _, s := range arrivals(cs.server, conn.client) {
				if !s.Time.Before(ph.from) && s.Time.Before(ph.to) && !sp.inServerView(s) {
					t.Errorf("%s: the server received a segment outside its view of the connection: %v", ph.name, s)
				}
			}
		}
		gapC2S, _ := longestGap(arrivals(cs.server, conn.client), died, restarted)
		gapS2C, _ := longestGap(arrivals(cs.client, conn.client), died, restarted)
		t.Logf("seqshiftd killed on the master: B master %s later (track script: 2 failed checks at 1s); longest silence c2s %s, s2c %s; A master again %s after its seqshiftd restarted",
			tookOver.Sub(died).Round(time.Millisecond), gapC2S.Round(time.Millisecond), gapS2C.Round(time.Millisecond),
			back.Sub(restarted).Round(time.Millisecond))
		if gapC2S > 20*time.Second || gapS2C > 20*time.Second {
			t.Errorf("the hand-over stalled the transfer for %s / %s, want under 20s", gapC2S, gapS2C)
		}
	})
}
