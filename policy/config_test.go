package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/seqshiftd/seqshiftd/flowtable"
)

const examplePath = "../deploy/seqshiftd.yaml"

func TestLoad_DeployExampleIsValid(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	if len(cfg.Rules) == 0 || len(cfg.Intercept) != 2 {
		t.Fatalf("example: %d rules, %d intercepts", len(cfg.Rules), len(cfg.Intercept))
	}
	modes := map[Mode]bool{}
	for _, r := range cfg.Rules {
		modes[r.Client.Mode()] = true
		modes[r.Server.Mode()] = true
	}
	for m := ModeKeep; m <= ModeKeyed; m++ {
		if !modes[m] {
			t.Errorf("example shows no rule with ISN mode %s", m)
		}
	}
	for _, w := range cfg.Warnings() {
		if strings.Contains(w.Msg, "never match") {
			t.Errorf("example has a shadowed rule: %s", w.Msg)
		}
	}
}

// TestLoad_DeployExampleDocumentsEveryKey fails when a key is added to the decoder but not to
// the annotated example.
func TestLoad_DeployExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(prefix, n.Content[0])
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(prefix, c)
			}
		case yaml.MappingNode:
			for i := 0; i < len(n.Content); i += 2 {
				k := prefix + n.Content[i].Value
				seen[k] = true
				walk(k+".", n.Content[i+1])
			}
		}
	}
	walk("", &doc)
	var want []string
	want = append(want, topKeys...)
	for _, k := range []string{"name", "mtu", "queues", "offload"} {
		want = append(want, "tun."+k)
	}
	want = append(want, "intercept.iface", "intercept.to", "log.level", "log.format",
		"flows.max", "flows.when_full", "flows.timeouts", "steering.table", "steering.priority",
		"steering.protocol", "rules.name", "rules.match", "rules.client_isn", "rules.server_isn", "rules.observe",
		"rules.match.clients", "rules.match.servers", "rules.match.server_ports")
	for _, k := range timeoutKeys {
		want = append(want, "flows.timeouts."+k)
	}
	for _, k := range want {
		if !seen[k] {
			t.Errorf("deploy/seqshiftd.yaml does not show key %s", k)
		}
	}
}

func TestParse_EmptyFileGivesDefaults(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "{}\n", "---\n", "~\n"} {
		cfg, err := Parse("/etc/seqshiftd/seqshiftd.yaml", []byte(src))
		if err != nil {
			t.Fatalf("Parse(%q): %v", src, err)
		}
		want := Defaults()
		want.Path = "/etc/seqshiftd/seqshiftd.yaml"
		cfg.key, want.key, cfg.at = nil, nil, nil // positions are for warnings
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("Parse(%q) = %+v, want %+v", src, cfg, want)
		}
	}
	d := Defaults()
	if d.Tun.Name != "seqshift0" || !d.Tun.Offload || d.StateFile != "/var/lib/seqshiftd/flows.state" ||
		d.ControlSocket != "/run/seqshiftd/control.sock" || d.ISNKeyFile != "/var/lib/seqshiftd/isn.key" ||
		d.Flows.Max != 1048576 || d.Flows.WhenFull != WhenFullPass || d.Malformed != MalformedPass ||
		d.OnStop != OnStopFailClosed || d.SnapshotInterval != 5*time.Second || d.MetricsListen != "" ||
		d.Steering != (Steering{5813, 5813, 213}) || d.Log != (Log{"info", "auto"}) {
		t.Errorf("Defaults() = %+v", d)
	}
}

