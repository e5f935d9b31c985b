package flowtable

import (
	"encoding/binary"
	"net/netip"
)

// Key identifies a connection whatever the direction of the segment it was built from: a
// small comparable value (40 bytes, no pointers, no padding) made from the two endpoints'
// netip values, the lower endpoint first, usable as a map key. Zones are not part of it:
// addresses parsed from packets carry none. An IPv4 address and its IPv4-mapped IPv6 form are
// different endpoints, as they are on the wire.
type Key struct {
	a0, a1 uint64 // lower endpoint's address: big-endian halves of its 16-byte form
	b0, b1 uint64 // higher endpoint's address
	pf     uint64 // lower port << 48 | higher port << 32 | famA4 | famB4
}

const (
	famA4 = 1 << 0 // the lower endpoint is IPv4
	famB4 = 1 << 1 // the higher endpoint is IPv4
)

// endpoint is one side of a connection in key form.
type endpoint struct {
	hi, lo uint64
	port   uint16
	v4     bool
}

func endpointOf(ap netip.AddrPort) endpoint {
	hi, lo, v4 := addrWords(ap.Addr())
	return endpoint{hi: hi, lo: lo, port: ap.Port(), v4: v4}
}

// addrWords returns an address's 16-byte form as two big-endian words, and whether it is IPv4.
func addrWords(a netip.Addr) (hi, lo uint64, v4 bool) {
	if a.Is4() {
		b := a.As4()
		return 0, 0xffff<<32 | uint64(binary.BigEndian.Uint32(b[:])), true
	}
	hi, lo = halves(a)
	return hi, lo, false
}

// portVer is an endpoint's port and family as hashEndpoint takes them.
func portVer(port uint16, v4 bool) uint64 { return uint64(port) | b2u(v4)<<16 }

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// halves returns an address's 16 bytes as two big-endian words. It reads the array from As16
// a byte at a time: copying it whole makes the compiler reload it with a 16-byte load right
// after two 8-byte stores, which stalls store-to-load forwarding for longer than the loop.
func halves(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

// portFam packs two endpoints' ports and families as Key.pf does with a lower, b higher.
func portFam(a, b endpoint) uint64 {
	return uint64(a.port)<<48 | uint64(b.port)<<32 | b2u(a.v4)*famA4 | b2u(b.v4)*famB4
}

// less orders endpoints by address, family (IPv4 before an IPv4-mapped IPv6 address), port.
func (e endpoint) less(o endpoint) bool {
	switch {
	case e.hi != o.hi:
		return e.hi < o.hi
	case e.lo != o.lo:
		return e.lo < o.lo
	case e.v4 != o.v4:
		return e.v4
	}
	return e.port < o.port
}

func (e endpoint) addrPort() netip.AddrPort {
	if e.v4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(e.lo >> 24), byte(e.lo >> 16), byte(e.lo >> 8), byte(e.lo)}), e.port)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], e.hi)
	binary.BigEndian.PutUint64(b[8:], e.lo)
	return netip.AddrPortFrom(netip.AddrFrom16(b), e.port)
}

// MakeKey returns the key of the connection a segment from src to dst belongs to. reversed is
// true when src is the key's higher endpoint, so that (src, dst) and (dst, src) give the same
// key with opposite reversed values. It does not allocate.
func MakeKey(src, dst netip.AddrPort) (k Key, reversed bool) {
	s, d := endpointOf(src), endpointOf(dst)
	if reversed = d.less(s); reversed {
		s, d = d, s
	}
	return Key{a0: s.hi, a1: s.lo, b0: d.hi, b1: d.lo, pf: portFam(s, d)}, reversed
}

// probe is a segment's tuple as Lookup compares it against stored keys in both orientations
// at once, which spares the hot path the ordering of MakeKey and its unpredictable branch.
type probe struct {
	s0, s1, d0, d1 uint64 // source and destination addresses
	sd, ds         uint64 // Key.pf with the source lower, and with the destination lower
}

// fill sets p from a segment's tuple and returns the two endpoints' port-and-family words for
// hashing. It works on the words directly: a version built on endpoint values spends more on
// copying them through the stack than on the lookup itself.
func (p *probe) fill(src, dst netip.AddrPort) (spv, dpv uint64) {
	var s4, d4 bool
	p.s0, p.s1, s4 = addrWords(src.Addr())
	p.d0, p.d1, d4 = addrWords(dst.Addr())
	sp, dp := uint64(src.Port()), uint64(dst.Port())
	p.sd = sp<<48 | dp<<32 | b2u(s4)*famA4 | b2u(d4)*famB4
	p.ds = dp<<48 | sp<<32 | b2u(d4)*famA4 | b2u(s4)*famB4
	return sp | b2u(s4)<<16, dp | b2u(d4)<<16
}

// match reports whether k is the probed connection and whether the probe's source is k's
// higher endpoint (as MakeKey's reversed: false for a self-connect).
func (k *Key) match(p *probe) (hit, reversed bool) {
	fwd := (k.a0 ^ p.s0) | (k.a1 ^ p.s1) | (k.b0 ^ p.d0) | (k.b1 ^ p.d1) | (k.pf ^ p.sd)
	rev := (k.a0 ^ p.d0) | (k.a1 ^ p.d1) | (k.b0 ^ p.s0) | (k.b1 ^ p.s1) | (k.pf ^ p.ds)
	return fwd == 0 || rev == 0, fwd != 0
}

// equal is k == *o without the call to memequal the compiler emits for a 40-byte struct.
func (k *Key) equal(o *Key) bool {
	return (k.a0^o.a0)|(k.a1^o.a1)|(k.b0^o.b0)|(k.b1^o.b1)|(k.pf^o.pf) == 0
}

func (k *Key) lower() endpoint {
	return endpoint{hi: k.a0, lo: k.a1, port: uint16(k.pf >> 48), v4: k.pf&famA4 != 0}
}

func (k *Key) higher() endpoint {
	return endpoint{hi: k.b0, lo: k.b1, port: uint16(k.pf >> 32), v4: k.pf&famB4 != 0}
}

// Endpoints returns the key's two endpoints, the lower one first.
func (k Key) Endpoints() (lower, higher netip.AddrPort) {
	return k.lower().addrPort(), k.higher().addrPort()
}

// String returns "LOWER<->HIGHER", e.g. "198.18.0.1:443<->198.18.0.2:50000".
func (k Key) String() string {
	a, b := k.Endpoints()
	return a.String() + "<->" + b.String()
}
