package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const matchPolicy = `
rules:
  - name: plc
    match:
      clients: [198.18.1.0/24]
      servers: [198.18.2.10/32]
      server_ports: [502, "20000-20010"]
    client_isn: fixed 1000
  - name: v6-web
    match: {servers: ["2001:2:0:2::/64"], server_ports: [443]}
    client_isn: random
  - name: any-to-host
    match: {servers: [198.18.2.20, "2001:2::20"]}
    server_isn: random
  - name: from-lab
    match: {clients: [198.18.0.0/16, "2001:2::/48"], server_ports: ["8000-8080"]}
`

func TestConfig_Match(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(matchPolicy))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client, server string
		port           uint16
		want           string // "" for no rule
	}{
		{"198.18.1.10", "198.18.2.10", 502, "plc"},
		{"198.18.1.255", "198.18.2.10", 20000, "plc"},
		{"198.18.1.0", "198.18.2.10", 20010, "plc"},
		{"198.18.1.10", "198.18.2.10", 20011, ""},
		{"198.18.1.10", "198.18.2.10", 19999, ""},
		{"198.18.1.10", "198.18.2.10", 503, ""},
		{"198.18.1.10", "198.18.2.11", 502, ""},
		{"198.18.3.10", "198.18.2.10", 502, ""}, // client outside both client lists
		{"::ffff:198.18.1.10", "::ffff:198.18.2.10", 502, "plc"},
		{"2001:2:0:1::5", "2001:2:0:2::80", 443, "v6-web"},
		{"2001:2:0:1::5", "2001:2:0:3::80", 443, ""},
		{"2001:2:0:1::5", "2001:2:0:2::80", 80, ""},
		{"198.18.9.9", "198.18.2.20", 1, "any-to-host"},
		{"2001:2:ffff::1", "2001:2::20", 65535, "any-to-host"},
		{"198.18.9.9", "198.18.2.21", 8000, "from-lab"},
		{"2001:2:0:1::1", "2001:2::99", 8080, "from-lab"},
		{"2001:2:1::1", "2001:2::99", 8080, ""},
		{"2001:3::1", "2001:2::99", 8080, ""},
		{"198.18.9.9", "198.18.2.21", 8081, ""},
		{"198.18.1.10", "198.18.2.10", 8000, "from-lab"}, // plc's ports do not include 8000
	}
	for _, tt := range tests {
		r := cfg.Match(netip.MustParseAddr(tt.client), netip.MustParseAddr(tt.server), tt.port)
		got := ""
		if r != nil {
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("Match(%s, %s, %d) = %q, want %q", tt.client, tt.server, tt.port, got, tt.want)
		}
		if r != nil && !r.Matches(netip.MustParseAddr(tt.client), netip.MustParseAddr(tt.server), tt.port) {
			t.Errorf("rule %s: Match chose it but Matches says no", r.Name)
		}
	}
}

func TestConfig_MatchEmptySelectorMatchesEverything(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte("rules:\n  - name: all\n    match: {}\n  - name: never\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.18.0.1", "2001:2::1", "0.0.0.0"} {
		if r := cfg.Match(netip.MustParseAddr(a), netip.MustParseAddr(a), 1); r == nil || r.Name != "all" {
			t.Errorf("Match(%s) = %v", a, r)
		}
	}
	if r := (&Config{}).Match(netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), 80); r != nil {
		t.Errorf("no rules matched %s", r.Name)
	}
}

