package netns_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// Issue 11's fault and attacker tests against the real binary: a second instance, a broken file
// before teardown, a reload storm, a FIFO or symlink where the daemon keeps its files, idle
// control connections.

const hardeningRules = `
  - name: hard
    match: {server_ports: [9011]}
    client_isn: fixed 1000
    server_isn: keep`

// runOnce runs `seqshiftd run -c cfg` in the gateway and waits (bounded) for it to exit.
func (e *env) runOnce(t *testing.T, cfg string, timeout time.Duration) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := e.lab.Gateway.Command(ctx, *binPath, "run", "-c", cfg).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("seqshiftd run did not exit within %v; output:\n%s", timeout, out)
	}
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func (e *env) linkExists(name string) bool {
	_, err := e.lab.Gateway.Run(context.Background(), "ip", "link", "show", "dev", name)
	return err == nil
}

// A second instance started by mistake, with another TUN name (the case) or the same
// file, must stop before it touches anything, name the first's PID, exit non-zero, and leave
// the first one steering and shifting.
func TestSecondInstance_LeavesTheFirstIntact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: hardeningRules})
	cs := e.capture(t)
	d := e.start()
	srv := e.listen(t, false, 9011, nil)
	routing := gatewayRouting(t, e.lab.Gateway)
	stateBefore, _ := os.ReadFile(filepath.Join(e.dir, "flows.state"))

	other := filepath.Join(e.dir, "other.yaml")
	otherTun := e.tun + "b"
	writeAtomic(t, other, strings.Replace(e.configText(e.config), "name: "+e.tun, "name: "+otherTun, 1))
	for _, cfg := range []string{other, e.cfg} {
		out, code := e.runOnce(t, cfg, 15*time.Second)
		if code == 0 {
			t.Fatalf("second instance (%s) exited 0:\n%s", filepath.Base(cfg), out)
		}
		if want := "process " + strconv.Itoa(d.cmd.Process.Pid) + " holds"; !strings.Contains(out, want) {
			t.Errorf("second instance (%s) does not say %q:\n%s", filepath.Base(cfg), want, out)
		}
	}
	if e.linkExists(otherTun) {
		t.Error("the second instance created its TUN")
	}
	if after := gatewayRouting(t, e.lab.Gateway); !slices.Equal(after, routing) {
		t.Errorf("the second instance changed the gateway's routing:\n%s", diffLines(routing, after))
	}
	if _, code := e.status(t); code != 0 || d.done() {
		t.Fatalf("the first daemon is not steering any more (status exit %d, exited %t)", code, d.done())
	}
	if stateAfter, _ := os.ReadFile(filepath.Join(e.dir, "flows.state")); len(stateBefore) > 0 && len(stateAfter) == 0 {
		t.Error("the second instance moved the first's state file away")
	}
	p := e.connect(t, srv, nil)
	if h := cs.handshake(t, p.client); h.ServerSYN.Seq != 1000 {
		t.Errorf("after the second instance, the server saw ISN %d, want 1000 (still shifted)", h.ServerSYN.Seq)
	}
	if err := stream(p, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Error(err)
	}
}

// The operator's edit broke the file while the daemon was stopped fail-closed: traffic is
// blackholed, and teardown with that very file must still restore plain forwarding.
func TestTeardown_BrokenFileStillRestoresForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: hardeningRules})
	pristine := gatewayRouting(t, e.lab.Gateway)
	d := e.start()
	srv := e.listen(t, false, 9011, nil)
	if err := d.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if probe, err := e.tryConnect(t, srv, nil, time.Second); err == nil {
		probe.Close()
		t.Fatal("traffic flows after a fail-closed stop: the test cannot show teardown restores it")
	}
	// An invalid intercept entry (the case) and, worse, a file that no longer parses.
	badIntercept := strings.Replace(e.configText(e.config), "intercept:\n", "intercept:\n  - {iface: \"\", to: [198.18.0.1/8]}\n", 1)
	for _, tc := range []struct{ name, text string }{
		{"bad-intercept", badIntercept},
		{"syntax", e.configText(e.config) + "rules: [\n"},
	} {
		path := filepath.Join(e.dir, tc.name+".yaml")
		writeAtomic(t, path, tc.text)
		out, code := e.cliWith(path, "teardown")
		if code != 0 {
			t.Fatalf("teardown -c %s: exit %d:\n%s", tc.name, code, out)
		}
		if tc.name == "syntax" && !strings.Contains(out, "warning") {
			t.Errorf("teardown -c %s does not warn about the file:\n%s", tc.name, out)
		}
	}
	if after := gatewayRouting(t, e.lab.Gateway); !slices.Equal(after, pristine) {
		t.Errorf("after teardown with a broken file the gateway differs:\n%s", diffLines(pristine, after))
	}
	if err := stream(e.connect(t, srv, nil), streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Errorf("forwarding after teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "installed.json")); !os.IsNotExist(err) {
		t.Errorf("install record still there after everything was removed: %v", err)
	}
}

