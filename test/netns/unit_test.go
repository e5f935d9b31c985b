package netns_test

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// unitCapabilities reads AmbientCapabilities from the shipped systemd unit: what the daemon gets.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	f, err := os.Open(filepath.Join(filepath.Dir(here), "..", "..", "deploy", "systemd", "seqshiftd.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "AmbientCapabilities="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		t.Fatal("the unit grants no AmbientCapabilities")
	}
	return caps
}

// TestUnit_CapabilitiesSufficeForEachDatapath runs the daemon as systemd's unit would: another
// user than root, with exactly the unit's capabilities (ambient, inheritable and bounding set),
// no new privileges. A transfer through a shifting rule must work, so that the unit's
// capability list is measured, not guessed; TestUnit_WithoutCAP_BPF shows one is needed.
func TestUnit_CapabilitiesSufficeForEachDatapath(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t, unitCapabilities(t))
	e.start()
	st, _ := e.status(t)
	if st.Datapath != datapath() {
		t.Fatalf("datapath %q, want %q (%s)", st.Datapath, datapath(), st.DatapathDetail)
	}
	srv := e.listen(t, false, 7004, nil)
	cs := e.capture(t)
	p := e.connect(t, srv, nil)
	if err := stream(p, streamOpts{C2S: 1 << 20, S2C: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	h := cs.handshake(t, p.client)
	if h.ServerSYN.Seq != 4242 {
		t.Errorf("server saw ISN %d, want 4242", h.ServerSYN.Seq)
	}
}

// TestUnit_WithoutCAP_BPF: without CAP_BPF the kernel datapath cannot load, and the daemon
// says so (kernel) or runs the TUN datapath and says why (auto).
func TestUnit_WithoutCAP_BPF(t *testing.T) {
	if datapath() != "kernel" {
		t.Skip("only the kernel datapath needs CAP_BPF")
	}
	t.Parallel()
	var caps []string
	for _, c := range unitCapabilities(t) {
		if c != "CAP_BPF" {
			caps = append(caps, c)
		}
	}
	e := newUnitEnv(t, caps)
	e.writeConfig(config{Offload: true, Datapath: "auto", Rules: unitRules})
	shareConfig(t, e)
	e.start()
	st, _ := e.status(t)
	if st.Datapath != "tun" || !strings.Contains(st.DatapathDetail, "kernel datapath") {
		t.Errorf("without CAP_BPF under auto: datapath %q (%s), want tun and why", st.Datapath, st.DatapathDetail)
	}
}

const unitRules = `
  - name: unit
    match: {server_ports: [7004]}
    client_isn: fixed 4242
    server_isn: random`

// newUnitEnv is a lab whose daemon runs as nobody with exactly caps.
func newUnitEnv(t *testing.T, caps []string) *env {
	t.Helper()
	requireTool(t, "setpriv")
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: unitRules})
	if err := os.Chown(e.dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{e.dir, filepath.Dir(e.dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shareConfig(t, e)
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	list := strings.Join(set, ",")
	// Debian's udev makes /dev/net/tun 0666, which the unit's DynamicUser relies on; some hosts
	// (this project's CI VM) have it 0600. The daemon gets a 0666 node of its own in a private
	// mount namespace, so that nothing on the host changes.
	e.wrap = []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o mode=0755 seqshiftd-test /dev/net && mknod -m 0666 /dev/net/tun c 10 200 && exec "$@"`, "sh",
		"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all," + list, "--ambient-caps=-all," + list, "--bounding-set=-all," + list, "--no-new-privs"}
	return e
}

// shareConfig lets the unprivileged daemon read the config files (the unit's are 0644 root).
func shareConfig(t *testing.T, e *env) {
	t.Helper()
	for _, f := range []string{e.cfg, e.ctl} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