func TestParse_EveryKey(t *testing.T) {
	src := `
tun: {name: sq1, mtu: 9000, queues: 4, offload: false}
intercept:
  - iface: veth-c
    to: [198.18.2.0/24, "2001:2:0:2::/64", 198.18.3.1]
state_file: state/flows.state
snapshot_interval: 1m30s
control_socket: /tmp/ctl.sock
metrics_listen: "[::1]:9617"
isn_key_file: ""
log: {level: debug, format: json}
on_stop: restore
malformed: drop
flows:
  max: 1000
  when_full: drop
  timeouts: {syn_sent: 10s, syn_recv: 11s, established: 1h, fin_wait: 12s, close_wait: 13s, last_ack: 14s, time_wait: 15s, close: 0, unassured: 16s}
steering: {table: 100, priority: 200, protocol: 250}
datapath: tun
kernel: {mark: 0x100, pin_dir: /sys/fs/bpf/ssd}
rules:
  - name: r1
    match: {clients: [198.18.1.0/24], servers: ["2001:2::/48"], server_ports: [502, "20000-20010", "443"]}
    client_isn: fixed 0x3e8
    server_isn: sequential 5 7
  - name: r2
`
	cfg, err := Parse("/etc/x/c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path: "/etc/x/c.yaml",
		Tun:  Tun{Name: "sq1", MTU: 9000, Queues: 4, Offload: false},
		Intercept: []Intercept{{Iface: "veth-c", line: 4, col: 5, To: []netip.Prefix{
			netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("2001:2:0:2::/64"), netip.MustParsePrefix("198.18.3.1/32")}}},
		StateFile:        "/etc/x/state/flows.state",
		SnapshotInterval: 90 * time.Second,
		ControlSocket:    "/tmp/ctl.sock",
		MetricsListen:    "[::1]:9617",
		ISNKeyFile:       "",
		Log:              Log{Level: "debug", Format: "json"},
		OnStop:           OnStopRestore,
		Malformed:        MalformedDrop,
		Flows: Flows{Max: 1000, WhenFull: WhenFullDrop, Timeouts: flowtable.Timeouts{
			SynSent: 10 * time.Second, SynRecv: 11 * time.Second, Established: time.Hour, FinWait: 12 * time.Second,
			CloseWait: 13 * time.Second, LastAck: 14 * time.Second, TimeWait: 15 * time.Second, Unassured: 16 * time.Second}},
		Steering: Steering{Table: 100, Priority: 200, Protocol: 250},
		Datapath: DatapathTUN,
		Kernel:   Kernel{Mark: 0x100, PinDir: "/sys/fs/bpf/ssd"},
	}
	got := *cfg
	rules := got.Rules
	got.Rules, got.key, got.keyPos, got.at = nil, nil, [2]int{}, nil
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("got  %+v\nwant %+v", &got, want)
	}
	if len(rules) != 2 {
		t.Fatalf("%d rules", len(rules))
	}
	r := rules[0]
	if r.Name != "r1" || r.Client.String() != "fixed 0x3e8" || r.Server.String() != "sequential 5 7" {
		t.Errorf("rule 1: %s %s %s", r.Name, r.Client, r.Server)
	}
	if abs, v := r.Client.Plan(netip.AddrPort{}, netip.AddrPort{}); !abs || v != 1000 {
		t.Errorf("fixed 0x3e8 plans (%t, %d)", abs, v)
	}
	wantSel := Selector{
		Clients:     []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")},
		Servers:     []netip.Prefix{netip.MustParsePrefix("2001:2::/48")},
		ServerPorts: []PortRange{{502, 502}, {20000, 20010}, {443, 443}},
	}
	wantSel.index() // Parse indexes every selector
	if !reflect.DeepEqual(r.Match, wantSel) {
		t.Errorf("match = %+v, want %+v", r.Match, wantSel)
	}
	if r2 := rules[1]; !r2.Client.Keep() || !r2.Server.Keep() || r2.Client.String() != "keep" {
		t.Errorf("rule 2 sides: %s %s", r2.Client, r2.Server)
	}
}

