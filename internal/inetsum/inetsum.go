// Package inetsum computes Internet checksums the plain way, for tests: the full RFC 1071 sum
// of a buffer and the TCP/UDP/ICMPv6 pseudo-header sum, with no incremental arithmetic. It is
// the oracle the packages that update checksums incrementally (rewrite, the kernel programs)
// and the integration tests check against, written once so that they all check against the
// same thing. It must never share code with the checksum code it checks.
package inetsum

import "net/netip"

// Sum is the RFC 1071 one's complement sum of b added to initial, folded to 16 bits (not
// complemented: a packet whose checksum is right sums to 0xffff).
func Sum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for len(b) >= 2 {
		s += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// Pseudo is the sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293, RFC 8200 section 8.1) of a
// segment of length bytes, unfolded.
func Pseudo(src, dst netip.Addr, proto uint8, length int) uint32 {
	var s uint32
	for _, a := range []netip.Addr{src, dst} {
		b := a.AsSlice()
		for i := 0; i < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	return s + uint32(proto) + uint32(length)>>16 + uint32(length)&0xffff
}
