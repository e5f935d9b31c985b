package rewrite

import (
	"encoding/binary"
	"math/bits"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// Shift rewrites, in place, the packet that Classify described in p (pkt unchanged since).
//
// KindTCP: seq += seqDelta; with FlagACK, ack += ackDelta and every SACK and D-SACK edge +=
// ackDelta (a SYN's ack field is not a number the receiver reads, so it is left alone). The
// caller does not choose the signs: flowtable.DeltasOf says which delta goes where. The TCP checksum is updated
// incrementally, or left alone when partial (the NEEDS_CSUM field then holds only the
// pseudo-header sum, which these fields are not part of).
//
// KindICMPQuotingTCP: the quoted seq += seqDelta and, when the quote holds the flags and they
// have FlagACK, the quoted ack += ackDelta; the quoted TCP checksum follows when the quote holds
// it, so that these fields read again as the segment's sender wrote them. Quoted SACK edges are
// left as they are: the kernel reads only the quoted ports and seq (tcp_v4_err, tcp_v6_err).
// The ICMP checksum is then updated incrementally: only quoted bytes change, so for ICMPv6 the
// pseudo-header part of the sum is unchanged and the same update is right. partial leaves the
// ICMP checksum alone.
//
// Arithmetic is modulo 2^32: wrap-around is normal. Shift returns ReasonNone on success;
// otherwise it leaves pkt untouched and returns why. It never allocates.
func Shift(pkt []byte, p *Packet, seq, ack seqnum.Delta, partial bool) Reason {
	// The header accessors and the checksum helpers work on plain uint32: adding a delta
	// modulo 2^32 is the same machine addition, and the sums must stay in registers.
	seqDelta, ackDelta := uint32(seq), uint32(ack)
	if p.Kind != KindTCP {
		if p.Kind == KindICMPQuotingTCP {
			return shiftQuote(pkt, p, seqDelta, ackDelta, partial)
		}
		return ReasonNotRewritable
	}
	off, n := int(p.tcp), int(p.tcpLen)
	if n < TCPMinimumSize || off > len(pkt)-n {
		return ReasonNotRewritable
	}
	t := TCP(pkt[off : off+n : off+n])
	sackAt := TCPMinimumSize + int(p.sackAt)
	sackEnd := sackAt + 8*int(p.sackBlocks)
	if sackEnd > n || (p.edges != 0 && TCPMinimumSize+64-bits.LeadingZeros64(p.edges)+3 > n) {
		return ReasonNotRewritable // an edge would run past the header p was made for
	}
	// Nothing can fail from here on: every check is above, so a failure leaves pkt untouched.
	old := t.SequenceNumber()
	t.SetSequenceNumber(old + seqDelta)
	sum := change32(old, old+seqDelta)
	if p.Flags&FlagACK != 0 {
		old = t.AckNumber()
		t.SetAckNumber(old + ackDelta)
		sum += change32(old, old+ackDelta)
		if p.sackBlocks != 0 {
			// Unrolled: each test of len(b) is also the bounds check of its block.
			b := t[sackAt:sackEnd]
			var c uint64
			if len(b) >= 8 {
				c += shiftBlock(b[0:8], ackDelta)
			}
			if len(b) >= 16 {
				c += shiftBlock(b[8:16], ackDelta)
			}
			if len(b) >= 24 {
				c += shiftBlock(b[16:24], ackDelta)
			}
			if len(b) >= 32 {
				c += shiftBlock(b[24:32], ackDelta)
			}
			if sackAt&1 != 0 {
				// The TCP header starts at an even offset of the checksummed data, so an
				// option after an odd number of NOPs puts its edges at odd offsets.
				c = oddToEven(c)
			}
			sum += c
		} else if p.edges != 0 {
			sum += shiftEdges(t[TCPMinimumSize:], p.edges, ackDelta)
		}
	}
	if !partial {
		t.SetChecksum(update(t.Checksum(), sum))
	}
	return ReasonNone
}

// shiftBlock adds delta to the left and right edge of the SACK block w, read and written as
// one 8-byte word, and returns the checksum change.
func shiftBlock(w []byte, delta uint32) uint64 {
	v := binary.BigEndian.Uint64(w)
	l, r := uint32(v>>32), uint32(v)
	binary.BigEndian.PutUint64(w, uint64(l+delta)<<32|uint64(r+delta))
	return change32(l, l+delta) + change32(r, r+delta)
}

// shiftEdges adds delta to the SACK edges of the options area opts that edges marks and
// returns the checksum change; it serves headers with several SACK options.
func shiftEdges(opts []byte, edges uint64, delta uint32) uint64 {
	var even, odd uint64
	for m := edges; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		e := opts[i : i+4]
		old := binary.BigEndian.Uint32(e)
		binary.BigEndian.PutUint32(e, old+delta)
		if i&1 == 0 {
			even += change32(old, old+delta)
		} else {
			odd += change32(old, old+delta)
		}
	}
	if odd != 0 {
		even += oddToEven(odd)
	}
	return even
}

// shiftQuote is Shift for KindICMPQuotingTCP.
func shiftQuote(pkt []byte, p *Packet, seqDelta, ackDelta uint32, partial bool) Reason {
	off, n, ic := int(p.tcp), int(p.tcpLen), int(p.icmp)
	if n < tcpQuoteMinimum || n > TCPMaximumSize || off > len(pkt)-n ||
		ic > len(pkt)-ICMPHeaderSize || ic+ICMPHeaderSize > off {
		return ReasonNotRewritable
	}
	t := TCP(pkt[off : off+n])
	// The quoted TCP header sits at an even offset of the ICMP message (8 bytes of ICMP header,
	// then a quoted IP header of 4-byte or 8-byte units), so every field changed is even-aligned
	// for the ICMP checksum as well as for the quoted TCP checksum.
	old := t.SequenceNumber()
	t.SetSequenceNumber(old + seqDelta)
	sum := change32(old, old+seqDelta)
	if n >= tcpQuoteFlags && p.Flags&FlagACK != 0 {
		old = t.AckNumber()
		t.SetAckNumber(old + ackDelta)
		sum += change32(old, old+ackDelta)
	}
	if n >= tcpQuoteCsum {
		// Nobody can verify a truncated segment's checksum, but a quote that holds the whole
		// segment can be, and keeping it consistent makes the translation exact.
		old := t.Checksum()
		cs := update(old, sum)
		t.SetChecksum(cs)
		sum += change16(old, cs)
	}
	if !partial {
		msg := ICMP(pkt[ic : ic+ICMPHeaderSize])
		msg.SetChecksum(update(msg.Checksum(), sum))
	}
	return ReasonNone
}
