package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/policy"
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
	// What run refuses, check refuses: the key file is read now, as run reads it.
	keyWarning, err := cfg.CheckKey()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	warnings := cfg.Warnings()
	if keyWarning != "" {
		warnings = append(warnings, keyWarning)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
	}
	for _, line := range cfg.Summary() {
		fmt.Fprintln(stdout, line)
	}
	fmt.Fprintf(stdout, "%s: ok (%d rules)\n", *path, len(cfg.Rules))
	return 0
}

// dialDaemon parses a client command's flags, reads the control socket's path from the file
// and connects. code is the exit code to return when c is nil.
func dialDaemon(name string, args []string, stderr io.Writer) (c *control.Client, asJSON bool, code int) {
	fs, path := newFlags(name, stderr)
	jsonFlag := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return nil, false, 2
	}
	// Only the control socket matters here: a file broken by an edit the daemon refused to
	// reload must not stop anyone from asking the daemon what it runs.
	cfg, err := policy.LoadKeys(*path, "control_socket")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false, 1
	}
	c, err = control.Dial(cfg.ControlSocket, controlTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return nil, false, 1
	}
	return c, *jsonFlag, 0
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	c, asJSON, code := dialDaemon("status", args, stderr)
	if c == nil {
		return code
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
	// A health check: running is not enough, the steering must be in place.
	if !st.Steering {
		return 1
	}
	return 0
}

func cmdFlows(args []string, stdout, stderr io.Writer) int {
	c, asJSON, code := dialDaemon("flows", args, stderr)
	if c == nil {
		return code
	}
	defer c.Close()
	var err error
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
