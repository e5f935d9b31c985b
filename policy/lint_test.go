package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck_WarnsOnWhatAReaderOfTheREADMEWouldWantFlagged(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // "" = no finding at all
	}{
		{"both directions, defaults: nothing",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\n", ""},
		{"one direction",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n",
			`c.yaml:2:3: warning: only one intercept direction: every entry arrives on eth0`},
		{"one interface listed twice is still one direction",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth0, to: [198.18.3.0/24]}\n",
			`only one intercept direction`},
		{"servers outside every intercept prefix",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nrules:\n  - name: plc\n    match: {servers: [198.19.0.10]}\n",
			`c.yaml:5:5: warning: rule "plc": servers 198.19.0.10/32 lie outside every intercept prefix`},
		{"servers partly inside are fine",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nrules:\n  - name: plc\n    match: {servers: [198.18.0.0/16]}\n", ""},
		{"state_file outside the unit's state directory",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nstate_file: /etc/seqshiftd/flows.state\n",
			`c.yaml:4:13: warning: state_file /etc/seqshiftd/flows.state is outside /var/lib/seqshiftd`},
		{"control socket outside /run/seqshiftd",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\ncontrol_socket: /tmp/s.sock\n",
			`c.yaml:4:17: warning: control_socket /tmp/s.sock is outside /run/seqshiftd`},
		{"isn_key_file under /etc with a keyed rule",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nisn_key_file: /etc/seqshiftd/isn.key\nrules:\n  - name: pair\n    client_isn: keyed\n",
			`c.yaml:4:15: warning: isn_key_file /etc/seqshiftd/isn.key is outside /var/lib/seqshiftd`},
		{"isn_key_file under /etc without keyed: never read",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nisn_key_file: /etc/seqshiftd/isn.key\n", ""},
		{"metrics on every interface",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nmetrics_listen: \":9617\"\n",
			`c.yaml:4:17: warning: metrics_listen ":9617" listens on every interface`},
		{"metrics on [::]",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nmetrics_listen: \"[::]:9617\"\n",
			`listens on every interface`},
		{"metrics on loopback are fine",
			"intercept:\n  - {iface: eth0, to: [198.18.2.0/24]}\n  - {iface: eth1, to: [198.18.1.0/24]}\nmetrics_listen: 127.0.0.1:9617\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			got := formatAll(cfg.Check())
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("findings:\n%s\nwant %q", got, tc.want)
			}
		})
	}
}

func TestHostProblems_AKeyFileRunWouldRefuse(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "isn.key")
	src := "isn_key_file: " + key + "\nrules:\n  - name: pair\n    client_isn: keyed\n"
	cfg, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.HostProblems(); len(got) != 0 {
		t.Errorf("a missing key is created by run, not a problem: %v", got)
	}
	if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(key, 0o644)
	if got := formatAll(cfg.HostProblems()); !strings.Contains(got, "c.yaml:1:15: warning: isn_key_file:") {
		t.Errorf("a group-readable key:\n%s", got)
	}
}
