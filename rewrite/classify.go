package rewrite

import (
	"encoding/binary"
	"net/netip"
)

// Kind says what Classify found and so what Shift will do with a packet.
type Kind uint8

// Kinds of packet.
const (
	KindOther          Kind = iota // not TCP, not an ICMP error quoting TCP, or a non-first fragment: pass untouched
	KindTCP                        // a TCP segment (or first fragment) whose whole header is present
	KindICMPQuotingTCP             // an ICMP or ICMPv6 error quoting the start of a TCP segment
	KindMalformed                  // unusable; Packet.Reason says why
)

var kindNames = [...]string{"other", "tcp", "icmp_quoting_tcp", "malformed"}

// String returns a short snake_case name of the kind.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Reason says why a packet was found malformed or could not be rewritten.
type Reason uint8

// Reasons; ReasonNone is success. Their String values are metrics labels: keep them stable.
const (
	ReasonNone          Reason = iota // nothing wrong
	ReasonTruncatedIP                 // shorter than the IP header or than the length it declares
	ReasonBadIPVersion                // version nibble neither 4 nor 6
	ReasonBadIPHeader                 // IPv4 header length below 20 or beyond the total length
	ReasonBadExtHeader                // IPv6 extension header truncated, or hop-by-hop not first
	ReasonTinyFragment                // a first fragment too short for the whole TCP header (RFC 1858)
	ReasonTruncatedTCP                // fewer than 20 bytes of TCP header
	ReasonBadDataOffset               // TCP data offset below 5 or past the segment
	ReasonBadOption                   // TCP option length 0 or 1, or running past the header
	ReasonBadSACK                     // SACK option length not 2+8n with n >= 1
	ReasonTruncatedICMP               // ICMP error shorter than its 8-byte header
	ReasonBadICMPQuote                // quote not a TCP segment of the same IP version, or too short for ports and seq
	ReasonNotRewritable               // Shift called for a packet Classify did not find rewritable, or that changed since
	NumReasons                        // number of reasons, for arrays of counters indexed by Reason
)

var reasonNames = [NumReasons]string{
	"none",
	"truncated_ip",
	"bad_ip_version",
	"bad_ip_header",
	"bad_ext_header",
	"tiny_fragment",
	"truncated_tcp",
	"bad_data_offset",
	"bad_option",
	"bad_sack",
	"truncated_icmp",
	"bad_icmp_quote",
	"not_rewritable",
}

// String returns the reason's metrics label (snake_case).
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Auth says whether a segment carries a signature over its sequence numbers.
type Auth uint8

// Signature options. Both cover the sequence numbers, so a flow that uses one can never be
// rewritten: every shifted segment would fail verification at the receiver.
const (
	AuthNone Auth = iota // no signature option
	AuthMD5              // TCP-MD5, option 19 (RFC 2385)
	AuthAO               // TCP-AO, option 29 (RFC 5925)
)

var authNames = [...]string{"none", "tcp_md5", "tcp_ao"}

// String returns a short snake_case name of the option.
func (a Auth) String() string {
	if int(a) < len(authNames) {
		return authNames[a]
	}
	return "unknown"
}

// Packet is what Classify found in a packet and what Shift needs to rewrite it. It is a plain
// value: it holds offsets into the packet, never a pointer to it.
type Packet struct {
	Kind   Kind   // what the packet is
	Reason Reason // KindMalformed: why
	Flags  uint8  // TCP flags (of the quoted segment for KindICMPQuotingTCP, 0 if not quoted)
	Auth   Auth   // signature option found in the TCP header (never for a quote)

	// KindTCP: the segment's ports and addresses. KindICMPQuotingTCP: those of the QUOTED
	// segment, as it travelled (so the flow's direction is that of the quoted segment).
	SrcPort, DstPort uint16
	Seq, Ack         uint32 // Ack is meaningful only with FlagACK
	Src, Dst         netip.Addr
	PayloadLen       int // TCP payload bytes in this packet (0 for KindICMPQuotingTCP)

	// Fields are ordered so that the struct packs into 96 bytes: the datapath zeroes one per
	// packet.
	tcp    uint32 // offset of the TCP header (the quoted one for KindICMPQuotingTCP)
	tcpLen uint32 // TCP bytes Shift may touch: the data offset, or what the quote holds
	icmp   uint32 // offset of the ICMP header, KindICMPQuotingTCP only
	// SACK edges, located by Classify so that Shift finds them without a walk. The common case
	// of one SACK option is a run of blocks: sackAt is the offset of its first edge in the
	// options area, sackBlocks their number. A header with several SACK options (legal, never
	// seen in practice) has instead edges: bit i set means an edge starts at byte i of the
	// options area (40 bytes at most).
	sackAt, sackBlocks uint8
	edges              uint64
}