func TestConfig_MatchDoesNotAllocate(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(matchPolicy))
	if err != nil {
		t.Fatal(err)
	}
	c4, s4 := netip.MustParseAddr("198.18.1.10"), netip.MustParseAddr("198.18.2.10")
	c6, s6 := netip.MustParseAddr("2001:2:0:1::1"), netip.MustParseAddr("2001:2::99")
	for _, port := range []uint16{502, 443, 8080, 9} {
		if n := testing.AllocsPerRun(1000, func() { cfg.Match(c4, s4, port); cfg.Match(c6, s6, port) }); n != 0 {
			t.Errorf("port %d: %v allocations per Match", port, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	cfg, err := Parse("c.yaml", []byte(matchPolicy))
	if err != nil {
		b.Fatal(err)
	}
	c, s := netip.MustParseAddr("2001:2:0:1::1"), netip.MustParseAddr("2001:2::99")
	b.ReportAllocs()
	for b.Loop() {
		cfg.Match(c, s, 8080) // the last rule: the worst case
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want PortRange
		ok   bool
	}{
		{"1", PortRange{1, 1}, true},
		{"65535", PortRange{65535, 65535}, true},
		{"20000-20010", PortRange{20000, 20010}, true},
		{"80-80", PortRange{80, 80}, true},
		{"0", PortRange{}, false},
		{"65536", PortRange{}, false},
		{"1-65536", PortRange{}, false},
		{"10-5", PortRange{}, false},
		{"-5", PortRange{}, false},
		{"5-", PortRange{}, false},
		{"+5", PortRange{}, false},
		{"5 - 6", PortRange{}, false},
		{"1-2-3", PortRange{}, false},
		{"", PortRange{}, false},
	}
	for _, tt := range tests {
		got, msg := parsePort(tt.in)
		if (msg == "") != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parsePort(%q) = %v, %q", tt.in, got, msg)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"198.18.0.0/15", "198.18.0.0/15"},
		{"198.18.2.10", "198.18.2.10/32"},
		{"2001:2::/48", "2001:2::/48"},
		{"2001:2::1", "2001:2::1/128"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::/0", "::/0"},
		{"198.18.2.10/24", ""},
		{"198.18.0.0/33", ""},
		{"::ffff:198.18.0.1", ""},
		{"fe80::1%eth0", ""},
		{"fe80::1%eth0/64", ""},
		{"eth0", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, msg := parsePrefix(tt.in)
		if tt.want == "" {
			if msg == "" {
				t.Errorf("parsePrefix(%q) = %s, want an error", tt.in, got)
			}
			continue
		}
		if msg != "" || got.String() != tt.want {
			t.Errorf("parsePrefix(%q) = %s, %q; want %s", tt.in, got, msg, tt.want)
		}
	}
}

func TestWarnings(t *testing.T) {
	src := `
intercept:
  - {iface: lo, to: [198.18.2.0/24]}
  - {iface: nosuchif0, to: [198.18.1.0/24]}
rules:
  - name: wide
    match: {clients: [198.18.0.0/15], server_ports: ["1-1024"]}
    client_isn: random
  - name: narrow
    match: {clients: [198.18.1.0/24], servers: [198.18.2.1], server_ports: [80, 443]}
    client_isn: random
  - name: other-port
    match: {clients: [198.18.1.0/24], server_ports: [8080]}
  - name: v6
    match: {clients: ["2001:2::/48"], server_ports: [80]}
  - name: catch-all
  - name: after-catch-all
    match: {server_ports: [9]}
`
	cfg, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	got := formatAll(cfg.Warnings())
	for _, want := range []string{
		`c.yaml:9:5: warning: rule "narrow" can never match: rule "wide" (line 6)`,
		`c.yaml:17:5: warning: rule "after-catch-all" can never match: rule "catch-all" (line 16)`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	for _, not := range []string{`"lo"`, `"other-port" can`, `"v6" can`, `"catch-all" can`} {
		if strings.Contains(got, not) {
			t.Errorf("warnings mention %s:\n%s", not, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 2 {
		t.Errorf("%d warnings:\n%s", n, got)
	}
	// A missing interface is not a warning but a host problem: run refuses it.
	if got := formatAll(cfg.HostProblems()); !strings.Contains(got, `c.yaml:4:5: warning: intercept interface "nosuchif0" does not exist on this host`) || strings.Contains(got, `"lo"`) {
		t.Errorf("host problems:\n%s", got)
	}
	empty, _ := Parse("c.yaml", nil)
	if w := empty.Warnings(); len(w) != 1 || !strings.Contains(w[0].Msg, "no intercept entries") {
		t.Errorf("empty config warnings: %v", w)
	}
}

func formatAll(fs []Finding) string {
	lines := make([]string, len(fs))
	for i, f := range fs {
		lines[i] = f.Format("c.yaml", "warning")
	}
	return strings.Join(lines, "\n")
}
