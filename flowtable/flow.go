package flowtable

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// Flow is one tracked TCP connection. A *Flow stays valid after the table removes it (expiry,
// eviction, replacement): it is never reused, so a datapath goroutine still holding one only
// updates a dead flow's counters. All methods are safe to call concurrently.
//
// The layout is deliberate: exactly 128 bytes, one allocator size class and two cache lines.
// The first line holds what a lookup compares and what every packet reads (key, offsets,
// state); the second what every packet writes (counters).
type Flow struct {
	// line 0: read per packet, written rarely
	key      Key              // 40
	hash     uint64           // the table's keyed hash of key: shard, home group, tag
	off      [2]atomic.Uint32 // per Dir: a seqnum.Delta added to that direction's sequence numbers
	state    atomic.Uint32    // State | st* bits below
	lastSeen atomic.Uint32    // Unix seconds, from the table's coarse clock

	// line 1: counters (written per packet) and immutable fields
	cnt       [2]dirCounters // per Dir
	x         *flowExt       // allocated with the flow: window state, table
	rule      *ruleRef       // interned (rule, generation)
	created   uint32         // Unix seconds
	clientISN uint32
	plan      uint32 // ServerPlan.Value, kept until the server's ISN resolves it
	exempt    Exempt
	bits      uint8 // fl* bits below
	_         [2]byte
}

// flowExt is what does not fit in a Flow's two cache lines. It is allocated together with its
// Flow (flowAlloc, one 176-byte object, so one allocation per flow as before) and reached
// through Flow.x; only Track, expiry and the snapshot read it, so lookups and the per-packet
// reads of the first line are not slowed.
type flowExt struct {
	win    tcpwindow.Conn // 32 bytes: the kernel map's per-direction window records
	t      *Table         // for the coarse clock and the state gauges
	synEnd atomic.Uint32  // seq+1 of the last client SYN passed as SYNOnLive (stSYNPending)
	probe  atomic.Uint32  // sequence number of a pick-up's first segment (stUnconfirmed)
}

// flowAlloc is the one object a flow is allocated as.
type flowAlloc struct {
	f Flow
	x flowExt
}

func allocFlow(t *Table) *Flow {
	a := &flowAlloc{}
	a.f.x, a.x.t = &a.x, t
	return &a.f
}

type dirCounters struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// ruleRef is the rule and policy generation a flow was created under, interned per shard so
// that a flow spends one pointer on them instead of a string and a counter.
type ruleRef struct {
	name string
	gen  uint64
}

// Bits of Flow.state beside the State in its low four bits. One word holds them all so that a
// single compare-and-swap moves the state, and so that removal (stDead) and a state change
// cannot both account for the same transition in the per-state gauges.
const (
	stMask     = 0x0f
	stFinShift = 4      // bit 4: Dir of the first FIN
	stClaimed  = 1 << 5 // ResolveServerISN won the race
	stResolved = 1 << 6 // offset(s2c) stored
	stDead     = 1 << 7 // removed from the table
	// stAssured: each side has had something acknowledged by the other outside a SYN
	// (conntrack's ASSURED): only then does the flow count as established for eviction and
	// timeouts. Set once, never cleared.
	stAssured = 1 << 8
	// stSYNPending: a client SYN passed this live flow as SYNOnLive; flowExt.synEnd holds it
	// so that a SYN-ACK acknowledging exactly it is recognised as a restart.
	stSYNPending = 1 << 9
	// bits 10-11: the KernelMode the datapath last published for the flow (kernel.go)
	// stUnconfirmed: picked up mid-stream, and the other side has not yet shown in which
	// sequence space it is (see Flow.Confirm); flowExt.probe and stProbeDir hold the first
	// segment's number and direction.
	stUnconfirmed = 1 << 12
	stProbeDir    = 1 << 13
	stKeep        = stClaimed | stResolved | stDead | stAssured | stSYNPending | stKernelMask | stUnconfirmed | stProbeDir
)

// Bits of Flow.bits, fixed at creation.
const (
	flClientHigher = 1 << 0 // the client is the key's higher endpoint
	flAbsolute     = 1 << 1 // ServerPlan.Absolute
)

// Key returns the flow's normalised key.
func (f *Flow) Key() Key { return f.key }

// Client returns the endpoint that sent the first SYN (or was taken as the client on pick-up).
func (f *Flow) Client() netip.AddrPort {
	if f.bits&flClientHigher != 0 {
		return f.key.higher().addrPort()
	}
	return f.key.lower().addrPort()
}

