// Package seqnum is TCP sequence-number arithmetic with types: a Value is a point in the 2^32
// sequence space, a Delta the distance one Value is moved by (an offset seqshiftd applies), and
// Size a window length. Everything is modulo 2^32, as RFC 793 section 3.3 defines it, so
// wrap-around is normal rather than a special case.
//
// The types keep the two kinds apart at compile time: a Value cannot be added to a Value, and a
// Delta applied the wrong way round has to be negated in plain sight (Neg). The operations are
// one-line functions of integers so that they inline into the per-packet code.
//
// seqnum must never allocate, never panic and never compare sequence numbers as plain
// integers (that is the bug it exists to prevent: 0x00000001 comes after 0xffffffff).
package seqnum

// Value is a TCP sequence or acknowledgment number.
type Value uint32

// Delta is what is added to a Value, modulo 2^32. Its negation undoes it exactly.
type Delta uint32

// Size is the length of a range of sequence space, e.g. a receive window.
type Size uint32

// Add returns v moved forward by d (backward when d is negative read as signed).
func (v Value) Add(d Delta) Value { return v + Value(d) }

// Sub returns the Delta that moves w to v: w.Add(v.Sub(w)) == v.
func (v Value) Sub(w Value) Delta { return Delta(v - w) }

// LessThan reports whether v comes before w: w is less than 2^31 ahead of v.
func (v Value) LessThan(w Value) bool { return int32(v-w) < 0 }

// LessThanEq reports whether v comes before w or is w.
func (v Value) LessThanEq(w Value) bool { return int32(v-w) <= 0 }

// InRange reports whether v lies in [a, b), walking forward from a.
func (v Value) InRange(a, b Value) bool { return v-a < b-a }

// InWindow reports whether v lies in the window of size sz that starts at first.
func (v Value) InWindow(first Value, sz Size) bool { return uint32(v-first) < uint32(sz) }

// Neg returns the Delta that undoes d: v.Add(d).Add(d.Neg()) == v.
func (d Delta) Neg() Delta { return -d }

// Add returns the Delta of applying d, then e.
func (d Delta) Add(e Delta) Delta { return d + e }

// Signed returns d as a signed distance, for display: an offset of -1 reads better than
// 4294967295. The arithmetic never needs it.
func (d Delta) Signed() int32 { return int32(d) }
