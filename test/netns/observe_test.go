package netns_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// scrape fetches the daemon's /metrics from inside the gateway namespace and returns the
// samples by their full series name (name{labels}).
func scrape(t *testing.T, e *env, addr string) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	sc := bufio.NewScanner(bytes.NewReader(scrapeText(t, e, addr)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetrics_RuleTrafficFlowsAndReloads(t *testing.T) {
	t.Parallel()
	const addr = "127.0.0.1:9617"
	rules := `
  - name: measured
    match: {server_ports: [7101]}
    client_isn: fixed 1000
    server_isn: random`
	e := newEnv(t, netlab.Options{}, config{Offload: true, Metrics: addr, Rules: rules})
	d := e.start()
	srv := e.listen(t, false, 7101, nil)
	p := e.connect(t, srv, nil)
	const n = 256 << 10
	if err := stream(p, streamOpts{C2S: n, S2C: n}); err != nil {
		t.Fatal(err)
	}

	m := scrape(t, e, addr)
	for _, dir := range []string{"c2s", "s2c"} {
		series := fmt.Sprintf(`seqshiftd_rewritten_bytes_total{direction="%s",rule="measured"}`, dir)
		if m[series] < n {
			t.Errorf("%s = %v, want at least the %d payload bytes sent", series, m[series], n)
		}
		series = fmt.Sprintf(`seqshiftd_rewritten_packets_total{direction="%s",rule="measured"}`, dir)
		if m[series] < 1 {
			t.Errorf("%s = %v, want > 0", series, m[series])
		}
	}
	if m["seqshiftd_flows_created_total"] < 1 {
		t.Errorf("flows_created_total = %v", m["seqshiftd_flows_created_total"])
	}
	if m["seqshiftd_policy_generation"] != 1 {
		t.Errorf("policy_generation = %v, want 1", m["seqshiftd_policy_generation"])
	}

	// One good and one bad reload are counted by result; the generation follows the good one.
	e.writeConfig(config{Offload: true, Metrics: addr, Rules: rules})
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { st, _ := e.status(t); return st.Generation == 2 }) {
		t.Fatal("reload not applied")
	}
	e.writeRaw(e.configText(e.config) + "  - name: measured\n")
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { st, _ := e.status(t); return st.LastReloadError != "" }) {
		t.Fatal("failed reload not visible in status")
	}
	// The endpoint caches a scrape for up to a second.
	time.Sleep(1100 * time.Millisecond)
	m2 := scrape(t, e, addr)
	var ok, failed float64
	for k, v := range m2 {
		if strings.HasPrefix(k, "seqshiftd_config_reloads_total") {
			if strings.Contains(k, "success") {
				ok = v
			} else {
				failed = v
			}
		}
	}
	if ok != 1 || failed != 1 || m2["seqshiftd_policy_generation"] != 2 {
		t.Errorf("reloads ok %v failed %v generation %v; want 1, 1, 2", ok, failed, m2["seqshiftd_policy_generation"])
	}
	// Counters never go backwards across scrapes.
	for k, v := range m {
		if strings.HasSuffix(strings.SplitN(k, "{", 2)[0], "_total") && m2[k] < v {
			t.Errorf("%s went from %v to %v", k, v, m2[k])
		}
	}
}

// TestLab_RunsAndCleansUp runs the README's first command: `seqshiftd lab` must show every
// connection consistent on both ends and leave no namespace behind.
func TestLab_RunsAndCleansUp(t *testing.T) {
	requireSuite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *binPath, "lab")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("seqshiftd lab: %v\n%s", err, out)
	}
	text := string(out)
	if got := strings.Count(text, "sha256 match both ways, handshake consistent on both ends"); got != 7 {
		t.Errorf("%d connections reported consistent, want 7:\n%s", got, text)
	}
	// The legacy PLC rule: the server's wire shows ISN 1000.
	if !regexp.MustCompile(`client ISN \(SYN seq\)\s+\d+\s+->\s+1000\s`).MatchString(text) {
		t.Errorf("the fixed-ISN connection does not show 1000 on the server's wire:\n%s", text)
	}
	// sequential 100000 1000: the two connections of that rule get 100000 and 101000.
	for _, isn := range []string{"100000", "101000"} {
		if !regexp.MustCompile(`->\s+` + isn + `\s`).MatchString(text) {
			t.Errorf("no connection shows sequential ISN %s on the server's wire", isn)
		}
	}
	m := regexp.MustCompile(`gateway (sslab-\d+)-gw`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("lab output names no gateway namespace:\n%s", text)
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), m[1]+"-") {
			t.Errorf("namespace %s left behind", ent.Name())
		}
	}
}
