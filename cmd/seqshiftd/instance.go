package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/footprint"
	"github.com/seqshiftd/seqshiftd/instance"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// instanceLockName is the single-instance lock's file name, in the control socket's directory.
const instanceLockName = "seqshiftd.lock"

// instanceLockPath is the lock every daemon takes before it touches anything: in the directory
// of control_socket (so /run/seqshiftd/seqshiftd.lock by default, the unit's RuntimeDirectory),
// whatever the TUN's name. Two daemons with the same control socket directory, which includes
// every daemon started from the same file, can never run at once.
func instanceLockPath(cfg *policy.Config) string {
	return filepath.Join(filepath.Dir(cfg.ControlSocket), instanceLockName)
}

// lockInstance takes the single-instance lock. A second daemon stops here, before it has
// created a key, moved a state file aside, opened a TUN or changed a rule: the running one is
// left exactly as it was, and the error names the process that holds the lock.
func (d *daemon) lockInstance() (*instance.Lock, error) {
	path := instanceLockPath(d.boot)
	if d.boot.ControlSocket+".lock" == path {
		return nil, fmt.Errorf("control_socket %s: its lock file would be the instance lock %s; give the socket another name", d.boot.ControlSocket, path)
	}
	// 0755 as control.Listen makes it: the socket's own mode keeps others out.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	l, err := instance.Acquire(path)
	if err != nil {
		var held *instance.HeldError
		if errors.As(err, &held) {
			return nil, fmt.Errorf("%w; this one exits and leaves it running untouched", err)
		}
		return nil, err
	}
	d.log.Debug("instance lock held", zap.String("path", path))
	return l, nil
}

// recordPath is where the record of what the daemon installed lives: beside the state file
// when there is one (the unit's StateDirectory, which outlives a stop, as fail-closed steering
// does), otherwise beside the control socket.
func recordPath(cfg *policy.Config) string {
	dir := filepath.Dir(cfg.ControlSocket)
	if cfg.StateFile != "" {
		dir = filepath.Dir(cfg.StateFile)
	}
	return filepath.Join(dir, "installed.json")
}

// installObjects is what this run may install, whichever datapath it ends up with: the TUN
// datapath's policy routing and the kernel datapath's filters and pinned map. Listing both is
// harmless (removing what is not there is not an error) and covers a change of datapath, a
// fall-back under auto and a crash before the choice.
func (d *daemon) installObjects() []footprint.Object {
	return []footprint.Object{steeringObject(steeringConfig(d.boot)), tcObject(kernelConfig(d.boot, d.boot.Tun.Name))}
}

// tcObject is the record's entry for the kernel datapath configured by kc.
func tcObject(kc tcshift.Config) footprint.Object {
	o := footprint.Object{Kind: footprint.KindTC, Tun: kc.TapName, IDs: map[string]int{"priority": int(kc.Priority)}}
	for _, x := range kc.Ifaces {
		o.Ifaces = append(o.Ifaces, x.Name)
	}
	if kc.PinDir != "" {
		o.Paths = map[string]string{"pin_dir": kc.PinDir}
	}
	return o
}

// steeringObject is the record's entry for steering installed with sc.
func steeringObject(sc steering.Config) footprint.Object {
	o := footprint.Object{Kind: footprint.KindSteering, Tun: sc.TunName,
		IDs: map[string]int{"table": sc.Table, "priority": sc.Priority, "protocol": sc.Protocol}}
	for _, ic := range sc.Intercepts {
		o.Ifaces = append(o.Ifaces, ic.Iface)
	}
	return o
}

// recordInstall writes, before anything is installed, the record of what will be: this run's
// steering plus whatever an earlier run recorded and this one will not replace (it used other
// numbers). A failure is logged, not fatal: teardown can still work from the tag.
func (d *daemon) recordInstall(objs ...footprint.Object) {
	path := recordPath(d.boot)
	prev, err := footprint.Read(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("previous install record unreadable; replacing it", zap.String("path", path), zap.Error(err))
	}
	rec := footprint.Record{PID: os.Getpid(), Written: time.Now().UTC(), Config: d.path,
		Objects: footprint.Merge(prev.Objects, objs)}
	if err := footprint.Write(path, rec); err != nil {
		d.log.Error("cannot write the install record; `seqshiftd teardown` will work from the configuration or the tag alone",
			zap.String("path", path), zap.Error(err))
		return
	}
	for _, o := range rec.Objects[len(objs):] {
		d.log.Warn("an earlier run left objects this one does not replace; `seqshiftd teardown` removes them", zap.Stringer("object", o))
	}
}

// recordCreated notes in the record the interfaces on which obj's installation created what it
// hangs on (the kernel datapath's clsact qdiscs), so that teardown removes those too once empty.
func (d *daemon) recordCreated(obj footprint.Object, names []string) {
	if len(names) == 0 {
		return
	}
	path := recordPath(d.boot)
	rec, err := footprint.Read(path)
	if err == nil {
		rec.Objects = footprint.Merge([]footprint.Object{{Kind: obj.Kind, Tun: obj.Tun, Ifaces: obj.Ifaces,
			IDs: obj.IDs, Paths: obj.Paths, Created: names}}, rec.Objects)
		rec.Written = time.Now().UTC()
		err = footprint.Write(path, rec)
	}
	if err != nil {
		d.log.Warn("cannot note the created qdiscs in the install record; teardown will leave them (empty)",
			zap.String("path", path), zap.Strings("interfaces", names), zap.Error(err))
	}
}

// unrecord drops objs from the record once they are removed, and the record itself when
// nothing is left in it.
func (d *daemon) unrecord(objs ...footprint.Object) {
	path := recordPath(d.boot)
	rec, err := footprint.Read(path)
	if err != nil {
		return
	}
	var left []footprint.Object
	for _, o := range rec.Objects {
		gone := false
		for _, r := range objs {
			gone = gone || o.Equal(r)
		}
		if !gone {
			left = append(left, o)
		}
	}
	if len(left) == 0 {
		err = footprint.Remove(path)
	} else {
		rec.Objects, rec.Written = left, time.Now().UTC()
		err = footprint.Write(path, rec)
	}
	if err != nil {
		d.log.Warn("cannot update the install record", zap.String("path", path), zap.Error(err))
	}
}

// retimeSnapshots applies a reloaded snapshot_interval. The ticker is reset only when the
// interval changed: a reset on every SIGHUP meant that reloads more frequent than the interval
// stopped snapshots altogether. It reports whether a snapshot is overdue under the new
// interval, so that even a storm of reloads that each change the interval cannot starve them.
func (d *daemon) retimeSnapshots(snap *time.Ticker, old, next time.Duration) (overdue bool) {
	if next == old {
		return false
	}
	snap.Reset(next)
	return time.Since(d.lastSnapshot) >= next
}