// Server returns the endpoint the client connected to.
func (f *Flow) Server() netip.AddrPort {
	if f.bits&flClientHigher != 0 {
		return f.key.lower().addrPort()
	}
	return f.key.higher().addrPort()
}

// ClientISN returns the sequence number of the SYN that created the flow (0 if adopted).
func (f *Flow) ClientISN() uint32 { return f.clientISN }

// State returns the connection's TCP state.
func (f *Flow) State() State { return State(f.state.Load() & stMask) }

// Exempt returns why the flow must not be rewritten, ExemptNone if it must.
func (f *Flow) Exempt() Exempt { return f.exempt }

// Offset returns what is added to the sequence numbers of segments travelling in direction d
// (for an observed flow, what would be added). Offset(ServerToClient) is 0 until
// ResolveServerISN when the server plan is absolute. To rewrite a segment, ask Deltas or
// QuoteDeltas, which hold the sign rules and give an exempt flow zero deltas.
func (f *Flow) Offset(d Dir) seqnum.Delta { return seqnum.Delta(f.off[d&1].Load()) }

// Offsets returns both directions' offsets, indexed by Dir.
func (f *Flow) Offsets() [2]seqnum.Delta {
	return [2]seqnum.Delta{seqnum.Delta(f.off[0].Load()), seqnum.Delta(f.off[1].Load())}
}

// Rule returns the name of the rule that set the offsets, "" if none.
func (f *Flow) Rule() string { return f.rule.name }

// Generation returns the policy generation the rule came from.
func (f *Flow) Generation() uint64 { return f.rule.gen }

// Counters returns the packets and payload bytes seen in direction d.
func (f *Flow) Counters(d Dir) Counters {
	c := &f.cnt[d&1]
	return Counters{Packets: c.packets.Load(), Bytes: c.bytes.Load()}
}

// Created returns when the flow was created (one-second resolution, wall clock).
func (f *Flow) Created() time.Time { return time.Unix(int64(f.created), 0) }

// LastSeen returns when a segment of the flow was last observed (one-second resolution, wall
// clock; a restored flow keeps the time from before the restart).
func (f *Flow) LastSeen() time.Time { return time.Unix(int64(f.lastSeen.Load()), 0) }

// String describes the flow for logs: "CLIENT->SERVER state".
func (f *Flow) String() string {
	return f.Client().String() + "->" + f.Server().String() + " " + f.State().String()
}

// removed reports whether the table no longer holds the flow.
func (f *Flow) removed() bool { return f.state.Load()&stDead != 0 }

// ResolveServerISN fixes the server-to-client offset from the server's ISN, seen in its
// SYN-ACK, when the server plan is absolute (offset = Value - isn). The first call wins: a
// retransmitted SYN-ACK carries the same ISN, and a different one must not move an offset the
// client may already have seen applied. Without an absolute plan it does nothing.
func (f *Flow) ResolveServerISN(isn uint32) {
	if f.bits&flAbsolute == 0 {
		return
	}
	for {
		old := f.state.Load()
		if old&stClaimed != 0 {
			return
		}
		if f.state.CompareAndSwap(old, old|stClaimed) {
			break
		}
	}
	f.off[ServerToClient].Store(uint32(seqnum.Value(f.plan).Sub(seqnum.Value(isn))))
	// Published after the offset so that a snapshot which sees stResolved also sees the offset.
	f.state.Or(stResolved)
}

// Observe accounts one segment travelling in direction d with the given TCP flags and payload
// length, without its numbers: it advances the state machine, the direction's counters and the
// last-seen time. It is the datapath's call where no window tracking is done; [Flow.Track] is
// the one that checks numbers. Without numbers, an ACK from the other side after a FIN is
// taken to acknowledge it, and the flow is taken as assured once both directions have been
// seen in an established state (what conntrack did before it tracked windows). It takes no
// lock and does not allocate.
func (f *Flow) Observe(d Dir, flags uint8, payloadLen int) {
	d &= 1
	f.account(d, payloadLen)
	both := f.cnt[0].packets.Load() != 0 && f.cnt[1].packets.Load() != 0
	f.move(d, flags, payloadLen, true, both)
}

