package tcshift

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// Iface is one client-facing interface: the programs rewrite at its tc hooks, and intercept
// traffic toward (ingress) and from (egress) the prefixes To.
type Iface struct {
	Name string
	To   []netip.Prefix
}

// Config says where the programs run and what they intercept.
type Config struct {
	Ifaces   []Iface
	TapName  string // the daemon's TAP: packets for the daemon leave through it, come back on it
	Mark     uint32 // the re-injection bit(s) of skb->mark; must be non-zero
	MaxFlows int    // entries of the flows map
	Priority uint16 // tc filter priority of our filters; 0 means DefaultPriority
	// PinDir, if not "", is a directory on a bpffs (e.g. /sys/fs/bpf/seqshiftd) where the flows
	// map is pinned as "flows": the next Load reuses it, entries and kernel counters included,
	// so flows survive a crash without PreviousFlows (which needs CAP_SYS_ADMIN). A pinned map
	// of another size (MaxFlows changed) is replaced by a new one holding its entries.
	PinDir string
}

// flowsPin is the pinned flows map's path.
func (c Config) flowsPin() string { return filepath.Join(c.PinDir, bpfMapFlows) }

// DefaultPriority is the tc filter priority used when Config.Priority is 0: first, so that
// no other filter reads a segment before it is shifted.
const DefaultPriority = 1

// filterHandle is the handle of every filter we install; with the priority and the
// "seqshiftd_" name it is how Detach and Installed recognise ours among others' filters.
const filterHandle = 0x5813

const filterNamePrefix = "seqshiftd_"

func (c Config) priority() uint16 {
	if c.Priority == 0 {
		return DefaultPriority
	}
	return c.Priority
}

func (c Config) validate() error {
	switch {
	case len(c.Ifaces) == 0:
		return errors.New("no client-facing interface")
	case c.TapName == "":
		return errors.New("no TAP name")
	case c.Mark == 0:
		return errors.New("mark must be non-zero: it tells the programs what the daemon wrote back")
	case c.MaxFlows < 1 || c.MaxFlows > 1<<30:
		return fmt.Errorf("max flows %d: must be 1..%d", c.MaxFlows, 1<<30)
	}
	seen := map[string]bool{c.TapName: true}
	for _, x := range c.Ifaces {
		if seen[x.Name] {
			return fmt.Errorf("interface %q listed twice (or is the TAP)", x.Name)
		}
		seen[x.Name] = true
		for _, p := range x.To {
			if !p.IsValid() || p.Addr().Zone() != "" {
				return fmt.Errorf("interface %s: bad prefix %v", x.Name, p)
			}
		}
	}
	return nil
}

// Supported says whether this kernel and this process can load and attach the programs, and
// if not, why: tc BPF programs, LPM tries, bounded loops and the helpers the programs call, with
// the privileges to load them. Measured (a non-root user with only the listed capabilities):
// Load and Attach need CAP_BPF, CAP_PERFMON (the verifier refuses the programs' pointer
// arithmetic without it) and CAP_NET_ADMIN; PreviousFlows also needs CAP_SYS_ADMIN (opening
// another process's program by ID), which Config.PinDir makes unnecessary. clsact itself can only be tried on a device; Attach
// reports it.
func Supported() error {
	raiseMemlock()
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		return fmt.Errorf("tc BPF programs (sched_cls): %w", err)
	}
	if err := features.HaveMapType(ebpf.LPMTrie); err != nil {
		return fmt.Errorf("BPF LPM trie maps: %w", err)
	}
	for _, fn := range []asm.BuiltinFunc{asm.FnRedirect, asm.FnL4CsumReplace, asm.FnSkbPullData, asm.FnKtimeGetBootNs} {
		if err := features.HaveProgramHelper(ebpf.SchedCLS, fn); err != nil {
			return fmt.Errorf("BPF helper %v for tc programs: %w", fn, err)
		}
	}
	// The one sure test: the verifier accepts the programs themselves, with this process's
	// privileges (bounded loops, for one, need CAP_BPF; a probe of them with another program
	// type would ask for more than the programs do).
	spec, err := loadBpf()
	if err != nil {
		return err
	}
	spec.Maps[bpfMapFlows].MaxEntries = 1
	var objs bpfObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return fmt.Errorf("load the tc programs: %w", err)
	}
	return objs.Close()
}

