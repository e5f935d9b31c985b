package tcshift

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Where each program runs: on every client-facing interface its ingress and egress, on the
// TAP its ingress. The filter names (with filterNamePrefix) are how tc shows them.
type placement struct {
	parent uint32
	name   string
}

var (
	clientHooks = []placement{
		{netlink.HANDLE_MIN_INGRESS, filterNamePrefix + bpfProgClientIngress},
		{netlink.HANDLE_MIN_EGRESS, filterNamePrefix + bpfProgClientEgress},
	}
	tapHooks = []placement{{netlink.HANDLE_MIN_INGRESS, filterNamePrefix + bpfProgTapIngress}}
)

func (d *Datapath) linkNames() []string {
	names := make([]string, 0, len(d.ifaces)+1)
	for _, x := range d.ifaces {
		names = append(names, x.name)
	}
	return append(names, d.tap.name)
}

func configLinkNames(cfg Config) []string {
	names := make([]string, 0, len(cfg.Ifaces)+1)
	for _, x := range cfg.Ifaces {
		names = append(names, x.Name)
	}
	return append(names, cfg.TapName)
}

func (d *Datapath) program(name string) *ebpf.Program {
	switch strings.TrimPrefix(name, filterNamePrefix) {
	case bpfProgClientIngress:
		return d.objs.ClientIngress
	case bpfProgClientEgress:
		return d.objs.ClientEgress
	}
	return d.objs.TapIngress
}

// Attach puts the programs on the TAP's ingress and every interface's ingress and egress:
// a clsact qdisc where there is none, and our filters added or, where a filter of ours is
// already there (a previous instance's), replaced in one netlink request, so that there is no
// moment without a program. Other filters and qdiscs are left alone. The TAP comes first, so
// that what the interfaces send to the daemon can come back.
func (d *Datapath) Attach() error {
	links := append([]iface{d.tap}, d.ifaces...)
	for i, x := range links {
		hooks := clientHooks
		if i == 0 {
			hooks = tapHooks
		}
		l, err := netlink.LinkByIndex(x.ifindex)
		if err != nil {
			return fmt.Errorf("attach to %s: %w", x.name, err)
		}
		if l.Attrs().Name != x.name {
			return fmt.Errorf("attach to %s: ifindex %d is now %s", x.name, x.ifindex, l.Attrs().Name)
		}
		created, err := ensureClsact(l)
		if err != nil {
			return fmt.Errorf("attach to %s: %w", x.name, err)
		}
		if created {
			d.created[x.ifindex] = true
		}
		for _, h := range hooks {
			f := d.filter(l.Attrs().Index, h)
			f.Fd = d.program(h.name).FD()
			if err := netlink.FilterReplace(f); err != nil {
				return fmt.Errorf("attach %s to %s: %w", h.name, x.name, err)
			}
		}
		d.log.Debug("attached", zap.String("iface", x.name), zap.Bool("created_clsact", created))
	}
	return nil
}

func (d *Datapath) filter(ifindex int, h placement) *netlink.BpfFilter {
	return filterAt(ifindex, h, d.cfg.priority())
}

func filterAt(ifindex int, h placement, prio uint16) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.parent,
			Handle:    filterHandle,
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Name:         h.name,
		DirectAction: true,
	}
}

// ensureClsact adds a clsact qdisc to l unless it has one, and says whether it added it.
func ensureClsact(l netlink.Link) (bool, error) {
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return false, nil
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil {
		// An "ingress" qdisc holds the same handle: clsact and ingress cannot coexist.
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	return true, nil
}

// found is one of our filters on an interface, or the error met looking for them.
type found struct {
	link   netlink.Link
	filter *netlink.BpfFilter
	err    error
}

// ourFilters lists our filters on the named links: cls_bpf filters with our handle, priority
// and name prefix. A link that does not exist has none.
func ourFilters(cfg Config, names []string) []found {
	var out []found
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			return append(out, found{err: fmt.Errorf("interface %s: %w", name, err)})
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := netlink.FilterList(l, parent)
			if err != nil {
				return append(out, found{err: fmt.Errorf("list filters of %s: %w", name, err)})
			}
			for _, f := range fs {
				bf, ok := f.(*netlink.BpfFilter)
				if ok && bf.Handle == filterHandle && bf.Priority == cfg.priority() && strings.HasPrefix(bf.Name, filterNamePrefix) {
					// The dump may report clsact's own handle as the parent; the hook is the
					// one we listed.
					bf.Parent = parent
					out = append(out, found{link: l, filter: bf})
				}
			}
		}
	}
	return out
}

