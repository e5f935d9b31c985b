package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tun"
)

// Defaults for settings the file leaves out.
const (
	DefaultTunName          = "seqshift0"
	DefaultStateFile        = "/var/lib/seqshiftd/flows.state"
	DefaultControlSocket    = "/run/seqshiftd/control.sock"
	DefaultISNKeyFile       = "/var/lib/seqshiftd/isn.key"
	DefaultSnapshotInterval = 5 * time.Second
	// The flow table's capacity, the TUN's sizes and the steering numbers are not defined
	// here: their owners (flowtable, tun, steering) define them and their ranges, and the
	// decoder asks them, so that `check` and `run` cannot disagree.
)

// Limits enforced on the file.
const (
	maxFileSize  = 4 << 20
	maxIfaceName = 15  // IFNAMSIZ - 1
	maxSunPath   = 107 // sizeof(sockaddr_un.sun_path) - 1
)

// OnStop is what happens to steering when the daemon stops (key on_stop).
type OnStop uint8

// OnStop values.
const (
	// OnStopFailClosed leaves the steering rules and the blackhole in place: intercepted
	// traffic is dropped until seqshiftd runs again, rather than forwarded with sequence
	// numbers the other end does not expect.
	OnStopFailClosed OnStop = iota
	// OnStopRestore removes the steering: traffic is forwarded untouched, which breaks the
	// connections that were being shifted but restores plain routing.
	OnStopRestore
)

// String returns the value as written in the file.
func (o OnStop) String() string {
	if o == OnStopRestore {
		return "restore"
	}
	return "fail-closed"
}

// MalformedAction is what the datapath does with a packet it cannot parse or rewrite (key
// malformed).
type MalformedAction uint8

// MalformedAction values.
const (
	MalformedPass MalformedAction = iota // forward it as it came
	MalformedDrop                        // drop it
)

// String returns the value as written in the file.
func (m MalformedAction) String() string {
	if m == MalformedDrop {
		return "drop"
	}
	return "pass"
}

// WhenFull is what happens to a new connection's SYN when the flow table is full (key
// flows.when_full).
type WhenFull uint8

// WhenFull values.
const (
	WhenFullPass WhenFull = iota // forward it untracked and unshifted
	WhenFullDrop                 // drop it; the client retries the SYN later
)

// String returns the value as written in the file.
func (w WhenFull) String() string {
	if w == WhenFullDrop {
		return "drop"
	}
	return "pass"
}

// Datapath chooses where established flows are shifted (key datapath).
type Datapath uint8

// Datapath values.
const (
	// DatapathAuto uses the kernel datapath where the kernel accepts it and the TUN datapath
	// otherwise, saying why in the log and in status.
	DatapathAuto Datapath = iota
	// DatapathKernel shifts established flows in tc/eBPF programs at the client-facing
	// interfaces, in the one forwarding pass; the daemon still decides every connection. It
	// refuses to start where the programs cannot be loaded.
	DatapathKernel
	// DatapathTUN steers intercepted traffic through the TUN by policy routing: every packet is
	// shifted in user space and forwarded twice by the gateway.
	DatapathTUN
)

var datapathNames = [...]string{"auto", "kernel", "tun"}

// String returns the value as written in the file.
func (p Datapath) String() string {
	if int(p) < len(datapathNames) {
		return datapathNames[p]
	}
	return "unknown"
}

// DefaultKernelMark is the skb mark bit the kernel datapath sets on packets the daemon hands
// back, so that the client-facing interface's own program lets them pass; the programs clear it
// again before netfilter sees the packet. Bit 28 is outside the ranges Cilium, Calico,
// kube-proxy, Tailscale and wg-quick use by default.
const DefaultKernelMark = 1 << 28

// Kernel is the `kernel:` section: settings of the kernel datapath.
type Kernel struct {
	Mark uint32 // the re-injection mark bit(s); non-zero
	// PinDir is a directory on a bpffs where the flow map is pinned, so that the next daemon
	// reuses it, entries included, without needing CAP_SYS_ADMIN to find the previous
	// instance's map; "" finds it through the attached programs instead.
	PinDir string
}