// iface is a resolved client-facing interface.
type iface struct {
	name    string
	ifindex int
}

// Datapath is the loaded programs and maps.
type Datapath struct {
	cfg    Config
	log    *zap.Logger
	objs   bpfObjects
	ifaces []iface
	tap    iface
	// created records the interfaces on which Attach created the clsact qdisc: Detach removes
	// those, and only those, once they hold no filter.
	created map[int]bool
}

// Load loads the programs and maps and fills the intercept, ifaces and config maps from cfg
// (the interfaces and the TAP must exist). It attaches nothing: see Attach.
func Load(cfg Config, log *zap.Logger) (*Datapath, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("tcshift config: %w", err)
	}
	raiseMemlock()
	spec, err := loadBpf()
	if err != nil {
		return nil, err
	}
	spec.Maps[bpfMapFlows].MaxEntries = uint32(cfg.MaxFlows)
	d := &Datapath{cfg: cfg, log: log, created: map[int]bool{}}
	var opts ebpf.CollectionOptions
	if cfg.PinDir != "" {
		if err := os.MkdirAll(cfg.PinDir, 0o700); err != nil {
			return nil, fmt.Errorf("pin directory: %w", err)
		}
		spec.Maps[bpfMapFlows].Pinning = ebpf.PinByName
		opts.Maps.PinPath = cfg.PinDir
	}
	err = spec.LoadAndAssign(&d.objs, &opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) && cfg.PinDir != "" {
		err = d.loadResized(spec)
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// The last lines of the log say why; the whole log is for whoever debugs it.
			log.Debug("verifier log", zap.String("log", fmt.Sprintf("%+v", ve)))
		}
		return nil, fmt.Errorf("load tc programs: %w", err)
	}
	if err := d.fill(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// loadResized loads the objects with a new flows map when the pinned one is of another size,
// carries the pinned map's entries over (as many as fit) and pins the new map in its place.
func (d *Datapath) loadResized(spec *ebpf.CollectionSpec) error {
	old, err := ebpf.LoadPinnedMap(d.cfg.flowsPin(), nil)
	if err != nil {
		return fmt.Errorf("open pinned flows map: %w", err)
	}
	defer old.Close()
	spec.Maps[bpfMapFlows].Pinning = ebpf.PinNone
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return err
	}
	var kept, lost int
	err = rangeFlows(old, func(k FlowKey, v *FlowValue) bool {
		if d.objs.Flows.Put(&k, v) == nil {
			kept++
		} else {
			lost++
		}
		return true
	})
	if err == nil {
		if err = old.Unpin(); err == nil {
			err = d.objs.Flows.Pin(d.cfg.flowsPin())
		}
	}
	if err != nil {
		d.objs.Close()
		return fmt.Errorf("replace pinned flows map: %w", err)
	}
	d.log.Warn("pinned flows map resized", zap.Int("max_flows", d.cfg.MaxFlows), zap.Int("kept", kept), zap.Int("lost", lost))
	return nil
}

// unpin removes the pinned flows map, and the pin directory if that leaves it empty.
func unpin(cfg Config) error {
	if cfg.PinDir == "" {
		return nil
	}
	if err := os.Remove(cfg.flowsPin()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pinned flows map: %w", err)
	}
	os.Remove(cfg.PinDir) // fails, harmlessly, if something else lives there
	return nil
}

