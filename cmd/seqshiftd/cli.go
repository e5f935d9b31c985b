package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/steering"
)

// controlTimeout bounds every control-socket exchange, so a wedged daemon cannot hang a
// monitoring script.
const controlTimeout = 10 * time.Second

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("check", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
	}
	for _, line := range cfg.Summary() {
		fmt.Fprintln(stdout, line)
	}
	fmt.Fprintf(stdout, "%s: ok (%d rules)\n", *path, len(cfg.Rules))
	return 0
}

// loadForClient reads only what a client subcommand needs (the socket path) from the file.
func loadForClient(name string, args []string, stderr io.Writer) (*policy.Config, bool, bool) {
	fs, path := newFlags(name, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return nil, false, false
	}
	// Only the control socket matters here: a file broken by an edit the daemon refused to
	// reload must not stop anyone from asking the daemon what it runs.
	cfg, err := policy.LoadKeys(*path, "control_socket")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false, false
	}
	return cfg, *asJSON, true
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	cfg, asJSON, ok := loadForClient("status", args, stderr)
	if !ok {
		return 2
	}
	c, err := control.Dial(cfg.ControlSocket, controlTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	defer c.Close()
	st, err := c.Status()
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		control.WriteStatus(stdout, st)
	}
	if !st.Steering {
		return 1
	}
	return 0
}

func cmdFlows(args []string, stdout, stderr io.Writer) int {
	cfg, asJSON, ok := loadForClient("flows", args, stderr)
	if !ok {
		return 2
	}
	c, err := control.Dial(cfg.ControlSocket, controlTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	defer c.Close()
	if asJSON {
		err = control.WriteFlowsJSON(stdout, c.Flows)
	} else {
		err = control.WriteFlowsTable(stdout, c.Flows)
	}
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	return 0
}

func cmdTeardown(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("teardown", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Teardown needs only what identifies the installed steering; a broken rule elsewhere in
	// the file must not keep anyone from removing it.
	cfg, err := policy.LoadKeys(*path, "tun", "intercept", "steering", "control_socket")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log := newLogger("console", zap.NewAtomicLevelAt(zap.InfoLevel), stderr)
	if c, err := control.Dial(cfg.ControlSocket, time.Second); err == nil {
		c.Close()
		fmt.Fprintln(stderr, "seqshiftd: warning: the daemon is still running; it will keep forwarding through the TUN but intercepted traffic now bypasses it")
	}
	if err := steering.Remove(steeringConfig(cfg), log.Named("steering")); err != nil {
		fmt.Fprintln(stderr, "seqshiftd: teardown:", err)
		return 1
	}
	fmt.Fprintln(stdout, "seqshiftd: steering removed")
	return 0
}
