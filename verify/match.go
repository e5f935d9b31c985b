package verify

import (
	"fmt"

	"github.com/seqshiftd/seqshiftd/rewrite"
)

// Pairing states of a seg.
const (
	unpaired  uint8 = iota
	paired          // paired one to one by ident
	gsoPaired       // part of a byte-range pairing: a super-packet on one side, its segments on the other
)

// maxCandidates bounds how many equal segments are tried for an exact match, so that a capture
// whose segments all look alike (IPv6 without timestamps) costs linear time, not quadratic.
const maxCandidates = 64

// identIndex finds a direction's unpaired segments by ident, oldest first: first holds the
// oldest segment of each ident not known to be paired, next chains each segment to the next of
// the same ident. Two flat arrays and one map entry per ident: no allocation per segment.
type identIndex struct {
	first map[ident]int32
	next  []int32
}

func indexOf(segs []seg) identIndex {
	ix := identIndex{first: make(map[ident]int32, len(segs)), next: make([]int32, len(segs))}
	last := make(map[ident]int32, len(segs))
	for i := range segs {
		id := segs[i].id
		ix.next[i] = -1
		if l, ok := last[id]; ok {
			ix.next[l] = int32(i)
		} else {
			ix.first[id] = int32(i)
		}
		last[id] = int32(i)
	}
	return ix
}

// candidates returns up to maxCandidates unpaired segments equal to id, oldest first: from the
// start, or (after >= 0, itself a segment equal to id) from the one after it.
func (ix identIndex) candidates(segs []seg, id ident, after int32, buf []int32) []int32 {
	buf = buf[:0]
	var i int32
	if after >= 0 {
		i = ix.next[after]
	} else {
		h, ok := ix.first[id]
		if !ok {
			return buf
		}
		// Move the head past what has been paired since: heads only move forward, so this
		// costs one step per segment over the whole pairing.
		for h >= 0 && segs[h].state != unpaired {
			h = ix.next[h]
		}
		if h < 0 {
			delete(ix.first, id)
			return buf
		}
		ix.first[id] = h
		i = h
	}
	// The walk is bounded too: a run of paired equals (thousands of identical pure ACKs of an
	// IPv6 flow without timestamps) must not make pairing quadratic.
	for steps := 0; i >= 0 && len(buf) < maxCandidates && steps < 16*maxCandidates; i, steps = ix.next[i], steps+1 {
		if segs[i].state == unpaired {
			buf = append(buf, i)
		}
	}
	return buf
}

// direction pairs the segments of one direction (seq space d) of a connection between the client
// capture (a) and the server capture (b).
type direction struct {
	d      int
	a, b   *dirRecs
	ia, ib identIndex
}

// pair pairs every segment and ICMP error of a connection found in both captures and records
// what it found in pc.
func (pc *pairedConn) pair() {
	for d := range 2 {
		pc.dirs[d] = &direction{d: d, a: &pc.a.dirs[d], b: &pc.b.dirs[d]}
		pc.dirs[d].ia, pc.dirs[d].ib = indexOf(pc.a.dirs[d].segs), indexOf(pc.b.dirs[d].segs)
	}
	for d := range 2 {
		pc.offsetFromSegments(d)
	}
	for d := range 2 {
		if !pc.known[d] {
			pc.offsetFromAcks(d)
		}
	}
	for d := range 2 {
		if pc.known[d] {
			// Exact pairs first, so that a GSO piece is not taken for a broken copy of an
			// equal-looking segment; then byte ranges; then what is equal but does not map.
			pc.pairDirection(pc.dirs[d], true)
			pc.pairRanges(pc.dirs[d], false)
			pc.pairRanges(pc.dirs[d], true)
			pc.pairDirection(pc.dirs[d], false)
		}
		pc.oneSided(pc.dirs[d])
	}
	pc.pairICMP()
}

// offsetFromSegments finds seq space d's offset: from the SYNs when both captures hold one, else
// from the most common difference between equal segments among the first of the direction.
func (pc *pairedConn) offsetFromSegments(d int) {
	dr := pc.dirs[d]
	if dr.a.syn >= 0 && dr.b.syn >= 0 {
		pc.delta[d], pc.known[d], pc.from[d] = dr.b.segs[dr.b.syn].seq-dr.a.segs[dr.a.syn].seq, true, "syn"
		return
	}
	votes := map[uint32]int{}
	var buf []int32
	for i := range min(len(dr.a.segs), 256) {
		a := &dr.a.segs[i]
		buf = dr.ib.candidates(dr.b.segs, a.id, -1, buf)
		if len(buf) == 1 {
			votes[dr.b.segs[buf[0]].seq-a.seq]++
		}
	}
	if v, ok := mode(votes); ok {
		pc.delta[d], pc.known[d], pc.from[d] = v, true, "segments"
	}
}

