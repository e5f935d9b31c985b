package netns_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestCLI_FlowsWatchStreamsNewAndDestroyLikeConntrackE watches with a filter while one
// matching and one other connection open and close: the watcher sees the matching one appear
// at its SYN and go when it expires, in JSON lines, and nothing of the other.
func TestCLI_FlowsWatchStreamsNewAndDestroyLikeConntrackE(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: "  - name: watched\n    match: {server_ports: [7131]}\n    client_isn: fixed 1000"})
	// Short timeouts so that a closed connection leaves the table within seconds.
	e.writeRaw(e.configText(e.config) + "flows: {timeouts: {fin_wait: 1s, close_wait: 1s, last_ack: 1s, time_wait: 1s, close: 1s}}\n")
	e.start()
	watched := e.listen(t, false, 7131, nil)
	other := e.listen(t, false, 7132, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.lab.Gateway.Command(ctx, *binPath, "flows", "-c", e.cfg, "--watch", "--json", "--dport", "7131")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	events := make(chan control.Event, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev control.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("watch line %q: %v", sc.Text(), err)
				continue
			}
			events <- ev
		}
		close(events)
	}()
	// The watcher must be registered before the connections start.
	if !waitFor(5*time.Second, func() bool {
		out, _ := e.cli("status", "--json")
		return strings.Contains(out, `"steering": true`)
	}) {
		t.Fatal("daemon not ready")
	}
	// The watcher registers when its request arrives; the CLI shows no sign of it, so give it a
	// moment (a slow start would show as a missing new event, not a false pass).
	time.Sleep(time.Second)

	p := e.connect(t, watched, nil)
	q := e.connect(t, other, nil)
	if err := stream(p, streamOpts{C2S: 1 << 10, S2C: 1 << 10}); err != nil {
		t.Fatal(err)
	}
	p.Close()
	q.Close()

	next := func(want string) control.Event {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("watch ended; stderr:\n%s", stderr.String())
			}
			if ev.Type != want {
				t.Fatalf("event %q (%+v), want %q", ev.Type, ev.Flow, want)
			}
			return ev
		case <-time.After(15 * time.Second):
			t.Fatalf("no %s event within 15s; stderr:\n%s", want, stderr.String())
		}
		return control.Event{}
	}
	nw := next(control.EventNew)
	if nw.Flow.Client != p.client || nw.Flow.Server.Port() != 7131 || nw.Flow.Rule != "watched" || nw.Flow.State != "syn_sent" {
		t.Errorf("new event %+v", nw.Flow)
	}
	gone := next(control.EventDestroy)
	if gone.Flow.Client != p.client || gone.Flow.PacketsC2S == 0 {
		t.Errorf("destroy event %+v", gone.Flow)
	}
}
