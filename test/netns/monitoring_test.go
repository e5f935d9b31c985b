package netns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// The monitoring kit (deploy/monitoring) and the README's metric reference are checked against
// what a running daemon really exposes, so that neither can name a metric that does not exist.

const monitoringDir = "../../deploy/monitoring"

// scrapeText fetches the daemon's /metrics exposition as it is.
func scrapeText(t *testing.T, e *env, addr string) []byte {
	t.Helper()
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return e.lab.Gateway.Dial(ctx, network, a)
		}},
	}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v: %s", resp.Status, err, b)
	}
	return b
}

// families returns the metric family names of an exposition (its # TYPE lines).
func families(text []byte) map[string]bool {
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) \S+$`).FindAllSubmatch(text, -1) {
		out[string(m[1])] = true
	}
	return out
}

var seqshiftdName = regexp.MustCompile(`\bseqshiftd_[a-z0-9_]+\b`)

// namesIn returns the seqshiftd_ metric names a PromQL expression (or any text) mentions.
func namesIn(s string) []string { return seqshiftdName.FindAllString(s, -1) }

// liveScrape starts a daemon with metrics, one rewritten connection and one observed one, so
// that the per-rule series exist too, and returns its exposition.
func liveScrape(t *testing.T) []byte {
	const addr = "127.0.0.1:9617"
	rules := `
  - name: measured
    match: {server_ports: [7111]}
    client_isn: fixed 1000
    server_isn: random
  - name: watched
    match: {server_ports: [7112]}
    client_isn: random
    server_isn: random
    observe: true`
	e := newEnv(t, netlab.Options{}, config{Offload: true, Metrics: addr, Rules: rules})
	e.start()
	for _, port := range []uint16{7111, 7112} {
		srv := e.listen(t, false, port, nil)
		p := e.connect(t, srv, nil)
		if err := stream(p, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	// Let the first periodic snapshot (snapshot_interval: 1s) be written.
	time.Sleep(1500 * time.Millisecond)
	return scrapeText(t, e, addr)
}

func TestMonitoring_ScrapeMatchesREADMEDashboardAndRules(t *testing.T) {
	t.Parallel()
	text := liveScrape(t)
	have := families(text)

	// The new gauges say what they should on a healthy daemon.
	value := func(name string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(text)
		if m == nil {
			t.Fatalf("scrape has no sample %s", name)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := value("seqshiftd_steering_installed"); v != 1 {
		t.Errorf("steering_installed = %v, want 1", v)
	}
	if v := value("seqshiftd_flows_limit"); v != 1<<20 {
		t.Errorf("flows_limit = %v, want the default capacity %d", v, 1<<20)
	}
	if age := float64(time.Now().UnixNano())/1e9 - value("seqshiftd_snapshot_last_success_timestamp_seconds"); age < -1 || age > 30 {
		t.Errorf("last snapshot %v s ago, want a fresh one (snapshot_interval 1s)", age)
	}
	if v := value("seqshiftd_snapshot_failures_total"); v != 0 {
		t.Errorf("snapshot_failures_total = %v", v)
	}

	// promtool's linter: names, suffixes, help texts, types.
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed (apt-get install prometheus): skipping `promtool check metrics`")
	} else {
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = bytes.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	// The README's metric table names exactly the seqshiftd_ families of a real scrape.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	kernelOnly := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(seqshiftd_[a-z0-9_]+)`.*$").FindAllSubmatch(readme, -1) {
		documented[string(m[1])] = true
		kernelOnly[string(m[1])] = bytes.Contains(m[0], []byte("(kernel datapath only)"))
	}
	if len(documented) == 0 {
		t.Fatal("the README has no metric table (rows starting with | `seqshiftd_...`)")
	}
	for name := range documented {
		// A row that says "(kernel datapath only)" is a family the kernel datapath registers.
		if !have[name] && (*datapathFlag == "kernel" || !kernelOnly[name]) {
			t.Errorf("the README names %s, which the scrape does not have (datapath %s)", name, *datapathFlag)
		}
		if have[name] && kernelOnly[name] && *datapathFlag == "tun" {
			t.Errorf("the README says %s is the kernel datapath's only, but the tun datapath has it", name)
		}
	}
	for name := range have {
		if strings.HasPrefix(name, "seqshiftd_") && !documented[name] {
			t.Errorf("the scrape has %s, which the README's metric table does not name", name)
		}
	}

	// Every query of the dashboard and every alert rule names metrics that exist.
	dash, err := os.ReadFile(filepath.Join(monitoringDir, "seqshiftd.grafana.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	collectExprs(t, dash, &exprs)
	if len(exprs) < 10 {
		t.Fatalf("the dashboard has %d queries; the walk found too few", len(exprs))
	}
	rules, err := os.ReadFile(filepath.Join(monitoringDir, "seqshiftd.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// Every line: expressions may be folded over several lines, and no other text in the file
	// has the seqshiftd_ form.
	exprs = append(exprs, strings.Split(string(rules), "\n")...)
	var missing []string
	for _, q := range exprs {
		for _, name := range namesIn(q) {
			if !have[name] && (*datapathFlag == "kernel" || !kernelOnly[name]) {
				missing = append(missing, name+" (in "+q+")")
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("the monitoring kit queries a metric the scrape does not have: %s", m)
	}
}

// collectExprs gathers every "expr" and every templating "query" string of a Grafana dashboard.
func collectExprs(t *testing.T, dash []byte, out *[]string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(dash, &v); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					*out = append(*out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
}

// TestMonitoring_AlertRulesCheckAndPassTheirUnitTests runs promtool on the shipped rules.
func TestMonitoring_AlertRulesCheckAndPassTheirUnitTests(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("skipping: promtool not installed (apt-get install prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", "seqshiftd.rules.yml"},
		{"test", "rules", "seqshiftd.rules.test.yml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = monitoringDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