// Intercept is one `intercept:` entry: forwarded TCP (and ICMP) arriving on Iface toward one
// of the To prefixes is steered through the TUN.
type Intercept struct {
	Iface string
	To    []netip.Prefix

	line, col int // where the entry is, for warnings
}

// Tun is the `tun:` section.
type Tun struct {
	Name    string
	MTU     int // 0: the largest MTU of the intercept interfaces
	Queues  int // 0: one per CPU
	Offload bool
}

// Log is the `log:` section.
type Log struct {
	Level  string // debug, info, warn, error
	Format string // auto, console, json
}

// Flows is the `flows:` section.
type Flows struct {
	Max      int
	WhenFull WhenFull
	Timeouts flowtable.Timeouts // zero fields: flowtable's defaults
}

// Steering is the `steering:` section: the routing table, rule priority and rtnetlink
// protocol number seqshiftd's steering uses and tags its objects with.
type Steering struct {
	Table, Priority, Protocol int
}

// Config is a whole, valid configuration file. Treat it as read-only once parsed: the daemon
// swaps in a new one on reload rather than changing the one in force.
type Config struct {
	Path             string // the file it was read from
	Datapath         Datapath
	Kernel           Kernel
	Tun              Tun
	Intercept        []Intercept
	StateFile        string // "": no snapshots
	SnapshotInterval time.Duration
	ControlSocket    string
	MetricsListen    string // "": no metrics endpoint
	ISNKeyFile       string
	Log              Log
	OnStop           OnStop
	Malformed        MalformedAction
	Flows            Flows
	Steering         Steering
	// Observe puts every rule in observe mode (top-level observe: true): connections are
	// tracked and listed with the offsets they would get, and none is rewritten.
	Observe bool
	Rules   []*Rule

	key    *isnKey           // shared by every keyed Side
	keyPos [2]int            // line, col naming the key file in errors: isn_key_file, or the first keyed rule
	at     map[string][2]int // line, col of each top-level key's value, for check's warnings
}

// Defaults returns the configuration an empty file gives.
func Defaults() *Config {
	return &Config{
		Kernel:           Kernel{Mark: DefaultKernelMark},
		Tun:              Tun{Name: DefaultTunName, Offload: true},
		StateFile:        DefaultStateFile,
		SnapshotInterval: DefaultSnapshotInterval,
		ControlSocket:    DefaultControlSocket,
		ISNKeyFile:       DefaultISNKeyFile,
		Log:              Log{Level: "info", Format: "auto"},
		Flows:            Flows{Max: flowtable.DefaultMaxFlows},
		Steering:         Steering{Table: steering.DefaultTable, Priority: steering.DefaultPriority, Protocol: steering.DefaultProtocol},
		key:              new(isnKey),
	}
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// readFile reads a configuration file, refusing one larger than maxFileSize.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{File: path, Line: 1, Col: 1, Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}
	}
	return data, nil
}

// Parse parses a configuration file's contents; path names it in errors and anchors relative
// paths in it. Every problem found is reported, as Errors, each "FILE:LINE:COL: message".
// Parse touches nothing outside data.
func Parse(path string, data []byte) (*Config, error) {
	return parse(path, data, nil)
}

// parse is Parse decoding only the top-level keys that keep accepts, or all of them when keep
// is nil.
func parse(path string, data []byte, keep func(key string) bool) (*Config, error) {
	d := &decoder{file: path}
	root, ok := d.document(data)
	if !ok {
		return nil, d.err()
	}
	if keep != nil && root != nil && root.Kind == yaml.MappingNode {
		kept := &yaml.Node{Kind: yaml.MappingNode, Tag: root.Tag, Line: root.Line, Column: root.Column}
		for i := 0; i+1 < len(root.Content); i += 2 {
			if keep(root.Content[i].Value) {
				kept.Content = append(kept.Content, root.Content[i], root.Content[i+1])
			}
		}
		root = kept
	}
	cfg := Defaults()
	cfg.Path = path
	d.config(cfg, root)
	if err := d.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// document parses data into a node tree holding exactly one YAML document (or none).
func (d *decoder) document(data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		// yaml.v3 has panicked on hostile input before; a reload must never take the daemon down.
		if r := recover(); r != nil {
			d.errAt(1, 1, fmt.Sprintf("YAML syntax: cannot parse: %v", r))
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true // an empty file: every default
		}
		d.syntaxError(err)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			d.syntaxError(err)
		} else {
			d.errorf(&extra, "only one YAML document is allowed per file")
		}
		return nil, false
	}
	if !d.bounded(&doc) {
		return nil, false
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], true
	}
	return nil, true
}

