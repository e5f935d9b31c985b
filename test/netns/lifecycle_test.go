package netns_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

func reloadRules(clientISN uint32) string {
	return fmt.Sprintf(`
  - name: reloaded
    match: {server_ports: [9001]}
    client_isn: fixed %d
    server_isn: fixed 5000`, clientISN)
}

func TestReload_SIGHUPMidTransfer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: reloadRules(1000)})
	d := e.start()
	cs := e.capture(t)
	srv := e.listen(t, false, 9001, nil)
	p := e.connect(t, srv, nil)
	h := cs.handshake(t, p.client)
	if h.ServerSYN.Seq != 1000 {
		t.Fatalf("first flow: server saw ISN %d, want 1000", h.ServerSYN.Seq)
	}
	before, ok := findFlow(e.flows(t), p.client)
	if !ok {
		t.Fatal("first flow not listed")
	}
	done := startStream(p, streamOpts{C2S: 6 << 20, S2C: 6 << 20, Rate: 3 << 20, Timeout: 30 * time.Second})

	const reloads = 25
	var last uint32
	for i := range reloads {
		last = 2000 + uint32(i)
		e.writeConfig(config{Offload: true, Rules: reloadRules(last)})
		if err := d.signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP %d: %v", i, err)
		}
		time.Sleep(40 * time.Millisecond)
	}
	// Signals of one kind coalesce while one is pending, so 25 SIGHUPs are at least one reload,
	// not necessarily 25. One more, sent once the others are handled, must load the last file.
	time.Sleep(300 * time.Millisecond)
	before2, _ := e.status(t)
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var gen uint64
	if !waitFor(5*time.Second, func() bool { st, _ := e.status(t); gen = st.Generation; return gen > before2.Generation }) {
		st, code := e.status(t)
		t.Fatalf("a SIGHUP did not reload: status exit %d, generation %d, last error %q", code, st.Generation, st.LastReloadError)
	}
	t.Logf("%d SIGHUPs gave %d reloads", reloads+1, gen-1)
	if err := <-done; err != nil {
		t.Fatalf("the flow did not survive %d reloads: %v", reloads, err)
	}
	after, ok := findFlow(e.flows(t), p.client)
	if !ok || after.OffsetC2S != before.OffsetC2S || after.OffsetS2C != before.OffsetS2C || after.Generation != before.Generation {
		t.Errorf("the live flow changed across reloads: before %+v, after %+v", before, after)
	}

	// A new flow follows the new file.
	p2 := e.connect(t, srv, nil)
	if h2 := cs.handshake(t, p2.client); h2.ServerSYN.Seq != last {
		t.Errorf("new flow after reload: server saw ISN %d, want %d", h2.ServerSYN.Seq, last)
	}
	if err := stream(p2, streamOpts{C2S: 256 << 10, S2C: 256 << 10}); err != nil {
		t.Error(err)
	}

	// A broken file: the old policy stays, the error is visible.
	// The rule is broken, not the YAML: the CLI can still find the control socket in it.
	e.writeRaw(e.configText(e.config) + "  - name: broken\n    client_isn: fixed 4294967296\n")
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var st = struct {
		gen uint64
		err string
	}{}
	if !waitFor(5*time.Second, func() bool {
		s, _ := e.status(t)
		st.gen, st.err = s.Generation, s.LastReloadError
		return s.LastReloadError != ""
	}) {
		t.Fatal("status shows no reload error after a broken file")
	}
	if st.gen != gen || !strings.Contains(st.err, "seqshiftd.yaml:") {
		t.Errorf("after the broken file: generation %d (want %d), error %q (want FILE:LINE:COL)", st.gen, gen, st.err)
	}
	if _, code := e.status(t); code != 0 {
		t.Errorf("status exits %d after a failed reload; the daemon still steers", code)
	}
	// What an operator sees who runs status with the broken file itself (the CLI reads the
	// control socket's path from it).
	if out, code := e.cliWith(e.cfg, "status"); code != 0 || !strings.Contains(out, "4294967296") {
		t.Errorf("`seqshiftd status -c BROKEN` exits %d and does not show the reload error:\n%s", code, out)
	}
	p3 := e.connect(t, srv, nil)
	if h3 := cs.handshake(t, p3.client); h3.ServerSYN.Seq != last {
		t.Errorf("new flow after a broken reload: server saw ISN %d, want the old policy's %d", h3.ServerSYN.Seq, last)
	}
	if err := stream(p3, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Error(err)
	}
	if d.done() {
		t.Fatal("seqshiftd exited")
	}
	cs.verify(t)
}

