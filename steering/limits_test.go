package steering

import (
	"fmt"
	"testing"
)

// TestLimits_InstallRefusesExactlyWhatCheckRefuses pins that the numbers Install and Remove
// start from (Config.ids) are validated by the same Check functions policy calls, with zero
// standing for the default.
func TestLimits_InstallRefusesExactlyWhatCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    func(*Config, int)
		check  func(int64) error
		values []int
	}{
		{"table", func(c *Config, v int) { c.Table = v }, CheckTable,
			[]int{-1, MinTable, 252, 253, 254, 255, 256, MaxTable, MaxTable + 1, 3000000000}},
		{"priority", func(c *Config, v int) { c.Priority = v }, CheckPriority,
			[]int{-1, MinPriority, MaxPriority, MaxPriority + 1}},
		{"protocol", func(c *Config, v int) { c.Protocol = v }, CheckProtocol,
			[]int{-1, MinProtocol - 1, MinProtocol, MaxProtocol, MaxProtocol + 1}},
	} {
		for _, v := range tc.values {
			t.Run(fmt.Sprintf("%s=%d", tc.name, v), func(t *testing.T) {
				var c Config
				tc.set(&c, v)
				_, err := c.ids()
				if want := tc.check(int64(v)); (err == nil) != (want == nil) {
					t.Fatalf("ids: %v; Check: %v", err, want)
				}
			})
		}
	}
	if id, err := (Config{}).ids(); err != nil || id != (ids{DefaultTable, DefaultPriority, DefaultProtocol}) {
		t.Errorf("zero Config: %+v, %v; want the defaults", id, err)
	}
}