var topKeys = []string{"tun", "intercept", "state_file", "snapshot_interval", "control_socket",
	"metrics_listen", "isn_key_file", "log", "on_stop", "malformed", "flows", "steering", "datapath", "kernel", "observe", "rules"}

// config fills cfg from the top-level mapping.
func (d *decoder) config(cfg *Config, root *yaml.Node) {
	if root == nil {
		return
	}
	m := d.mapping(root, "", topKeys)
	cfg.at = make(map[string][2]int, len(m))
	for k, v := range m {
		cfg.at[k] = [2]int{v.Line, v.Column}
	}
	if v, ok := m["datapath"]; ok {
		s, _ := d.enum(v, "datapath", datapathNames[:]...)
		cfg.Datapath = Datapath(max(slices.Index(datapathNames[:], s), 0))
	}
	if v, ok := m["kernel"]; ok {
		km := d.mapping(v, "kernel", []string{"mark", "pin_dir"})
		if mv, ok := km["mark"]; ok {
			if mk, ok := d.integer(mv, "kernel.mark", 1, 1<<32-1); ok {
				cfg.Kernel.Mark = uint32(mk)
			}
		}
		if pv, ok := km["pin_dir"]; ok {
			cfg.Kernel.PinDir = d.path(pv, "kernel.pin_dir", filepath.Dir(cfg.Path), true)
		}
	}
	if v, ok := m["tun"]; ok {
		d.tun(&cfg.Tun, v)
	}
	if v, ok := m["intercept"]; ok {
		cfg.Intercept = d.intercepts(v, cfg.Tun.Name)
	}
	dir := filepath.Dir(cfg.Path)
	if v, ok := m["state_file"]; ok {
		cfg.StateFile = d.path(v, "state_file", dir, true)
	}
	if v, ok := m["snapshot_interval"]; ok {
		if iv, ok := d.duration(v, "snapshot_interval", time.Second); ok && iv != 0 {
			cfg.SnapshotInterval = iv
		}
	}
	if v, ok := m["control_socket"]; ok {
		cfg.ControlSocket = d.path(v, "control_socket", dir, false)
		if len(cfg.ControlSocket) > maxSunPath {
			d.errorf(v, "control_socket: path is %d bytes long; a unix socket path may have at most %d", len(cfg.ControlSocket), maxSunPath)
		}
	}
	if v, ok := m["metrics_listen"]; ok {
		cfg.MetricsListen = d.listenAddr(v)
	}
	if v, ok := m["isn_key_file"]; ok {
		cfg.ISNKeyFile = d.path(v, "isn_key_file", dir, true)
		cfg.keyPos = [2]int{v.Line, v.Column}
	}
	if v, ok := m["log"]; ok {
		lm := d.mapping(v, "log", []string{"level", "format"})
		if n, ok := lm["level"]; ok {
			cfg.Log.Level, _ = d.enum(n, "log.level", "debug", "info", "warn", "error")
		}
		if n, ok := lm["format"]; ok {
			cfg.Log.Format, _ = d.enum(n, "log.format", "auto", "console", "json")
		}
	}
	if v, ok := m["on_stop"]; ok {
		if s, _ := d.enum(v, "on_stop", "fail-closed", "restore"); s == "restore" {
			cfg.OnStop = OnStopRestore
		}
	}
	if v, ok := m["malformed"]; ok {
		if s, _ := d.enum(v, "malformed", "pass", "drop"); s == "drop" {
			cfg.Malformed = MalformedDrop
		}
	}
	if v, ok := m["flows"]; ok {
		d.flows(&cfg.Flows, v)
	}
	if v, ok := m["steering"]; ok {
		d.steering(&cfg.Steering, v)
	}
	if v, ok := m["observe"]; ok {
		cfg.Observe, _ = d.boolean(v, "observe")
	}
	if v, ok := m["rules"]; ok {
		cfg.Rules = d.rules(v, cfg.key)
	}
	for _, r := range cfg.Rules {
		if r.Client.Mode() != ModeKeyed && r.Server.Mode() != ModeKeyed {
			continue
		}
		if cfg.keyPos == ([2]int{}) {
			cfg.keyPos = [2]int{r.line, r.col}
		}
		if cfg.ISNKeyFile == "" {
			d.errAt(cfg.keyPos[0], cfg.keyPos[1], fmt.Sprintf("rule %q uses keyed, which needs isn_key_file", r.Name))
		}
		break
	}
}

