package policy

import (
	"fmt"
	"testing"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tun"
)

// TestLimits_FileAndOwnerAgree feeds every boundary of every limit another package owns to
// both the file decoder and the owner's own check, and requires the same verdict: a value
// `seqshiftd check` accepts is one `seqshiftd run` accepts, and the other way round. (The
// drift this pins: check used to accept steering.table 3000000000, which run then refused.)
func TestLimits_FileAndOwnerAgree(t *testing.T) {
	for _, tc := range []struct {
		section, key string
		check        func(int64) error
		values       []int64
	}{
		{"steering", "table", steering.CheckTable, []int64{
			steering.MinTable - 1, steering.MinTable, steering.MaxTable, steering.MaxTable + 1,
			252, 253, 254, 255, 256, 3000000000, 1<<32 - 1, 1 << 32, -1}},
		{"steering", "priority", steering.CheckPriority, []int64{
			steering.MinPriority - 1, steering.MinPriority, steering.MaxPriority, steering.MaxPriority + 1, 32767}},
		{"steering", "protocol", steering.CheckProtocol, []int64{
			steering.MinProtocol - 1, steering.MinProtocol, steering.MaxProtocol, steering.MaxProtocol + 1, 0}},
		{"tun", "mtu", tun.CheckMTU, []int64{
			-1, 0, 1, tun.MinMTU - 1, tun.MinMTU, tun.DefaultMTU, tun.MaxMTU, tun.MaxMTU + 1}},
		{"tun", "queues", tun.CheckQueues, []int64{-1, 0, 1, tun.MaxQueues, tun.MaxQueues + 1}},
		{"flows", "max", flowtable.CheckMaxFlows, []int64{
			-1, 0, 1, flowtable.DefaultMaxFlows, flowtable.MaxMaxFlows, flowtable.MaxMaxFlows + 1}},
	} {
		for _, v := range tc.values {
			name := fmt.Sprintf("%s.%s=%d", tc.section, tc.key, v)
			t.Run(name, func(t *testing.T) {
				cfg, err := Parse("limits.yaml", fmt.Appendf(nil, "%s: {%s: %d}\n", tc.section, tc.key, v))
				owner := tc.check(v)
				if (err == nil) != (owner == nil) {
					t.Fatalf("the file says %v, the owner says %v", err, owner)
				}
				if err != nil {
					return
				}
				got := map[string]int{
					"steering.table": cfg.Steering.Table, "steering.priority": cfg.Steering.Priority,
					"steering.protocol": cfg.Steering.Protocol, "tun.mtu": cfg.Tun.MTU,
					"tun.queues": cfg.Tun.Queues, "flows.max": cfg.Flows.Max,
				}[tc.section+"."+tc.key]
				if int64(got) != v {
					t.Errorf("accepted, but the config holds %d", got)
				}
			})
		}
	}
}

// TestLimits_DefaultsAreTheOwners checks that an empty file carries the owners' defaults.
func TestLimits_DefaultsAreTheOwners(t *testing.T) {
	cfg, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Steering != (Steering{steering.DefaultTable, steering.DefaultPriority, steering.DefaultProtocol}) {
		t.Errorf("steering defaults %+v", cfg.Steering)
	}
	if cfg.Flows.Max != flowtable.DefaultMaxFlows {
		t.Errorf("flows.max default %d, flowtable's %d", cfg.Flows.Max, flowtable.DefaultMaxFlows)
	}
	for name, check := range map[string]func(int64) error{
		"steering.table": steering.CheckTable, "steering.priority": steering.CheckPriority,
		"steering.protocol": steering.CheckProtocol, "flows.max": flowtable.CheckMaxFlows,
	} {
		v := map[string]int{"steering.table": cfg.Steering.Table, "steering.priority": cfg.Steering.Priority,
			"steering.protocol": cfg.Steering.Protocol, "flows.max": cfg.Flows.Max}[name]
		if err := check(int64(v)); err != nil {
			t.Errorf("default %s = %d is refused by its owner: %v", name, v, err)
		}
	}
}