// offsetFromAcks finds seq space d's offset from the acknowledgments of the other direction,
// for a direction whose own segments never showed up on both sides.
func (pc *pairedConn) offsetFromAcks(d int) {
	dr := pc.dirs[1-d]
	votes := map[uint32]int{}
	var buf []int32
	for i := range min(len(dr.a.segs), 256) {
		a := &dr.a.segs[i]
		if a.id.flags&rewrite.FlagACK == 0 {
			continue
		}
		buf = dr.ib.candidates(dr.b.segs, a.id, -1, buf)
		if len(buf) == 1 {
			votes[dr.b.segs[buf[0]].ack-a.ack]++
		}
	}
	if v, ok := mode(votes); ok {
		pc.delta[d], pc.known[d], pc.from[d] = v, true, "acks"
	}
}

func mode(votes map[uint32]int) (uint32, bool) {
	var best uint32
	n := 0
	for v, c := range votes {
		if c > n || c == n && v < best {
			best, n = v, c
		}
	}
	return best, n > 0
}

// pairDirection pairs the segments of one direction by ident and checks every pair. With
// exact, only pairs whose fields all map are made; without, an equal segment that does not map
// is paired as broken — unless it maps exactly to a later equal of this side, which makes this
// one a drop.
func (pc *pairedConn) pairDirection(dr *direction, exact bool) {
	var cands, own []int32
	for i := range dr.a.segs {
		a := &dr.a.segs[i]
		if a.state != unpaired {
			continue
		}
		cands = dr.ib.candidates(dr.b.segs, a.id, -1, cands)
		if len(cands) == 0 {
			continue
		}
		j := int32(-1)
		for _, c := range cands {
			if pc.mismatch(dr, a, &dr.b.segs[c], true) == "" {
				j = c
				break
			}
		}
		if j < 0 && exact {
			continue
		}
		if j < 0 {
			b := &dr.b.segs[cands[0]]
			own = dr.ia.candidates(dr.a.segs, a.id, int32(i), own)
			dropped := false
			for _, o := range own {
				if pc.mismatch(dr, &dr.a.segs[o], b, true) == "" {
					dropped = true
					break
				}
			}
			if dropped {
				continue
			}
			j = cands[0]
		}
		b := &dr.b.segs[j]
		a.state, b.state, a.peer, b.peer = paired, paired, j, int32(i)
		pc.check(dr, int32(i), j, false)
	}
}

// tsKey groups the segments of a GSO/GRO super-packet: segmentation copies the options, so
// every piece carries the super-packet's timestamps.
type tsKey struct {
	tsval, tsecr uint32
	hasTS        bool
}

// pairRanges pairs what exact pairing left by byte range: each unpaired data segment of one
// capture (the server's, or the client's when swap) whose bytes lie inside a longer data
// segment of the other capture with the same timestamps is a piece of that GSO/GRO
// super-packet. A super-packet whose pieces do not cover it all lost the rest on the way
// (counted as one-sided in oneSided).
func (pc *pairedConn) pairRanges(dr *direction, swap bool) {
	big, small, delta := dr.a, dr.b, pc.delta[dr.d]
	if swap {
		big, small, delta = dr.b, dr.a, -delta
	}
	bigs := map[tsKey][]int32{}
	for i := range big.segs {
		if s := &big.segs[i]; s.id.plen > 0 && (s.state == unpaired || s.covered > 0) {
			k := tsKey{s.id.tsval, s.id.tsecr, s.id.hasTS}
			bigs[k] = append(bigs[k], int32(i))
		}
	}
	if len(bigs) == 0 {
		return
	}
	for j := range small.segs {
		p := &small.segs[j]
		if p.state != unpaired || p.id.plen == 0 {
			continue
		}
		start := p.seq - delta // in big's numbering
		list := bigs[tsKey{p.id.tsval, p.id.tsecr, p.id.hasTS}]
		// Several super-packets may hold these bytes with the same timestamps: the original
		// and a retransmission sent within the same millisecond tick (with a newer ack, and
		// SACK blocks). The piece is paired with the first candidate whose numbers map; only
		// when none does is it paired with the first one, as a break.
		first := int32(-1)
		var pick int32 = -1
		for n, i := range list {
			if n == maxCandidates*4 {
				break
			}
			s := &big.segs[i]
			if s.id.plen <= p.id.plen || s.id.flags&^(rewrite.FlagPSH|rewrite.FlagFIN) != p.id.flags&^(rewrite.FlagPSH|rewrite.FlagFIN) {
				continue
			}
			if off := start - s.seq; off >= s.id.plen || off+p.id.plen > s.id.plen {
				continue
			}
			if first < 0 {
				first = i
			}
			ai, bj := i, int32(j)
			if swap {
				ai, bj = int32(j), i
			}
			if pc.mismatch(dr, &dr.a.segs[ai], &dr.b.segs[bj], false) == "" {
				pick = i
				break
			}
		}
		if pick < 0 {
			pick = first
		}
		if pick < 0 {
			continue
		}
		s := &big.segs[pick]
		if s.covered == 0 {
			pc.stats[dr.d].GSOPaired++
		}
		s.state, s.covered = gsoPaired, s.covered+p.id.plen
		p.state, p.peer = gsoPaired, pick
		ai, bj := pick, int32(j)
		if swap {
			ai, bj = int32(j), pick
		}
		pc.check(dr, ai, bj, true)
	}
}

