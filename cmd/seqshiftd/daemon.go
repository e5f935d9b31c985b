package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/datapath"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/metrics"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tcshift"
	"github.com/seqshiftd/seqshiftd/tun"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("run", stderr)
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	lvl, err := parseLevel(cfg.Log.Level)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	level := zap.NewAtomicLevelAt(lvl)
	log := newLogger(cfg.Log.Format, level, stderr)
	defer func() { _ = log.Sync() }()

	d := &daemon{path: *path, boot: cfg, log: log, level: level, started: time.Now()}
	if err := d.run(); err != nil {
		log.Error("seqshiftd stopped with an error", zap.Error(err))
		return 1
	}
	return 0
}

// daemon wires the packages together and owns the lifecycle: start, reload, snapshot, stop.
type daemon struct {
	path    string
	boot    *policy.Config // settings that only change with a restart come from here
	log     *zap.Logger
	level   zap.AtomicLevel
	started time.Time

	table    *flowtable.Table
	dev      tun.Device
	engine   *datapath.Engine
	steering steering.Config

	// The datapath chosen at start (open) and, under auto, why it is not the kernel one.
	// kernel and kernelCfg are set only with the kernel datapath. All are written before serve
	// starts any goroutine and read-only afterwards.
	datapath    policy.Datapath
	datapathWhy string
	kernel      *tcshift.Datapath
	kernelCfg   tcshift.Config

	recovered uint64 // flows carried over from a previous instance's kernel map at start

	syncMu   sync.Mutex // one on-demand read of the kernel map at a time; guards lastSync
	lastSync time.Time
	metrics  *metrics.Metrics
	traffic  *ruleTraffic
	events   *control.Events // flows --watch
	observed *ruleTraffic    // traffic of observed flows, per rule (observe.go)

	lastSnapshot time.Time // only the run loop's goroutine uses it

	// The flow snapshot's health, for metrics: when it last succeeded (unix ns) and how often
	// it failed.
	snapOK       atomic.Int64
	snapFailures atomic.Uint64

	reloadMu      sync.Mutex
	lastReloadErr string
	lastReload    time.Time
	reloadsOK     uint64
	reloadsFailed uint64
}

// run is the daemon's life, phase by phase. A failure before serving leaves whatever steering
// was installed in place: fail-closed, as after a crash.
func (d *daemon) run() error {
	// Signals first: a SIGHUP that arrives while starting (a script reloading as soon as the
	// control socket answers) must be queued for serve's loop, not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	d.log.Info("starting", zap.String("version", buildVersion()), zap.String("config", d.path))
	// Before anything else is touched: a second daemon must leave the first exactly as it is.
	lock, err := d.lockInstance()
	if err != nil {
		return err
	}
	defer lock.Release()

	if err := d.restore(); err != nil {
		return err
	}
	// Write-ahead: the record lists what this run may install before open pins a map or steer
	// attaches or installs anything, so that teardown has a list even after a crash half-way.
	d.recordInstall(d.installObjects()...)
	if err := d.open(); err != nil {
		return err
	}
	defer d.dev.Close()
	if err := d.steer(); err != nil {
		return err
	}
	s, err := d.serve(sigs)
	if err != nil {
		return err
	}
	return d.stop(s)
}

// restore builds the flow table and fills it from the previous run's snapshot, so that
// connections survive a restart; it reads the ISN key first, since a rule may need it.
func (d *daemon) restore() error {
	cfg := d.boot
	if err := cfg.LoadKey(true); err != nil {
		return err
	}
	d.traffic = newRuleTraffic(rewritten)
	d.observed = newRuleTraffic(observed)
	d.events = new(control.Events)
	d.table = flowtable.New(flowtable.Config{MaxFlows: cfg.Flows.Max, Timeouts: cfg.Flows.Timeouts,
		OnRemove: d.removed, OnAdd: d.flowAdded})
	d.restoreState()
	return nil
}

// removed is the flow table's removal hook: the kernel's last counts and its map entry (kernel
// datapath), then the per-rule traffic totals, then anyone watching.
func (d *daemon) removed(f *flowtable.Flow) {
	if d.engine != nil {
		d.engine.Forget(f)
	}
	d.traffic.retire(f)
	d.observed.retire(f)
	d.flowGone(f)
}