// fill resolves the interfaces and writes the config, ifaces and intercept maps.
func (d *Datapath) fill() error {
	tap, err := netlink.LinkByName(d.cfg.TapName)
	if err != nil {
		return fmt.Errorf("TAP %s: %w", d.cfg.TapName, err)
	}
	if tap.Attrs().EncapType != "ether" {
		// A TUN has no link-layer header to carry Meta in.
		return fmt.Errorf("TAP %s: not an Ethernet device (%s): it must be a TAP, not a TUN", d.cfg.TapName, tap.Attrs().EncapType)
	}
	d.tap = iface{d.cfg.TapName, tap.Attrs().Index}
	if err := d.objs.Config.Put(uint32(0), bpfTcConfig{TapIfindex: uint32(d.tap.ifindex), Mark: d.cfg.Mark}); err != nil {
		return fmt.Errorf("write config map: %w", err)
	}
	for _, x := range d.cfg.Ifaces {
		l, err := netlink.LinkByName(x.Name)
		if err != nil {
			return fmt.Errorf("interface %s: %w", x.Name, err)
		}
		mac := l.Attrs().HardwareAddr
		if len(mac) != 6 || l.Attrs().EncapType != "ether" {
			return fmt.Errorf("interface %s: not Ethernet (%s, address %v): the programs read an Ethernet header", x.Name, l.Attrs().EncapType, mac)
		}
		ifindex := l.Attrs().Index
		var v bpfIface
		copy(v.Mac[:], mac)
		if err := d.objs.Ifaces.Put(uint32(ifindex), v); err != nil {
			return fmt.Errorf("write ifaces map for %s: %w", x.Name, err)
		}
		for _, p := range x.To {
			if err := d.objs.Intercept.Put(interceptKeyOf(ifindex, p), uint32(1)); err != nil {
				return fmt.Errorf("write intercept map for %s %v: %w", x.Name, p, err)
			}
		}
		d.ifaces = append(d.ifaces, iface{x.Name, ifindex})
	}
	return nil
}

// interceptKey mirrors struct intercept_key.
type interceptKey struct {
	Prefixlen uint32
	Ifindex   [4]byte // big-endian: the LPM trie matches from the first byte on
	Addr      [16]byte
}

// interceptKeyOf returns the LPM key of prefix p on interface ifindex: the 32 bits of the
// ifindex, then the prefix bits (an IPv4 prefix as part of ::ffff:0:0/96).
func interceptKeyOf(ifindex int, p netip.Prefix) interceptKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	k := interceptKey{Prefixlen: uint32(32 + bits), Addr: p.Addr().As16()}
	k.Ifindex = [4]byte{byte(ifindex >> 24), byte(ifindex >> 16), byte(ifindex >> 8), byte(ifindex)}
	return k
}

// Put adds or replaces a flow. Of an existing entry it keeps what the programs write (Packets,
// Bytes, LastSeen, and the window edges End, MaxEnd, MaxWin with their flags); the deltas,
// Ifindex, Mode, Flags and each direction's Scale and WindowScale flag are v's. The read and
// the write are two syscalls: a segment counted in between is lost from the counters, never
// from the flow.
func (d *Datapath) Put(k FlowKey, v FlowValue) error {
	var old FlowValue
	switch err := d.objs.Flows.Lookup(&k, &old); {
	case err == nil:
		v.Packets, v.Bytes, v.LastSeen = old.Packets, old.Bytes, old.LastSeen
		for i := range v.Window {
			w := old.Window[i]
			w.Scale = v.Window[i].Scale
			w.Flags = w.Flags&^WindowScale | v.Window[i].Flags&WindowScale
			v.Window[i] = w
		}
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("look up flow %v: %w", k, err)
	}
	if err := d.objs.Flows.Put(&k, &v); err != nil {
		return fmt.Errorf("put flow %v: %w", k, err)
	}
	return nil
}

// Delete removes a flow; removing one that is not there is not an error.
func (d *Datapath) Delete(k FlowKey) error {
	if err := d.objs.Flows.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete flow %v: %w", k, err)
	}
	return nil
}

// Lookup returns the flow's entry, and whether there is one.
func (d *Datapath) Lookup(k FlowKey) (FlowValue, bool, error) {
	var v FlowValue
	switch err := d.objs.Flows.Lookup(&k, &v); {
	case err == nil:
		return v, true, nil
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return FlowValue{}, false, nil
	default:
		return FlowValue{}, false, fmt.Errorf("look up flow %v: %w", k, err)
	}
}

