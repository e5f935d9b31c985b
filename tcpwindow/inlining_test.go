package tcpwindow

import (
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/inlinetest"
)

// TestInlining pins the helpers Track runs per segment: sequence comparisons, the record's
// loads and the compare-and-swap advance.
func TestInlining(t *testing.T) {
	inlinetest.Check(t, "github.com/seqshiftd/seqshiftd/tcpwindow", []string{
		"after", "fwd", "back", "Side.Seen", "(*atomicSide).load", "advance", "(*Conn).Load",
		"(*Conn).Assured", "Verdict.Forward", "Verdict.ChangesState", "synSide",
	})
}