// mismatch says which field of b does not map from a with the connection's offsets ("" when
// all do): seq (unless !seq), ack, SACK edges. It does not look at checksums.
func (pc *pairedConn) mismatch(dr *direction, a, b *seg, seq bool) string {
	d := dr.d
	if got, want := b.seq, a.seq+pc.delta[d]; seq && got != want {
		return fmt.Sprintf("seq %d on the server side, expected %d (client side %d %+d)", got, want, a.seq, int32(pc.delta[d]))
	}
	if a.id.flags&rewrite.FlagACK == 0 {
		return ""
	}
	if !pc.known[1-d] {
		return ""
	}
	if got, want := b.ack, a.ack+pc.delta[1-d]; got != want {
		return fmt.Sprintf("ack %d on the server side, expected %d (client side %d %+d)", got, want, a.ack, int32(pc.delta[1-d]))
	}
	ea, eb := dr.a.sack[a.sackAt:a.sackAt+uint32(a.nsack)], dr.b.sack[b.sackAt:b.sackAt+uint32(b.nsack)]
	if len(ea) != len(eb) {
		return fmt.Sprintf("%d SACK blocks on the server side, %d on the client side", len(eb)/2, len(ea)/2)
	}
	for k := range ea {
		if got, want := eb[k], ea[k]+pc.delta[1-d]; got != want {
			side := "left"
			if k%2 == 1 {
				side = "right"
			}
			return fmt.Sprintf("SACK block %d %s edge %d on the server side, expected %d (client side %d %+d)",
				k/2+1, side, got, want, ea[k], int32(pc.delta[1-d]))
		}
	}
	return ""
}

// check judges the pair (client capture segment ai, server capture segment bj) of direction dr
// and counts it.
func (pc *pairedConn) check(dr *direction, ai, bj int32, gso bool) {
	st := &pc.stats[dr.d]
	a, b := &dr.a.segs[ai], &dr.b.segs[bj]
	st.Paired++
	for _, c := range [2]csum{a.csum, b.csum} {
		switch c {
		case csumPartial:
			st.ChecksumsPartial++
		case csumUnchecked:
			st.ChecksumsUnchecked++
		}
	}
	// A GSO piece's seq is where its bytes sit in the super-packet, which pairRanges matched.
	what := pc.mismatch(dr, a, b, !gso)
	switch {
	case what != "":
	case a.csum.bad():
		what = fmt.Sprintf("%s checksum invalid on the client side", csumWhat(a.csum))
	case b.csum.bad():
		what = fmt.Sprintf("%s checksum invalid on the server side", csumWhat(b.csum))
	default:
		return
	}
	st.Broken++
	pc.breakAt(dr.d, ai, bj, what)
}

func csumWhat(c csum) string {
	if c == csumBadIP {
		return "IPv4 header"
	}
	return "TCP"
}

// oneSided counts the segments of a direction that only one capture holds.
func (pc *pairedConn) oneSided(dr *direction) {
	st := &pc.stats[dr.d]
	for side, recs := range [2]*dirRecs{dr.a, dr.b} {
		for i := range recs.segs {
			// Unpaired, or a super-packet some of whose bytes the other capture lacks.
			if s := &recs.segs[i]; s.state != unpaired && (s.covered == 0 || s.covered >= s.id.plen) {
				continue
			}
			st.OnlyIn[side]++
			if st.firstOnly[side] < 0 {
				st.firstOnly[side] = int32(i)
			}
		}
	}
}