// TestParse_ObserveRuleAndPolicy: a rule observes when its own key says so or when the whole
// policy does; a rule's observe: false does not override the policy-wide switch.
func TestParse_ObserveRuleAndPolicy(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // Observing()
	}{
		{"default is active", "rules:\n  - {name: a}\n  - {name: b}\n", nil},
		{"one rule observes", "rules:\n  - {name: a, observe: true}\n  - {name: b, observe: false}\n", []string{"a"}},
		{"policy observes all", "observe: true\nrules:\n  - {name: a}\n  - {name: b}\n", []string{"a", "b"}},
		{"rule false does not override policy", "observe: true\nrules:\n  - {name: a, observe: false}\n", []string{"a"}},
		{"policy false leaves rule on", "observe: false\nrules:\n  - {name: a, observe: true}\n  - {name: b}\n", []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("c.yaml", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Observing(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Observing() = %q, want %q", got, tt.want)
			}
			for i, r := range cfg.Rules {
				if r.Pos() != i {
					t.Errorf("rule %s: Pos() = %d, want %d", r.Name, r.Pos(), i)
				}
			}
		})
	}
	if (&Config{Observe: true}).Observes(nil) {
		t.Error("no rule (nil) observes: an unmatched connection is not observed")
	}
}

func TestParse_AliasesShareLists(t *testing.T) {
	src := `
intercept:
  - {iface: a0, to: &servers [198.18.2.0/24]}
rules:
  - {name: x, match: {servers: *servers}, client_isn: random}
`
	cfg, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Rules[0].Match.Servers; len(got) != 1 || got[0] != netip.MustParsePrefix("198.18.2.0/24") {
		t.Errorf("servers = %v", got)
	}
}

