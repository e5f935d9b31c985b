package main

import (
	"testing"
	"time"
)

// A SIGHUP must not push the next snapshot back: only a changed interval resets the ticker, and
// a change that finds a snapshot overdue under the new interval asks for one at once.
func TestRetimeSnapshots_OnlyAChangedIntervalResetsTheTicker(t *testing.T) {
	d := &daemon{lastSnapshot: time.Now()}
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for range 100 { // a reload storm with the same interval
		if d.retimeSnapshots(tick, time.Second, time.Second) {
			t.Fatal("an unchanged interval asked for a snapshot")
		}
	}
	if d.retimeSnapshots(tick, time.Second, 2*time.Second) {
		t.Error("a fresh snapshot is not overdue")
	}
	d.lastSnapshot = time.Now().Add(-3 * time.Second)
	if !d.retimeSnapshots(tick, 2*time.Second, time.Second) {
		t.Error("a snapshot 3s old is not overdue under a 1s interval")
	}
	start := time.Now()
	select {
	case <-tick.C:
		// Reset from an hour to 1s: it fires about 1s from the reset, not an hour.
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("the ticker fired after %v, before its new interval", d)
		}
	case <-time.After(5 * time.Second):
		t.Error("the ticker was not reset to the new 1s interval")
	}
}