// pairICMP pairs the ICMP errors the two captures hold by what a gateway leaves alone in them
// and checks the quoted numbers; an error only one capture holds must quote a segment of that
// capture, in that side's numbering.
func (pc *pairedConn) pairICMP() {
	for i := range pc.a.icmps {
		a := &pc.a.icmps[i]
		for j := range pc.b.icmps {
			b := &pc.b.icmps[j]
			if b.paired || a.typ != b.typ || a.code != b.code || a.from != b.from || a.ipid != b.ipid ||
				a.quoteLen != b.quoteLen || a.dir != b.dir {
				continue
			}
			a.paired, b.paired = true, true
			pc.icmp.Paired++
			pc.checkICMP(a, b)
			break
		}
	}
	for side, recs := range [2]*connRecs{pc.a, pc.b} {
		for i := range recs.icmps {
			if q := &recs.icmps[i]; !q.paired {
				pc.checkOneSidedICMP(side, q)
			}
		}
	}
}

func (pc *pairedConn) checkICMP(a, b *icmpRec) {
	d := a.dir
	var what string
	switch {
	case !pc.known[d]:
		pc.icmp.Unverified++
		return
	case b.seq != a.seq+pc.delta[d]:
		what = fmt.Sprintf("ICMP quoted seq %d on the server side, expected %d (client side %d %+d)", b.seq, a.seq+pc.delta[d], a.seq, int32(pc.delta[d]))
	case a.hasAck && b.hasAck && pc.known[1-d] && b.ack != a.ack+pc.delta[1-d]:
		what = fmt.Sprintf("ICMP quoted ack %d on the server side, expected %d (client side %d %+d)", b.ack, a.ack+pc.delta[1-d], a.ack, int32(pc.delta[1-d]))
	case a.csum.bad():
		what = "ICMP checksum invalid on the client side"
	case b.csum.bad():
		what = "ICMP checksum invalid on the server side"
	default:
		return
	}
	pc.icmp.Broken++
	pc.icmpBreak(a, b, what)
}

// checkOneSidedICMP checks an error only one capture holds (side 0: the client's): the host on
// that side must see a quote of its own segment, so the quoted seq must fall in a segment of
// that capture and the quoted ack (when the quote holds it) must be that segment's ack; numbers
// that match only after the other side's offset is applied were not translated.
func (pc *pairedConn) checkOneSidedICMP(side int, q *icmpRec) {
	recs := &pc.a.dirs[q.dir]
	// toOwn converts a number of seq space d from the other capture's numbering to this one's.
	toOwn := func(v uint32, d int) uint32 {
		if side == 0 {
			return v - pc.delta[d]
		}
		return v + pc.delta[d]
	}
	if side == 1 {
		recs = &pc.b.dirs[q.dir]
	}
	var what string
	switch {
	case q.csum.bad():
		what = "ICMP checksum invalid"
	case covers(recs.segs, q.seq, q.hasAck, q.ack):
		pc.icmp.OneSidedOK++
		return
	case q.hasAck && covers(recs.segs, q.seq, false, 0) && pc.known[1-q.dir] && covers(recs.segs, q.seq, true, toOwn(q.ack, 1-q.dir)):
		what = fmt.Sprintf("ICMP quoted ack %d is in the other side's numbering (this side sent it as %d)", q.ack, toOwn(q.ack, 1-q.dir))
	case pc.known[q.dir] && covers(recs.segs, toOwn(q.seq, q.dir), false, 0):
		what = fmt.Sprintf("ICMP quoted seq %d is in the other side's numbering (this side sent it as %d)", q.seq, toOwn(q.seq, q.dir))
	}
	if what == "" {
		pc.icmp.Unverified++
		return
	}
	pc.icmp.Broken++
	if side == 0 {
		pc.icmpBreak(q, nil, what)
	} else {
		pc.icmpBreak(nil, q, what)
	}
}

// covers reports whether a segment of segs holds sequence number v (its first byte, or a byte
// of its data) and, with withAck, acknowledges ack.
func covers(segs []seg, v uint32, withAck bool, ack uint32) bool {
	for i := range segs {
		s := &segs[i]
		if (v == s.seq || v-s.seq < s.id.plen) && (!withAck || s.id.flags&rewrite.FlagACK != 0 && s.ack == ack) {
			return true
		}
	}
	return false
}
