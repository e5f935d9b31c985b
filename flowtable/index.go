package flowtable

import (
	"math/bits"
	"sync/atomic"
)

// index is one shard's hash index: open addressing over groups of seven flow pointers that
// share a 64-byte cache line with a control word holding a 7-bit hash tag per slot, in the
// manner of Abseil's Swiss tables. A lookup reads one control word, picks the slots whose
// tag matches (one in 128 false positives) and compares keys only there, so a hit costs one
// index cache line plus the flow, and a miss just the index line. The branch that decides
// where the flow is depends on the index line alone, which keeps lookups in flight in
// parallel on an out-of-order core instead of serialising them on flow dereferences.
//
// Lookups take no lock. Writers (holding the shard lock) change a slot's pointer and its
// control byte with two atomic stores; entries never move within an index, and a rehash
// publishes a new index while readers finish on the old one. What makes the unlocked probe
// correct is the Swiss-table invariant: a group on the probe sequence before a live flow's
// group has no empty slot for as long as the flow is there (the flow was placed past it only
// because it was full, and a slot becomes empty again only in a group that still has an empty
// slot, one no probe sequence has passed). A probe therefore stops at the first group with an
// empty slot without ever missing a live flow. At most seven eighths of the slots are in use
// (flows and tombstones), so probes end.
type index struct {
	groups []group
	mask   uint64 // len(groups) - 1
}

const (
	groupSlots = 7
	minGroups  = 2

	ctrlEmpty   = 0x80 // never used since the group was made (or freed in a never-full group)
	ctrlDeleted = 0xfe // tombstone; also byte 7, which is not a slot and must never match
	lsb         = 0x0101010101010101
	msb         = 0x8080808080808080
	slotsMSB    = 0x0080808080808080 // msb of the seven slot bytes
	ctrlInit    = 0xfe80808080808080 // seven empty slots and the byte-7 sentinel
)

// group is exactly one cache line (the slice backing an index is line-aligned: Go aligns
// allocations of power-of-two sizes to their size class, and large ones to pages).
type group struct {
	ctrl  atomic.Uint64 // byte i: slot i's tag (0..0x7f), ctrlEmpty or ctrlDeleted
	slots [groupSlots]atomic.Pointer[Flow]
}

func newIndex(groups int) *index {
	ix := &index{groups: make([]group, groups), mask: uint64(groups - 1)}
	for i := range ix.groups {
		ix.groups[i].ctrl.Store(ctrlInit)
	}
	return ix
}

// slots returns the number of slots.
func (ix *index) slots() int { return len(ix.groups) * groupSlots }

// tag is the 7-bit hash tag of h; home picks the first group (the bits below shift chose the
// shard).
func tag(h uint64) uint64 { return h >> 57 }

func (ix *index) home(h uint64, shift uint) uint64 { return (h >> shift) & ix.mask }

// matchTag returns the msb of every byte of ctrl equal to t (t < 0x80), plus possibly some
// false positives next to a true match, which the key comparison weeds out. Empty, deleted
// and the sentinel byte have their msb set and never match.
func matchTag(ctrl, t uint64) uint64 {
	x := ctrl ^ (lsb * t)
	return (x - lsb) &^ x & msb
}

// matchEmpty returns the msb of every empty byte (0x80: msb set, bit 1 clear).
func matchEmpty(ctrl uint64) uint64 { return ctrl &^ (ctrl << 6) & msb }

// matchFree returns the msb of every empty or deleted slot byte.
func matchFree(ctrl uint64) uint64 { return ctrl & slotsMSB }

// pos names a slot: group << 3 | slot within the group.
type pos uint64

func (p pos) split() (g, i uint64) { return uint64(p) >> 3, uint64(p) & 7 }

const noPos = ^pos(0)

