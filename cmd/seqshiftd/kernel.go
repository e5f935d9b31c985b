package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/datapath"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// kernelSyncInterval is how often the daemon reads the kernel's flow map: the kernel's counters
// and last-seen times reach `flows`, status and metrics this late, and an established flow only
// the kernel forwards is kept alive this often (every timeout is far longer).
const kernelSyncInterval = 2 * time.Second

// kernelConfig is the kernel datapath the policy asks for, with the TAP it hands packets to.
// Entries naming the same interface are merged.
func kernelConfig(cfg *policy.Config, tap string) tcshift.Config {
	kc := tcshift.Config{
		TapName:  tap,
		Mark:     cfg.Kernel.Mark,
		MaxFlows: cfg.Flows.Max,
		Priority: uint16(cfg.Steering.Priority),
		PinDir:   cfg.Kernel.PinDir,
	}
	at := map[string]int{}
	for _, ic := range cfg.Intercept {
		i, ok := at[ic.Iface]
		if !ok {
			i = len(kc.Ifaces)
			at[ic.Iface] = i
			kc.Ifaces = append(kc.Ifaces, tcshift.Iface{Name: ic.Iface})
		}
		kc.Ifaces[i].To = append(kc.Ifaces[i].To, ic.To...)
	}
	return kc
}

// chooseDatapath decides which datapath runs: the one the file names, or for auto the kernel
// datapath unless this host cannot run it, in which case why says so.
func chooseDatapath(cfg *policy.Config) (dp policy.Datapath, why string, err error) {
	if cfg.Datapath == policy.DatapathTUN {
		return policy.DatapathTUN, "datapath: tun in the configuration", nil
	}
	problem := kernelProblem(cfg)
	switch {
	case problem == nil:
		return policy.DatapathKernel, "", nil
	case cfg.Datapath == policy.DatapathKernel:
		return 0, "", fmt.Errorf("datapath: kernel: %w", problem)
	}
	return policy.DatapathTUN, "the kernel datapath is not available here: " + problem.Error(), nil
}

// kernelProblem says why the kernel datapath cannot serve this configuration on this host.
func kernelProblem(cfg *policy.Config) error {
	if err := tcshift.Supported(); err != nil {
		return err
	}
	for _, ic := range cfg.Intercept {
		link, err := netlink.LinkByName(ic.Iface)
		if err != nil {
			return fmt.Errorf("intercept interface %s: %w", ic.Iface, err)
		}
		// The programs read and restore an Ethernet header; an L3 device (WireGuard, a TUN,
		// ip6tnl...) has none, and a bond or bridge port would see frames before its master.
		if a := link.Attrs(); a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
			return fmt.Errorf("intercept interface %s is not an Ethernet interface (link type %q)", ic.Iface, a.EncapType)
		}
	}
	return nil
}

// openKernel loads the programs, rebuilds their flow map from the table (the restored snapshot
// plus what a previous instance's map holds and the snapshot does not: connections newer than
// the last snapshot) and attaches them in place of any previous instance's. The engine must
// already exist (it writes the map).
func (d *daemon) openKernel(cfg *policy.Config) error {
	kc := kernelConfig(cfg, d.dev.Name())
	dp, err := tcshift.Load(kc, d.log.Named("tcshift"))
	if err != nil {
		return fmt.Errorf("load the kernel datapath: %w", err)
	}
	prevIfindex := map[tcshift.FlowKey]int{}
	recovered, lost := 0, 0
	carry := func(k tcshift.FlowKey, v tcshift.FlowValue) {
		before := d.table.Stats().Active
		if err := datapath.RecoverFlow(d.table, k, v); err != nil {
			lost++
			return
		}
		prevIfindex[k] = int(v.Ifindex)
		if d.table.Stats().Active > before {
			recovered++
		}
	}
	// A pinned map was reused by Load, entries included; otherwise the previous instance's map
	// is found through its attached programs.
	if kc.PinDir != "" {
		err = dp.Range(func(k tcshift.FlowKey, v *tcshift.FlowValue) bool { carry(k, *v); return true })
	} else {
		err = dp.PreviousFlows(carry)
	}
	if err != nil {
		d.log.Warn("cannot read the previous instance's flow map; only the snapshot's flows are restored", zap.Error(err))
	}
	d.recovered = uint64(recovered)
	if recovered > 0 || lost > 0 {
		d.log.Info("flows recovered from the previous instance's kernel map (newer than the snapshot)",
			zap.Int("recovered", recovered), zap.Int("lost_table_full", lost))
	}
	d.kernel = dp
	d.kernelCfg = kc
	d.engine.UseKernel(dp)
	ifaces := clientFacing(kc)
	n, err := d.engine.PublishAll(func(f *flowtable.Flow) (int, bool) {
		if i, ok := prevIfindex[tcshift.KeyOf(f.Client(), f.Server())]; ok {
			return i, true
		}
		return ifaces.of(f)
	})
	if err != nil {
		d.log.Warn("some restored flows could not be written to the kernel map; their packets go through the daemon", zap.Error(err))
	}
	d.log.Info("kernel datapath loaded", zap.String("tap", kc.TapName), zap.Int("flows_published", n))
	return nil
}

