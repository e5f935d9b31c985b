package flowtable

import "github.com/seqshiftd/seqshiftd/seqnum"

// Deltas are what one segment's numbers are shifted by: Seq goes to its sequence number, Ack to
// its acknowledgment number and every SACK and D-SACK edge (rewrite.Shift's two arguments).
type Deltas struct {
	Seq, Ack seqnum.Delta
}

// Zero reports whether the deltas change nothing, so that the segment can pass untouched.
func (d Deltas) Zero() bool { return d.Seq == 0 && d.Ack == 0 }

// Inverse returns the deltas that undo d.
func (d Deltas) Inverse() Deltas { return Deltas{Seq: d.Seq.Neg(), Ack: d.Ack.Neg()} }

// DeltasOf is the one statement of seqshiftd's sign rules, for the flow whose offsets are off
// (indexed by Dir) and a segment travelling in direction d:
//
//   - its sequence number is moved by its own direction's offset, off[d];
//   - its acknowledgment number (and SACK edges) count the other direction's bytes, which the
//     segment's sender saw shifted by off[d.Reverse()], so they are moved back by that offset.
//
// Both datapaths use it: the Go one per packet through Flow.Deltas, the kernel one through the
// per-flow map values the daemon computes with it. It is a pure function so that those values
// can be computed without a Flow.
func DeltasOf(off [2]seqnum.Delta, d Dir) Deltas {
	return Deltas{Seq: off[d&1], Ack: off[(d^1)&1].Neg()}
}

// QuoteDeltasOf is DeltasOf for an ICMP error quoting a segment that travelled in direction d:
// the quote went out shifted by DeltasOf(off, d), and the host receiving the error (the
// segment's sender) must read it as it wrote it, so the quote is moved by the exact inverse.
// Without this, Linux ignores a fragmentation-needed whose quoted seq is outside its send
// window and path-MTU discovery breaks.
func QuoteDeltasOf(off [2]seqnum.Delta, d Dir) Deltas {
	return DeltasOf(off, d).Inverse()
}

// Deltas returns the deltas for a segment of f travelling in direction d: zero for an exempt
// flow, whose segments cross unshifted whatever offsets it holds. An observed flow
// (ExemptObserve) keeps the offsets it would get in Offsets, for `flows`; everything that acts
// on the wire (the shift, the window tracker moving an ack into the receiver's space, the
// kernel map) asks here, and so treats it as unshifted.
func (f *Flow) Deltas(d Dir) Deltas {
	if f.exempt != ExemptNone {
		return Deltas{}
	}
	return DeltasOf(f.Offsets(), d)
}

// QuoteDeltas returns the deltas for an ICMP error quoting a segment of f that travelled in
// direction d: zero for an exempt flow, as for Deltas.
func (f *Flow) QuoteDeltas(d Dir) Deltas {
	if f.exempt != ExemptNone {
		return Deltas{}
	}
	return QuoteDeltasOf(f.Offsets(), d)
}