// SIGHUPs more often than snapshot_interval (1s here) used to reset the snapshot timer every
// time, so no snapshot was ever written while they kept coming.
func TestReloadStorm_SnapshotsKeepComing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: hardeningRules})
	d := e.start()
	state := filepath.Join(e.dir, "flows.state")
	mtime := func() time.Time {
		st, err := os.Stat(state)
		if err != nil {
			return time.Time{}
		}
		return st.ModTime()
	}
	seen := map[time.Time]bool{}
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if err := d.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if m := mtime(); m.After(start) {
			seen[m] = true
		}
	}
	if len(seen) < 3 {
		t.Errorf("%d snapshots in 5s of SIGHUPs every 200ms with snapshot_interval 1s, want at least 3", len(seen))
	}
	if st, code := e.status(t); code != 0 || st.Generation < 2 {
		t.Errorf("status exit %d, generation %d: the reloads did not happen", code, st.Generation)
	}
}

// What someone can plant where the daemon keeps its files: a FIFO at state_file must not hang
// the start (it is moved aside), a symlink at state_file is not followed, and a symlink at the
// lock path stops the start before anything is installed.
func TestPlantedFiles_FIFOAndSymlinksAreNotFollowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: hardeningRules})
	state := filepath.Join(e.dir, "flows.state")
	victim := filepath.Join(e.dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := unix.Mkfifo(state, 0o600); err != nil {
		t.Fatal(err)
	}
	d := e.start() // fails the test if it does not get ready within 15s
	if st, err := os.Lstat(state + ".corrupt"); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was not moved aside: %v", err)
	}
	if err := d.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	os.Remove(state)
	if err := os.Symlink(victim, state); err != nil {
		t.Fatal(err)
	}
	d = e.start()
	if err := d.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the symlink's target was changed: %q", b)
	}
	if st, err := os.Lstat(state); err != nil || st.Mode()&os.ModeSymlink != 0 {
		t.Errorf("state_file after a run is %v (%v), want the daemon's own snapshot", st.Mode(), err)
	}
	if out, code := e.cli("teardown"); code != 0 {
		t.Fatalf("teardown: %d %s", code, out)
	}

	pristine := gatewayRouting(t, e.lab.Gateway)
	lock := filepath.Join(e.dir, "seqshiftd.lock")
	os.Remove(lock)
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	out, code := e.runOnce(t, e.cfg, 15*time.Second)
	if code == 0 || !strings.Contains(out, "symbolic link") {
		t.Errorf("start with a symlink at the lock: exit %d, want non-zero naming the link:\n%s", code, out)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the lock's symlink target was written: %q", b)
	}
	if e.linkExists(e.tun) {
		t.Error("the TUN was created before the lock was held")
	}
	if after := gatewayRouting(t, e.lab.Gateway); !slices.Equal(after, pristine) {
		t.Errorf("steering installed before the lock was held:\n%s", diffLines(pristine, after))
	}
}

// Sixteen clients that connect to the control socket and say nothing must not make the health
// check report the daemon down.
func TestStatus_AnswersWhileSixteenIdleClientsHoldTheSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: hardeningRules})
	e.start()
	sock := filepath.Join(e.dir, "control.sock")
	for i := range 16 {
		c, err := net.Dial("unix", sock) // the socket file is reachable from any namespace
		if err != nil {
			t.Fatalf("idle client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	time.Sleep(100 * time.Millisecond) // let the daemon accept them
	for i := range 5 {
		start := time.Now()
		out, code := e.cli("status")
		if code != 0 {
			t.Fatalf("status %d with 16 idle clients: exit %d\n%s", i, code, out)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("status %d took %v", i, d)
		}
	}
}

// With `malformed: pass`, a segment carrying a shifted flow's tuple that seqshiftd cannot parse
// must not reach the other end with its raw sequence numbers: it is dropped and counted. The
// same segments on a tuple of no flow still pass (which also shows the capture would see them).
func TestMalformedOfAShiftedFlow_NeverReachesThePeerRaw(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Malformed: "pass", Rules: `
  - name: hidden
    match: {server_ports: [9012]}
    client_isn: random
    server_isn: keep`})
	cs := e.capture(t)
	e.start()
	srv := e.listen(t, false, 9012, nil)
	p := e.connect(t, srv, nil)
	defer p.Close()
	cs.handshake(t, p.client)
	raw := newRawSender(t, e.lab.Client, false)
	stranger := netip.AddrPortFrom(p.server.Addr(), 9013)
	const marker = 0x5eed0000
	for _, b := range malformedTCP(p.client, p.server, marker)[2:5] { // option-level breakage: the tuple is readable
		if err := raw.send(raw.tcp, p.server.Addr(), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range malformedTCP(p.client, stranger, marker)[2:5] {
		if err := raw.send(raw.tcp, stranger.Addr(), b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := cs.server.Wait(ctx, func(s netlab.Segment) bool { return s.Dst == stranger && s.Seq == marker }); err != nil {
		t.Fatalf("the malformed segments to a tuple of no flow never reached the server (%v): the test cannot see what it checks", err)
	}
	for _, s := range cs.server.Segments() {
		if s.Src == p.client && s.Dst == p.server && s.Seq == marker {
			t.Errorf("a malformed segment of the shifted flow reached the server raw: %+v", s)
		}
	}
	if st, _ := e.status(t); st.Counters["dropped_unshiftable"] < 3 {
		t.Errorf("dropped_unshiftable = %d, want 3", st.Counters["dropped_unshiftable"])
	}
}