// open creates the datapath: the device (a TAP for the kernel datapath, a TUN for the other),
// the engine that will serve its queues and, for the kernel datapath, the programs and their
// flow map, rebuilt from the table. Nothing is steered to it yet.
func (d *daemon) open() error {
	cfg := d.boot
	var err error
	if d.datapath, d.datapathWhy, err = chooseDatapath(cfg); err != nil {
		return err
	}
	if d.datapathWhy != "" && cfg.Datapath == policy.DatapathAuto {
		d.log.Warn("running the TUN datapath", zap.String("why", d.datapathWhy))
	}
	if err := d.openDevice(); err != nil {
		return err
	}
	if d.datapath != policy.DatapathKernel {
		return nil
	}
	if err := d.openKernel(cfg); err != nil {
		if cfg.Datapath == policy.DatapathKernel {
			return err
		}
		return d.fallBackToTUN(err)
	}
	return nil
}

// openDevice opens the TAP (kernel datapath) or TUN and the engine over it.
func (d *daemon) openDevice() error {
	cfg := d.boot
	mtu, err := tunMTU(cfg)
	if err != nil {
		return err
	}
	queues := cfg.Tun.Queues
	if queues == 0 {
		queues = runtime.NumCPU()
	}
	tap := d.datapath == policy.DatapathKernel
	d.dev, err = tun.Open(tun.Config{Name: cfg.Tun.Name, MTU: mtu, Queues: queues, Offload: cfg.Tun.Offload, TAP: tap}, d.log.Named("tun"))
	if err != nil {
		return fmt.Errorf("open %s %s: %w", map[bool]string{true: "TAP", false: "TUN"}[tap], cfg.Tun.Name, err)
	}
	d.engine = datapath.New(d.dev, d.table, &datapath.Policy{Config: cfg, Generation: 1}, d.log)
	return nil
}

// fallBackToTUN gives up the kernel datapath under auto: whatever of it was set up goes, and
// the TUN datapath is opened instead.
func (d *daemon) fallBackToTUN(why error) error {
	d.log.Warn("the kernel datapath failed to start; running the TUN datapath (datapath: auto)", zap.Error(why))
	if d.kernel != nil {
		_ = d.kernel.Detach()
		_ = d.kernel.Close()
		d.kernel = nil
	}
	_ = d.dev.Close()
	d.datapath, d.datapathWhy = policy.DatapathTUN, "the kernel datapath failed to start: "+why.Error()
	// Flows published into the map that is now gone must be published again if ever needed.
	d.table.Range(func(f *flowtable.Flow) bool {
		f.SetKernelMode(f.KernelMode(), flowtable.KernelNone)
		return true
	})
	return d.openDevice()
}

// steer sends intercepted traffic to the datapath, replacing a previous run's leftovers: the
// kernel datapath attaches its programs to the intercept interfaces (and removes the TUN
// datapath's policy routing, were it left by an earlier run), the TUN datapath installs its
// policy routing (and removes the kernel datapath's programs, likewise).
func (d *daemon) steer() error {
	d.steering = steeringConfig(d.boot)
	slog := d.log.Named("steering")
	if d.datapath == policy.DatapathKernel {
		if err := steering.Remove(d.steering, slog); err != nil {
			slog.Warn("cannot remove the TUN datapath's policy routing of an earlier run", zap.Error(err))
		}
		err := d.kernel.Attach()
		d.recordCreated(tcObject(kernelConfig(d.boot, d.boot.Tun.Name)), d.kernel.CreatedClsact())
		if err == nil {
			d.log.Info("kernel datapath attached", zap.String("tap", d.kernelCfg.TapName),
				zap.Int("interfaces", len(d.kernelCfg.Ifaces)), zap.Uint32("mark", d.kernelCfg.Mark))
			return nil
		}
		if d.boot.Datapath == policy.DatapathKernel {
			return fmt.Errorf("attach the kernel datapath: %w", err)
		}
		if err := d.fallBackToTUN(fmt.Errorf("attach: %w", err)); err != nil {
			return err
		}
	}
	if err := tcshift.Detach(kernelConfig(d.boot, d.boot.Tun.Name)); err != nil {
		slog.Warn("cannot remove the kernel datapath's programs of an earlier run", zap.Error(err))
	}
	report, err := steering.Install(d.steering, slog)
	if err != nil {
		return fmt.Errorf("install steering: %w", err)
	}
	report.Log(slog)
	return nil
}

// serving is what serve started and stop ends.
type serving struct {
	ctl    *control.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error // why serving ended, when not by a signal
}