// Track checks a segment travelling in direction d against the connection's window (see
// package tcpwindow) and, if its numbers are acceptable, lets it move the state. seg is as
// read from the packet before any shift (Segment.Read); Track moves its ack and SACK edge into the receiver's own sequence
// space with the flow's offsets, as the window records keep each side in its own space.
//
// A forwarded segment is counted in the flow's packets and bytes; only one whose numbers hold
// (Accept, AcceptLiberal) restarts the flow's idle time, so that blind segments cannot keep
// junk alive.
//
// For a SYN-ACK from the server, the server's ISN is resolved here (ResolveServerISN). A
// client SYN on a synchronised connection is passed as SYNOnLive and remembered; a SYN-ACK
// from the server acknowledging exactly that SYN returns Restart, and the datapath then
// replaces the flow (Table.Restart). A SYN without ACK on a flow that NewConnection says is
// over is the datapath's to Admit before calling Track. It takes no lock and does not
// allocate.
func (f *Flow) Track(d Dir, seg *tcpwindow.Segment) tcpwindow.Verdict {
	d &= 1
	v := f.track(d, seg)
	// Counted if forwarded; idle time restarts only for segments whose numbers hold, as
	// conntrack refreshes its timeout: blind SYNs or junk must not keep a flow alive.
	if v.Forward() {
		f.count(d, int(seg.Len))
	}
	if v == tcpwindow.Accept || v == tcpwindow.AcceptLiberal {
		f.touch()
	}
	return v
}

func (f *Flow) track(d Dir, seg *tcpwindow.Segment) tcpwindow.Verdict {
	old := f.state.Load()
	st := State(old & stMask)
	in := *seg
	ackDelta := f.Deltas(d).Ack // the ack as the receiver will read it: in its own space
	in.Ack, in.SACK = in.Ack.Add(ackDelta), in.SACK.Add(ackDelta)
	syn, ack := in.Flags&FlagSYN != 0, in.Flags&FlagACK != 0
	v := f.x.win.Track(int(d), &in, st == StateSynSent || st == StateSynRecv)
	switch {
	case v == tcpwindow.SYNOnLive && syn && !ack && d == ClientToServer:
		f.x.synEnd.Store(uint32(in.Seq.Add(1)))
		f.state.Or(stSYNPending)
		return v
	case v == tcpwindow.SYNOnLive && syn && ack && d == ServerToClient &&
		old&stSYNPending != 0 && in.Ack == seqnum.Value(f.x.synEnd.Load()):
		return tcpwindow.Restart
	case v != tcpwindow.Accept:
		return v
	}
	if syn && d == ServerToClient {
		f.ResolveServerISN(uint32(in.Seq))
	}
	// Only what the state machine can use is looked up: whether an ACK covers a FIN matters
	// in fin_wait and last_ack, whether the flow is assured until it is.
	acksFIN := false
	if ack && (st == StateFinWait || st == StateLastAck) {
		other := f.x.win.Load(int(d.Reverse()))
		acksFIN = other.Flags&tcpwindow.FlagFIN != 0 && in.Ack == other.End
	}
	f.move(d, in.Flags, int(in.Len), acksFIN, old&stAssured == 0 && f.x.win.Assured())
	return v
}

// NewConnection reports whether a SYN without ACK, travelling d with sequence number seq,
// opens a new connection on f's tuple, which the datapath then Admits in f's place: f is
// over (time_wait, close), or it is still opening and the client chose another ISN (a new
// attempt; an absolute client plan needs a new offset). A SYN from the server while the
// client's is unanswered is a simultaneous open (RFC 9293 3.5) of the same connection, and a
// SYN on a synchronised connection is never taken as new by itself (RFC 5961 section 4: it
// is passed for the endpoint's challenge ACK; see Track).
func (f *Flow) NewConnection(d Dir, seq uint32) bool {
	switch f.State() {
	case StateTimeWait, StateClose:
		return true
	case StateSynSent, StateSynRecv:
		return d&1 == ClientToServer && seq != f.clientISN
	}
	return false
}

// Window returns direction d's window record (in the sender's own sequence space).
func (f *Flow) Window(d Dir) tcpwindow.Side { return f.x.win.Load(int(d & 1)) }

// SetWindow replaces direction d's window record: for taking over what the kernel datapath
// learned. Not while the Go datapath tracks segments of the flow.
func (f *Flow) SetWindow(d Dir, s tcpwindow.Side) { f.x.win.Store(int(d&1), s) }

