package main

import (
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/counter"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// steeringInstalled reports whether what sends intercepted traffic through the datapath is in
// place: the policy rules and routes (TUN datapath) or the tc programs (kernel datapath).
// status's health check and the steering_installed metric both ask it.
func (d *daemon) steeringInstalled() (bool, error) {
	if d.kernel != nil {
		return tcshift.Installed(d.kernelCfg)
	}
	return steering.Installed(d.steering)
}

// Status implements control.Handler.
func (d *daemon) Status() control.Status {
	st := d.table.Stats()
	installed, err := d.steeringInstalled()
	missing := "missing: run seqshiftd teardown and restart, or check `ip rule`"
	if d.kernel != nil {
		missing = "missing: the tc programs are not attached to every intercept interface and the TAP; " +
			"run seqshiftd teardown and restart, or check `tc filter show dev IFACE ingress`"
	}
	detail := "installed"
	if err != nil {
		detail = err.Error()
	} else if !installed {
		detail = missing
	}
	// The policy in force and the reload history are read together: reload swaps the policy
	// under the same lock, so a status never shows a reload's time with the generation before it
	// (what `seqshiftd reload` waits on).
	d.reloadMu.Lock()
	pol := d.engine.Policy()
	lastErr, lastReload := d.lastReloadErr, d.lastReload
	ok, failed := d.reloadsOK, d.reloadsFailed
	d.reloadMu.Unlock()
	counters := map[string]uint64{
		"reloads_ok":     ok,
		"reloads_failed": failed,
		"flows_created":  st.Created,
		"flows_expired":  st.Expired,
		"flows_evicted":  st.Evicted,
		// Carried over at start from a previous instance's kernel map: connections newer
		// than the last snapshot, which a crash would otherwise have lost.
		"flows_recovered": d.recovered,
	}
	for _, s := range d.counterSets() {
		counter.AddStatus(counters, s)
	}
	d.addRuleStatus(counters)
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
		Datapath:        d.datapath.String(),
		DatapathDetail:  d.datapathWhy,
		FlowsActive:     st.Active,
		FlowsByState:    byState,
		FlowsUnassured:  st.Unassured,
		Counters:        counters,
	}
}

// counterSets are every source of counters that status and metrics show, each described by
// its owner (see package counter).
func (d *daemon) counterSets() []counter.Set {
	if d.kernel != nil {
		return []counter.Set{d.engine, d.kernel}
	}
	return []counter.Set{d.engine}
}

// Flows implements control.Handler.
func (d *daemon) Flows(fn func(control.FlowInfo) bool) {
	d.syncKernelNow()
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
	shiftedIn := ""
	if m := f.KernelMode(); m != flowtable.KernelNone {
		shiftedIn = m.String()
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
		Assured:     f.Assured(),
		ShiftedIn:   shiftedIn,
		PacketsC2S:  c2s.Packets,
		BytesC2S:    c2s.Bytes,
		PacketsS2C:  s2c.Packets,
		BytesS2C:    s2c.Bytes,
		AgeSeconds:  now.Sub(f.Created()).Seconds(),
		IdleSeconds: now.Sub(f.LastSeen()).Seconds(),
	}
}
