package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A Finding is something `seqshiftd check` reports about a valid file, at the value it is
// about.
type Finding struct {
	Line, Col int
	Msg       string
}

// Format renders f for file the way config errors are rendered, with kind ("warning") after
// the position: "FILE:LINE:COL: warning: message". An empty kind gives an error's form.
func (f Finding) Format(file, kind string) string {
	if kind != "" {
		kind += ": "
	}
	return fmt.Sprintf("%s:%d:%d: %s%s", file, max(f.Line, 1), max(f.Col, 1), kind, f.Msg)
}

// pos returns where a top-level key's value is, or 1:1 for a key the file does not set.
func (c *Config) pos(key string) (line, col int) {
	if p, ok := c.at[key]; ok {
		return p[0], p[1]
	}
	return 1, 1
}

// The directories the systemd unit gives the service (StateDirectory, RuntimeDirectory):
// everything else is read-only to it (ProtectSystem=strict) or, for a root-only file,
// unreadable (DynamicUser). They are where the defaults live.
var (
	unitStateDir   = filepath.Dir(DefaultStateFile)
	unitRuntimeDir = filepath.Dir(DefaultControlSocket)
)

// HostProblems lists what `seqshiftd run` would refuse on this host although the file is
// valid: an intercept interface that does not exist (the TUN's MTU and the steering rules need
// it), and an ISN key file that exists but cannot be used. A file written for another machine
// is checked without these (`check --portable`).
func (c *Config) HostProblems() []Finding {
	var out []Finding
	seen := map[string]bool{}
	for _, ic := range c.Intercept {
		if seen[ic.Iface] {
			continue
		}
		seen[ic.Iface] = true
		if _, err := net.InterfaceByName(ic.Iface); err != nil {
			out = append(out, Finding{Line: ic.line, Col: ic.col, Msg: fmt.Sprintf(
				"intercept interface %q does not exist on this host: run would refuse to start (check --portable skips host checks)", ic.Iface)})
		}
	}
	if c.usesKeyed() {
		// run creates a missing key; one that exists must be usable as it is.
		if _, err := os.Stat(c.ISNKeyFile); !errors.Is(err, fs.ErrNotExist) {
			if _, err := readKey(c.ISNKeyFile); err != nil {
				line, col := max(c.keyPos[0], 1), max(c.keyPos[1], 1)
				out = append(out, Finding{Line: line, Col: col, Msg: fmt.Sprintf("isn_key_file: %v", err)})
			}
		}
	}
	return out
}

// Check lists everything `seqshiftd check` warns about, in file order: Warnings, plus the
// mistakes a reader of the README would want flagged: one intercept direction only, a rule
// whose servers no intercept entry steers, paths the systemd unit cannot write, and a metrics
// endpoint open on every interface.
func (c *Config) Check() []Finding {
	out := c.Warnings()
	add := func(key, format string, args ...any) {
		line, col := c.pos(key)
		out = append(out, Finding{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
	}

	var ifaces []string
	for _, ic := range c.Intercept {
		if !slices.Contains(ifaces, ic.Iface) {
			ifaces = append(ifaces, ic.Iface)
		}
	}
	if len(ifaces) == 1 {
		add("intercept", "only one intercept direction: every entry arrives on %s, so the other direction of each connection bypasses seqshiftd and shifted connections break; add the server-side interface toward the clients", ifaces[0])
	}

	if len(c.Intercept) > 0 {
		for _, r := range c.Rules {
			for _, s := range r.Match.Servers {
				if !c.intercepted(s) {
					out = append(out, Finding{Line: r.line, Col: r.col, Msg: fmt.Sprintf(
						"rule %q: servers %s lie outside every intercept prefix: its connections never cross seqshiftd", r.Name, s)})
				}
			}
		}
	}

	if c.StateFile != "" && !under(c.StateFile, unitStateDir) {
		add("state_file", "state_file %s is outside %s, the only state directory the systemd unit can write (StateDirectory=): snapshots will fail under the unit", c.StateFile, unitStateDir)
	}
	if !under(c.ControlSocket, unitRuntimeDir) {
		add("control_socket", "control_socket %s is outside %s, the only runtime directory the systemd unit can write (RuntimeDirectory=): run will fail under the unit", c.ControlSocket, unitRuntimeDir)
	}
	if c.usesKeyed() && !under(c.ISNKeyFile, unitStateDir) {
		line, col := max(c.keyPos[0], 1), max(c.keyPos[1], 1)
		out = append(out, Finding{Line: line, Col: col, Msg: fmt.Sprintf(
			"isn_key_file %s is outside %s: under the systemd unit the service's user can neither create it there nor read a root-only copy; keep the key in %s", c.ISNKeyFile, unitStateDir, unitStateDir)})
	}
	if c.MetricsListen != "" {
		if host, _, err := net.SplitHostPort(c.MetricsListen); err == nil && allInterfaces(host) {
			add("metrics_listen", "metrics_listen %q listens on every interface, and the endpoint has no authentication: bind 127.0.0.1 or a management address", c.MetricsListen)
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	return out
}

// intercepted reports whether any intercept entry steers traffic toward part of p.
func (c *Config) intercepted(p netip.Prefix) bool {
	for _, ic := range c.Intercept {
		for _, to := range ic.To {
			if to.Overlaps(p) {
				return true
			}
		}
	}
	return false
}

func under(path, dir string) bool {
	return strings.HasPrefix(filepath.Clean(path), dir+string(filepath.Separator))
}

func allInterfaces(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}