func TestRestart_MidTransferCompletesIntact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, OnStop: "fail-closed", Rules: `
  - name: restarted
    match: {server_ports: [9002]}
    client_isn: fixed 1000
    server_isn: random`})
	d := e.start()
	cs := e.capture(t)
	srv := e.listen(t, false, 9002, nil)
	p := e.connect(t, srv, nil)
	h := cs.handshake(t, p.client)
	done := startStream(p, streamOpts{C2S: 8 << 20, S2C: 8 << 20, Rate: 3 << 20, Timeout: 45 * time.Second})
	time.Sleep(700 * time.Millisecond)
	before, ok := findFlow(e.flows(t), p.client)
	if !ok {
		t.Fatal("flow not listed before the restart")
	}

	if err := d.stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if _, err := os.Stat(e.dir + "/flows.state"); err != nil {
		t.Errorf("no state file after SIGTERM: %v", err)
	}
	// Fail-closed: while no daemon runs, intercepted packets are dropped, not forwarded raw.
	probeStart := time.Now()
	if probe, err := e.tryConnect(t, srv, nil, time.Second); err == nil {
		probe.Close()
		t.Error("a new connection got through while seqshiftd was stopped (on_stop: fail-closed)")
	}
	// The live flow: the TUN datapath drops it too until the daemon is back (TCP retransmits);
	// the kernel datapath's programs and map outlive the daemon, so an established flow goes on
	// being shifted while it restarts (verify below checks every segment's numbers).
	during := 0
	for _, s := range cs.server.Segments() {
		// (A margin for segments that crossed before the stop but that the capture read late.)
		if s.Src == p.client && !s.Outgoing && s.Time.After(probeStart.Add(300*time.Millisecond)) {
			during++
		}
	}
	switch {
	case datapath() == "tun" && during > 0:
		t.Errorf("the server received %d segments of the live flow while seqshiftd was stopped", during)
	case datapath() == "kernel" && during == 0:
		t.Errorf("the live flow stopped while seqshiftd was stopped; the kernel datapath should have carried it on")
	}

	e.start()
	if after, ok := findFlow(e.flows(t), p.client); !ok || after.OffsetC2S != before.OffsetC2S || after.OffsetS2C != before.OffsetS2C {
		t.Errorf("flow not restored with its offsets: before %+v, after %+v (found %v)", before, after, ok)
	}
	if err := <-done; err != nil {
		t.Fatalf("transfer across the restart: %v", err)
	}
	if h.ServerSYN.Seq != 1000 {
		t.Errorf("server saw ISN %d, want 1000", h.ServerSYN.Seq)
	}
	cs.verify(t)
}

// gatewayRouting is the gateway's policy rules, every routing table, v4 and v6, and the tc
// qdiscs and filters of its interfaces (the kernel datapath's objects), sorted.
func gatewayRouting(t *testing.T, gw *netlab.NS) []string {
	t.Helper()
	var lines []string
	for _, args := range [][]string{
		{"-4", "rule", "show"}, {"-6", "rule", "show"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		out, err := gw.Run(context.Background(), "ip", args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			lines = append(lines, strings.Join(args, " ")+": "+strings.TrimSpace(l))
		}
	}
	tc := [][]string{{"qdisc", "show"}}
	for _, dev := range []string{netlab.GatewayClientIface, netlab.GatewayServerIface} {
		tc = append(tc, []string{"filter", "show", "dev", dev, "ingress"}, []string{"filter", "show", "dev", dev, "egress"})
	}
	for _, args := range tc {
		out, err := gw.Run(context.Background(), "tc", args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, "tc "+strings.Join(args, " ")+": "+l)
			}
		}
	}
	slices.Sort(lines)
	return lines
}

func TestTeardown_LeavesTheGatewayAsBefore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, OnStop: "fail-closed", Rules: `
  - name: torn
    match: {server_ports: [9003]}
    client_isn: fixed 1000
    server_isn: keep`})
	pristine := gatewayRouting(t, e.lab.Gateway)
	d := e.start()
	srv := e.listen(t, false, 9003, nil)
	if err := stream(e.connect(t, srv, nil), streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	running := gatewayRouting(t, e.lab.Gateway)
	if slices.Equal(running, pristine) {
		t.Fatal("the daemon runs but the gateway's rules and routes did not change")
	}
	if err := d.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if stopped := gatewayRouting(t, e.lab.Gateway); slices.Equal(stopped, pristine) {
		t.Error("on_stop: fail-closed removed the steering at stop; it should stay until teardown")
	}
	for i := range 2 { // the second run checks it is idempotent
		if out, code := e.cli("teardown"); code != 0 {
			t.Fatalf("teardown #%d: exit %d: %s", i+1, code, out)
		}
	}
	if after := gatewayRouting(t, e.lab.Gateway); !slices.Equal(after, pristine) {
		t.Errorf("after teardown the gateway differs:\n%s", diffLines(pristine, after))
	}
	// And traffic flows again, untouched.
	if err := stream(e.connect(t, srv, nil), streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Errorf("forwarding after teardown: %v", err)
	}
}