// serve opens the control socket and the metrics endpoint, starts the datapath and the flow
// expiry, tells systemd it is ready, and then handles signals and snapshots until told to stop
// or until the datapath ends. An error means serving could not start; what it had started is
// closed again.
func (d *daemon) serve(sigs <-chan os.Signal) (*serving, error) {
	cfg, log := d.boot, d.log
	ctl, err := control.Listen(cfg.ControlSocket, d, log.Named("control"))
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{ctl: ctl, cancel: cancel}
	if cfg.MetricsListen != "" {
		// Listen before READY=1 so that a taken address fails the start, not a later scrape.
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			cancel()
			ctl.Close()
			return nil, fmt.Errorf("metrics_listen: %w", err)
		}
		d.metrics = metrics.New(d.scrape, d.counterSets()...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := d.metrics.ServeListener(ctx, ln, log.Named("metrics")); err != nil {
				log.Error("metrics endpoint stopped", zap.Error(err))
			}
		}()
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		d.table.RunExpiry(ctx, time.Second)
	}()
	engineDone := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		engineDone <- d.engine.Run(ctx)
	}()
	if d.kernel != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			d.syncKernel(ctx.Done())
		}()
	}

	notify(log, sddaemon.SdNotifyReady+"\n"+d.sdStatus())
	log.Info("running", zap.Stringer("datapath", d.engine), zap.Int("mtu", d.dev.MTU()),
		zap.Int("flows_restored", d.table.Stats().Active))

	snap := time.NewTicker(cfg.SnapshotInterval) // policy guarantees at least 1s
	defer snap.Stop()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(snap)
				continue
			}
			log.Info("stopping", zap.Stringer("signal", sig))
			return s, nil
		case <-snap.C:
			d.snapshot()
		case err := <-engineDone:
			// The datapath only ends by itself when the TUN is gone (deleted underneath us):
			// exit non-zero so that systemd restarts us; the blackhole drops traffic meanwhile.
			if err == nil {
				err = errors.New("the TUN device went away")
			}
			s.err = fmt.Errorf("datapath stopped: %w", err)
			return s, nil
		}
	}
}

// stop ends what serve started, writes the last snapshot and, per on_stop, leaves the steering
// in place (fail-closed) or removes it. It returns why serving ended, if by a failure.
func (d *daemon) stop(s *serving) error {
	log := d.log
	notify(log, sddaemon.SdNotifyStopping)
	s.cancel()
	// Closing the TUN unblocks the readers and takes its route out of the steering table: from
	// here on the blackhole behind it drops intercepted packets instead of forwarding them raw.
	_ = d.dev.Close()
	s.wg.Wait()
	d.snapshot()
	err := s.err
	onStop := d.engine.Policy().Config.OnStop
	if d.kernel != nil {
		if kerr := d.closeKernel(onStop); kerr != nil {
			log.Error("stop the kernel datapath", zap.Error(kerr))
			err = errors.Join(err, kerr)
		} else if onStop == policy.OnStopRestore {
			d.unrecord(d.installObjects()...)
			log.Info("kernel datapath removed (on_stop: restore); traffic is forwarded untouched")
		} else {
			log.Info("kernel datapath left attached (on_stop: fail-closed): established flows keep being shifted, " +
				"everything the daemon decides is dropped until seqshiftd runs again")
		}
	} else if onStop == policy.OnStopRestore {
		if rerr := steering.Remove(d.steering, log.Named("steering")); rerr != nil {
			log.Error("remove steering", zap.Error(rerr))
			err = errors.Join(err, rerr)
		} else {
			d.unrecord(d.installObjects()...)
			log.Info("steering removed (on_stop: restore); traffic is forwarded untouched")
		}
	} else {
		log.Info("steering left in place (on_stop: fail-closed); intercepted traffic is dropped until seqshiftd runs again")
	}
	s.ctl.Close()
	return err
}

// restoreState loads the previous run's flows so that connections survive a restart. A corrupt
// file is moved aside rather than trusted or deleted, so it can be inspected.
func (d *daemon) restoreState() {
	path := d.boot.StateFile
	if path == "" {
		return
	}
	// Outside systemd's StateDirectory nobody else creates it, and every snapshot would fail.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		d.log.Error("cannot create the state file's directory; flows will not survive a restart",
			zap.String("state_file", path), zap.Error(err))
	}
	n, err := d.table.Restore(path)
	switch {
	case err == nil:
		d.log.Info("flows restored", zap.String("state_file", path), zap.Int("flows", n))
	case errors.Is(err, fs.ErrNotExist):
		d.log.Info("no state file; starting with an empty flow table", zap.String("state_file", path))
	default:
		aside := path + ".corrupt"
		_ = os.Rename(path, aside)
		d.log.Error("state file rejected; starting with an empty flow table",
			zap.String("state_file", path), zap.String("moved_to", aside), zap.Error(err))
	}
}