// Detach removes our filters from the interfaces and the TAP, the clsact qdiscs that this
// Datapath created and that are now empty, and the pinned flows map: nothing uses it any more.
func (d *Datapath) Detach() error {
	err := errors.Join(detach(d.cfg, d.linkNames()), unpin(d.cfg))
	for _, x := range append([]iface{d.tap}, d.ifaces...) {
		if !d.created[x.ifindex] {
			continue
		}
		removed, e := removeClsactIfEmpty(x)
		if e != nil {
			err = errors.Join(err, e)
		}
		if removed {
			delete(d.created, x.ifindex)
		}
	}
	return err
}

// CreatedClsact names the interfaces on which Attach created the clsact qdisc, for a record
// that outlives the process (see RemoveClsactIfEmpty).
func (d *Datapath) CreatedClsact() []string {
	var out []string
	for _, x := range append([]iface{d.tap}, d.ifaces...) {
		if d.created[x.ifindex] {
			out = append(out, x.name)
		}
	}
	return out
}

// RemoveClsactIfEmpty removes the clsact qdisc of the named interface if no filter is left on
// it; a missing interface or qdisc is not an error. It is for teardown from a record saying
// that seqshiftd created that qdisc (Datapath.CreatedClsact): only then is an empty one ours.
func RemoveClsactIfEmpty(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("interface %s: %w", name, err)
	}
	_, err = removeClsactIfEmpty(iface{name: name, ifindex: l.Attrs().Index})
	return err
}

// Detach removes our filters from cfg's interfaces and TAP, and the pinned flows map, without a
// loaded Datapath (teardown after a crash). It leaves clsact qdiscs in place: without a record
// of who created one, an empty clsact may be someone else's (see RemoveClsactIfEmpty).
func Detach(cfg Config) error {
	return errors.Join(detach(cfg, configLinkNames(cfg)), unpin(cfg))
}

func detach(cfg Config, names []string) error {
	var errs []error
	for _, f := range ourFilters(cfg, names) {
		if f.err != nil {
			errs = append(errs, f.err)
			continue
		}
		if err := netlink.FilterDel(f.filter); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove filter %s from %s: %w", f.filter.Name, f.link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// removeClsactIfEmpty removes the clsact qdisc of x if no filter is left on it, and says
// whether the qdisc is gone.
func removeClsactIfEmpty(x iface) (bool, error) {
	l, err := netlink.LinkByIndex(x.ifindex)
	if err != nil {
		return true, nil // the interface is gone, and its qdisc with it
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			return false, fmt.Errorf("list filters of %s: %w", x.name, err)
		}
		if len(fs) > 0 {
			return false, nil // someone else's filters use it; try again at the next Detach
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: x.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return false, fmt.Errorf("remove clsact from %s: %w", x.name, err)
	}
	return true, nil
}

// Installed reports whether our filters are attached at every hook: ingress and egress of each
// of cfg's interfaces, ingress of the TAP.
func Installed(cfg Config) (bool, error) {
	have := map[string]bool{}
	for _, f := range ourFilters(cfg, configLinkNames(cfg)) {
		if f.err != nil {
			return false, f.err
		}
		have[fmt.Sprintf("%s/%d/%s", f.link.Attrs().Name, f.filter.Parent, f.filter.Name)] = true
	}
	for _, x := range cfg.Ifaces {
		for _, h := range clientHooks {
			if !have[fmt.Sprintf("%s/%d/%s", x.Name, h.parent, h.name)] {
				return false, nil
			}
		}
	}
	for _, h := range tapHooks {
		if !have[fmt.Sprintf("%s/%d/%s", cfg.TapName, h.parent, h.name)] {
			return false, nil
		}
	}
	return true, nil
}