// Classify parses pkt, which starts at an IPv4 or IPv6 header, and fills p. It never allocates,
// never writes to pkt and never reads outside it.
func Classify(pkt []byte, p *Packet) {
	// The fast path takes the shapes of nearly every packet: IPv4 without options or IPv6
	// without extension headers, not fragmented, carrying a whole TCP header. Anything else,
	// and every IP-level error, goes to classify, which handles all packets (the fuzz target
	// checks that the two agree).
	var off, end int
	switch {
	case len(pkt) >= IPv4MinimumSize+TCPMinimumSize && pkt[0] == 0x45 && pkt[ipv4Protocol] == ProtocolTCP &&
		binary.BigEndian.Uint16(pkt[ipv4FlagsFrag:])&(ipv4MoreFrags|ipv4FragOffMask) == 0:
		off, end = IPv4MinimumSize, int(binary.BigEndian.Uint16(pkt[ipv4TotalLength:]))
	case len(pkt) >= IPv6FixedHeaderSize+TCPMinimumSize && pkt[0]>>4 == 6 && pkt[ipv6NextHeader] == ProtocolTCP:
		off, end = IPv6FixedHeaderSize, IPv6FixedHeaderSize+IPv6(pkt).PayloadLength()
	}
	if off == 0 || end > len(pkt) || end-off < TCPMinimumSize {
		classify(pkt, p)
		return
	}
	t := TCP(pkt[off:end:end])
	doff := t.DataOffset()
	if doff < TCPMinimumSize || doff > len(t) {
		classify(pkt, p)
		return
	}
	var sackAt, sackBlocks uint8
	var edges uint64
	auth := AuthNone
	// The layouts Linux writes (tcp_options_write) are recognised by a load or two; any other
	// goes through the walk, which accepts these too.
	switch {
	case doff == TCPMinimumSize:
	case doff == TCPMinimumSize+12 && binary.BigEndian.Uint32(t[TCPMinimumSize:]) == tsOnly:
	case doff >= TCPMinimumSize+24 && (doff-TCPMinimumSize-16)%8 == 0 &&
		binary.BigEndian.Uint32(t[TCPMinimumSize:]) == tsOnly &&
		binary.BigEndian.Uint32(t[TCPMinimumSize+12:]) == nopNopSACK|uint32(doff-TCPMinimumSize-14):
		sackAt, sackBlocks = 16, uint8((doff-TCPMinimumSize-16)/8)
	default:
		var r Reason
		if sackAt, sackBlocks, edges, auth, r = walkOptions(t[TCPMinimumSize:doff]); r != ReasonNone {
			p.malformed(r)
			return
		}
	}
	// Field by field rather than *p = Packet{...}: the literal is built in a temporary by
	// narrow stores and copied by wide loads, which stalls store-to-load forwarding and cost
	// a third of the fast path. The addresses are read last so that they need no registers
	// across the option walk.
	p.Kind, p.Reason, p.Flags, p.Auth = KindTCP, ReasonNone, t.Flags(), auth
	p.SrcPort, p.DstPort = t.SourcePort(), t.DestinationPort()
	p.Seq, p.Ack = t.SequenceNumber(), t.AckNumber()
	p.PayloadLen = len(t) - doff
	p.tcp, p.tcpLen, p.icmp = uint32(off), uint32(doff), 0
	p.sackAt, p.sackBlocks, p.edges = sackAt, sackBlocks, edges
	if off == IPv4MinimumSize {
		p.Src, p.Dst = IPv4(pkt).SourceAddress(), IPv4(pkt).DestinationAddress()
	} else {
		p.Src, p.Dst = IPv6(pkt).SourceAddress(), IPv6(pkt).DestinationAddress()
	}
}

