package main

import (
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/datapath"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/steering"
)

// Status implements control.Handler.
func (d *daemon) Status() control.Status {
	pol := d.engine.Policy()
	st := d.table.Stats()
	installed, err := steering.Installed(d.steer)
	detail := "installed"
	if err != nil {
		detail = err.Error()
	} else if !installed {
		detail = "missing: run seqshiftd teardown and restart, or check `ip rule`"
	}
	d.reloadMu.Lock()
	lastErr, lastReload := d.lastReloadErr, d.lastReload
	ok, failed := d.reloadsOK, d.reloadsFailed
	d.reloadMu.Unlock()
	c := d.engine.Counters()
	counters := map[string]uint64{
		"rewritten_packets_c2s": c.RewrittenPackets[flowtable.ClientToServer],
		"rewritten_packets_s2c": c.RewrittenPackets[flowtable.ServerToClient],
		"rewritten_bytes_c2s":   c.RewrittenBytes[flowtable.ClientToServer],
		"rewritten_bytes_s2c":   c.RewrittenBytes[flowtable.ServerToClient],
		"icmp_translated":       c.ICMPTranslated,
		"flows_refused":         c.Refused,
		"flows_adopted":         c.Adopted,
		"flows_restarted":       c.Restarted,
		"read_errors":           c.ReadErrors,
		"write_errors":          c.WriteErrors,
		"reloads_ok":            ok,
		"reloads_failed":        failed,
		"flows_created":         st.Created,
		"flows_expired":         st.Expired,
		"flows_evicted":         st.Evicted,
	}
	var malformed uint64
	for _, v := range c.Malformed {
		malformed += v
	}
	counters["malformed"] = malformed
	for i, v := range c.Passed {
		counters["passed_"+datapath.Pass(i).String()] = v
	}
	byState := make(map[string]int)
	for s, n := range st.ByState {
		if n > 0 {
			byState[flowtable.State(s).String()] = n
		}
	}
	return control.Status{
		Version:         buildVersion(),
		UptimeSeconds:   time.Since(d.started).Seconds(),
		Generation:      pol.Generation,
		LastReloadError: lastErr,
		LastReloadTime:  lastReload,
		Steering:        installed && err == nil,
		SteeringDetail:  detail,
		FlowsActive:     st.Active,
		FlowsByState:    byState,
		Counters:        counters,
	}
}

// Flows implements control.Handler.
func (d *daemon) Flows(fn func(control.FlowInfo) bool) {
	now := time.Now()
	d.table.Range(func(f *flowtable.Flow) bool {
		return fn(flowInfo(f, now))
	})
}

func flowInfo(f *flowtable.Flow, now time.Time) control.FlowInfo {
	c2s, s2c := f.Counters(flowtable.ClientToServer), f.Counters(flowtable.ServerToClient)
	exempt := ""
	if e := f.Exempt(); e != flowtable.ExemptNone {
		exempt = e.String()
	}
	return control.FlowInfo{
		Client:      f.Client(),
		Server:      f.Server(),
		State:       f.State().String(),
		Rule:        f.Rule(),
		Generation:  f.Generation(),
		OffsetC2S:   uint32(f.Offset(flowtable.ClientToServer)),
		OffsetS2C:   uint32(f.Offset(flowtable.ServerToClient)),
		Exempt:      exempt,
		PacketsC2S:  c2s.Packets,
		BytesC2S:    c2s.Bytes,
		PacketsS2C:  s2c.Packets,
		BytesS2C:    s2c.Bytes,
		AgeSeconds:  now.Sub(f.Created()).Seconds(),
		IdleSeconds: now.Sub(f.LastSeen()).Seconds(),
	}
}
