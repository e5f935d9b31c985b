package rewrite

import (
	"testing"

	"github.com/seqshiftd/seqshiftd/internal/inlinetest"
)

// TestInlining pins the helpers Shift and Classify call per field: the checksum arithmetic
// (whose sums must stay in registers) and the header accessors.
func TestInlining(t *testing.T) {
	inlinetest.Check(t, "github.com/seqshiftd/seqshiftd/rewrite", []string{
		"change32", "change16", "fold", "update", "oddToEven", "shiftBlock",
		"TCP.SequenceNumber", "TCP.SetSequenceNumber", "TCP.AckNumber", "TCP.SetAckNumber",
		"TCP.Checksum", "TCP.SetChecksum", "TCP.Flags", "TCP.DataOffset", "TCP.SourcePort",
		"TCP.DestinationPort", "ICMP.Checksum", "ICMP.SetChecksum",
		"IPv4.HeaderLength", "IPv4.TotalLength", "IPv4.Protocol", "IPv6.PayloadLength",
		"IPv6.NextHeader", "ipv4Bounds", "ipv6Bounds", "(*Packet).malformed", "(*Packet).edgeBits",
	})
}