func (d *decoder) tun(t *Tun, n *yaml.Node) {
	m := d.mapping(n, "tun", []string{"name", "mtu", "queues", "offload"})
	if v, ok := m["name"]; ok {
		if s, ok := d.str(v, "tun.name"); ok {
			if msg := ifaceNameProblem(s); msg != "" {
				d.errorf(v, "tun.name: %s", msg)
			}
			t.Name = s
		}
	}
	if v, ok := m["mtu"]; ok {
		if mtu, ok := d.integer(v, "tun.mtu", 0, tun.MaxMTU); ok {
			if err := tun.CheckMTU(mtu); err != nil {
				d.errorf(v, "tun.mtu: %v (0 picks the largest intercept interface MTU)", err)
			}
			t.MTU = int(mtu)
		}
	}
	if v, ok := m["queues"]; ok {
		q, _ := d.limited(v, "tun.queues", 0, tun.MaxQueues, tun.CheckQueues)
		t.Queues = int(q)
	}
	if v, ok := m["offload"]; ok {
		t.Offload, _ = d.boolean(v, "tun.offload")
	}
}

// ifaceNameProblem checks a Linux interface name the way the kernel's dev_valid_name does.
func ifaceNameProblem(s string) string {
	switch {
	case s == "":
		return "an interface name cannot be empty"
	case len(s) > maxIfaceName:
		return fmt.Sprintf("interface name %q is longer than %d bytes", s, maxIfaceName)
	case s == "." || s == "..":
		return fmt.Sprintf("%q is not a valid interface name", s)
	case strings.ContainsAny(s, "/: \t\n\r\v\f"):
		return fmt.Sprintf("interface name %q contains '/', ':' or white space", s)
	case strings.Contains(s, "%"):
		// The kernel reads "%d" as "pick a free number": the TUN would get a name nobody asked
		// for, and steering, status and teardown, which find it by this exact name, would not
		// find it. No existing interface can have a '%' in its name either.
		return fmt.Sprintf("interface name %q contains '%%': name the device exactly", s)
	}
	return ""
}

func (d *decoder) intercepts(n *yaml.Node, tunName string) []Intercept {
	var out []Intercept
	for _, it := range d.sequence(n, "intercept") {
		if it.Kind != yaml.MappingNode {
			d.errorf(it, "intercept: want an entry with iface and to, got %s", describe(it))
			continue
		}
		m := d.mapping(it, "intercept entry", []string{"iface", "to"})
		ic := Intercept{line: it.Line, col: it.Column}
		iface, hasIface := m["iface"]
		if !hasIface {
			d.errorf(it, "intercept entry: missing iface")
		} else if s, ok := d.str(iface, "intercept.iface"); ok {
			if msg := ifaceNameProblem(s); msg != "" {
				d.errorf(iface, "intercept.iface: %s", msg)
			} else if s == tunName {
				d.errorf(iface, "intercept.iface: %q is seqshiftd's own TUN device", s)
			}
			ic.Iface = s
		}
		to, hasTo := m["to"]
		if !hasTo {
			d.errorf(it, "intercept entry: missing to (the destination prefixes to intercept)")
		} else {
			ic.To = d.prefixes(to, "intercept.to")
			if t := deref(to); isNull(t) || (t.Kind == yaml.SequenceNode && len(t.Content) == 0) {
				d.errorf(to, "intercept.to: list at least one destination prefix")
			}
		}
		out = append(out, ic)
	}
	return out
}

