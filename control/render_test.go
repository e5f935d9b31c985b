package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// sliceFlows adapts a slice to the iterator the renderers take, like (*Client).Flows.
func sliceFlows(fs []FlowInfo) func(func(FlowInfo) error) error {
	return func(yield func(FlowInfo) error) error {
		for _, f := range fs {
			if err := yield(f); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestWriteFlowsTable_OneConntrackStyleLinePerFlow(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFlowsTable(&b, sliceFlows(testFlows())); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"tcp  established client=198.18.1.2:40000 server=198.18.2.2:5001 rule=r1 generation=1 shift_c2s=+123 shift_s2c=-456 packets_c2s=10 bytes_c2s=1234 packets_s2c=8 bytes_s2c=567 age_seconds=12 idle_seconds=1\n" +
		"tcp  syn_sent    client=[2001:2::1]:41000 server=[2001:2:0:1::2]:179 rule=bgp exempt=tcp_md5 generation=2 shift_c2s=0 shift_s2c=0 packets_c2s=0 bytes_c2s=0 packets_s2c=0 bytes_s2c=0 age_seconds=0 idle_seconds=0\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteFlowsTable_EmptyRuleShownAsDash(t *testing.T) {
	var b bytes.Buffer
	f := testFlows()[0]
	f.Rule, f.Exempt = "", "no_rule"
	if err := WriteFlowsTable(&b, sliceFlows([]FlowInfo{f})); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), " rule=- exempt=no_rule ") {
		t.Errorf("line %q", b.String())
	}
}

func TestWriteFlowsTable_IteratorErrorIsReturnedAfterWhatWasListed(t *testing.T) {
	var b bytes.Buffer
	boom := errors.New("cut")
	err := WriteFlowsTable(&b, func(yield func(FlowInfo) error) error {
		if err := yield(testFlows()[0]); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("err %v, output %q", err, b.String())
	}
}

func TestAppendDelta_SignedDistance(t *testing.T) {
	tests := []struct {
		off  uint32
		want string
	}{
		{0, "0"},
		{1, "+1"},
		{123, "+123"},
		{0xFFFFFF85, "-123"},
		{0x7FFFFFFF, "+2147483647"},
		{0x80000000, "-2147483648"},
		{0xFFFFFFFF, "-1"},
	}
	for _, tt := range tests {
		if got := string(appendDelta(nil, tt.off)); got != tt.want {
			t.Errorf("appendDelta(%#x) = %s, want %s", tt.off, got, tt.want)
		}
	}
}

func TestFormatSeconds_TwoUnits(t *testing.T) {
	tests := []struct {
		sec  float64
		want string
	}{
		{-1, "0s"},
		{0.9, "0s"},
		{42.7, "42s"},
		{60, "1m0s"},
		{303, "5m3s"},
		{7260, "2h1m"},
		{86400*3 + 4*3600 + 59, "3d4h"},
	}
	for _, tt := range tests {
		if got := formatSeconds(tt.sec); got != tt.want {
			t.Errorf("formatSeconds(%v) = %s, want %s", tt.sec, got, tt.want)
		}
	}
}

// contractFlowKeys are the `flows --json` fields the contract names, plus idle_seconds.
var contractFlowKeys = []string{
	"age_seconds", "assured", "bytes_c2s", "bytes_s2c", "client", "exempt", "generation", "idle_seconds",
	"offset_c2s", "offset_s2c", "packets_c2s", "packets_s2c", "rule", "server", "shift_c2s", "shift_s2c", "state",
}

func TestWriteFlowsJSON_ArrayWithContractFields(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFlowsJSON(&b, sliceFlows(testFlows())); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, b.String())
	}
	if len(got) != 2 {
		t.Fatalf("got %d elements", len(got))
	}
	var keys []string
	for k := range got[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, contractFlowKeys) {
		t.Errorf("keys %v\nwant %v", keys, contractFlowKeys)
	}
	first := got[0]
	if first["client"] != "198.18.1.2:40000" || first["offset_s2c"] != float64(0xFFFFFE38) || first["exempt"] != "" {
		t.Errorf("first flow %v", first)
	}
	if got[1]["client"] != "[2001:2::1]:41000" || got[1]["exempt"] != "tcp_md5" {
		t.Errorf("second flow %v", got[1])
	}
	// One element per line, so the listing diffs and greps well.
	if n := strings.Count(b.String(), "\n"); n != 4 {
		t.Errorf("%d lines, want 4:\n%s", n, b.String())
	}
}

func TestWriteFlowsJSON_EmptyIsEmptyArray(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFlowsJSON(&b, sliceFlows(nil)); err != nil || b.String() != "[]\n" {
		t.Errorf("%q, %v", b.String(), err)
	}
}

