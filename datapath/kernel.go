package datapath

import (
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// With the kernel datapath, tc programs at each client-facing interface shift the segments of
// established flows themselves and hand the engine only what needs a decision: SYNs, FINs,
// RSTs, ICMP errors, segments of flows not yet (or no longer) in their map, and anything they
// do not parse. Those arrive on a TAP with the hook and interface written into their Ethernet
// header (tcshift.Meta); the engine decides as in the TUN datapath, and then keeps the kernel's
// map in line with the flow table: one entry per tracked connection, keyed as the connection
// looks from its client-facing interface, carrying the deltas of flowtable.DeltasOf and the mode
// kernelModeFor decides. The table is the truth; the map is its projection, repaired by every
// packet that shows it out of date and by the periodic Sync.

// Kernel is the kernel datapath's flow map as the engine uses it (tcshift.Datapath).
type Kernel interface {
	Put(k tcshift.FlowKey, v tcshift.FlowValue) error
	Delete(k tcshift.FlowKey) error
	Lookup(k tcshift.FlowKey) (tcshift.FlowValue, bool, error)
	Range(fn func(tcshift.FlowKey, *tcshift.FlowValue) bool) error
}

// kernelModeFor is where a flow's segments are shifted. Only a flow both ends are using —
// established, or half closed — is left to the kernel: in every other state the daemon sees
// each segment, so that the handshake is decided from the policy, an RST can be judged, data
// after a close revives the flow, and a flow about to expire is not being forwarded behind the
// daemon's back. A flow's offsets are final by then (the server's ISN is known once the
// handshake completes).
func kernelModeFor(f *flowtable.Flow) flowtable.KernelMode {
	if f.Unconfirmed() {
		return flowtable.KernelDaemon // a pick-up: the daemon must see the other side's answer
	}
	switch f.State() {
	case flowtable.StateEstablished, flowtable.StateFinWait, flowtable.StateCloseWait:
		return flowtable.KernelShift
	}
	return flowtable.KernelDaemon
}

// kernelKey is the map key of f: the connection as it looks from its client-facing interface.
// A connection opened from the far side of that interface is tracked with the roles its SYN
// gave it, but sits in the map the other way round (the interface's ingress sees its server's
// segments); its offsets are zero, so only the key needs turning.
func kernelKey(f *flowtable.Flow) tcshift.FlowKey {
	if f.Exempt() == flowtable.ExemptServerOpened {
		return tcshift.KeyOf(f.Server(), f.Client())
	}
	return tcshift.KeyOf(f.Client(), f.Server())
}

// kernelValue is the map value that makes the programs do what the flow table says.
func kernelValue(f *flowtable.Flow, m flowtable.KernelMode, ifindex int) tcshift.FlowValue {
	v := tcshift.FlowValue{Ifindex: uint32(ifindex), Mode: tcshift.ModeDaemon}
	if m == flowtable.KernelShift {
		v.Mode = tcshift.ModeKernel
	}
	if f.Exempt() != flowtable.ExemptNone {
		v.Flags = KernelFlagResolved
		if f.Exempt() == flowtable.ExemptObserve {
			v.Flags |= KernelFlagObserve
		}
		return v // never shifted: zero deltas, the programs only count
	}
	for _, d := range [...]flowtable.Dir{flowtable.ClientToServer, flowtable.ServerToClient} {
		dl := f.Deltas(d)
		v.SeqDelta[d], v.AckDelta[d] = dl.Seq, dl.Ack
		// The programs need each side's window scale to keep the window edges (Put keeps the
		// edges they learned and takes the scale from here).
		w := f.Window(d)
		v.Window[d] = tcshift.Window{End: uint32(w.End), MaxEnd: uint32(w.MaxEnd), MaxWin: uint32(w.MaxWin),
			Scale: w.Scale, Flags: w.Flags & kernelWindowFlags}
	}
	plan, resolved := f.ServerPlan()
	switch {
	case resolved:
		v.Flags = KernelFlagResolved
	case m == flowtable.KernelDaemon:
		// Mid-handshake the programs hand every segment to the daemon and read no delta, and
		// the ack deltas are not known yet anyway: they carry what a restarted daemon needs to
		// finish the handshake (RecoverFlow).
		v.Flags = KernelFlagPlanAbsolute
		v.AckDelta = [2]seqnum.Delta{seqnum.Delta(plan.Value), seqnum.Delta(f.ClientISN())}
	}
	return v
}

// kernelWindowFlags are the bits of a window record's flags the programs and tcpwindow share.
const kernelWindowFlags = tcpwindow.FlagWScale | tcpwindow.FlagSeen | tcpwindow.FlagMaxEnd

// loadWindow takes into f the window edges the programs learned from the segments they shifted,
// so that a FIN or RST they hand over is judged against where the connection is now, not where
// it was when the daemon last saw it. The daemon-only flags of f's records are kept.
func (e *Engine) loadWindow(f *flowtable.Flow) {
	v, ok, err := e.kernel.Lookup(kernelKey(f))
	if err != nil || !ok || f.Exempt() == flowtable.ExemptServerOpened {
		return
	}
	for d := range 2 {
		k, g := v.Window[d], f.Window(flowtable.Dir(d))
		if k.Flags&tcpwindow.FlagSeen != 0 {
			if end := seqnum.Value(k.End); !g.Seen() || g.End.LessThan(end) {
				g.End = end
			}
			g.MaxWin = max(g.MaxWin, seqnum.Size(k.MaxWin))
			g.Flags |= tcpwindow.FlagSeen
		}
		if k.Flags&tcpwindow.FlagMaxEnd != 0 {
			if me := seqnum.Value(k.MaxEnd); g.Flags&tcpwindow.FlagMaxEnd == 0 || g.MaxEnd.LessThan(me) {
				g.MaxEnd = me
			}
			g.Flags |= tcpwindow.FlagMaxEnd
		}
		f.SetWindow(flowtable.Dir(d), g)
	}
}

// Bits of tcshift.FlowValue.Flags, the daemon's own byte that the programs never read.
const (
	KernelFlagResolved     = 1 << 0 // both offsets final: the deltas are the flow's
	KernelFlagPlanAbsolute = 1 << 1 // mid-handshake: AckDelta holds {server plan value, client ISN}
	// KernelFlagObserve: an observed flow (zero deltas). The map has no room for the offsets it
	// would get, so a flow recovered from it is observed with zero would-be offsets: still
	// never shifted, and still counted as observed.
	KernelFlagObserve = 1 << 2
)

// RecoverFlow turns an entry of a previous instance's map (a crash between snapshots) back
// into a flow of the table, so that a connection whose handshake the gateway forwarded
// survives any crash: its map entry was written before the SYN or SYN-ACK left. The rule and
// generation are not in the map; the flow shows rule "" (recovered).
func RecoverFlow(t *flowtable.Table, k tcshift.FlowKey, v tcshift.FlowValue) error {
	client, server := k.Endpoints()
	if _, _, ok := t.Lookup(client, server); ok {
		return nil // the snapshot had it
	}
	var err error
	switch {
	case v.Flags&KernelFlagResolved != 0:
		in := flowtable.Init{
			ClientOffset: v.SeqDelta[flowtable.ClientToServer],
			Server:       flowtable.ServerPlan{Value: uint32(v.SeqDelta[flowtable.ServerToClient])},
		}
		if v.Flags&KernelFlagObserve != 0 {
			in.Exempt = flowtable.ExemptObserve
		}
		_, err = t.Adopt(client, server, in)
	case v.Flags&KernelFlagPlanAbsolute != 0:
		_, err = t.Admit(client, server, flowtable.Init{
			ClientOffset: v.SeqDelta[flowtable.ClientToServer],
			ClientISN:    uint32(v.AckDelta[1]),
			Server:       flowtable.ServerPlan{Absolute: true, Value: uint32(v.AckDelta[0])},
		})
	}
	return err
}

// publish brings f's map entry in line with f after a packet of it was handled on ifindex.
// force rewrites the entry even when the flow says it is current (the packet showed that the
// map lost it). It costs a syscall only when the mode changes, a few times per connection.
func (e *Engine) publish(c *Counters, f *flowtable.Flow, ifindex int, force bool) {
	have, want := f.KernelMode(), kernelModeFor(f)
	if have == want && !force {
		return
	}
	if !f.SetKernelMode(have, want) {
		return // another queue moved it meanwhile and writes the map itself
	}
	if err := e.kernel.Put(kernelKey(f), kernelValue(f, want, ifindex)); err != nil {
		f.SetKernelMode(want, have) // so that the next packet tries again
		c.kernel(KernelPutFailed)
		if e.warn.allow("kernel-put") {
			e.log.Warn("cannot write the kernel datapath's flow map; the flow's packets keep going through the daemon",
				zap.Stringer("flow", f), zap.Error(err))
		}
		return
	}
	c.kernel(KernelPublished)
}

// Forget is the flow table's removal hook for the kernel datapath: the flow's last counts are
// folded into it (so that per-rule totals of removed flows include what only the kernel saw),
// then its map entry goes, so that its tuple's next segment is the daemon's to decide again.
func (e *Engine) Forget(f *flowtable.Flow) {
	if e.kernel == nil {
		return
	}
	k := kernelKey(f)
	if v, ok, err := e.kernel.Lookup(k); err == nil && ok {
		e.sync.fold(f, &v)
	}
	e.sync.forget(f)
	if f.KernelMode() != flowtable.KernelNone {
		_ = e.kernel.Delete(k)
	}
}

// kernelSync remembers, per flow, the kernel's counts already folded into the flow, so that
// Sync adds only what is new. Guarded by mu: Sync runs on one goroutine, Forget on the expiry
// loop and on datapath goroutines.
type kernelSync struct {
	mu     sync.Mutex
	folded map[*flowtable.Flow][2]flowtable.Counters
}

// fold adds the kernel's counts of v not yet in f to f.
//
// It reports whether the map has counted any packet from the flow's client, and from its server.
func (s *kernelSync) fold(f *flowtable.Flow, v *tcshift.FlowValue) (fromClient, fromServer bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.folded == nil {
		s.folded = make(map[*flowtable.Flow][2]flowtable.Counters)
	}
	prev := s.folded[f]
	var now [2]flowtable.Counters
	for d := range now {
		// The map counts by the client-facing interface's hooks; a connection opened from the
		// far side has its roles the other way round (see kernelKey).
		md := d
		if f.Exempt() == flowtable.ExemptServerOpened {
			md ^= 1
		}
		now[d] = flowtable.Counters{Packets: v.Packets[md], Bytes: v.Bytes[md]}
		if now[d].Packets >= prev[d].Packets && now[d].Bytes >= prev[d].Bytes {
			f.AddCounters(flowtable.Dir(d), flowtable.Counters{
				Packets: now[d].Packets - prev[d].Packets, Bytes: now[d].Bytes - prev[d].Bytes})
		}
	}
	s.folded[f] = now
	return now[flowtable.ClientToServer].Packets > 0, now[flowtable.ServerToClient].Packets > 0
}

func (s *kernelSync) forget(f *flowtable.Flow) {
	s.mu.Lock()
	delete(s.folded, f)
	s.mu.Unlock()
}

// bootToUnix converts CLOCK_BOOTTIME nanoseconds, the programs' clock, into Unix seconds.
func bootToUnix(boot uint64, nowBoot int64, now time.Time) uint32 {
	return uint32(now.Add(-time.Duration(nowBoot - int64(boot))).Unix())
}

func bootNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// SyncStats is what one Sync found.
type SyncStats struct {
	Entries  int // map entries read
	Orphans  int // entries of no tracked flow, deleted
	Repaired int // entries whose mode or deltas disagreed with the table, rewritten
}

// Sync reads the kernel's flow map once: it folds the kernel's counters and last-seen times into
// the flows (so that `flows`, status, metrics, snapshots and expiry see what only the kernel
// forwarded), deletes entries of flows the table no longer has, and rewrites entries that
// disagree with their flow. The daemon calls it every few seconds and before a snapshot.
func (e *Engine) Sync() (SyncStats, error) {
	var st SyncStats
	if e.kernel == nil {
		return st, nil
	}
	nowBoot, now := bootNow(), time.Now()
	var orphans []tcshift.FlowKey
	type repair struct {
		f *flowtable.Flow
		v tcshift.FlowValue
	}
	var repairs []repair
	err := e.kernel.Range(func(k tcshift.FlowKey, v *tcshift.FlowValue) bool {
		st.Entries++
		client, server := k.Endpoints()
		f, _, ok := e.table.Lookup(client, server)
		if !ok || kernelKey(f) != k {
			orphans = append(orphans, k)
			return true
		}
		if fromClient, fromServer := e.sync.fold(f, v); fromServer && f.KernelMode() == flowtable.KernelShift && f.Exempt() == flowtable.ExemptNone {
			// The programs forwarded segments from the server of a synchronised flow: a server
			// sends anything but SYN-ACKs and RSTs only on a connection it holds, each one
			// acknowledging the client (the client's side of the handshake, its ACK of the
			// SYN-ACK, was judged by the daemon; for a pick-up, the client's segments the
			// programs forwarded after the server's acknowledge it in turn). Without this a
			// flow shifted in the kernel never became assured: evicted first, expired at the
			// unassured timeout. A blind sender's junk gets no segment from the server.
			f.AckedInKernel(flowtable.ClientToServer)
			if fromClient {
				f.AckedInKernel(flowtable.ServerToClient)
			}
		}
		if v.LastSeen != 0 {
			f.Touch(bootToUnix(v.LastSeen, nowBoot, now))
		}
		if m := f.KernelMode(); m != flowtable.KernelNone {
			want := kernelValue(f, m, int(v.Ifindex))
			if want.Mode != v.Mode || want.SeqDelta != v.SeqDelta || want.AckDelta != v.AckDelta {
				repairs = append(repairs, repair{f, want})
			}
		}
		return true
	})
	for _, k := range orphans {
		// A flow admitted after Range read its tuple is in the table before its entry is
		// written, so an entry of no flow really is stale.
		client, server := k.Endpoints()
		if f, _, ok := e.table.Lookup(client, server); ok && kernelKey(f) == k {
			continue
		}
		if e.kernel.Delete(k) == nil {
			st.Orphans++
		}
	}
	for _, r := range repairs {
		if e.kernel.Put(kernelKey(r.f), r.v) == nil {
			st.Repaired++
		}
	}
	return st, err
}

// PublishAll writes the map entry of every flow in the table, as at start from a restored
// snapshot; ifindexOf names each flow's client-facing interface (false: the flow is not
// published, and its packets reach the daemon, which then publishes it). It returns how many
// entries it wrote.
func (e *Engine) PublishAll(ifindexOf func(*flowtable.Flow) (int, bool)) (int, error) {
	if e.kernel == nil {
		return 0, nil
	}
	n := 0
	var firstErr error
	e.table.Range(func(f *flowtable.Flow) bool {
		ifindex, ok := ifindexOf(f)
		if !ok {
			return true
		}
		have, want := f.KernelMode(), kernelModeFor(f)
		if err := e.kernel.Put(kernelKey(f), kernelValue(f, want, ifindex)); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return true
		}
		f.SetKernelMode(have, want)
		n++
		return true
	})
	return n, firstErr
}
