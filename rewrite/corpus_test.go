package rewrite

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFuzzCorpus_CoversEveryReason keeps the checked-in regressions of FuzzClassifyShift (which
// `go test` runs every time) meaningful: together they must make Classify report every reason
// a packet can be malformed for, and hand Shift a packet it must refuse.
func TestFuzzCorpus_CoversEveryReason(t *testing.T) {
	files, err := filepath.Glob("testdata/fuzz/FuzzClassifyShift/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	seen := map[Reason]bool{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a corpus file of FuzzClassifyShift", name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pkt := []byte(s)
		var p Packet
		Classify(pkt, &p)
		switch p.Kind {
		case KindMalformed:
			seen[p.Reason] = true
		case KindOther:
			if Shift(pkt, &p, 1, 1, false) == ReasonNotRewritable {
				seen[ReasonNotRewritable] = true
			}
		}
	}
	for r := Reason(1); r < NumReasons; r++ {
		if !seen[r] {
			t.Errorf("no corpus entry is %v", r)
		}
	}
}