// clientFacingIfaces finds a restored flow's client-facing interface: the intercept interface
// the gateway routes the client through, or failing that the one intercepting toward the
// server's address.
type clientFacingIfaces struct {
	index map[string]int // name -> ifindex
	cfg   tcshift.Config
}

func clientFacing(kc tcshift.Config) clientFacingIfaces {
	c := clientFacingIfaces{index: map[string]int{}, cfg: kc}
	for _, i := range kc.Ifaces {
		if ifi, err := net.InterfaceByName(i.Name); err == nil {
			c.index[i.Name] = ifi.Index
		}
	}
	return c
}

func (c clientFacingIfaces) of(f *flowtable.Flow) (int, bool) {
	client, server := f.Client().Addr(), f.Server().Addr()
	if f.Exempt() == flowtable.ExemptServerOpened {
		client, server = server, client
	}
	if routes, err := netlink.RouteGet(client.AsSlice()); err == nil && len(routes) > 0 {
		for _, ifindex := range c.index {
			if routes[0].LinkIndex == ifindex {
				return ifindex, true
			}
		}
	}
	for _, i := range c.cfg.Ifaces {
		for _, p := range i.To {
			if p.Contains(server) || (server.Is4In6() && p.Contains(server.Unmap())) {
				ifindex, ok := c.index[i.Name]
				return ifindex, ok
			}
		}
	}
	return 0, false
}

// syncKernel folds the kernel's per-flow counters and times into the table until the daemon
// stops; see datapath.Engine.Sync.
func (d *daemon) syncKernel(stop <-chan struct{}) {
	t := time.NewTicker(kernelSyncInterval)
	defer t.Stop()
	var lastWarn time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st, err := d.engine.Sync()
		if err != nil && time.Since(lastWarn) > time.Minute {
			lastWarn = time.Now()
			d.log.Warn("reading the kernel flow map failed", zap.Error(err))
		}
		if st.Orphans > 0 || st.Repaired > 0 {
			d.log.Debug("kernel flow map synchronised", zap.Int("entries", st.Entries),
				zap.Int("orphans_deleted", st.Orphans), zap.Int("repaired", st.Repaired))
		}
	}
}

// syncKernelNow reads the kernel's flow map before `flows` or a scrape shows per-flow counters,
// so that they include what the kernel forwarded up to now, not up to the last periodic sync.
// Requests closer together than minSyncGap share one read.
func (d *daemon) syncKernelNow() {
	if d.kernel == nil {
		return
	}
	const minSyncGap = 200 * time.Millisecond
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if time.Since(d.lastSync) < minSyncGap {
		return
	}
	if _, err := d.engine.Sync(); err != nil {
		d.log.Debug("reading the kernel flow map failed", zap.Error(err))
	}
	d.lastSync = time.Now()
}

// closeKernel ends the kernel datapath at stop: fail-closed leaves the programs attached (the
// map keeps shifting established flows, everything else is dropped until a daemon is back),
// restore removes them.
func (d *daemon) closeKernel(onStop policy.OnStop) error {
	if d.kernel == nil {
		return nil
	}
	var err error
	if onStop == policy.OnStopRestore {
		err = d.kernel.Detach()
	}
	return errors.Join(err, d.kernel.Close())
}
