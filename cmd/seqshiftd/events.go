package main

import (
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/flowtable"
)

// Events implements control.EventSource: `seqshiftd flows --watch`.
func (d *daemon) Events() *control.Events { return d.events }

// flowAdded is the flow table's OnAdd hook. It runs on a datapath goroutine at a new
// connection's SYN: with nobody watching it costs one atomic load.
func (d *daemon) flowAdded(f *flowtable.Flow) {
	if d.events.Watching() {
		now := time.Now()
		d.events.Publish(control.Event{Type: control.EventNew, Time: now, Flow: flowInfo(f, now)})
	}
}

// flowGone tells watchers a flow left the table (from the table's OnRemove hook, removed).
func (d *daemon) flowGone(f *flowtable.Flow) {
	if d.events.Watching() {
		now := time.Now()
		d.events.Publish(control.Event{Type: control.EventDestroy, Time: now, Flow: flowInfo(f, now)})
	}
}