// Assured reports whether each side has had something acknowledged by the other outside a
// SYN, so that the flow counts as established for eviction and timeouts.
func (f *Flow) Assured() bool { return f.state.Load()&stAssured != 0 }

// AckedInKernel records that direction d's side has had something acknowledged by the other
// in segments the kernel datapath forwarded without showing them to the tracker, and makes the
// flow assured if the other side already was. Not for exempt flows (never shifted, no window).
func (f *Flow) AckedInKernel(d Dir) {
	if st := f.State(); st == StateSynSent || st == StateSynRecv {
		return // the programs shift synchronised flows only: a report now is a stale one
	}
	f.x.win.MarkAcked(int(d & 1))
	for {
		old := f.state.Load()
		st := State(old & stMask)
		if old&(stDead|stAssured) != 0 || st == StateSynSent || st == StateSynRecv || !f.x.win.Assured() {
			return
		}
		if f.state.CompareAndSwap(old, old|stAssured) {
			f.x.t.shardOf(f.hash).unassured.Add(-1)
			return
		}
	}
}

// Unconfirmed reports whether the flow was picked up mid-stream and is still waiting for the
// other side to show whether the connection was being shifted (Confirm).
func (f *Flow) Unconfirmed() bool { return f.state.Load()&stUnconfirmed != 0 }

// Probe marks a flow just picked up from a segment travelling d with sequence number seq (as
// its sender wrote it): until Confirm hears from the other side, nothing says that the
// connection was ever shifted. It may have been forwarded unshifted all along — refused while
// the table was full, or opened before its rule existed — and shifting it now would break it.
func (f *Flow) Probe(d Dir, seq uint32) {
	f.x.probe.Store(seq)
	for {
		old := f.state.Load()
		next := old&^stProbeDir | stUnconfirmed
		if d&1 == ServerToClient {
			next |= stProbeDir
		}
		if old&stDead != 0 || f.state.CompareAndSwap(old, next) {
			return
		}
	}
}

// Confirm decides an unconfirmed flow from a segment travelling d with acknowledgement number
// ack (as its sender wrote it, before any shift). A segment the probe's way decides nothing.
// One the other way acknowledges the probe's sender as the acker has been seeing it: near the
// probe's number plus that direction's offset if the connection was being shifted, near the
// probe's number itself if it was forwarded unshifted. In the second case the flow's offsets
// become zero and its window records are forgotten (they were read through the wrong offsets),
// so it is forwarded untouched from now on, as it always was; unshifted reports that.
// It returns whether the flow is (now) confirmed either way. The nearer of the two decides: an
// offset smaller than the data in flight (about window / 2^32 of keyed offsets) can be taken
// for no shift at all.
func (f *Flow) Confirm(d Dir, ack uint32) (confirmed, unshifted bool) {
	old := f.state.Load()
	if old&stUnconfirmed == 0 {
		return true, false
	}
	pd := ClientToServer
	if old&stProbeDir != 0 {
		pd = ServerToClient
	}
	if d&1 == pd {
		return false, false
	}
	seq := f.x.probe.Load()
	dist := func(a, b uint32) uint32 {
		if x := a - b; x < 1<<31 {
			return x
		}
		return b - a
	}
	unshifted = dist(ack, seq) < dist(ack, seq+uint32(f.Offset(pd)))
	if !f.state.CompareAndSwap(old, old&^(stUnconfirmed|stProbeDir)) {
		return !f.Unconfirmed(), false // another segment decided it meanwhile
	}
	if unshifted {
		f.off[ClientToServer].Store(0)
		f.off[ServerToClient].Store(0)
		f.x.win.Store(0, tcpwindow.Side{})
		f.x.win.Store(1, tcpwindow.Side{})
	}
	return true, unshifted
}

// account counts one packet of direction d and refreshes the last-seen time.
func (f *Flow) account(d Dir, payloadLen int) {
	f.count(d, payloadLen)
	f.touch()
}

// count counts one packet of direction d and its payload bytes.
func (f *Flow) count(d Dir, payloadLen int) {
	c := &f.cnt[d]
	c.packets.Add(1)
	if payloadLen > 0 {
		c.bytes.Add(uint64(payloadLen))
	}
}

// touch refreshes the last-seen time (written at most once a second).
func (f *Flow) touch() {
	if now := f.x.t.coarse.Load(); f.lastSeen.Load() != now {
		f.lastSeen.Store(now)
	}
}