// classify is Classify for every packet.
func classify(pkt []byte, p *Packet) {
	*p = Packet{}
	if len(pkt) == 0 {
		p.malformed(ReasonTruncatedIP)
		return
	}
	switch pkt[0] >> 4 {
	case 4:
		classifyIPv4(pkt, p)
	case 6:
		classifyIPv6(pkt, p)
	default:
		p.malformed(ReasonBadIPVersion)
	}
}

// malformed marks p malformed for reason r, every other field zero.
func (p *Packet) malformed(r Reason) {
	*p = Packet{Kind: KindMalformed, Reason: r}
}

// other marks a packet to pass untouched. It clears whatever was filled in on the way, so that
// a KindOther Packet carries no stale offsets.
func (p *Packet) other() { *p = Packet{} }

func classifyIPv4(pkt []byte, p *Packet) {
	end, hl, r := ipv4Bounds(pkt)
	if r != ReasonNone {
		p.malformed(r)
		return
	}
	ip := IPv4(pkt)
	if ip.FragmentOffset() != 0 {
		// A non-first fragment carries no TCP header; its seq lives in the first fragment.
		p.other()
		return
	}
	switch ip.Protocol() {
	case ProtocolTCP:
		if r := p.tcpHeader(pkt, hl, end, ip.MoreFragments()); r != ReasonNone {
			p.malformed(r)
			return
		}
		p.Src, p.Dst = ip.SourceAddress(), ip.DestinationAddress()
	case ProtocolICMP:
		p.icmpError(pkt, hl, end, 4)
	default:
		p.other()
	}
}

// ipv4Bounds checks an IPv4 header at the start of b and returns where the packet ends and
// where its payload starts.
func ipv4Bounds(b []byte) (end, hl int, r Reason) {
	if len(b) < IPv4MinimumSize {
		return 0, 0, ReasonTruncatedIP
	}
	ip := IPv4(b)
	hl, end = ip.HeaderLength(), ip.TotalLength()
	if end == 0 {
		// Linux BIG TCP (a device gso_ipv4_max_size above 64 KiB) sends IPv4 super-packets with
		// a total length of 0: the buffer is the packet.
		end = len(b)
	}
	switch {
	case end > len(b):
		return 0, 0, ReasonTruncatedIP
	case hl < IPv4MinimumSize || hl > end:
		return 0, 0, ReasonBadIPHeader
	}
	return end, hl, ReasonNone
}

func classifyIPv6(pkt []byte, p *Packet) {
	end, r := ipv6Bounds(pkt)
	if r != ReasonNone {
		p.malformed(r)
		return
	}
	ip := IPv6(pkt)
	nh, off, frag, r := walkIPv6(pkt[:end], ip.NextHeader())
	switch {
	case r == errNonFirstFragment:
		p.other()
		return
	case r != ReasonNone:
		p.malformed(r)
		return
	}
	switch nh {
	case ProtocolTCP:
		if r := p.tcpHeader(pkt, off, end, frag); r != ReasonNone {
			p.malformed(r)
			return
		}
		p.Src, p.Dst = ip.SourceAddress(), ip.DestinationAddress()
	case ProtocolICMPv6:
		p.icmpError(pkt, off, end, 6)
	default:
		// Also AH (51): its ICV covers the TCP header, so a shifted packet would fail it; and
		// ESP (50), whose TCP header is encrypted.
		p.other()
	}
}

