package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/footprint"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// removers remove one recorded object each, by kind. A datapath that installs another kind of
// object (tc filters) adds its kind here and to what the daemon records.
var removers = map[string]func(o footprint.Object, log *zap.Logger) error{
	footprint.KindSteering: func(o footprint.Object, log *zap.Logger) error {
		return steering.Remove(steering.Config{TunName: o.Tun, Table: o.IDs["table"],
			Priority: o.IDs["priority"], Protocol: o.IDs["protocol"]}, log)
	},
	footprint.KindTC: func(o footprint.Object, _ *zap.Logger) error {
		p := o.IDs["priority"]
		if p < 0 || p > 0xffff {
			return fmt.Errorf("tc priority %d out of range", p)
		}
		kc := tcshift.Config{TapName: o.Tun, Priority: uint16(p), PinDir: o.Paths["pin_dir"]}
		for _, name := range o.Ifaces {
			kc.Ifaces = append(kc.Ifaces, tcshift.Iface{Name: name})
		}
		err := tcshift.Detach(kc)
		for _, name := range o.Created {
			err = errors.Join(err, tcshift.RemoveClsactIfEmpty(name))
		}
		return err
	},
}

// cmdTeardown removes what the daemon installed. It must work when nothing else does: the
// configuration broken by the edit that made the operator reach for it, or deleted, or the
// record unreadable. So every source is optional and each failure is a warning:
//
//  1. the record the daemon wrote before installing (-record, or beside the state file);
//  2. the numbers that tag both datapaths' objects (steering's table, priority and protocol; the
//     tc filters' priority and the TAP's name): flags first, then the file, then the defaults.
//
// Everything either source names is removed; removing what is not there is not an error.
func cmdTeardown(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("seqshiftd teardown", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("c", defaultConfig, "configuration file (optional: a broken or missing file is a warning)")
	record := flags.String("record", "", "install record to read (default: installed.json beside the state file named by -c)")
	table := flags.Int("table", 0, "steering table (default: from -c, else 5813)")
	priority := flags.Int("priority", 0, "steering rule priority (default: from -c, else 5813)")
	protocol := flags.Int("protocol", 0, "rtnetlink protocol tag (default: from -c, else 213)")
	tun := flags.String("tun", "", "TUN name, for messages (default: from -c)")
	if code := parseFlags(flags, args, stdout, stderr); code >= 0 {
		return code
	}
	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	warn := func(format string, a ...any) { fmt.Fprintf(stderr, "seqshiftd: warning: "+format+"\n", a...) }

	cfg, err := policy.LoadKeys(*path, "tun", "steering", "state_file", "control_socket", "kernel")
	if err != nil {
		warn("%v", err)
		warn("going on with the install record and the defaults (or -table, -priority, -protocol)")
		cfg = policy.Defaults()
	} else if ic, err := policy.LoadKeys(*path, "tun", "intercept"); err == nil {
		// The interfaces the kernel datapath's filters may sit on, when the record is gone.
		cfg.Intercept = ic.Intercept
	} else {
		warn("%v", err)
		warn("the kernel datapath's filters are looked for on the TAP and the interfaces the record lists only")
	}
	if !set["record"] {
		*record = recordPath(cfg)
	}
	sc := steeringConfig(cfg)
	sc.Intercepts = nil // not needed to find the objects: they are found by their numbers
	if set["table"] {
		sc.Table = *table
	}
	if set["priority"] {
		sc.Priority = *priority
	}
	if set["protocol"] {
		sc.Protocol = *protocol
	}
	if set["tun"] {
		sc.TunName = *tun
	}

	var objs []footprint.Object
	var rec footprint.Record
	if *record != "" {
		rec, err = footprint.Read(*record)
		switch {
		case err == nil:
			objs = rec.Objects
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(stderr, "seqshiftd: no install record at %s; removing by the steering numbers alone\n", *record)
		default:
			warn("%v", err)
		}
	}
	kc := kernelConfig(cfg, sc.TunName)
	kc.Priority = uint16(sc.Priority)
	for _, tag := range []footprint.Object{steeringObject(sc), tcObject(kc)} {
		if !slices.ContainsFunc(objs, func(o footprint.Object) bool { return sameIDs(o, tag) }) {
			objs = append(objs, tag)
		}
	}

	if c, err := control.Dial(cfg.ControlSocket, time.Second); err == nil {
		c.Close()
		warn("the daemon is still running; it will keep forwarding through the TUN but intercepted traffic now bypasses it")
	}
	log := newLogger("console", zap.NewAtomicLevelAt(zap.InfoLevel), stderr)
	var failed []footprint.Object
	for _, o := range objs {
		remove, ok := removers[o.Kind]
		if !ok {
			fmt.Fprintf(stderr, "seqshiftd: teardown: the record lists %s, which this version of seqshiftd cannot remove\n", o)
			failed = append(failed, o)
			continue
		}
		if err := remove(o, log.Named(o.Kind)); err != nil {
			fmt.Fprintf(stderr, "seqshiftd: teardown: %s: %v\n", o, err)
			failed = append(failed, o)
			continue
		}
		fmt.Fprintf(stdout, "seqshiftd: removed %s\n", o)
	}
	if *record != "" && len(rec.Objects) > 0 {
		updateRecord(*record, rec, failed, warn)
	}
	if len(failed) > 0 {
		return 1
	}
	fmt.Fprintln(stdout, "seqshiftd: steering removed")
	return 0
}

// sameIDs reports whether two objects are the same installed thing: the numbers find it, the
// TUN and interface names only describe it.
func sameIDs(a, b footprint.Object) bool {
	a.Tun, a.Ifaces, b.Tun, b.Ifaces = "", nil, "", nil
	return a.Equal(b)
}

// updateRecord keeps in the record only what teardown could not remove.
func updateRecord(path string, rec footprint.Record, left []footprint.Object, warn func(string, ...any)) {
	var err error
	if len(left) == 0 {
		err = footprint.Remove(path)
	} else {
		rec.Objects, rec.Written, rec.PID = left, time.Now().UTC(), os.Getpid()
		err = footprint.Write(path, rec)
	}
	if err != nil {
		warn("%v", err)
	}
}
