package tcpwindow

import (
	"sync/atomic"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// TCP flag bits as in the header's flags byte (the same values as rewrite's and flowtable's).
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// Bits of Side.Flags. The low three are those of the kernel map (WIN_F_SCALE, WIN_F_END,
// WIN_F_MAXEND in tcshift/bpf/maps.h), so that the programs and this package read one record
// the same way; the others only the daemon sets.
const (
	// FlagWScale: the side's SYN carried the window-scale option; Scale is the shift its
	// windows take (0 when the peer's SYN did not carry the option: RFC 7323 2.2).
	FlagWScale uint8 = 1 << 0
	// FlagSeen: End and MaxWin come from the side's own segments (its SYN, or its first
	// segment seen mid-stream).
	FlagSeen uint8 = 1 << 1
	// FlagMaxEnd: MaxEnd holds a value.
	FlagMaxEnd uint8 = 1 << 2
	// FlagSACKPerm: the side's SYN carried SACK-permitted, so its acks may carry SACK blocks.
	FlagSACKPerm uint8 = 1 << 3
	// FlagLiberal: the flow was picked up without its SYNs, so this side's window scale is
	// unknown and its windows are underestimated (conntrack's IP_CT_TCP_FLAG_BE_LIBERAL).
	FlagLiberal uint8 = 1 << 4
	// FlagInferred: End and MaxEnd were inferred from the other side's acknowledgements; the
	// side itself has not been seen yet.
	FlagInferred uint8 = 1 << 5
	// FlagAcked: the other side has acknowledged, in an acceptable segment that is not a SYN,
	// something this side sent. A SYN-ACK does not count: a server still in SYN-RECEIVED sends
	// nothing else, so this is the proof that it holds the connection. Both sides acked is
	// conntrack's ASSURED.
	FlagAcked uint8 = 1 << 6
	// FlagFIN: the side has sent a FIN (End includes it).
	FlagFIN uint8 = 1 << 7
)

// maxAckWindow is conntrack's MAXACKWINCONST: how far back an ack may be when the acknowledging
// side has not advertised a window yet.
const maxAckWindow = 66000

// maxWindow is the largest window RFC 7323 allows: 65535 << 14, rounded up.
const maxWindow = 1 << 30

// maxScale is the largest window shift RFC 7323 section 2.3 allows; larger values are taken as 14.
const maxScale = 14

// Side is one direction's window state: what the sender of that direction has sent and may
// send. It is the layout of the kernel flow map's per-direction record, 16 bytes:
//
//	offset 0  End    u32
//	offset 4  MaxEnd u32
//	offset 8  MaxWin u32
//	offset 12 Scale  u8
//	offset 13 Flags  u8
//	offset 14 padding, 2 bytes, zero
//
// A side without FlagSeen has not been seen.
type Side struct {
	End    seqnum.Value
	MaxEnd seqnum.Value
	MaxWin seqnum.Size
	Scale  uint8
	Flags  uint8
	_      [2]byte
}

// Seen reports whether the side has sent anything the tracker learned from.
func (s Side) Seen() bool { return s.Flags&FlagSeen != 0 }

// Conn is the window state of one connection: a Side per direction, indexed like the flow
// table's directions (0 client to server, 1 server to client). The zero value is a connection
// of which nothing has been seen. A Conn must not be copied once in use.
type Conn struct {
	side [2]atomicSide
}

// atomicSide holds a Side in four words: meta is Scale | Flags<<8 (the two bytes of Side at
// offset 12, in little-endian order), so that flags can be set with one atomic OR.
type atomicSide struct {
	end, maxEnd, maxWin, meta atomic.Uint32
}

func (a *atomicSide) load() Side {
	m := a.meta.Load()
	return Side{
		End: seqnum.Value(a.end.Load()), MaxEnd: seqnum.Value(a.maxEnd.Load()), MaxWin: seqnum.Size(a.maxWin.Load()),
		Scale: uint8(m), Flags: uint8(m >> 8),
	}
}

func (a *atomicSide) store(s Side) {
	a.end.Store(uint32(s.End))
	a.maxEnd.Store(uint32(s.MaxEnd))
	a.maxWin.Store(uint32(s.MaxWin))
	a.meta.Store(uint32(s.Scale) | uint32(s.Flags)<<8)
}

// commit moves a towards s, which Track computed from old: sequence edges forward, MaxWin up,
// flags set. A concurrent commit that already went further is left alone.
func (a *atomicSide) commit(old, s Side) {
	if s.End != old.End {
		advance(&a.end, s.End)
	}
	if s.MaxEnd != old.MaxEnd {
		advance(&a.maxEnd, s.MaxEnd)
	}
	if s.MaxWin > old.MaxWin {
		for {
			w := a.maxWin.Load()
			if seqnum.Size(w) >= s.MaxWin || a.maxWin.CompareAndSwap(w, uint32(s.MaxWin)) {
				break
			}
		}
	}
	if add := s.Flags &^ old.Flags; add != 0 {
		a.meta.Or(uint32(add) << 8)
	}
	if s.Scale != old.Scale {
		// Only ever lowered to 0, at the SYN-ACK that shows the peer did not agree to scaling.
		a.meta.And(^uint32(0xff))
	}
}

// advance moves a forward to v in sequence space, unless it is already at or beyond v.
func advance(a *atomic.Uint32, v seqnum.Value) {
	for {
		cur := a.Load()
		if !after(v, seqnum.Value(cur)) || a.CompareAndSwap(cur, uint32(v)) {
			return
		}
	}
}

// Load returns direction d's side (0 or 1), for the kernel map, the snapshot and tests.
func (c *Conn) Load(d int) Side { return c.side[d&1].load() }

// Store replaces direction d's side: restoring a snapshot, or taking over what the kernel
// datapath learned. Not for use while segments of the flow are being tracked.
func (c *Conn) Store(d int, s Side) { c.side[d&1].store(s) }

// MarkAcked sets FlagAcked on direction d's side (0 or 1), atomically: for an acknowledgement
// the tracker did not see itself, such as one the kernel datapath forwarded (see
// flowtable.Flow.AckedInKernel).
func (c *Conn) MarkAcked(d int) { c.side[d&1].meta.Or(uint32(FlagAcked) << 8) }

// Assured reports whether each side has had something acknowledged by the other in a segment
// that was not a SYN (conntrack's ASSURED, see FlagAcked).
func (c *Conn) Assured() bool {
	return c.side[0].meta.Load()&c.side[1].meta.Load()&(uint32(FlagAcked)<<8) != 0
}

// Segment is what the tracker needs to know of a TCP segment. [Segment.Read] fills it from
// the TCP header.
type Segment struct {
	Seq, Ack seqnum.Value // Ack is meaningful only with the ACK flag
	Len      seqnum.Size  // payload bytes (of a whole GSO super-packet: its sequence space is contiguous)
	Window   uint16       // the window field, unscaled
	Flags    uint8        // the TCP flags byte
	Opts     uint8        // Opt* bits: which options the header carried
	WScale   uint8        // the window-scale option's shift (with OptWScale), capped at 14
	SACK     seqnum.Value // the highest SACK right edge (with OptSACK)
}

// Bits of Segment.Opts.
const (
	OptWScale   uint8 = 1 << 0 // window scale (RFC 7323), meaningful in a SYN
	OptSACKPerm uint8 = 1 << 1 // SACK permitted (RFC 2018), meaningful in a SYN
	OptSACK     uint8 = 1 << 2 // SACK blocks
)

// Verdict is what the tracker says of a segment: whether to forward it, and whether its flags
// may move the connection's state. Every value is a counter the datapath keeps.
type Verdict uint8

// Verdicts.
const (
	// Accept: the numbers are acceptable; forward the segment and let its flags move the state.
	Accept Verdict = iota
	// AcceptLiberal: a picked-up flow's segment whose numbers fail the checks while its
	// window scale is unknown, forwarded as conntrack's be_liberal does. It moves no state,
	// and of the record only the sender's own end (the side is learned from its first
	// segment and from the data it sends).
	AcceptLiberal
	// RSTInWindow: an RST inside the window but not at its left edge. Forwarded so that the
	// endpoint answers with a challenge ACK (RFC 5961 section 3.2), which a genuine sender
	// answers with an exact RST; the flow is not closed.
	RSTInWindow
	// SYNOnLive: a SYN or SYN-ACK on a synchronised connection. Forwarded for the endpoint's
	// challenge ACK (RFC 5961 section 4); the flow is neither replaced nor changed.
	SYNOnLive
	// Restart: a SYN-ACK acknowledging exactly a SYN that earlier passed as SYNOnLive: the
	// server accepted a new connection on the tuple, so the datapath replaces the flow
	// (flowtable decides this; the tracker itself never returns it).
	Restart
	// DropSeqAhead: data beyond the receiver's window.
	DropSeqAhead
	// DropSeqBehind: data wholly more than a window behind what was already sent.
	DropSeqBehind
	// DropAckAhead: acknowledges data the other side never sent.
	DropAckAhead
	// DropAckBehind: acknowledges data more than a window in the past.
	DropAckBehind
	// DropRST: an RST outside the window (RFC 5961 section 3.2: silently discarded).
	DropRST
	// DropSYNACK: a SYN-ACK during the handshake that does not acknowledge the SYN exactly.
	DropSYNACK
	// NumVerdicts is the number of verdicts, for arrays of counters.
	NumVerdicts
)

var verdictNames = [NumVerdicts]string{
	"accept", "accept_liberal", "rst_in_window", "syn_on_live", "restart",
	"seq_ahead", "seq_behind", "ack_ahead", "ack_behind", "rst_out_of_window", "synack_bad_ack",
}

// String returns the verdict's metrics label, e.g. "rst_in_window".
func (v Verdict) String() string {
	if v < NumVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// VerdictNames returns every verdict's label in Verdict order, for a counter family indexed by
// Verdict (counter.Each(tcpwindow.VerdictNames()...)).
func VerdictNames() []string { return append([]string(nil), verdictNames[:]...) }

// Forward reports whether the segment is to be forwarded.
func (v Verdict) Forward() bool { return v < DropSeqAhead }

// ChangesState reports whether the segment's flags may move the connection's state.
func (v Verdict) ChangesState() bool { return v == Accept }

// Track decides whether a segment travelling in direction d (0 or 1) is acceptable and, if it
// is, records what it shows. opening says that the connection is still in its handshake
// (flowtable's syn_sent and syn_recv): a SYN is then a retransmission, a reopening or a
// simultaneous open rather than an attack on a synchronised connection. It takes no lock and
// does not allocate.
func (c *Conn) Track(d int, seg *Segment, opening bool) Verdict {
	sa, ra := &c.side[d&1], &c.side[(d&1)^1]
	s0, r0 := sa.load(), ra.load()
	s, r := s0, r0
	flags := seg.Flags
	syn, fin, rst, hasAck := flags&flagSYN != 0, flags&flagFIN != 0, flags&flagRST != 0, flags&flagACK != 0
	seq, ack := seg.Seq, seg.Ack
	end := fwd(seq, seg.Len)
	if syn {
		end = end.Add(1)
	}
	if fin {
		end = end.Add(1)
	}
	sack := ack
	if seg.Opts&OptSACK != 0 && after(seg.SACK, ack) {
		sack = seg.SACK
	}
	win := seqnum.Size(seg.Window)

	if rst {
		return c.rst(sa, ra, s, r, seq, ack, hasAck)
	}

	reinit := false // the sender's record is replaced, not advanced
	first := false  // the sender is first seen mid-stream, by this segment
	switch {
	case syn && !opening:
		return SYNOnLive
	case syn && !s.Seen():
		// The first SYN of a side: the client's, the server's SYN-ACK, or the server's own SYN
		// in a simultaneous open. A SYN-ACK must acknowledge the SYN exactly (RFC 793 3.4):
		// its ISN, or with TCP Fast Open (RFC 7413) the data it carried or only its ISN.
		if hasAck && (!r.Seen() || after(ack, r.End) || after(r.MaxEnd, ack)) {
			return DropSYNACK
		}
		s = synSide(seg, end, win)
		reinit = true
	case syn:
		// Handshake: a retransmission (same end), the client reopening with a higher ISN
		// (RFC 793: "it must only be sure to use sequence numbers larger than those recently
		// used", conntrack re-learns it), or the second side's SYN-ACK in a simultaneous open.
		if hasAck && after(ack, r.End) {
			return DropSYNACK
		}
		if end == s.End && (!hasAck || ack == r.End) {
			break
		}
		if !after(end, s.End) || hasAck {
			return SYNOnLive
		}
		s = synSide(seg, end, win)
		reinit = true
	case !s.Seen():
		// First sighting mid-stream (pick-up, or the server's side after a restart): learn
		// what the segment shows. Its window's scale is unknown.
		// (conntrack guesses MaxEnd as end plus the sender's own window; the peer's is what
		// bounds it, unknown yet, so the edge starts here and moves with the peer's acks or,
		// liberally, with the sender's data.)
		s.End = end
		s.MaxWin = max(win, 1)
		s.MaxEnd = end
		s.Flags = s.Flags&^FlagInferred | FlagLiberal | FlagSeen | FlagMaxEnd
		reinit, first = true, true
	}
	if syn && (s.Flags&FlagWScale == 0 || r.Seen() && r.Flags&(FlagWScale|FlagLiberal) == 0) {
		// RFC 7323 2.2: scaling is in force only if both SYNs carried the option. (A liberal
		// receiver's SYN was not seen; a SYN-ACK with the option says that it carried it.)
		s.Scale, r.Scale = 0, 0
	}
	if !r.Seen() && r.Flags&FlagInferred == 0 && hasAck {
		// The other side has not been seen: its end is where this side acknowledges it
		// (conntrack's mid-stream trick), so that III and IV hold until it shows up.
		r.End, r.MaxEnd = sack, sack
		r.Flags |= FlagInferred | FlagLiberal | FlagMaxEnd
	}
	if syn && !hasAck {
		// Nothing to check in a first or repeated SYN beyond the above.
		c.commit(sa, ra, s0, r0, s, r, reinit)
		return Accept
	}

	if !hasAck {
		ack, sack = r.End, r.End
	} else if r.Flags&FlagInferred != 0 && after(sack, r.End) {
		// The other side is known only from acks, and this one acknowledges more: its
		// inferred end moves up (it sent what was never seen here, before the pick-up).
		r.End = sack
		if after(sack, r.MaxEnd) {
			r.MaxEnd = sack
		}
	}
	if seq == end {
		// No data, SYN or FIN: only the ack says anything (keep-alives, window updates, and
		// pure ACKs that lag behind data in flight).
		seq, end = s.End, s.End
	}
	// IV's slack: the data the other side may have in flight, at most the window this side
	// advertised. On a pick-up the scale is unknown, so it is the window at the largest scale.
	maxAck := s.MaxWin
	if maxAck == 0 {
		maxAck = maxAckWindow
	}
	if (s.Flags|r.Flags)&FlagLiberal != 0 {
		maxAck = seqnum.Size(min(uint64(maxAck)<<maxScale, maxWindow))
	}
	v := Accept
	switch {
	case after(seq, s.MaxEnd):
		v = DropSeqAhead
	case !after(end, back(s.End, r.MaxWin+1)), fin && after(s.End, end):
		// Wholly a window behind; or a FIN behind data the side already sent, which no TCP
		// sends (the FIN is its last sequence number), so only a blind sender would.
		v = DropSeqBehind
	case after(sack, r.End):
		v = DropAckAhead
	case !after(sack, back(r.End, maxAck+1)):
		v = DropAckBehind
	}
	if v != Accept && (s.Flags|r.Flags)&FlagLiberal != 0 {
		// A pick-up: windows are known only unscaled. A segment beyond the window we know
		// but within what the largest scale allows, with a plausible ack, is taken as the new
		// edge of the window. Anything else is passed, as conntrack's be_liberal does, but
		// learns nothing and moves no state (a blind FIN stays harmless).
		rwin := uint64(maxWindow)
		if r.Seen() {
			rwin = min(uint64(r.MaxWin)<<maxScale, maxWindow)
		}
		// A FIN gets no such slack: a genuine one follows the data it ends, which already
		// moved the edge, so only a blind one lies beyond it.
		if v != DropSeqAhead || fin || after(seq, fwd(s.MaxEnd, seqnum.Size(rwin))) ||
			after(sack, r.End) || !after(sack, back(r.End, maxAck+1)) {
			// Still learn the sender from its own numbers: its first segment (conntrack's
			// initialisation persists too) and the data it sends. Otherwise a side learned
			// from a keep-alive (one below its real end) and the other side's acks would
			// keep failing against each other for good.
			switch {
			case first:
				c.commit(sa, ra, s0, r0, s, r0, true)
			case seg.Len > 0 && !fin && after(end, s.End) && !after(seq, fwd(s.MaxEnd, seqnum.Size(rwin))):
				s.End = end
				if after(end, s.MaxEnd) {
					s.MaxEnd = end
				}
				sa.commit(s0, s)
			}
			return AcceptLiberal
		}
		v = Accept
		s.MaxEnd = end
	}
	if v != Accept {
		return v
	}

	if !syn {
		win <<= s.Scale
	}
	if swin := win + seqnum.Size(sack.Sub(ack)); s.MaxWin < swin {
		s.MaxWin = swin
	}
	if after(end, s.End) {
		s.End = end
	}
	if fin {
		s.Flags |= FlagFIN
	}
	if r.Seen() && after(end, s.MaxEnd) {
		// The sender went beyond the window we knew of (a liberal pick-up, or a window
		// update we missed): widen the slack for the receiver's old segments to match.
		r.MaxWin = min(r.MaxWin+seqnum.Size(end.Sub(s.MaxEnd)), maxWindow)
	}
	if hasAck && (!fwd(sack, win).LessThan(r.MaxEnd) || r.Flags&FlagMaxEnd == 0) {
		r.Flags |= FlagMaxEnd
		r.MaxEnd = fwd(sack, win)
		if win == 0 {
			r.MaxEnd = r.MaxEnd.Add(1) // room for a zero-window probe
		}
	}
	if hasAck && !syn && r.Flags&FlagInferred == 0 {
		r.Flags |= FlagAcked
	}
	if first && fin {
		// The sender is learned from it, but a FIN whose numbers nothing confirms moves no
		// state and tells nothing of the other side.
		c.commit(sa, ra, s0, r0, s, r0, reinit)
		return AcceptLiberal
	}
	c.commit(sa, ra, s0, r0, s, r, reinit)
	return Accept
}

// rst applies RFC 5961 section 3.2 to an RST from the side sa.
func (c *Conn) rst(sa, ra *atomicSide, s, r Side, seq, ack seqnum.Value, hasAck bool) Verdict {
	switch {
	case !s.Seen() && s.Flags&FlagInferred == 0:
		// Nothing known of the sender: the RST answers the other side's SYN or first segment.
		// RFC 793 SYN-SENT: acceptable only if it acknowledges what that side sent, exactly.
		if hasAck && r.Seen() && ack == r.End {
			return Accept
		}
		return DropRST
	case !s.Seen():
		// Picked up and this side not seen yet: its End is the other side's ack, which an RST
		// answering that segment (seq = SEG.ACK) carries exactly.
		if seq == s.End {
			return Accept
		}
		return RSTInWindow
	}
	switch {
	case seq == s.End: // (End may be past MaxEnd: a segment may straddle the right edge)
		return Accept
	case after(seq, s.MaxEnd) || !after(seq, back(s.End, r.MaxWin+1)):
		return DropRST
	}
	return RSTInWindow
}

// synSide is a sender's record learned from its SYN. MaxEnd is the ISN + 1 until the peer's
// SYN-ACK sets it from its window: a SYN-ACK may acknowledge anything from there to End (a
// Fast Open server that declines the SYN's data acknowledges only the ISN).
func synSide(seg *Segment, end seqnum.Value, win seqnum.Size) Side {
	s := Side{End: end, MaxEnd: seg.Seq.Add(1), MaxWin: max(win, 1), Flags: FlagSeen | FlagMaxEnd}
	if seg.Opts&OptWScale != 0 {
		s.Flags |= FlagWScale
		s.Scale = min(seg.WScale, maxScale)
	}
	if seg.Opts&OptSACKPerm != 0 {
		s.Flags |= FlagSACKPerm
	}
	return s
}

func (c *Conn) commit(sa, ra *atomicSide, s0, r0, s, r Side, reinit bool) {
	if reinit {
		sa.store(s)
	} else {
		sa.commit(s0, s)
	}
	if !r0.Seen() && r0.Flags&FlagInferred == 0 && r.Flags&FlagInferred != 0 {
		ra.store(r)
	} else {
		ra.commit(r0, r)
	}
}

// after reports whether a comes after b in sequence space.
func after(a, b seqnum.Value) bool { return b.LessThan(a) }

// fwd is v moved forward by n: the end of n bytes from v.
func fwd(v seqnum.Value, n seqnum.Size) seqnum.Value { return v.Add(seqnum.Delta(n)) }

// back is v moved back by n: the start of a window of n that ends at v.
func back(v seqnum.Value, n seqnum.Size) seqnum.Value { return v.Add(seqnum.Delta(n).Neg()) }