// find returns the flow of the probed tuple, and whether the probe's source is the key's
// higher endpoint.
func (ix *index) find(p *probe, h uint64, shift uint) (*Flow, bool) {
	t := tag(h)
	for g := ix.home(h, shift); ; g = (g + 1) & ix.mask {
		grp := &ix.groups[g]
		ctrl := grp.ctrl.Load()
		for m := matchTag(ctrl, t); m != 0; m &= m - 1 {
			if f := grp.slots[bits.TrailingZeros64(m)>>3].Load(); f != nil {
				if hit, rev := f.key.match(p); hit {
					return f, rev
				}
			}
		}
		if matchEmpty(ctrl) != 0 {
			return nil, false
		}
	}
}

// locate probes for k under the shard lock. It returns the flow and its slot if present, and
// in any case the slot an insert would use: the first free (deleted or empty) slot on the
// probe sequence.
func (ix *index) locate(k *Key, h uint64, shift uint) (f *Flow, at, free pos) {
	t := tag(h)
	free = noPos
	for g := ix.home(h, shift); ; g = (g + 1) & ix.mask {
		grp := &ix.groups[g]
		ctrl := grp.ctrl.Load()
		for m := matchTag(ctrl, t); m != 0; m &= m - 1 {
			i := uint64(bits.TrailingZeros64(m) >> 3)
			if f := grp.slots[i].Load(); f != nil && f.key.equal(k) {
				return f, pos(g<<3 | i), free
			}
		}
		if m := matchFree(ctrl); m != 0 && free == noPos {
			free = pos(g<<3 | uint64(bits.TrailingZeros64(m)>>3))
		}
		if matchEmpty(ctrl) != 0 {
			return nil, noPos, free
		}
	}
}

// locateFlow returns the slot holding f, or noPos.
func (ix *index) locateFlow(f *Flow, shift uint) pos {
	if g, at, _ := ix.locate(&f.key, f.hash, shift); g == f {
		return at
	}
	return noPos
}

// isDeleted reports whether a free slot from locate is a tombstone (rather than empty).
func (ix *index) isDeleted(p pos) bool {
	g, i := p.split()
	return byte(ix.groups[g].ctrl.Load()>>(8*i)) == ctrlDeleted
}

func (ix *index) setCtrl(g, i, b uint64) {
	c := &ix.groups[g].ctrl
	c.Store(c.Load()&^(0xff<<(8*i)) | b<<(8*i))
}

// put stores f in the free slot p: the pointer first, then the tag that lets lookups see it.
func (ix *index) put(p pos, f *Flow) {
	g, i := p.split()
	ix.groups[g].slots[i].Store(f)
	ix.setCtrl(g, i, tag(f.hash))
}

// replace swaps the flow in slot p for f, which has the same key (and so the same tag).
func (ix *index) replace(p pos, f *Flow) {
	g, i := p.split()
	ix.groups[g].slots[i].Store(f)
}

// erase frees slot p and reports whether it left a tombstone. A slot in a group that still
// has an empty slot becomes empty again: no probe sequence has ever gone past that group.
func (ix *index) erase(p pos) (tombstone bool) {
	g, i := p.split()
	tombstone = matchEmpty(ix.groups[g].ctrl.Load()) == 0
	b := uint64(ctrlEmpty)
	if tombstone {
		b = ctrlDeleted
	}
	ix.setCtrl(g, i, b)
	ix.groups[g].slots[i].Store(nil)
	return tombstone
}

// firstFree returns the first free slot on h's probe sequence.
func (ix *index) firstFree(h uint64, shift uint) pos {
	for g := ix.home(h, shift); ; g = (g + 1) & ix.mask {
		if m := matchFree(ix.groups[g].ctrl.Load()); m != 0 {
			return pos(g<<3 | uint64(bits.TrailingZeros64(m)>>3))
		}
	}
}

// full reports whether n entries (flows and tombstones) exceed seven eighths of the slots.
func (ix *index) full(n int) bool { return n*8 > ix.slots()*7 }

// groupsFor returns the number of groups (a power of two) an index for n flows gets when it
// is rebuilt: at most half full, so that it can grow by as much again before the next rehash.
func groupsFor(n int) int {
	g := minGroups
	for g*groupSlots < 2*n {
		g *= 2
	}
	return g
}