func (d *daemon) snapshot() {
	path := d.boot.StateFile
	if path == "" {
		return
	}
	d.lastSnapshot = time.Now()
	// What only the kernel forwarded (counters, last-seen times) goes into the snapshot too.
	if _, err := d.engine.Sync(); err != nil {
		d.log.Warn("reading the kernel flow map before the snapshot failed", zap.Error(err))
	}
	if err := d.table.Snapshot(path); err != nil {
		d.snapFailures.Add(1)
		d.log.Error("flow snapshot failed", zap.String("state_file", path), zap.Error(err))
		return
	}
	d.snapOK.Store(time.Now().UnixNano())
}

// reload validates the whole file off to the side and swaps it in only when it is good; live
// flows keep the offsets they were given because those live in the flow table, not the policy.
func (d *daemon) reload(snap *time.Ticker) {
	notify(d.log, "RELOADING=1\nMONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
	// After the reload, whatever its outcome; deferred before reloadMu's unlock, so it runs after.
	defer func() { notify(d.log, sddaemon.SdNotifyReady+"\n"+d.sdStatus()) }()
	cfg, err := policy.Load(d.path)
	if err == nil {
		err = cfg.LoadKey(true)
	}
	overdue := false
	// Registered before the unlock below, so it runs after it: a snapshot must not hold up
	// `status`, which takes reloadMu.
	defer func() {
		if overdue {
			d.snapshot()
		}
	}()
	var lvl zapcore.Level
	if err == nil {
		lvl, err = parseLevel(cfg.Log.Level)
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.lastReload = time.Now()
	if err != nil {
		d.reloadsFailed++
		d.lastReloadErr = err.Error()
		d.log.Error("reload failed; the previous policy stays in force", zap.Error(err))
		return
	}
	old := d.engine.Policy()
	for _, s := range cfg.RestartNeeded(d.boot) {
		d.log.Warn("setting changed but needs a restart to take effect; keeping the running value", zap.String("setting", s))
	}
	cfg.Inherit(old.Config)
	d.level.SetLevel(lvl)
	d.table.SetTimeouts(cfg.Flows.Timeouts)
	overdue = d.retimeSnapshots(snap, old.Config.SnapshotInterval, cfg.SnapshotInterval)
	next := &datapath.Policy{Config: cfg, Generation: old.Generation + 1}
	d.engine.SetPolicy(next)
	d.reloadsOK++
	d.lastReloadErr = ""
	d.log.Info("policy reloaded", zap.Uint64("generation", next.Generation), zap.Int("rules", len(cfg.Rules)))
}

// tunMTU is the configured MTU or, when 0, the largest MTU of the intercept interfaces: the TUN
// must carry every packet those interfaces can deliver.
func tunMTU(cfg *policy.Config) (int, error) {
	if cfg.Tun.MTU != 0 {
		return cfg.Tun.MTU, nil
	}
	mtu := 0
	for _, ic := range cfg.Intercept {
		link, err := netlink.LinkByName(ic.Iface)
		if err != nil {
			return 0, fmt.Errorf("intercept interface %s: %w", ic.Iface, err)
		}
		mtu = max(mtu, link.Attrs().MTU)
	}
	if mtu == 0 {
		mtu = tun.DefaultMTU
	}
	return mtu, nil
}

func steeringConfig(cfg *policy.Config) steering.Config {
	sc := steering.Config{
		TunName:  cfg.Tun.Name,
		Table:    cfg.Steering.Table,
		Priority: cfg.Steering.Priority,
		Protocol: cfg.Steering.Protocol,
	}
	for _, ic := range cfg.Intercept {
		sc.Intercepts = append(sc.Intercepts, steering.Intercept{Iface: ic.Iface, To: ic.To})
	}
	return sc
}

// sdStatus is the STATUS= line `systemctl status seqshiftd` shows: the policy generation in
// force and, while the last reload has failed, its error on one line.
func (d *daemon) sdStatus() string {
	d.reloadMu.Lock()
	gen := d.engine.Policy().Generation
	lastErr := d.lastReloadErr
	d.reloadMu.Unlock()
	if lastErr == "" {
		return fmt.Sprintf("STATUS=policy generation %d in force", gen)
	}
	return fmt.Sprintf("STATUS=policy generation %d in force; last reload FAILED: %s", gen, strings.Join(strings.Fields(lastErr), " "))
}

func notify(log *zap.Logger, state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", zap.Error(err))
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Sec*1e6 + ts.Nsec/1e3
}