// move advances the state word by one accepted segment, keeping the shard's gauges: the
// per-state ones and the unassured one. assured says that the flow now qualifies; it is taken
// only in a synchronised state (the handshake's acknowledgements come before established).
func (f *Flow) move(d Dir, flags uint8, payloadLen int, acksFIN, assured bool) {
	for {
		old := f.state.Load()
		if old&stDead != 0 {
			return
		}
		next := transition(old, d, flags, payloadLen, acksFIN)
		if assured && State(next&stMask) != StateSynSent && State(next&stMask) != StateSynRecv {
			next |= stAssured
		}
		if next == old {
			return
		}
		if f.state.CompareAndSwap(old, next) {
			sh := f.x.t.shardOf(f.hash)
			if from, to := State(old&stMask), State(next&stMask); from != to {
				sh.states[from].Add(-1)
				sh.states[to].Add(1)
			}
			if old&stAssured == 0 && next&stAssured != 0 {
				sh.unassured.Add(-1)
			}
			return
		}
	}
}

// transition is the state machine: the state word after a segment in direction d. It follows
// the shape of Linux conntrack's tcp_conntracks table (RST over SYN over FIN over ACK), but as
// it sees no sequence numbers it decides "this ACK acknowledges that FIN" by direction: an ACK
// from the other side after a FIN. Two departures from conntrack, both because a rewriter
// that forgets a live connection breaks it while a firewall merely re-learns it:
//   - data after an RST revives the flow (the RST may have been out of window and ignored by
//     the receiver, e.g. a blind-reset attempt);
//   - a half-closed connection (close_wait) keeps a long timeout (see the package comment).
//
// acksFIN says that an ACK acknowledges the other side's FIN (Track knows from the numbers;
// Observe assumes it).
func transition(old uint32, d Dir, flags uint8, payloadLen int, acksFIN bool) uint32 {
	st := State(old & stMask)
	fin1 := Dir(old>>stFinShift) & 1
	if st == StateClose && payloadLen > 0 && flags&(FlagRST|FlagSYN) == 0 {
		st = StateEstablished
	}
	switch {
	case flags&FlagRST != 0:
		st = StateClose
	case flags&FlagSYN != 0:
		// A SYN-ACK, or the server's own SYN in a simultaneous open. SYNs in later states are
		// retransmits or a new connection on the tuple, which the datapath turns into Admit.
		if st == StateSynSent && d == ServerToClient {
			st = StateSynRecv
		}
	case flags&FlagFIN != 0:
		switch st {
		case StateSynRecv, StateEstablished:
			st, fin1 = StateFinWait, d
		case StateFinWait, StateCloseWait:
			if d != fin1 {
				st = StateLastAck // the second FIN (its ACK flag also acknowledges the first)
			}
		}
	case flags&FlagACK != 0:
		switch st {
		case StateSynRecv:
			st = StateEstablished
		case StateFinWait:
			if d != fin1 && acksFIN {
				st = StateCloseWait
			}
		case StateLastAck:
			if d == fin1 && acksFIN {
				st = StateTimeWait // the first closer acknowledges the second FIN
			}
		}
	}
	return old&stKeep | uint32(fin1)<<stFinShift | uint32(st)
}

// stateSet is a set of states, bit s for State s.
type stateSet uint16

const (
	anyState       stateSet = 1<<NumStates - 1
	embryonicSet   stateSet = 1<<StateSynSent | 1<<StateSynRecv
	evictClosedSet stateSet = 1<<StateTimeWait | 1<<StateClose
)

func (m stateSet) has(s State) bool { return m&(1<<s) != 0 }

// kill marks the flow removed if its current state is in ok (and, with unassuredOnly, it is
// not assured), and moves it out of the gauges. It reports whether it did; a flow that changed
// in the meantime (an unassured flow becoming assured as it is chosen for eviction) is left
// alone.
func (f *Flow) kill(ok stateSet, unassuredOnly bool) bool {
	for {
		old := f.state.Load()
		if old&stDead != 0 || !ok.has(State(old&stMask)) || unassuredOnly && old&stAssured != 0 {
			return false
		}
		if f.state.CompareAndSwap(old, old|stDead) {
			sh := f.x.t.shardOf(f.hash)
			sh.states[old&stMask].Add(-1)
			if old&stAssured == 0 {
				sh.unassured.Add(-1)
			}
			return true
		}
	}
}
