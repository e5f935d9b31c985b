package verify

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Full checksums, computed from scratch over every byte (RFC 1071): verify must share no
// arithmetic with the incremental updates of the rewrite package it judges.

// sum adds b to the one's complement accumulator acc as big-endian 16-bit words, eight bytes at
// a time with end-around carry (RFC 1071 section 2(C): the sum can be taken over wider words
// and folded at the end).
func sum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, c, 0)
	acc += c
	var tail uint64
	for i, v := range b {
		// The last bytes stand at the top of a 64-bit word; an odd final byte is padded with a
		// zero to make a 16-bit word.
		tail |= uint64(v) << (56 - 8*i)
	}
	acc, c = bits.Add64(acc, tail, 0)
	return acc + c
}

// fold reduces a 64-bit one's complement sum to 16 bits.
func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudo returns the sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293 section 3.1, RFC 8200
// section 8.1).
func pseudo(src, dst netip.Addr, proto uint8, length int) uint64 {
	var acc uint64
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	} else {
		s, d := src.As16(), dst.As16()
		acc = sum(s[:], acc)
		acc = sum(d[:], acc)
	}
	return acc + uint64(proto) + uint64(length)
}

// csum is what verify could say about a checksum.
type csum uint8

const (
	csumOK        csum = iota // verifies
	csumPartial               // holds only the pseudo-header sum: captured on the sending host before the NIC filled it in
	csumUnchecked             // the snap length cut the bytes it covers
	csumBadTCP                // wrong TCP (or, for an ICMP error, ICMP) checksum
	csumBadIP                 // wrong IPv4 header checksum
)

var csumNames = [...]string{"ok", "partial", "unchecked", "bad", "bad_ipv4_header"}

func (c csum) String() string { return csumNames[c] }

func (c csum) bad() bool { return c >= csumBadTCP }

// checkL4 judges the checksum of the transport message m (TCP, or ICMPv6 with proto 58) whose
// checksum field is at field. ICMPv4 has no pseudo-header: pass proto 0.
func checkL4(src, dst netip.Addr, proto uint8, m []byte, field int) csum {
	var acc uint64
	if proto != 0 {
		acc = pseudo(src, dst, proto, len(m))
	}
	if fold(sum(m, acc)) == 0xffff {
		return csumOK
	}
	// Linux's CHECKSUM_PARTIAL leaves the folded pseudo-header sum in the field (tcp_v4_send_check,
	// __tcp_v6_send_check) for the NIC to finish; a capture on the sending host sees that.
	if proto != 0 && binary.BigEndian.Uint16(m[field:]) == fold(acc) {
		return csumPartial
	}
	return csumBadTCP
}

// checkIPv4Header reports whether the IPv4 header h verifies.
func checkIPv4Header(h []byte) bool { return fold(sum(h, 0)) == 0xffff }
