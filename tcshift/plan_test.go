package tcshift

import (
	"sort"
	"strings"
	"testing"
)

// TestPlan_IsWhatAttachInstalls: the tc lines of the plan are exactly the qdiscs and filters
// Attach leaves on a fresh TAP and interface.
func TestPlan_IsWhatAttachInstalls(t *testing.T) {
	e := newEnv(t)
	plan, err := Plan(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.dp.Attach(); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	var planned []string
	for _, l := range plan {
		if rest, ok := strings.CutPrefix(l, "tc "); ok {
			planned = append(planned, rest)
		}
	}
	sort.Strings(planned)
	if got := tcState(t, "x0", "tap0"); strings.Join(got, "\n") != strings.Join(planned, "\n") {
		t.Errorf("attached:\n%s\nplanned:\n%s", strings.Join(got, "\n"), strings.Join(planned, "\n"))
	}
	if !strings.Contains(strings.Join(plan, "\n"), "bpf map flows: 1024 entries") {
		t.Errorf("plan does not size the flows map:\n%s", strings.Join(plan, "\n"))
	}
}