// ipv6Bounds checks the fixed IPv6 header at the start of b and returns where the packet ends.
func ipv6Bounds(b []byte) (end int, r Reason) {
	if len(b) < IPv6FixedHeaderSize {
		return 0, ReasonTruncatedIP
	}
	pl := IPv6(b).PayloadLength()
	if pl == 0 {
		// A jumbogram (RFC 2675) or a Linux BIG TCP super-packet, which omits the jumbo option:
		// the buffer is the packet.
		return len(b), ReasonNone
	}
	end = IPv6FixedHeaderSize + pl
	if end > len(b) {
		return 0, ReasonTruncatedIP
	}
	return end, ReasonNone
}

// errNonFirstFragment is walkIPv6's signal that the chain reaches a non-first fragment; it is
// not a Reason anyone sees.
const errNonFirstFragment = NumReasons + 1

// walkIPv6 follows the extension-header chain of the IPv6 packet b (its fixed header first,
// b ending where the packet does) and returns the upper-layer protocol, its offset and whether
// the packet is a first fragment. Headers it does not know (AH, ESP, mobility...) end the walk:
// their protocol number is returned as the upper layer, which is then not TCP.
func walkIPv6(b []byte, nh uint8) (uint8, int, bool, Reason) {
	off, frag := IPv6FixedHeaderSize, false
	for {
		switch nh {
		case extHopByHop, extRouting, extDestinationOp:
			// Hop-by-hop options must come first (RFC 8200 section 4.1); Linux drops a packet
			// that has them anywhere else.
			if nh == extHopByHop && off != IPv6FixedHeaderSize {
				return 0, 0, false, ReasonBadExtHeader
			}
			if len(b)-off < IPv6ExtHdrMinimumSize {
				return 0, 0, false, ReasonBadExtHeader
			}
			h := IPv6ExtHdr(b[off:])
			n := h.Length()
			if n > len(b)-off {
				return 0, 0, false, ReasonBadExtHeader
			}
			nh, off = h.NextHeader(), off+n
		case extFragment:
			if len(b)-off < IPv6FragmentSize {
				return 0, 0, false, ReasonBadExtHeader
			}
			h := IPv6Fragment(b[off:])
			if h.FragmentOffset() != 0 {
				return 0, 0, false, errNonFirstFragment
			}
			frag = frag || h.More()
			nh, off = h.NextHeader(), off+IPv6FragmentSize
		default:
			return nh, off, frag, ReasonNone
		}
	}
}

// tcpHeader checks the TCP header at pkt[off:end] and fills p from it.
func (p *Packet) tcpHeader(pkt []byte, off, end int, fragment bool) Reason {
	n := end - off
	if n < TCPMinimumSize {
		if fragment {
			return ReasonTinyFragment
		}
		return ReasonTruncatedTCP
	}
	t := TCP(pkt[off:end])
	doff := t.DataOffset()
	switch {
	case doff < TCPMinimumSize:
		return ReasonBadDataOffset
	case doff > n && fragment:
		return ReasonTinyFragment
	case doff > n:
		return ReasonBadDataOffset
	}
	sackAt, sackBlocks, edges, auth, r := walkOptions(t[TCPMinimumSize:doff])
	if r != ReasonNone {
		return r
	}
	p.Kind = KindTCP
	p.Flags, p.Auth = t.Flags(), auth
	p.SrcPort, p.DstPort = t.SourcePort(), t.DestinationPort()
	p.Seq, p.Ack = t.SequenceNumber(), t.AckNumber()
	p.PayloadLen = n - doff
	p.tcp, p.tcpLen = uint32(off), uint32(doff)
	p.sackAt, p.sackBlocks, p.edges = sackAt, sackBlocks, edges
	return ReasonNone
}

// tsOnly is how Linux, BSD and Windows put the timestamps option first: NOP, NOP, kind 8,
// length 10. Recognising it in one load skips most of the option walk for most segments.
const tsOnly = optNOP<<24 | optNOP<<16 | optTS<<8 | 10

