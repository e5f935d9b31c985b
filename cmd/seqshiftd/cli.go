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
	if !*portable {
		for _, f := range cfg.HostProblems() {
			fmt.Fprintln(stderr, f.Format(*path, ""))
			refused = true
		}
		// The owners of the TUN and of the steering say what they would refuse.
		for _, err := range []error{tun.CheckHost(), steering.CheckHost(steeringConfig(cfg))} {
			if err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", *path, err)
				refused = true
			}
		}
	}
	for _, f := range cfg.Check() {
		fmt.Fprintln(stderr, f.Format(*path, "warning"))
	}
	if *plan {
		lines, err := steering.Plan(steeringConfig(cfg))
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", *path, err)
			return 1
		}
		fmt.Fprintf(stdout, "plan: TUN %s, created at start (mtu %s, queues %s, offload %t)\n", cfg.Tun.Name,
			orDefault(cfg.Tun.MTU, "the largest intercept interface's"), orDefault(cfg.Tun.Queues, "one per CPU"), cfg.Tun.Offload)
		for _, l := range lines {
			fmt.Fprintln(stdout, "plan:", l)
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
