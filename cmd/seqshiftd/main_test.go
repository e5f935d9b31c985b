package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheck_AnnotatedExampleIsValid(t *testing.T) {
	// Written for a gateway with eth0 and eth1, not for this machine.
	code, out, errs := runCLI("check", "--portable", "-c", "../../deploy/seqshiftd.yaml")
	if code != 0 {
		t.Fatalf("check exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if !regexp.MustCompile(`seqshiftd\.yaml: ok \(\d+ rules\)`).MatchString(out) {
		t.Errorf("no summary line:\n%s", out)
	}
}

func TestCheck_BrokenFileExitsOneWithPosition(t *testing.T) {
	for name, body := range map[string]string{
		"unknown key":    "tun: {mut: 1500}\n",
		"bad number":     "rules:\n  - name: a\n    client_isn: fixed 4294967296\n",
		"inverted range": "rules:\n  - name: a\n    client_isn: range 900-100\n",
		"bad port":       "rules:\n  - name: a\n    match: {server_ports: [70000]}\n",
		"duplicate rule": "rules:\n  - name: a\n  - name: a\n",
		"bad prefix":     "intercept:\n  - iface: eth0\n    to: [198.18.300.0/24]\n",
		"syntax":         "rules: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errs := runCLI("check", "-c", path)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			if !regexp.MustCompile(regexp.QuoteMeta(path) + `:\d+:\d+: `).MatchString(errs) {
				t.Errorf("error lacks FILE:LINE:COL:\n%s", errs)
			}
		})
	}
}

// TestCheck_RefusesWhatRunWouldRefuse: run cannot start without its intercept interfaces,
// so check (the unit's ExecStartPre) refuses too, at the entry; --portable checks a file meant
// for another machine without asking this host.
func TestCheck_RefusesWhatRunWouldRefuse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.yaml")
	body := "intercept:\n  - iface: nosuchif0\n    to: [198.18.2.0/24]\n  - iface: lo\n    to: [198.18.1.0/24]\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("check", "-c", path)
	if code != 1 || !strings.Contains(errs, path+`:2:5: intercept interface "nosuchif0" does not exist`) || strings.Contains(out, "ok") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	code, out, errs = runCLI("check", "--portable", "-c", path)
	if code != 0 || strings.Contains(errs, "nosuchif0") || !strings.Contains(out, "ok (0 rules)") {
		t.Errorf("--portable: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}

func TestCheck_WarningsArePositioned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.yaml")
	body := "intercept:\n  - iface: lo\n    to: [198.18.2.0/24]\nmetrics_listen: \":9617\"\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI("check", "-c", path)
	for _, want := range []string{
		path + ":2:3: warning: only one intercept direction",
		path + `:4:17: warning: metrics_listen ":9617" listens on every interface`,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if code != 0 {
		t.Errorf("warnings alone exit %d", code)
	}
}

func TestCheck_PlanListsWhatRunInstalls(t *testing.T) {
	code, out, errs := runCLI("check", "--portable", "--plan", "-c", "../../deploy/seqshiftd.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	for _, want := range []string{
		"plan: TUN seqshift0, created at start",
		"plan: rule iif eth0 to 198.18.2.0/24 ipproto tcp lookup 5813 priority 5813 protocol 213",
		"plan: rule iif eth1 to 2001:2:0:1::/64 ipproto ipv6-icmp lookup 5813 priority 5813 protocol 213",
		"plan: IPv4 route default dev seqshift0 table 5813 metric 1 protocol 213",
		"plan: IPv6 route blackhole default table 5813 metric 2147483647 protocol 213",
		"plan: sysctl net.ipv4.conf.seqshift0.rp_filter = 0",
		// The gateway's own ICMP errors about intercepted flows, translated too.
		"plan: rule iif lo to 198.18.2.0/24 ipproto icmp lookup 5813 priority 5813 protocol 213",
		"plan: sysctl net.ipv4.conf.seqshift0.accept_local = 1",
		// datapath auto, and --portable leaves the choice to the host: the kernel plan too.
		"plan: datapath kernel",
		"plan: tc eth0 ingress 5813/0x5813 seqshiftd_client_ingress",
		"plan: tc seqshift0 ingress 5813/0x5813 seqshiftd_tap_ingress",
		"plan: bpf map flows: 1048576 entries",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestStatus_NoDaemonExitsOne(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(path, []byte("control_socket: "+filepath.Join(dir, "c.sock")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI("status", "-c", path)
	if code != 1 || !strings.Contains(errs, "not running") {
		t.Fatalf("status without a daemon: exit %d, stderr %q", code, errs)
	}
}

func TestDispatch_UsageAndVersion(t *testing.T) {
	if code, _, errs := runCLI("frobnicate"); code != 2 || !strings.Contains(errs, "usage") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errs)
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "seqshiftd ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}
