package seqnum

import (
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/inlinetest"
)

// TestInlining pins every operation: they stand for one machine instruction each in the
// datapath and must cost no more than the raw uint32 arithmetic they replace.
func TestInlining(t *testing.T) {
	inlinetest.Check(t, "github.com/seqshiftd/seqshiftd/seqnum", []string{
		"Value.Add", "Value.Sub", "Value.LessThan", "Value.LessThanEq", "Value.InRange",
		"Value.InWindow", "Delta.Neg", "Delta.Add", "Delta.Signed",
	})
}