// nopNopSACK is how Linux pads a SACK option: NOP, NOP, kind 5, then the length byte.
const nopNopSACK = optNOP<<24 | optNOP<<16 | optSACK<<8

// sackEdgeBits marks edges every 4 bytes: the layout of the edges of one SACK option.
const sackEdgeBits = 0x11111111

// sackEdges returns the edge bits of a SACK option whose first edge is at byte at.
func sackEdges(at, blocks int) uint64 {
	return sackEdgeBits & (1<<(8*blocks) - 1) << at
}

// walkOptions checks the options area opts and returns where its SACK edges are (see Packet)
// and which signature option it carries. It follows Linux's tcp_parse_options: EOL ends the
// list, NOP is one byte, every other option has a length byte of at least 2 that must not run
// past the area.
func walkOptions(opts []byte) (sackAt, sackBlocks uint8, edges uint64, auth Auth, r Reason) {
	i := 0
	if len(opts) >= 12 && binary.BigEndian.Uint32(opts) == tsOnly {
		i = 12
	}
	// Linux follows with NOP, NOP, SACK up to the end of the header (tcp_options_write).
	if len(opts)-i >= 4 && binary.BigEndian.Uint32(opts[i:])&^0xff == nopNopSACK {
		if n := int(opts[i+3]); n == len(opts)-i-2 && n >= 10 && (n-2)%8 == 0 {
			return uint8(i + 4), uint8((n - 2) / 8), 0, AuthNone, ReasonNone
		}
	}
	for i < len(opts) {
		kind := opts[i]
		switch kind {
		case optEOL:
			return sackAt, sackBlocks, edges, auth, ReasonNone
		case optNOP:
			i++
			continue
		}
		if len(opts)-i < 2 {
			return 0, 0, 0, 0, ReasonBadOption
		}
		n := int(opts[i+1])
		if n < 2 || n > len(opts)-i {
			return 0, 0, 0, 0, ReasonBadOption
		}
		switch kind {
		case optSACK:
			// RFC 2018: each block is a left and a right edge of 4 bytes. Linux ignores a SACK
			// option of any other length, but a receiver that did not would read edges we had
			// not shifted; better to count it and leave the segment alone.
			if n < 10 || (n-2)%8 != 0 {
				return 0, 0, 0, 0, ReasonBadSACK
			}
			switch {
			case sackBlocks == 0 && edges == 0:
				sackAt, sackBlocks = uint8(i+2), uint8((n-2)/8)
			case edges == 0:
				edges, sackAt, sackBlocks = sackEdges(int(sackAt), int(sackBlocks)), 0, 0
				fallthrough
			default:
				edges |= sackEdges(i+2, (n-2)/8)
			}
		case optMD5:
			auth = AuthMD5
		case optAO:
			auth = AuthAO
		}
		i += n
	}
	return sackAt, sackBlocks, edges, auth, ReasonNone
}

// edgeBits returns where the SACK edges are as a bit set, whichever way p records them.
func (p *Packet) edgeBits() uint64 {
	if p.sackBlocks != 0 {
		return sackEdges(int(p.sackAt), int(p.sackBlocks))
	}
	return p.edges
}

