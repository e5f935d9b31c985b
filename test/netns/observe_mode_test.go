package netns_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// observeRules is one rule with random ISNs both ways (so that its would-be offsets are
// non-zero) in observe mode or live.
func observeRules(observe bool) string {
	return fmt.Sprintf(`
  - name: trial
    match: {server_ports: [7201]}
    client_isn: random
    server_isn: random
    observe: %t`, observe)
}

// TestObserve_RuleCarriesATransferUnshiftedThenGoesLiveForNewFlowsOnly: a rule in observe mode
// carries a transfer and both wires are identical (the ISNs each end sees are the other's, and
// verify measures offset 0 both ways), while `flows` shows the offsets the rule would have
// given and metrics count the connection and its bytes as observed. A reload makes the rule
// live: the observed connection keeps flowing unshifted, and a new one is shifted by exactly
// the offsets `flows` shows for it.
func TestObserve_RuleCarriesATransferUnshiftedThenGoesLiveForNewFlowsOnly(t *testing.T) {
	t.Parallel()
	const addr = "127.0.0.1:9617"
	e := newEnv(t, netlab.Options{}, config{Offload: true, Metrics: addr, Rules: observeRules(true)})
	d := e.start()
	cs := e.capture(t)
	srv := e.listen(t, false, 7201, nil)

	p := e.connect(t, srv, nil)
	h := cs.handshake(t, p.client)
	if h.ServerSYN.Seq != h.ClientSYN.Seq || h.ClientSYNACK.Seq != h.ServerSYNACK.Seq || h.ClientSYNACK.Ack != h.ServerSYNACK.Ack {
		t.Fatalf("observed handshake was rewritten: %s", h)
	}
	const n = 1 << 20
	if err := stream(p, streamOpts{C2S: n, S2C: n}); err != nil {
		t.Fatal(err)
	}
	obs, ok := findFlow(e.flows(t), p.client)
	if !ok {
		t.Fatal("the observed connection is not listed by flows")
	}
	if obs.Exempt != "observe" || obs.Rule != "trial" || obs.Generation != 1 {
		t.Errorf("observed flow listed as rule %q exempt %q generation %d; want trial, observe, 1", obs.Rule, obs.Exempt, obs.Generation)
	}
	if obs.OffsetC2S == 0 || obs.OffsetS2C == 0 {
		t.Errorf("flows shows would-be offsets %d/%d; random both ways should give non-zero ones", obs.OffsetC2S, obs.OffsetS2C)
	}
	if out, code := e.cli("flows"); code != 0 || !containsAll(out, "exempt=observe", "rule=trial") {
		t.Errorf("`seqshiftd flows` (exit %d) does not show the observed flow:\n%s", code, out)
	}

	m := scrape(t, e, addr)
	for series, want := range map[string]float64{
		`seqshiftd_rule_connections_total{mode="observe",outcome="admitted",rule="trial"}`: 1,
		`seqshiftd_flows_exempt_total{reason="observe"}`:                                   1,
	} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}
	for _, dir := range []string{"c2s", "s2c"} {
		if got := m[fmt.Sprintf(`seqshiftd_observed_bytes_total{direction="%s",rule="trial"}`, dir)]; got < n {
			t.Errorf("observed bytes %s = %v, want at least the %d sent", dir, got, n)
		}
		if got := m[fmt.Sprintf(`seqshiftd_rewritten_bytes_total{direction="%s",rule="trial"}`, dir)]; got != 0 {
			t.Errorf("rewritten bytes %s = %v under observe, want 0", dir, got)
		}
	}
	if got := m[`seqshiftd_datapath_rewritten_packets_total{direction="c2s"}`] + m[`seqshiftd_datapath_rewritten_packets_total{direction="s2c"}`]; got != 0 {
		t.Errorf("the datapath rewrote %v packets of an observed connection", got)
	}
	if st, _ := e.status(t); st.Counters["rule.trial.observe.admitted"] != 1 {
		t.Errorf("status: rule.trial.observe.admitted = %d, want 1", st.Counters["rule.trial.observe.admitted"])
	}

	// Live by reload: only connections that start afterwards are shifted.
	e.writeConfig(config{Offload: true, Metrics: addr, Rules: observeRules(false)})
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { st, _ := e.status(t); return st.Generation == 2 }) {
		t.Fatal("reload not applied")
	}
	if err := stream(p, streamOpts{C2S: n, S2C: n}); err != nil {
		t.Fatalf("the observed connection after its rule went live: %v", err)
	}
	p2 := e.connect(t, srv, nil)
	h2 := cs.handshake(t, p2.client)
	if h2.ServerSYN.Seq == h2.ClientSYN.Seq || h2.ClientSYNACK.Seq == h2.ServerSYNACK.Seq {
		t.Errorf("a connection after the reload was not shifted: %s", h2)
	}
	if err := stream(p2, streamOpts{C2S: n, S2C: n}); err != nil {
		t.Fatal(err)
	}
	fl := e.flows(t)
	still, _ := findFlow(fl, p.client)
	if still.Exempt != "observe" || still.OffsetC2S != obs.OffsetC2S || still.OffsetS2C != obs.OffsetS2C || still.Generation != 1 {
		t.Errorf("the observed flow changed across the reload: before %+v, after %+v", obs, still)
	}
	live, ok := findFlow(fl, p2.client)
	if !ok || live.Exempt != "" || live.Rule != "trial" || live.Generation != 2 {
		t.Errorf("the new flow: %+v (listed %t); want rule trial, not exempt, generation 2", live, ok)
	}

	r := cs.verify(t)
	c := connectionOf(t, r, p.client)
	if c.ClientToServer.Offset != 0 || c.ServerToClient.Offset != 0 || !c.ClientToServer.OffsetKnown || !c.ServerToClient.OffsetKnown {
		t.Errorf("verify measured the observed connection shifted by %+d/%+d (known %t/%t), want 0/0",
			c.ClientToServer.Offset, c.ServerToClient.Offset, c.ClientToServer.OffsetKnown, c.ServerToClient.OffsetKnown)
	}
	verifyOffsets(t, r, live)

	time.Sleep(1100 * time.Millisecond) // the endpoint caches a scrape for a second
	m2 := scrape(t, e, addr)
	for series, want := range map[string]float64{
		`seqshiftd_rule_connections_total{mode="observe",outcome="admitted",rule="trial"}`: 1,
		`seqshiftd_rule_connections_total{mode="active",outcome="admitted",rule="trial"}`:  1,
	} {
		if m2[series] != want {
			t.Errorf("after the reload: %s = %v, want %v", series, m2[series], want)
		}
	}
	if got := m2[`seqshiftd_observed_bytes_total{direction="c2s",rule="trial"}`]; got < 2*n {
		t.Errorf("observed bytes c2s after the second transfer = %v, want at least %d", got, 2*n)
	}
	if got := m2[`seqshiftd_rewritten_bytes_total{direction="c2s",rule="trial"}`]; got < n || got >= n+n/2 {
		t.Errorf("rewritten bytes c2s = %v, want the new connection's %d (and not the observed one's)", got, n)
	}
	if d.done() {
		t.Fatal("seqshiftd exited")
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestObserve_CrashWithoutStateLosesNoObservedConnection: observed connections were never
// shifted, so losing their state cannot break them. After SIGKILL and a lost state file, a
// keyed (stateless) observed connection is taken up again as observed (TUN: picked up with its
// would-be offsets; kernel: carried over from the programs' map, which holds no offsets) and a
// random (stateful) one is passed, not dropped as no_state; both transfers complete and both
// wires stay identical.
func TestObserve_CrashWithoutStateLosesNoObservedConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: keyed-trial
    match: {server_ports: [7202]}
    client_isn: keyed
    server_isn: keyed
    observe: true
  - name: random-trial
    match: {server_ports: [7203]}
    client_isn: random
    server_isn: random
    observe: true`})
	d := e.start()
	cs := e.capture(t)
	keyedSrv, randomSrv := e.listen(t, false, 7202, nil), e.listen(t, false, 7203, nil)
	pk, pr := e.connect(t, keyedSrv, nil), e.connect(t, randomSrv, nil)
	opts := streamOpts{C2S: 4 << 20, S2C: 4 << 20, Rate: 2 << 20, Timeout: 45 * time.Second}
	doneK, doneR := startStream(pk, opts), startStream(pr, opts)
	time.Sleep(500 * time.Millisecond)
	before, ok := findFlow(e.flows(t), pk.client)
	if !ok || before.Exempt != "observe" || before.OffsetC2S == 0 || before.OffsetS2C == 0 {
		t.Fatalf("keyed observed flow before the crash: %+v (found %t)", before, ok)
	}

	if err := d.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	if err := os.Remove(e.dir + "/flows.state"); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	e.start()
	for name, done := range map[string]<-chan error{"keyed": doneK, "random": doneR} {
		if err := <-done; err != nil {
			t.Errorf("%s observed transfer across a crash without state: %v", name, err)
		}
	}
	after, ok := findFlow(e.flows(t), pk.client)
	if !ok || after.Exempt != "observe" {
		t.Fatalf("keyed observed flow after the restart: %+v (found %t), want exempt observe", after, ok)
	}
	if datapath() == "tun" && (after.OffsetC2S != before.OffsetC2S || after.OffsetS2C != before.OffsetS2C) {
		t.Errorf("picked up with offsets %d/%d, want the would-be %d/%d", after.OffsetC2S, after.OffsetS2C, before.OffsetC2S, before.OffsetS2C)
	}
	if st, _ := e.status(t); st.Counters["dropped_no_state"] != 0 {
		t.Errorf("dropped_no_state = %d: segments of an observed connection were dropped", st.Counters["dropped_no_state"])
	}
	r := cs.verify(t)
	for _, client := range []netip.AddrPort{pk.client, pr.client} {
		c := connectionOf(t, r, client)
		if c.ClientToServer.Offset != 0 || c.ServerToClient.Offset != 0 {
			t.Errorf("%s: verify measured offsets %+d/%+d, want 0/0", client, c.ClientToServer.Offset, c.ServerToClient.Offset)
		}
	}
}