// TestParse_Errors checks every kind of error the file can hold, at its line and column.
func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		line, col int
		msg       string
	}{
		{"yaml syntax", "tun: {name: a\nrules: []\n", 1, 1, "YAML syntax"},
		{"tab indentation", "tun:\n\tname: a\n", 2, 1, "YAML syntax"},
		{"yaml bad indentation", "tun: {}\nlog:\n  level: info\n format: json\n", 3, 1, "YAML syntax: did not find expected key"},
		{"yaml unterminated quote", "tun: {}\nrules:\n  - name: a\n    client_isn: \"fixed 1\n", 4, 1, "YAML syntax"},
		{"yaml unknown anchor", "tun: *nope\n", 1, 1, "unknown anchor"},
		{"two documents", "tun: {}\n---\nrules: []\n", 2, 1, "only one YAML document"},
		{"top level not a mapping", "- a\n", 1, 1, "want a mapping, got a list"},
		{"unknown top-level key", "tun: {}\nsate_file: /x\n", 2, 1, `unknown key "sate_file"; did you mean "state_file"?`},
		{"unknown key far from any", "tun: {}\nbananas: 1\n", 2, 1, "want one of: tun, intercept"},
		{"unknown nested key", "tun:\n  name: a\n  mut: 1\n", 3, 3, `tun: unknown key "mut"; did you mean "mtu"?`},
		{"duplicate top-level key", "on_stop: restore\non_stop: fail-closed\n", 2, 1, `duplicate key "on_stop" (first at line 1)`},
		{"duplicate nested key", "log: {level: info, level: debug}\n", 1, 20, `log: duplicate key "level"`},
		{"merge key", "log:\n  <<: {level: info}\n", 2, 3, "merge keys"},
		{"non-string key", "tun: {1: a}\n", 1, 7, "key must be a string"},
		{"section wrong type", "tun: seqshift0\n", 1, 6, "tun: want a mapping, got the string"},
		{"string wrong type", "tun: {name: 12}\n", 1, 13, "tun.name: want a string, got the integer 12 (quote it"},
		{"string null", "state_file:\ncontrol_socket: /x\n", 1, 12, `state_file: want a string, got null (write "" for an empty string)`},
		{"bool wrong type", "tun: {offload: yes}\n", 1, 16, `tun.offload: want true or false, got the string "yes"`},
		{"observe not a boolean", "observe: on\n", 1, 10, `observe: want true or false, got the string "on"`},
		{"observe a number", "observe: 1\n", 1, 10, "observe: want true or false, got the integer 1"},
		{"rule observe not a boolean", "rules:\n  - name: a\n    observe: \"true\"\n", 3, 14, `rule observe: want true or false, got the string "true"`},
		{"rule observe misspelt", "rules:\n  - name: a\n    obsrve: true\n", 3, 5, `rule: unknown key "obsrve"; did you mean "observe"?`},
		{"int wrong type", "tun: {mtu: big}\n", 1, 12, "tun.mtu: want an integer"},
		{"int float", "tun: {mtu: 1500.5}\n", 1, 12, "want an integer, got the number 1500.5"},
		{"mtu out of range", "tun: {mtu: 65536}\n", 1, 12, "tun.mtu: 65536 is out of range 0..65535"},
		{"mtu too small", "tun: {mtu: 60}\n", 1, 12, "below the IPv4 minimum"},
		{"mtu 2^32", "tun: {mtu: 4294967296}\n", 1, 12, "4294967296 is out of range"},
		{"mtu beyond int64", "tun: {mtu: 99999999999999999999}\n", 1, 12, "99999999999999999999 is out of range"},
		{"queues negative", "tun: {queues: -1}\n", 1, 15, "tun.queues: -1 is out of range 0..256"},
		{"tun name too long", "tun: {name: abcdefghijklmnop}\n", 1, 13, "longer than 15 bytes"},
		{"tun name slash", "tun: {name: a/b}\n", 1, 13, "contains '/'"},
		{"intercept not a list", "intercept: {iface: eth0}\n", 1, 12, "intercept: want a list, got a mapping"},
		{"intercept entry not a mapping", "intercept: [eth0]\n", 1, 13, "intercept: want an entry with iface and to"},
		{"intercept missing iface", "intercept:\n  - to: [198.18.2.0/24]\n", 2, 5, "missing iface"},
		{"intercept missing to", "intercept:\n  - iface: eth0\n", 2, 5, "missing to"},
		{"intercept empty to", "intercept:\n  - iface: eth0\n    to: []\n", 3, 9, "at least one destination prefix"},
		{"intercept tun itself", "intercept:\n  - {iface: seqshift0, to: [198.18.2.0/24]}\n", 2, 13, "seqshiftd's own TUN"},
		{"intercept to scalar", "intercept:\n  - {iface: eth0, to: 198.18.2.0/24}\n", 2, 23, "want a list, got the string \"198.18.2.0/24\" (write [198.18.2.0/24]"},
		{"bad prefix", "intercept:\n  - iface: eth0\n    to: [198.18.2.0/33]\n", 3, 10, `"198.18.2.0/33" is not a prefix`},
		{"bad address", "intercept:\n  - iface: eth0\n    to: [198.18.2.300]\n", 3, 10, `"198.18.2.300" is not a prefix`},
		{"prefix host bits", "intercept:\n  - iface: eth0\n    to: [198.18.2.1/24]\n", 3, 10, "did you mean 198.18.2.0/24?"},
		{"prefix v6 host bits", "intercept:\n  - iface: eth0\n    to: [\"2001:2::1/48\"]\n", 3, 10, "did you mean 2001:2::/48?"},
		{"prefix 4in6", "intercept:\n  - iface: eth0\n    to: [\"::ffff:198.18.2.0/120\"]\n", 3, 10, "IPv4-mapped"},
		{"prefix zone", "rules:\n  - name: a\n    match: {clients: [\"fe80::1%eth0\"]}\n", 3, 23, "is not a prefix"},
		{"prefix not a string", "rules:\n  - name: a\n    match: {clients: [17]}\n", 3, 23, "match.clients: want a string, got the integer 17"},
		{"snapshot_interval no unit", "snapshot_interval: 5\n", 1, 20, "a unit is required"},
		{"snapshot_interval bad", "snapshot_interval: soon\n", 1, 20, `"soon" is not a duration`},
		{"snapshot_interval too short", "snapshot_interval: 10ms\n", 1, 20, "too short"},
		{"snapshot_interval negative", "snapshot_interval: -5s\n", 1, 20, "too short"},
		{"timeout days", "flows: {timeouts: {established: 5d}}\n", 1, 33, "there is no day unit"},
		{"timeout unknown state", "flows: {timeouts: {syn_snet: 5s}}\n", 1, 20, `unknown key "syn_snet"; did you mean "syn_sent"?`},
		{"timeout wrong type", "flows: {timeouts: {close: [1]}}\n", 1, 27, "want a duration"},
		{"control_socket empty", "control_socket: \"\"\n", 1, 17, "a path is required"},
		{"control_socket too long", "control_socket: /" + strings.Repeat("a", 120) + "\n", 1, 17, "at most 107"},
		{"state_file directory", "state_file: /var/lib/\n", 1, 13, "names a directory"},
		{"metrics_listen no port", "metrics_listen: 127.0.0.1\n", 1, 17, "is not HOST:PORT"},
		{"metrics_listen bad port", "metrics_listen: 127.0.0.1:99999\n", 1, 17, `port "99999" is not 1..65535`},
		{"log level", "log: {level: verbose}\n", 1, 14, `log.level: "verbose" is not one of debug, info, warn, error`},
		{"log format", "log: {format: xml}\n", 1, 15, "log.format"},
		{"on_stop", "on_stop: open\n", 1, 10, `on_stop: "open" is not one of fail-closed, restore`},
		{"malformed", "malformed: reject\n", 1, 12, "malformed: \"reject\" is not one of pass, drop"},
		{"flows.max zero", "flows: {max: 0}\n", 1, 14, "flows.max: 0 is out of range 1..1073741824"},
		{"flows.when_full", "flows: {when_full: evict}\n", 1, 20, "flows.when_full"},
		{"steering reserved table", "steering: {table: 254}\n", 1, 19, "reserved table"},
		{"steering table 2^32", "steering: {table: 4294967296}\n", 1, 19, "out of range 1..2147483647"},
		{"steering table run refuses", "steering: {table: 3000000000}\n", 1, 19, "steering.table: 3000000000 is out of range 1..2147483647"},
		{"steering priority main", "steering: {priority: 32766}\n", 1, 22, "out of range 1..32765"},
		{"steering protocol boot", "steering: {protocol: 3}\n", 1, 22, "out of range 5..255"},
		{"rules not a list", "rules: {name: a}\n", 1, 8, "rules: want a list"},
		{"rule not a mapping", "rules: [a]\n", 1, 9, "rules: want a rule"},
		{"rule missing name", "rules:\n  - client_isn: random\n", 2, 5, "rule: missing name"},
		{"rule unknown key", "rules:\n  - name: a\n    client_ins: random\n", 3, 5, `rule: unknown key "client_ins"; did you mean "client_isn"?`},
		{"rule bad name", "rules:\n  - name: \"my rule\"\n", 2, 11, "use 1 to 64 letters"},
		{"duplicate rule name", "rules:\n  - name: a\n  - name: b\n  - name: a\n", 4, 11, `duplicate rule name "a" (first at line 2)`},
		{"match unknown key", "rules:\n  - name: a\n    match: {ports: [1]}\n", 3, 13, `unknown key "ports"`},
		{"port 0", "rules:\n  - name: a\n    match: {server_ports: [0]}\n", 3, 28, "port 0 is out of range 1..65535"},
		{"port 65536", "rules:\n  - name: a\n    match: {server_ports: [65536]}\n", 3, 28, "port 65536 is out of range 1..65535"},
		{"port huge", "rules:\n  - name: a\n    match: {server_ports: [99999999999999999999999]}\n", 3, 28, "out of range 1..65535"},
		{"port negative", "rules:\n  - name: a\n    match: {server_ports: [-1]}\n", 3, 28, "is not a port"},
		{"port range reversed", "rules:\n  - name: a\n    match: {server_ports: [\"20010-20000\"]}\n", 3, 28, "low end 20010 is above the high end 20000"},
		{"port range open", "rules:\n  - name: a\n    match: {server_ports: [20000-]}\n", 3, 28, "is not a port"},
		{"port range too high", "rules:\n  - name: a\n    match: {server_ports: [1-70000]}\n", 3, 28, "port 70000 is out of range"},
		{"port bool", "rules:\n  - name: a\n    match: {server_ports: [true]}\n", 3, 28, "got the boolean true"},
		{"port not a list", "rules:\n  - name: a\n    match: {server_ports: 443}\n", 3, 27, "write [443]"},
		{"isn unknown mode", "rules:\n  - name: a\n    client_isn: fixd 5\n", 3, 17, `unknown ISN mode "fixd"`},
		{"isn empty", "rules:\n  - name: a\n    client_isn: \"\"\n", 3, 17, "empty ISN mode"},
		{"isn bare number", "rules:\n  - name: a\n    server_isn: 1000\n", 3, 17, `did you mean "fixed 1000"?`},
		{"isn not a string", "rules:\n  - name: a\n    server_isn: [fixed, 1]\n", 3, 17, "server_isn: want a string, got a list"},
		{"fixed missing N", "rules:\n  - name: a\n    client_isn: fixed\n", 3, 17, `want "fixed N"`},
		{"fixed 2^32", "rules:\n  - name: a\n    client_isn: fixed 4294967296\n", 3, 17, "4294967296 is out of range 0..4294967295"},
		{"fixed negative", "rules:\n  - name: a\n    client_isn: fixed -1\n", 3, 17, `"-1" is not a number`},
		{"fixed hex too big", "rules:\n  - name: a\n    client_isn: fixed 0x100000000\n", 3, 17, "0x100000000 is out of range"},
		{"fixed junk", "rules:\n  - name: a\n    client_isn: fixed 12ab\n", 3, 17, `"12ab" is not a number`},
		{"fixed extra word", "rules:\n  - name: a\n    client_isn: fixed 1 2\n", 3, 17, `want "fixed N"`},
		{"sequential one arg", "rules:\n  - name: a\n    client_isn: sequential 5\n", 3, 17, `want "sequential START STEP"`},
		{"sequential step 0", "rules:\n  - name: a\n    client_isn: sequential 5 0\n", 3, 17, "step 0"},
		{"sequential step too big", "rules:\n  - name: a\n    client_isn: sequential 5 4294967296\n", 3, 17, "4294967296 is out of range"},
		{"range reversed", "rules:\n  - name: a\n    client_isn: range 900-100\n", 3, 17, `"range 900-100": the low end 900 is above the high end 100`},
		{"range no dash", "rules:\n  - name: a\n    client_isn: range 900\n", 3, 17, "want range LO-HI"},
		{"range spaced", "rules:\n  - name: a\n    client_isn: range 1 - 5\n", 3, 17, `want "range LO-HI"`},
		{"range high 2^32", "rules:\n  - name: a\n    client_isn: range 1-4294967296\n", 3, 17, "4294967296 is out of range"},
		{"random with arg", "rules:\n  - name: a\n    client_isn: random 5\n", 3, 17, `want "random"`},
		{"keep with arg", "rules:\n  - name: a\n    client_isn: keep 5\n", 3, 17, `want "keep"`},
		{"keyed with arg", "rules:\n  - name: a\n    client_isn: keyed x\n", 3, 17, `want "keyed"`},
		{"offset 0", "rules:\n  - name: a\n    client_isn: offset +0\n", 3, 17, "shifts nothing"},
		{"offset missing", "rules:\n  - name: a\n    client_isn: offset\n", 3, 17, `want "offset ±N"`},
		{"offset double sign", "rules:\n  - name: a\n    client_isn: offset --5\n", 3, 17, "is not a number"},
		{"offset too big", "rules:\n  - name: a\n    client_isn: offset -4294967296\n", 3, 17, "out of range"},
		{"keyed without key file", "isn_key_file: \"\"\nrules:\n  - name: a\n    client_isn: keyed\n", 1, 15, `rule "a" uses keyed, which needs isn_key_file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("conf.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\ngot %+v", tt.src, cfg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with an error")
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v (%T) is not Errors", err, err)
			}
			e := es[0]
			if e.File != "conf.yaml" || e.Line != tt.line || e.Col != tt.col || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got  %v\nwant conf.yaml:%d:%d: ...%s...", err, tt.line, tt.col, tt.msg)
			}
			if len(es) != 1 {
				t.Errorf("want one error, got %d:\n%v", len(es), err)
			}
			if !strings.HasPrefix(err.Error(), "conf.yaml:") {
				t.Errorf("message %q does not start with FILE:", err)
			}
		})
	}
}

func TestParse_ReportsEveryErrorInFileOrder(t *testing.T) {
	src := "rules:\n  - name: a\n    client_isn: fixed 4294967296\n  - name: a\n    server_isn: range 9-1\ntun: {mtu: -1}\n"
	_, err := Parse("c.yaml", []byte(src))
	want := []string{
		"c.yaml:3:17: client_isn: 4294967296 is out of range 0..4294967295",
		`c.yaml:4:11: duplicate rule name "a" (first at line 2)`,
		`c.yaml:5:17: server_isn: "range 9-1": the low end 9 is above the high end 1`,
		"c.yaml:6:12: tun.mtu: -1 is out of range 0..65535",
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParse_CapsTheNumberOfErrors(t *testing.T) {
	src := "rules:\n" + strings.Repeat("  - {name: a, client_isn: bogus}\n", 50)
	_, err := Parse("c.yaml", []byte(src))
	var es Errors
	if !errors.As(err, &es) || len(es) != maxErrors+1 || !strings.Contains(es[maxErrors].Msg, "more errors") {
		t.Errorf("got %d errors:\n%v", len(es), err)
	}
}

func TestParse_RelativePathsFollowTheFile(t *testing.T) {
	cfg, err := Parse("/etc/seqshiftd/seqshiftd.yaml", []byte("state_file: ../../var/s\ncontrol_socket: c.sock\nisn_key_file: k/isn.key\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateFile != "/var/s" || cfg.ControlSocket != "/etc/seqshiftd/c.sock" || cfg.ISNKeyFile != "/etc/seqshiftd/k/isn.key" {
		t.Errorf("paths: %q %q %q", cfg.StateFile, cfg.ControlSocket, cfg.ISNKeyFile)
	}
}

func TestParse_EmptyStringsDisable(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte("state_file: \"\"\nmetrics_listen: \"\"\nintercept: []\nrules: []\nsnapshot_interval: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateFile != "" || cfg.MetricsListen != "" || len(cfg.Intercept) != 0 || cfg.SnapshotInterval != DefaultSnapshotInterval {
		t.Errorf("got %+v", cfg)
	}
}

func TestLoad_Errors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(p, []byte("tun:\n  mtu: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || err.Error() != p+`:2:8: tun.mtu: want an integer, got the string "x"` {
		t.Errorf("got %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.HasPrefix(err.Error(), big+":1:1: file is larger") {
		t.Errorf("got %v", err)
	}
}

func TestLoadKeys_IgnoresBrokenRulesForClientCommands(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	body := "control_socket: /run/x.sock\nsteering: {table: 100}\nrules:\n  - name: a\n    client_isn: fixed 4294967296\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("Load accepted a broken rule")
	}
	cfg, err := LoadKeys(path, "control_socket", "steering")
	if err != nil {
		t.Fatalf("LoadKeys: %v", err)
	}
	if cfg.ControlSocket != "/run/x.sock" || cfg.Steering.Table != 100 || len(cfg.Rules) != 0 {
		t.Fatalf("got socket %q table %d rules %d", cfg.ControlSocket, cfg.Steering.Table, len(cfg.Rules))
	}
	if err := os.WriteFile(path, []byte("control_socket: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(path, "control_socket"); err == nil || !strings.Contains(err.Error(), "s.yaml:") {
		t.Fatalf("syntax error not reported with its file: %v", err)
	}
}