func (d *decoder) prefixes(n *yaml.Node, what string) []netip.Prefix {
	items := d.sequence(n, what)
	out := make([]netip.Prefix, 0, len(items))
	for _, it := range items {
		s, ok := d.str(it, what)
		if !ok {
			continue
		}
		p, msg := parsePrefix(s)
		if msg != "" {
			d.errorf(it, "%s: %s", what, msg)
			continue
		}
		out = append(out, p)
	}
	return out
}

// path reads a file path; a relative one is taken relative to the configuration file's
// directory, so that a file and the state it names can move together.
func (d *decoder) path(n *yaml.Node, what, dir string, emptyOK bool) string {
	s, ok := d.str(n, what)
	if !ok {
		return ""
	}
	switch {
	case s == "" && emptyOK:
		return ""
	case s == "":
		d.errorf(n, "%s: a path is required", what)
		return ""
	case strings.ContainsRune(s, 0):
		d.errorf(n, "%s: path contains a NUL byte", what)
		return ""
	case strings.HasSuffix(s, "/"):
		d.errorf(n, "%s: %q names a directory; name a file", what, s)
		return ""
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(dir, s)
	}
	return filepath.Clean(s)
}

func (d *decoder) listenAddr(n *yaml.Node) string {
	s, ok := d.str(n, "metrics_listen")
	if !ok || s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		d.errorf(n, "metrics_listen: %q is not HOST:PORT, e.g. 127.0.0.1:9617 or [::1]:9617", s)
		return ""
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		d.errorf(n, "metrics_listen: port %q is not 1..65535", port)
		return ""
	}
	if strings.ContainsAny(host, " /") {
		d.errorf(n, "metrics_listen: %q is not a host name or address", host)
		return ""
	}
	return s
}

var timeoutKeys = []string{"syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close", "unassured"}

func (d *decoder) flows(f *Flows, n *yaml.Node) {
	m := d.mapping(n, "flows", []string{"max", "when_full", "timeouts"})
	if v, ok := m["max"]; ok {
		mx, _ := d.limited(v, "flows.max", 1, flowtable.MaxMaxFlows, flowtable.CheckMaxFlows)
		f.Max = int(mx)
	}
	if v, ok := m["when_full"]; ok {
		if s, _ := d.enum(v, "flows.when_full", "pass", "drop"); s == "drop" {
			f.WhenFull = WhenFullDrop
		}
	}
	if v, ok := m["timeouts"]; ok {
		tm := d.mapping(v, "flows.timeouts", timeoutKeys)
		dst := []*time.Duration{&f.Timeouts.SynSent, &f.Timeouts.SynRecv, &f.Timeouts.Established,
			&f.Timeouts.FinWait, &f.Timeouts.CloseWait, &f.Timeouts.LastAck, &f.Timeouts.TimeWait, &f.Timeouts.Close,
			&f.Timeouts.Unassured}
		for i, k := range timeoutKeys {
			if tv, ok := tm[k]; ok {
				*dst[i], _ = d.duration(tv, "flows.timeouts."+k, time.Second)
			}
		}
	}
}

func (d *decoder) steering(s *Steering, n *yaml.Node) {
	m := d.mapping(n, "steering", []string{"table", "priority", "protocol"})
	if v, ok := m["table"]; ok {
		t, _ := d.limited(v, "steering.table", steering.MinTable, steering.MaxTable, steering.CheckTable)
		s.Table = int(t)
	}
	if v, ok := m["priority"]; ok {
		p, _ := d.limited(v, "steering.priority", steering.MinPriority, steering.MaxPriority, steering.CheckPriority)
		s.Priority = int(p)
	}
	if v, ok := m["protocol"]; ok {
		p, _ := d.limited(v, "steering.protocol", steering.MinProtocol, steering.MaxProtocol, steering.CheckProtocol)
		s.Protocol = int(p)
	}
}

