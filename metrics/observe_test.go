package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCollector_ExposesObserveModePerRule: what observe saw, per rule, mode and outcome, and
// the traffic of observed flows beside the rewritten traffic of active ones.
func TestCollector_ExposesObserveModePerRule(t *testing.T) {
	m := New(func(s *Snapshot) {
		s.Observed = map[RuleDir]Traffic{{"try", ClientToServer}: {12, 3400}, {"try", ServerToClient}: {10, 1 << 20}}
		s.RuleConnections = map[RuleOutcome]uint64{
			{"try", "observe", "admitted"}: 7, {"try", "observe", "refused"}: 1, {"try", "active", "admitted"}: 2,
		}
		s.RuleMalformed = map[RuleMode]uint64{{"try", "active"}: 4}
	})
	const want = `
# HELP seqshiftd_observed_bytes_total TCP payload bytes of the packets of observed flows, by rule and direction.
# TYPE seqshiftd_observed_bytes_total counter
seqshiftd_observed_bytes_total{direction="c2s",rule="try"} 3400
seqshiftd_observed_bytes_total{direction="s2c",rule="try"} 1.048576e+06
# HELP seqshiftd_observed_packets_total Packets of observed flows (an observing rule's: tracked, never rewritten), by rule and direction. With TUN offload a GSO super-packet counts once.
# TYPE seqshiftd_observed_packets_total counter
seqshiftd_observed_packets_total{direction="c2s",rule="try"} 12
seqshiftd_observed_packets_total{direction="s2c",rule="try"} 10
# HELP seqshiftd_rule_connections_total TCP connections each rule matched, by mode (observe, active) and outcome (admitted at the SYN, picked_up mid-stream, tcp_md5 and tcp_ao: exempt because signed, refused: the flow table was full).
# TYPE seqshiftd_rule_connections_total counter
seqshiftd_rule_connections_total{mode="active",outcome="admitted",rule="try"} 2
seqshiftd_rule_connections_total{mode="observe",outcome="admitted",rule="try"} 7
seqshiftd_rule_connections_total{mode="observe",outcome="refused",rule="try"} 1
# HELP seqshiftd_rule_malformed_packets_total Packets of a rule's flows that could not be parsed or rewritten, by rule and mode (those whose addresses or ports cannot be read name no flow and are in malformed_packets_total only).
# TYPE seqshiftd_rule_malformed_packets_total counter
seqshiftd_rule_malformed_packets_total{mode="active",rule="try"} 4
`
	names := []string{"seqshiftd_observed_bytes_total", "seqshiftd_observed_packets_total",
		"seqshiftd_rule_connections_total", "seqshiftd_rule_malformed_packets_total"}
	if err := testutil.CollectAndCompare(m.collector, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(m.collector, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
