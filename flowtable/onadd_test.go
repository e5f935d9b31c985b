package flowtable

import (
	"testing"
)

// TestOnAdd_ReportsEachAdmittedAndAdoptedFlowOnce: a watcher sees a flow appear exactly once,
// at the SYN (Admit) or when it is picked up mid-stream (Adopt), never for an Adopt that found
// the flow already there.
func TestOnAdd_ReportsEachAdmittedAndAdoptedFlowOnce(t *testing.T) {
	added := new(removals) // the same recorder serves for additions
	tab := New(Config{MaxFlows: 16, OnAdd: added.hook})
	a, err := tab.Admit(ap("198.18.1.1:1000"), ap("198.18.2.1:80"), Init{Rule: "r"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tab.Adopt(ap("198.18.1.1:1001"), ap("198.18.2.1:80"), Init{Rule: "r"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := tab.Adopt(ap("198.18.1.1:1001"), ap("198.18.2.1:80"), Init{Rule: "r"})
	if err != nil || again != b {
		t.Fatalf("second Adopt: %v, same flow %v", err, again == b)
	}
	got := added.list()
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("OnAdd saw %d flows, want the admitted and the adopted one", len(got))
	}
}
