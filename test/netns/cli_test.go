package netns_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/netlab"
)

// TestCLI_FlowsFilterAndCountLikeConntrack runs `seqshiftd flows` with conntrack -L's filters
// against a daemon tracking real connections: two to one port under a rule, one to another
// port under no rule.
func TestCLI_FlowsFilterAndCountLikeConntrack(t *testing.T) {
	t.Parallel()
	rules := `
  - name: plc
    match: {server_ports: [7121]}
    client_isn: fixed 1000`
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: rules})
	e.start()
	plc := e.listen(t, false, 7121, nil)
	other := e.listen(t, false, 7122, nil)
	p1 := e.connect(t, plc, nil)
	defer p1.Close()
	p2 := e.connect(t, plc, nil)
	defer p2.Close()
	p3 := e.connect(t, other, nil)
	defer p3.Close()

	count := func(args ...string) string {
		t.Helper()
		out, code := e.cli(append([]string{"flows", "-C"}, args...)...)
		if code != 0 {
			t.Fatalf("flows -C %v: exit %d\n%s", args, code, out)
		}
		return strings.TrimSpace(out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "3"},
		{[]string{"--dport", "7121"}, "2"},
		{[]string{"--dport", "7122"}, "1"},
		{[]string{"--rule", "plc"}, "2"},
		{[]string{"--rule", "-"}, "1"},
		{[]string{"--state", "established"}, "3"},
		{[]string{"--state", "time_wait"}, "0"},
		{[]string{"--src", e.lab.ClientPrefix4.String()}, "3"},
		{[]string{"--src", e.lab.ServerPrefix4.String()}, "0"},
		{[]string{"--dst", p3.server.Addr().String(), "--dport", "7122"}, "1"},
		{[]string{"--sport", fmt.Sprint(p1.client.Port())}, "1"},
	} {
		if got := count(tc.args...); got != tc.want {
			t.Errorf("flows -C %v = %s, want %s", tc.args, got, tc.want)
		}
	}

	// The listing itself, text and JSON, with the same filter.
	out, code := e.cli("flows", "--dport", "7121")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "rule=plc") || strings.Contains(out, ":7122") {
		t.Errorf("flows --dport 7121: exit %d\n%s", code, out)
	}
	out, code = e.cli("flows", "--json", "--sport", fmt.Sprint(p1.client.Port()))
	var fl []control.FlowInfo
	if err := json.Unmarshal([]byte(jsonPart(out)), &fl); code != 0 || err != nil || len(fl) != 1 || fl[0].Client != p1.client {
		t.Errorf("flows --json --sport: exit %d, %v: %s", code, err, out)
	}

	// status and flows without a readable file, given the socket.
	sock := filepath.Join(e.dir, "control.sock")
	if out, code := e.cliWith("/nonexistent/seqshiftd.yaml", "status", "--socket", sock); code != 0 || !strings.Contains(out, "steering:     installed") {
		t.Errorf("status --socket with no file: exit %d\n%s", code, out)
	}
	if out, code := e.cliWith("/nonexistent/seqshiftd.yaml", "flows", "-C", "--socket", sock); code != 0 || strings.TrimSpace(out) != "3" {
		t.Errorf("flows -C --socket with no file: exit %d\n%s", code, out)
	}
}