func (d *decoder) rules(n *yaml.Node, key *isnKey) []*Rule {
	var out []*Rule
	seen := map[string]int{}
	for _, it := range d.sequence(n, "rules") {
		if it.Kind != yaml.MappingNode {
			d.errorf(it, "rules: want a rule with name, match, client_isn and server_isn, got %s", describe(it))
			continue
		}
		m := d.mapping(it, "rule", []string{"name", "match", "client_isn", "server_isn", "observe"})
		r := &Rule{Client: &Side{}, Server: &Side{}, line: it.Line, col: it.Column, pos: len(out)}
		if v, ok := m["name"]; !ok {
			d.errorf(it, "rule: missing name")
		} else if s, ok := d.str(v, "rule name"); ok {
			switch first, dup := seen[s]; {
			case !validName(s):
				d.errorf(v, "rule name %q: use 1 to 64 letters, digits, '-', '_' or '.'", s)
			case dup:
				d.errorf(v, "duplicate rule name %q (first at line %d)", s, first)
			default:
				seen[s] = v.Line
			}
			r.Name = s
		}
		if v, ok := m["match"]; ok {
			mm := d.mapping(v, "match", []string{"clients", "servers", "server_ports"})
			if pv, ok := mm["clients"]; ok {
				r.Match.Clients = d.prefixes(pv, "match.clients")
			}
			if pv, ok := mm["servers"]; ok {
				r.Match.Servers = d.prefixes(pv, "match.servers")
			}
			if pv, ok := mm["server_ports"]; ok {
				r.Match.ServerPorts = d.ports(pv)
			}
		}
		r.Match.index()
		if v, ok := m["client_isn"]; ok {
			r.Client = d.side(v, "client_isn", key)
		}
		if v, ok := m["server_isn"]; ok {
			r.Server = d.side(v, "server_isn", key)
		}
		if v, ok := m["observe"]; ok {
			r.Observe, _ = d.boolean(v, "rule observe")
		}
		out = append(out, r)
	}
	return out
}

func (d *decoder) ports(n *yaml.Node) []PortRange {
	items := d.sequence(n, "match.server_ports")
	out := make([]PortRange, 0, len(items))
	for _, it := range items {
		if it.Kind != yaml.ScalarNode || (it.ShortTag() != "!!int" && it.ShortTag() != "!!str" && !integerLiteral.MatchString(it.Value)) {
			d.errorf(it, "match.server_ports: want a port 1..65535 or a range such as \"20000-20010\", got %s", describe(it))
			continue
		}
		p, msg := parsePort(it.Value)
		if msg != "" {
			d.errorf(it, "match.server_ports: %s", msg)
			continue
		}
		out = append(out, p)
	}
	return out
}

func (d *decoder) side(n *yaml.Node, what string, key *isnKey) *Side {
	n = deref(n)
	if n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		d.errorf(n, "%s: want an ISN mode, got %s (did you mean \"fixed %s\"?)", what, describe(n), n.Value)
		return &Side{}
	}
	s, ok := d.str(n, what)
	if !ok {
		return &Side{}
	}
	side, msg := parseSide(s)
	if msg != "" {
		d.errorf(n, "%s: %s", what, msg)
		return &Side{}
	}
	if side.mode == ModeKeyed {
		side.key = key
	}
	return side
}

// LoadKeys reads the file at path but decodes only the named top-level keys, ignoring the rest:
// the client commands (status, flows, teardown) need the control socket or the steering
// numbers even when someone has just broken a rule, and a daemon still runs the old policy.
// Errors in the named keys, and YAML syntax errors, are still reported.
func LoadKeys(path string, keys ...string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return parse(path, data, func(key string) bool { return slices.Contains(keys, key) })
}
