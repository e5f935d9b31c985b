package rewrite

import "math/bits"

// Accessors for tools that read what Classify found rather than rewrite it (`seqshiftd verify`):
// the same offsets Shift uses, so a reader and the rewriter agree on where each field is.

// TCPOffset returns the offset in the packet of the TCP header Classify found: the segment's own
// for KindTCP, the quoted one for KindICMPQuotingTCP, 0 for other kinds.
func (p *Packet) TCPOffset() int { return int(p.tcp) }

// ICMPOffset returns the offset of the ICMP header of a KindICMPQuotingTCP packet, else 0.
func (p *Packet) ICMPOffset() int { return int(p.icmp) }

// TCPHeader returns the TCP header Classify found in pkt (the slice it classified): the whole
// header with options for KindTCP, as much of the quoted header as the quote holds (8 to 60
// bytes) for KindICMPQuotingTCP, nil otherwise.
func (p *Packet) TCPHeader(pkt []byte) TCP {
	if p.Kind != KindTCP && p.Kind != KindICMPQuotingTCP {
		return nil
	}
	off, n := int(p.tcp), int(p.tcpLen)
	if off > len(pkt)-n {
		return nil
	}
	return TCP(pkt[off : off+n : off+n])
}

// SACKEdges appends to dst the SACK and D-SACK edges of a KindTCP segment in pkt, in header
// order (left, right, left, right ...), and returns it: the edges Shift moves.
func (p *Packet) SACKEdges(pkt []byte, dst []uint32) []uint32 {
	t := p.TCPHeader(pkt)
	if p.Kind != KindTCP || len(t) < TCPMinimumSize {
		return dst
	}
	opts := t[TCPMinimumSize:]
	for m := p.edgeBits(); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		if i+4 > len(opts) {
			break
		}
		dst = append(dst, uint32(opts[i])<<24|uint32(opts[i+1])<<16|uint32(opts[i+2])<<8|uint32(opts[i+3]))
	}
	return dst
}

// WindowSize returns the window field (unscaled).
func (b TCP) WindowSize() uint16 { return uint16(b[14])<<8 | uint16(b[15]) }
