package rewrite

import "net/netip"

// Endpoints returns the source and destination of a TCP packet that Classify found malformed,
// when its IP header is intact and the first four bytes of its TCP header (the ports) are
// there: enough for the datapath to tell whether the packet belongs to a shifted flow, whose
// raw sequence numbers must never be forwarded. It never allocates, never writes to pkt and
// never reads outside it.
func Endpoints(pkt []byte) (src, dst netip.AddrPort, ok bool) {
	if len(pkt) == 0 {
		return src, dst, false
	}
	var off, end int
	var s, d netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		e, hl, r := ipv4Bounds(pkt)
		ip := IPv4(pkt)
		if r != ReasonNone || ip.Protocol() != ProtocolTCP || ip.FragmentOffset() != 0 {
			return src, dst, false
		}
		off, end, s, d = hl, e, ip.SourceAddress(), ip.DestinationAddress()
	case 6:
		e, r := ipv6Bounds(pkt)
		if r != ReasonNone {
			return src, dst, false
		}
		ip := IPv6(pkt)
		nh, o, _, r := walkIPv6(pkt[:e], ip.NextHeader())
		if r != ReasonNone || nh != ProtocolTCP {
			return src, dst, false
		}
		off, end, s, d = o, e, ip.SourceAddress(), ip.DestinationAddress()
	default:
		return src, dst, false
	}
	if end-off < 4 {
		return src, dst, false
	}
	t := TCP(pkt[off:end])
	return netip.AddrPortFrom(s, t.SourcePort()), netip.AddrPortFrom(d, t.DestinationPort()), true
}