// icmpError classifies the ICMP or ICMPv6 message at pkt[off:end] of an IPv4 or IPv6 (version)
// packet: an error quoting a TCP segment of the same IP version is rewritable.
func (p *Packet) icmpError(pkt []byte, off, end int, version uint8) {
	if end-off < ICMPHeaderSize {
		p.malformed(ReasonTruncatedICMP)
		return
	}
	msg := ICMP(pkt[off:end])
	if !isError(msg.Type(), version) {
		p.other()
		return
	}
	q := off + ICMPHeaderSize // the quote, a truncated IP packet, runs to end
	var qEnd, qTCP, proto int
	var r Reason
	switch version {
	case 4:
		qEnd, qTCP, proto, r = quotedIPv4(pkt[q:end])
	default:
		qEnd, qTCP, proto, r = quotedIPv6(pkt[q:end])
	}
	switch {
	case r == errNonFirstFragment:
		p.other()
		return
	case r != ReasonNone:
		p.malformed(r)
		return
	case proto != ProtocolTCP:
		p.other()
		return
	}
	n := qEnd - qTCP // quoted TCP bytes
	if n < tcpQuoteMinimum {
		p.malformed(ReasonBadICMPQuote)
		return
	}
	t := TCP(pkt[q+qTCP : q+qEnd])
	if n > tcpDataOffset && t.DataOffset() < TCPMinimumSize {
		p.malformed(ReasonBadICMPQuote)
		return
	}
	if version == 4 {
		ip := IPv4(pkt[q:])
		p.Src, p.Dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := IPv6(pkt[q:])
		p.Src, p.Dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	p.Kind = KindICMPQuotingTCP
	p.SrcPort, p.DstPort, p.Seq = t.SourcePort(), t.DestinationPort(), t.SequenceNumber()
	if n >= tcpQuoteFlags {
		p.Flags, p.Ack = t.Flags(), t.AckNumber()
	}
	p.tcp, p.tcpLen, p.icmp = uint32(q+qTCP), uint32(min(n, TCPMaximumSize)), uint32(off)
}

// isError reports whether an ICMP type of the given IP version is an error that quotes the
// offending packet and that Linux matches to a TCP socket by the quoted seq.
func isError(typ, version uint8) bool {
	if version == 4 {
		switch typ {
		case icmpv4DestUnreachable, icmpv4Redirect, icmpv4TimeExceeded, icmpv4ParamProblem:
			return true
		}
		return false
	}
	switch typ {
	case icmpv6DestUnreachable, icmpv6PacketTooBig, icmpv6TimeExceeded, icmpv6ParamProblem:
		return true
	}
	return false
}

// quotedIPv4 checks the IPv4 packet quoted in b and returns where its quoted part ends, where
// its upper layer starts and which protocol that is. A router quotes as much as it likes (8 bytes
// past the header per RFC 792, up to 576 bytes in all per RFC 1812), so the quote usually ends
// before the packet it quotes does.
func quotedIPv4(b []byte) (end, l4, proto int, r Reason) {
	if len(b) < IPv4MinimumSize {
		return 0, 0, 0, ReasonBadICMPQuote
	}
	ip := IPv4(b)
	hl, tl := ip.HeaderLength(), ip.TotalLength()
	if ip.Version() != 4 || hl < IPv4MinimumSize || hl > len(b) || (tl != 0 && tl < hl) {
		return 0, 0, 0, ReasonBadICMPQuote
	}
	if ip.FragmentOffset() != 0 {
		return 0, 0, 0, errNonFirstFragment
	}
	end = len(b)
	if tl != 0 && tl < end {
		end = tl // bytes past the quoted packet's own length are not part of it
	}
	return end, hl, int(ip.Protocol()), ReasonNone
}

// quotedIPv6 is quotedIPv4 for an IPv6 packet quoted by ICMPv6 (as much as fits in 1280 bytes,
// RFC 4443 section 2.4): its extension headers are walked within the quote.
func quotedIPv6(b []byte) (end, l4, proto int, r Reason) {
	if len(b) < IPv6FixedHeaderSize || IPv6(b).Version() != 6 {
		return 0, 0, 0, ReasonBadICMPQuote
	}
	end = len(b)
	if pl := IPv6(b).PayloadLength(); pl != 0 && IPv6FixedHeaderSize+pl < end {
		end = IPv6FixedHeaderSize + pl
	}
	nh, off, _, r := walkIPv6(b[:end], IPv6(b).NextHeader())
	switch r {
	case ReasonNone:
	case errNonFirstFragment:
		return 0, 0, 0, r
	default:
		return 0, 0, 0, ReasonBadICMPQuote
	}
	return end, off, int(nh), ReasonNone
}
