package policy

import (
	"slices"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("c.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRestartNeeded(t *testing.T) {
	base := `
tun: {name: sq0, mtu: 1500, queues: 2, offload: true}
intercept:
  - {iface: eth0, to: [198.18.2.0/24, 198.18.3.0/24]}
state_file: /a
control_socket: /c
metrics_listen: "127.0.0.1:9617"
log: {level: info, format: json}
flows: {max: 100}
steering: {table: 10, priority: 10, protocol: 10}
`
	running := mustParse(t, base)
	if got := mustParse(t, base).RestartNeeded(running); len(got) != 0 {
		t.Errorf("same file: %v", got)
	}
	// Reordered and split intercept entries steer exactly the same traffic.
	same := strings.Replace(base, "  - {iface: eth0, to: [198.18.2.0/24, 198.18.3.0/24]}",
		"  - {iface: eth0, to: [198.18.3.0/24]}\n  - {iface: eth0, to: [198.18.2.0/24]}", 1)
	if got := mustParse(t, same).RestartNeeded(running); len(got) != 0 {
		t.Errorf("reordered intercept: %v", got)
	}
	// Settings that apply live are not reported.
	live := base + "snapshot_interval: 1m\non_stop: restore\nmalformed: drop\nrules: [{name: x, client_isn: random}]\n"
	live = strings.Replace(live, "level: info", "level: debug", 1)
	live = strings.Replace(live, "flows: {max: 100}", "flows: {max: 100, when_full: drop, timeouts: {close: 5s}}", 1)
	if got := mustParse(t, live).RestartNeeded(running); len(got) != 0 {
		t.Errorf("live changes reported as needing a restart: %v", got)
	}
	changed := `
tun: {name: sq1, mtu: 9000, queues: 4, offload: false}
intercept:
  - {iface: eth1, to: [198.18.2.0/24]}
state_file: /b
control_socket: /d
metrics_listen: ""
log: {level: info, format: console}
flows: {max: 200}
steering: {table: 11, priority: 11, protocol: 11}
`
	want := []string{"tun.name", "tun.mtu", "tun.queues", "tun.offload", "intercept", "state_file",
		"control_socket", "metrics_listen", "log.format", "flows.max", "steering.table",
		"steering.priority", "steering.protocol"}
	if got := mustParse(t, changed).RestartNeeded(running); !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	if got := running.RestartNeeded(nil); got != nil {
		t.Errorf("no running config: %v", got)
	}
}

func TestInherit_SequentialCarriesAcrossReload(t *testing.T) {
	v1 := "rules:\n  - {name: seq, client_isn: sequential 100 10, server_isn: sequential 0 1}\n  - {name: other, client_isn: sequential 100 10}\n"
	old := mustParse(t, v1)
	next := func(s *Side) uint32 { _, v := s.Plan(tupleC, tupleS); return v }
	next(old.Rules[0].Client)
	next(old.Rules[0].Client) // old counter now at 120
	next(old.Rules[0].Server) // at 1
	next(old.Rules[1].Client) // at 110

	// Same name, same spec: continues. A changed spec or a new name starts afresh.
	v2 := "rules:\n  - {name: seq, client_isn: sequential 100 10, server_isn: sequential 0 2}\n  - {name: renamed, client_isn: sequential 100 10}\n"
	cfg := mustParse(t, v2)
	cfg.Inherit(old)
	if got := next(cfg.Rules[0].Client); got != 120 {
		t.Errorf("same name and spec: next ISN %d, want 120", got)
	}
	if got := next(cfg.Rules[0].Server); got != 0 {
		t.Errorf("changed step: next ISN %d, want START 0", got)
	}
	if got := next(cfg.Rules[1].Client); got != 100 {
		t.Errorf("renamed rule: next ISN %d, want START 100", got)
	}
	// The old policy, still serving an in-flight batch, shares the counter: no ISN twice.
	if got := next(old.Rules[0].Client); got != 130 {
		t.Errorf("old policy after reload: %d, want 130", got)
	}
	cfg.Inherit(nil) // no previous policy: nothing to do
}

func TestInherit_ModeChangeDoesNotInherit(t *testing.T) {
	old := mustParse(t, "rules:\n  - {name: r, client_isn: sequential 5 5}\n")
	cfg := mustParse(t, "rules:\n  - {name: r, client_isn: fixed 5}\n")
	cfg.Inherit(old)
	if cfg.Rules[0].Client.seq != nil {
		t.Errorf("a fixed side took a counter")
	}
}

func TestSummary(t *testing.T) {
	cfg := mustParse(t, `
rules:
  - name: plc
    match: {clients: [198.18.1.0/24], servers: [198.18.2.10], server_ports: [502, "20000-20010"]}
    client_isn: fixed   1000
  - name: pair
    client_isn: keyed
    server_isn: offset -5
    observe: true
  - name: watch
    match: {server_ports: [22]}
`)
	want := []string{
		"rule plc: match clients=198.18.1.0/24 servers=198.18.2.10/32 server_ports=502,20000-20010; client_isn: fixed 1000; server_isn: keep",
		"rule pair: match any; client_isn: keyed; server_isn: offset -5 (can pick up flows mid-stream); OBSERVE: tracked and counted with the offsets it would give, nothing rewritten",
		"rule watch: match server_ports=22; client_isn: keep; server_isn: keep (tracked, not shifted)",
	}
	if got := cfg.Summary(); !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
