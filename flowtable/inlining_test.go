package flowtable

import (
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/inlinetest"
)

// TestInlining pins what Lookup does per packet (hash, shard, probe match) and the flow
// accessors and delta rules the datapath calls on every segment.
func TestInlining(t *testing.T) {
	inlinetest.Check(t, "github.com/seqshiftd/seqshiftd/flowtable", []string{
		"(*Table).hashEndpoint", "mix", "(*Table).shardOf", "tag", "(*index).home", "matchTag",
		"(*Key).match", "(*Key).equal", "(*index).isDeleted",
		"Dir.Reverse", "(*Flow).State", "(*Flow).Exempt", "(*Flow).ClientISN", "(*Flow).Offset",
		"(*Flow).Offsets", "DeltasOf", "QuoteDeltasOf", "(*Flow).Deltas", "(*Flow).QuoteDeltas",
		"Deltas.Zero", "Deltas.Inverse",
		"(*Flow).account", "(*Flow).NewConnection", "(*Flow).Window", "(*Flow).Assured",
	})
}