// Range calls fn for every flow until fn returns false, reading the map in batches. Flows
// added or removed meanwhile may or may not be seen; v is valid during the call only.
func (d *Datapath) Range(fn func(FlowKey, *FlowValue) bool) error {
	return rangeFlows(d.objs.Flows, fn)
}

// rangeBatch is how many entries one batch syscall reads.
const rangeBatch = 256

func rangeFlows(m *ebpf.Map, fn func(FlowKey, *FlowValue) bool) error {
	keys := make([]FlowKey, rangeBatch)
	vals := make([]FlowValue, rangeBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if !fn(keys[i], &vals[i]) {
				return nil
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil // the end of the map
		case errors.Is(err, ebpf.ErrNotSupported) && n == 0:
			// Batch operations on hash maps came with Linux 5.6; iterate one by one.
			var k FlowKey
			var v FlowValue
			it := m.Iterate()
			for it.Next(&k, &v) {
				if !fn(k, &v) {
					return nil
				}
			}
			return it.Err()
		case err != nil:
			return fmt.Errorf("read flows map: %w", err)
		}
	}
}

// Stats returns the counters summed over CPUs. A counter that cannot be read (never seen) is 0.
func (d *Datapath) Stats() Stats {
	var s Stats
	var percpu []uint64
	for i := range s {
		if err := d.objs.Stats.Lookup(uint32(i), &percpu); err != nil {
			d.log.Warn("read kernel counter", zap.Stringer("counter", Stat(i)), zap.Error(err))
			continue
		}
		for _, c := range percpu {
			s[i] += c
		}
	}
	return s
}

// PreviousFlows calls fn for each entry of the flows map used by a filter of ours that is
// already attached to one of the configured interfaces or the TAP and that is not this
// Datapath's own (a previous instance's, e.g. after a crash): call it before Attach replaces
// those filters, to carry the flows over. It finds the map through the attached program's map
// IDs; no such filter is not an error.
func (d *Datapath) PreviousFlows(fn func(FlowKey, FlowValue)) error {
	own, err := d.objs.Flows.Info()
	if err != nil {
		return fmt.Errorf("info of own flows map: %w", err)
	}
	ownID, _ := own.ID()
	seen := map[ebpf.MapID]bool{ownID: true}
	for _, f := range ourFilters(d.cfg, d.linkNames()) {
		if f.err != nil {
			return f.err
		}
		if err := previousFlowsOf(f.filter.Id, seen, fn); err != nil {
			return err
		}
	}
	return nil
}

func previousFlowsOf(progID int, seen map[ebpf.MapID]bool, fn func(FlowKey, FlowValue)) error {
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(progID))
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("open attached program %d (needs CAP_SYS_ADMIN): %w", progID, err)
	}
	if err != nil {
		return fmt.Errorf("open attached program %d: %w", progID, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("info of attached program %d: %w", progID, err)
	}
	ids, _ := info.MapIDs()
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return fmt.Errorf("open map %d of attached program %d: %w", id, progID, err)
		}
		mi, err := m.Info()
		if err != nil || mi.Name != bpfMapFlows || mi.KeySize != uint32(flowKeySize) || mi.ValueSize != uint32(flowValueSize) {
			m.Close()
			continue
		}
		err = rangeFlows(m, func(k FlowKey, v *FlowValue) bool { fn(k, *v); return true })
		m.Close()
		if err != nil {
			return fmt.Errorf("read previous flows map %d: %w", id, err)
		}
	}
	return nil
}

// Close closes the file descriptors. Attached filters, and so the programs and maps they use,
// stay in the kernel: established flows keep flowing while the daemon restarts.
func (d *Datapath) Close() error {
	return d.objs.Close()
}

// raiseMemlock lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps to it (before 5.11).
// Later kernels charge the memory cgroup instead, and the systemd unit gives no
// CAP_SYS_RESOURCE, so a refusal is not an error: were the limit really in the way, creating
// the maps fails and says so.
func raiseMemlock() { _ = rlimit.RemoveMemlock() }