func diffLines(want, got []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestKeyed_CrashWithoutStateIsPickedUpMidStream: a keyed rule needs no memory. The daemon is
// killed outright (no final snapshot) and its state file removed, as after a crash on a box
// whose disk was lost, or a standby gateway taking over; the restarted daemon picks the flow up
// from its next segment with the same offsets, and the transfer completes intact.
func TestKeyed_CrashWithoutStateIsPickedUpMidStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: keyed
    match: {server_ports: [9003]}
    client_isn: keyed
    server_isn: keyed`})
	d := e.start()
	srv := e.listen(t, true, 9003, nil)
	p := e.connect(t, srv, nil)
	done := startStream(p, streamOpts{C2S: 6 << 20, S2C: 6 << 20, Rate: 3 << 20, Timeout: 45 * time.Second})
	time.Sleep(500 * time.Millisecond)
	before, ok := findFlow(e.flows(t), p.client)
	if !ok || before.OffsetC2S == 0 || before.OffsetS2C == 0 {
		t.Fatalf("keyed flow before the crash: %+v (found %t)", before, ok)
	}

	if err := d.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	if err := os.Remove(e.dir + "/flows.state"); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if datapath() == "kernel" {
		// The kernel datapath's map outlives the process, and a new daemon would carry the flow
		// over from it (TestKernel_CrashLosesNoConnection). Wipe it too, as on a standby
		// gateway that never saw the flow: block forwarding meanwhile (so nothing leaves raw),
		// remove the programs, and unblock once the new daemon runs.
		e.nft(t, `table inet ssdblock { chain block { type filter hook forward priority -10; policy drop; }; }`)
		if out, code := e.cli("teardown"); code != 0 {
			t.Fatalf("teardown: %s", out)
		}
	}
	e.start()
	if datapath() == "kernel" {
		if out, err := e.lab.Gateway.Run(context.Background(), "nft", "delete", "table", "inet", "ssdblock"); err != nil {
			t.Fatalf("unblock: %v: %s", err, out)
		}
	}

	if err := <-done; err != nil {
		t.Fatalf("transfer across a crash without state: %v", err)
	}
	after, ok := findFlow(e.flows(t), p.client)
	if !ok || after.OffsetC2S != before.OffsetC2S || after.OffsetS2C != before.OffsetS2C {
		t.Errorf("picked-up flow: before %+v, after %+v (found %t)", before, after, ok)
	}
	if datapath() == "kernel" && after.ShiftedIn != "kernel" {
		t.Errorf("the picked-up flow is shifted in %q, want it in the kernel's map", after.ShiftedIn)
	}
	if st, _ := e.status(t); st.Counters["flows_adopted"] < 1 {
		t.Errorf("flows_adopted = %d, want the flow picked up mid-stream", st.Counters["flows_adopted"])
	}
}

// TestTunDeleted_DaemonExitsAndTrafficFailsClosed: someone deletes the TUN under a running
// daemon. It must exit non-zero (so systemd restarts it), intercepted traffic must be dropped
// meanwhile rather than forwarded raw, and a restart must bring service back.
func TestTunDeleted_DaemonExitsAndTrafficFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: gone
    match: {server_ports: [9004]}
    client_isn: fixed 1000
    server_isn: keep`})
	d := e.start()
	srv := e.listen(t, false, 9004, nil)
	p := e.connect(t, srv, nil)
	p.Close()

	if out, err := e.lab.Gateway.Run(context.Background(), "ip", "link", "del", e.tun); err != nil {
		t.Fatalf("ip link del %s: %v: %s", e.tun, err, out)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("seqshiftd still running 10s after its TUN was deleted")
	}
	if d.err == nil {
		t.Error("seqshiftd exited 0 after losing its TUN; systemd's Restart=on-failure would not restart it")
	}
	if probe, err := e.tryConnect(t, srv, nil, time.Second); err == nil {
		probe.Close()
		t.Error("a connection got through with no TUN: not fail-closed")
	}
	e.start()
	p2 := e.connect(t, srv, nil)
	if err := stream(p2, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}
