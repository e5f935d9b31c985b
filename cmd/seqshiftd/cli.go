package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tcshift"
	"github.com/seqshiftd/seqshiftd/tun"
)

// controlTimeout bounds every control-socket exchange, so a wedged daemon cannot hang a
// monitoring script.
const controlTimeout = 10 * time.Second

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("check", stderr)
	portable := fs.Bool("portable", false, "skip the checks that depend on this host (interfaces, the ISN key file): for a file meant for another machine")
	plan := fs.Bool("plan", false, "also print what run would install (TUN, policy rules, routes, sysctls); touches nothing")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// What run would refuse on this host is an error here too, so that the unit's
	// ExecStartPre fails with the reason instead of ExecStart failing five times.
	refused := false
	dp, why := cfg.Datapath, ""
	if !*portable {
		for _, f := range cfg.HostProblems() {
			fmt.Fprintln(stderr, f.Format(*path, ""))
			refused = true
		}
		// The owners of the TUN, the steering and the kernel datapath say what they would
		// refuse, and the datapath is chosen exactly as run chooses it.
		var err error
		if dp, why, err = chooseDatapath(cfg); err != nil {
			dp = cfg.Datapath
		}
		for _, err := range []error{err, tun.CheckHost(), steering.CheckHost(steeringConfig(cfg))} {
			if err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", *path, err)
				refused = true
			}
		}
	}
	for _, f := range cfg.Check() {
		fmt.Fprintln(stderr, f.Format(*path, "warning"))
	}
	if !*portable {
		// A key file run would create, or one this user cannot read: said, not refused (the
		// ones run would refuse are among the host problems above).
		if w, err := cfg.CheckKey(); err == nil && w != "" {
			fmt.Fprintln(stderr, cfg.KeyFinding(w).Format(*path, "warning"))
		}
	}
	if *plan {
		if err := printPlan(stdout, cfg, dp, why); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", *path, err)
			return 1
		}
	}
	for _, line := range cfg.Summary() {
		fmt.Fprintln(stdout, line)
	}
	if refused {
		fmt.Fprintf(stderr, "%s: refused: run would not start on this host (--portable checks the file alone)\n", *path)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d rules)\n", *path, len(cfg.Rules))
	return 0
}

// printPlan prints what run would install for datapath dp, from the plans the installers
// themselves work from (tcshift.Plan, steering.Plan). For auto (check --portable, where this
// host does not decide) both are printed.
func printPlan(w io.Writer, cfg *policy.Config, dp policy.Datapath, why string) error {
	dps := []policy.Datapath{dp}
	if dp == policy.DatapathAuto {
		dps = []policy.Datapath{policy.DatapathKernel, policy.DatapathTUN}
		fmt.Fprintln(w, "plan: datapath auto: kernel where the host supports it, else tun; both plans follow")
	}
	for _, dp := range dps {
		device, lines, err := "TUN", []string(nil), error(nil)
		if dp == policy.DatapathKernel {
			device = "TAP"
			lines, err = tcshift.Plan(kernelConfig(cfg, cfg.Tun.Name))
			lines = append(lines, "no policy routing (an earlier run's is removed)")
		} else {
			lines, err = steering.Plan(steeringConfig(cfg))
		}
		if err != nil {
			return err
		}
		if why != "" {
			fmt.Fprintf(w, "plan: datapath %s (%s)\n", dp, why)
		} else {
			fmt.Fprintf(w, "plan: datapath %s\n", dp)
		}
		fmt.Fprintf(w, "plan: %s %s, created at start (mtu %s, queues %s, offload %t)\n", device, cfg.Tun.Name,
			orDefault(cfg.Tun.MTU, "the largest intercept interface's"), orDefault(cfg.Tun.Queues, "one per CPU"), cfg.Tun.Offload)
		for _, l := range lines {
			fmt.Fprintln(w, "plan:", l)
		}
	}
	return nil
}

func orDefault(n int, zero string) string {
	if n == 0 {
		return zero
	}
	return strconv.Itoa(n)
}

// daemonFlags adds what every client command shares: --json, and --socket for reaching the
// daemon without reading the file (unreadable to this user, or broken by an edit).
func daemonFlags(name string, stderr io.Writer) (fs *flag.FlagSet, path, socket *string, asJSON *bool) {
	fs, path = newFlags(name, stderr)
	socket = fs.String("socket", "", "the daemon's control socket (default: the file's control_socket); the file is then not read")
	asJSON = fs.Bool("json", false, "print JSON")
	return fs, path, socket, asJSON
}

// dialDaemon connects to the daemon: on socket if given, else on the control socket the file
// names. code is the exit code to return when c is nil.
func dialDaemon(path, socket string, stderr io.Writer) (c *control.Client, code int) {
	if socket == "" {
		// Only the control socket matters here: a file broken by an edit the daemon refused to
		// reload must not stop anyone from asking the daemon what it runs.
		cfg, err := policy.LoadKeys(path, "control_socket")
		if err != nil {
			fmt.Fprintln(stderr, err)
			fmt.Fprintln(stderr, "seqshiftd: give the daemon's socket with --socket PATH to skip the file")
			return nil, 1
		}
		socket = cfg.ControlSocket
	}
	c, err := control.Dial(socket, controlTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return nil, 1
	}
	return c, 0
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs, path, socket, asJSON := daemonFlags("status", stderr)
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	c, code := dialDaemon(*path, *socket, stderr)
	if c == nil {
		return code
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		control.WriteStatus(stdout, st)
	}
	// A health check: running is not enough, the steering must be in place.
	if !st.Steering {
		return 1
	}
	return 0
}