func TestWriteFlowsJSON_ErrorLeavesArrayOpen(t *testing.T) {
	var b bytes.Buffer
	boom := errors.New("cut")
	err := WriteFlowsJSON(&b, func(yield func(FlowInfo) error) error {
		_ = yield(testFlows()[0])
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
	if json.Valid(b.Bytes()) {
		t.Errorf("a cut listing must not look complete: %s", b.String())
	}
}

func TestStatusJSON_ContractFields(t *testing.T) {
	b, err := json.Marshal(testStatus())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "uptime_seconds", "generation", "last_reload_error", "steering", "flows_active", "counters",
		"last_reload_time", "steering_detail", "flows_by_state"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, b)
		}
	}
	if m["last_reload_time"] != "2025-11-25T04:51:00.000000123Z" {
		t.Errorf("last_reload_time = %v", m["last_reload_time"])
	}
	// Never reloaded: no zero time in the output.
	b, _ = json.Marshal(Status{})
	if strings.Contains(string(b), "last_reload_time") {
		t.Errorf("zero reload time serialised: %s", b)
	}
}

func TestWriteStatus_Text(t *testing.T) {
	s := testStatus()
	s.LastReloadTime = time.Time{}
	var b bytes.Buffer
	if err := WriteStatus(&b, s); err != nil {
		t.Fatal(err)
	}
	want := `seqshiftd 1.2.3, up 1h2m
steering:     installed
policy:       generation 3, not reloaded since start
last reload:  FAILED, generation 3 stays in force: seqshiftd.yaml:4:3: unknown field "rulez"
flows:        12 active (syn_sent 2, established 10)
counters:
  malformed             7
  rewritten_packets_c2s 1099511627776
`
	if b.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteStatus_SteeringMissingAndRecentReload(t *testing.T) {
	s := Status{
		Version: "v", Generation: 2, SteeringDetail: "missing: run seqshiftd teardown and restart",
		LastReloadTime: time.Now().Add(-90 * time.Second), FlowsByState: map[string]int{"weird": 1, "established": 0},
	}
	var b bytes.Buffer
	if err := WriteStatus(&b, s); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"steering:     NOT INSTALLED: missing: run seqshiftd teardown and restart\n",
		"(1m30s ago)",
		"flows:        0 active (weird 1)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "last reload:") || strings.Contains(out, "counters:") {
		t.Errorf("status shows an empty section:\n%s", out)
	}
}

// The renderers take (*Client).Flows as it is, which is how the CLI streams a listing from the
// daemon to stdout without holding it.
var _ = func(c *Client, w *bytes.Buffer) error {
	if err := WriteFlowsTable(w, c.Flows); err != nil {
		return err
	}
	return WriteFlowsJSON(w, c.Flows)
}

// TestWriteFlows_TextKeysAreJSONNames: a script can read either form with the same names.
func TestWriteFlows_TextKeysAreJSONNames(t *testing.T) {
	var text, js bytes.Buffer
	fs := testFlows()
	if err := WriteFlowsTable(&text, sliceFlows(fs)); err != nil {
		t.Fatal(err)
	}
	if err := WriteFlowsJSON(&js, sliceFlows(fs)); err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(js.Bytes(), &objs); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimSpace(text.String()), "\n") {
		for _, field := range strings.Fields(line) {
			k, v, ok := strings.Cut(field, "=")
			if !ok {
				continue // "tcp" and the state column
			}
			jv, ok := objs[i][k]
			if !ok {
				t.Errorf("text key %q is not a JSON name", k)
				continue
			}
			want := fmt.Sprint(jv)
			if f, ok := jv.(float64); ok && strings.HasSuffix(k, "_seconds") {
				want = fmt.Sprint(int64(f)) // whole seconds in the text
			}
			if k != "rule" && strings.TrimPrefix(v, "+") != want {
				t.Errorf("flow %d: text %s=%s, JSON %v", i, k, v, jv)
			}
		}
	}
	if objs[0]["shift_s2c"] != float64(-456) {
		t.Errorf("JSON shift_s2c = %v, want -456", objs[0]["shift_s2c"])
	}
}

func TestWriteEvent_ConntrackStyleTagsAndJSONLines(t *testing.T) {
	f := testFlows()[0]
	var b bytes.Buffer
	if err := WriteEvent(&b, Event{Type: EventNew, Flow: f}, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteEvent(&b, Event{Type: EventDestroy, Flow: f}, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "[NEW]     tcp  established client=198.18.1.2:40000 ") ||
		!strings.HasPrefix(lines[1], "[DESTROY] tcp  established client=198.18.1.2:40000 ") {
		t.Errorf("text events:\n%s", b.String())
	}
	b.Reset()
	if err := WriteEvent(&b, Event{Type: EventNew, Flow: f}, true); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || got["event"] != "new" || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("JSON event %q: %v", b.String(), err)
	}
	if fl, _ := got["flow"].(map[string]any); fl["shift_s2c"] != float64(-456) || fl["client"] != "198.18.1.2:40000" {
		t.Errorf("JSON event flow %v", got["flow"])
	}
}
