package policy

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that a rejected file always says where,
// and that whatever Parse accepts can be used: matched, planned, summarised, compared.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(examplePath); err == nil {
		f.Add(data)
	}
	f.Add([]byte(matchPolicy))
	f.Add([]byte("tun: {name: a, mtu: 4294967296}\n"))
	f.Add([]byte("rules:\n  - {name: a, client_isn: range 900-100, match: {server_ports: [\"20000-20010\", 0]}}\n"))
	f.Add([]byte("a: &x [*x]\nrules: &r [*r]\n"))
	f.Add([]byte("intercept: [{iface: e, to: &p [\"2001:2::/48\", *p]}]\n"))
	f.Add([]byte("rules:\n  - name: s\n    client_isn: sequential 4294967295 4294967295\n    server_isn: offset -1\n"))
	f.Add([]byte("---\n...\n---\n"))
	f.Add([]byte("log: !!binary aGVsbG8=\n"))
	client, server := netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.2.1")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v is not a non-empty Errors", err)
			}
			for _, e := range es {
				if e.Line < 1 || e.Col < 1 || !strings.HasPrefix(e.Error(), "f.yaml:") {
					t.Fatalf("error without a position: %q", e.Error())
				}
			}
			return
		}
		_ = cfg.Summary()
		_ = cfg.RestartNeeded(Defaults())
		cfg.Inherit(cfg)
		r := cfg.Match(client, server, 80)
		for _, r := range cfg.Rules {
			r.Client.Plan(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(server, 80))
			r.Server.Plan(netip.AddrPortFrom(server, 80), netip.AddrPortFrom(client, 1))
			_ = r.Client.String() + r.Server.String()
		}
		_ = r
	})
}
