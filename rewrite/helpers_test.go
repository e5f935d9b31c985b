package rewrite

import (
	"encoding/binary"
	"net/netip"

	"github.com/seqshiftd/seqshiftd/internal/inetsum"
)

// Test packets are built here byte by byte, with checksums computed in full (RFC 1071), never
// incrementally: the code under test and the code checking it share no arithmetic.

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	server4 = netip.MustParseAddr("198.19.0.2")
	client6 = netip.MustParseAddr("2001:2::2")
	server6 = netip.MustParseAddr("2001:2:0:1::2")
	router4 = netip.MustParseAddr("198.19.255.1")
	router6 = netip.MustParseAddr("2001:2:0:ff::1")
)

// ext is one IPv6 extension header: its type and its bytes after next-header and length (for
// a fragment header, the 6 bytes after next-header and reserved).
type ext struct {
	typ  uint8
	body []byte
}

// seg describes a TCP segment to build.
type seg struct {
	v6               bool
	src, dst         netip.Addr // zero: client to server
	sport, dport     uint16
	seq, ack         uint32
	flags            uint8
	opts             []byte // raw TCP options, padded with EOL to a multiple of 4
	payload          []byte
	ipOpts           []byte // raw IPv4 options, padded with EOL to a multiple of 4
	exts             []ext  // IPv6 extension headers, in order
	moreFrags        bool   // IPv4: set MF (a first fragment)
	fragOff          int    // IPv4: fragment offset in bytes
	proto            uint8  // zero: TCP
	doffOverride     int    // non-zero: data offset field in 4-byte words, whatever the options
	badChecksum      bool   // leave the TCP checksum wrong
	checksumOverride *uint16
}

func pad4(b []byte) []byte {
	out := append([]byte(nil), b...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// build returns the packet and the offset of its TCP header.
func (s seg) build() ([]byte, int) {
	if !s.src.IsValid() {
		s.src, s.dst = client4, server4
		if s.v6 {
			s.src, s.dst = client6, server6
		}
	}
	if s.sport == 0 {
		s.sport, s.dport = 40000, 443
	}
	proto := s.proto
	if proto == 0 {
		proto = ProtocolTCP
	}
	opts := pad4(s.opts)
	tcp := make([]byte, 20+len(opts)+len(s.payload))
	binary.BigEndian.PutUint16(tcp[0:], s.sport)
	binary.BigEndian.PutUint16(tcp[2:], s.dport)
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	doff := (20 + len(opts)) / 4
	if s.doffOverride != 0 {
		doff = s.doffOverride
	}
	tcp[12] = byte(doff << 4)
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], opts)
	copy(tcp[20+len(opts):], s.payload)

	var pkt []byte
	var l4 int
	if s.v6 {
		var chain []byte
		nh := proto
		for i := len(s.exts) - 1; i >= 0; i-- {
			e := s.exts[i]
			var h []byte
			if e.typ == extFragment {
				h = append([]byte{nh, 0}, e.body...)
			} else {
				h = append([]byte{nh, byte((2+len(e.body))/8 - 1)}, e.body...)
			}
			chain = append(h, chain...)
			nh = e.typ
		}
		pkt = make([]byte, 40+len(chain)+len(tcp))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(chain)+len(tcp)))
		pkt[6], pkt[7] = nh, 64
		a, b := s.src.As16(), s.dst.As16()
		copy(pkt[8:], a[:])
		copy(pkt[24:], b[:])
		copy(pkt[40:], chain)
		l4 = 40 + len(chain)
	} else {
		ipOpts := pad4(s.ipOpts)
		hl := 20 + len(ipOpts)
		pkt = make([]byte, hl+len(tcp))
		pkt[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		ff := uint16(s.fragOff / 8)
		if s.moreFrags {
			ff |= 0x2000
		}
		binary.BigEndian.PutUint16(pkt[6:], ff)
		pkt[8], pkt[9] = 64, proto
		a, b := s.src.As4(), s.dst.As4()
		copy(pkt[12:], a[:])
		copy(pkt[16:], b[:])
		copy(pkt[20:], ipOpts)
		binary.BigEndian.PutUint16(pkt[10:], ^inetsum.Sum(pkt[:hl], 0))
		l4 = hl
	}
	copy(pkt[l4:], tcp)
	cs := ^inetsum.Sum(pkt[l4:], inetsum.Pseudo(s.src, s.dst, proto, len(tcp)))
	if s.badChecksum {
		cs ^= 0x5a5a
	}
	if s.checksumOverride != nil {
		cs = *s.checksumOverride
	}
	binary.BigEndian.PutUint16(pkt[l4+16:], cs)
	return pkt, l4
}

func (s seg) pkt() []byte {
	b, _ := s.build()
	return b
}

// sumValid reports whether a region including its checksum field sums to zero (0xffff).
func sumValid(b []byte, pseudo uint32) bool { return inetsum.Sum(b, pseudo) == 0xffff }

// icmpErr builds an ICMP (v4) or ICMPv6 error from the router to dst quoting quote, with the
// given type, code and the four bytes after the checksum (e.g. the next-hop MTU).
func icmpErr(v6 bool, typ, code uint8, rest uint32, dst netip.Addr, quote []byte) ([]byte, int) {
	msg := make([]byte, 8+len(quote))
	msg[0], msg[1] = typ, code
	binary.BigEndian.PutUint32(msg[4:], rest)
	copy(msg[8:], quote)
	var pkt []byte
	var off int
	if v6 {
		pkt = make([]byte, 40+len(msg))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(msg)))
		pkt[6], pkt[7] = ProtocolICMPv6, 64
		a, b := router6.As16(), dst.As16()
		copy(pkt[8:], a[:])
		copy(pkt[24:], b[:])
		off = 40
		copy(pkt[off:], msg)
		binary.BigEndian.PutUint16(pkt[off+2:], ^inetsum.Sum(pkt[off:], inetsum.Pseudo(router6, dst, ProtocolICMPv6, len(msg))))
	} else {
		pkt = make([]byte, 20+len(msg))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		pkt[8], pkt[9] = 64, ProtocolICMP
		a, b := router4.As4(), dst.As4()
		copy(pkt[12:], a[:])
		copy(pkt[16:], b[:])
		binary.BigEndian.PutUint16(pkt[10:], ^inetsum.Sum(pkt[:20], 0))
		off = 20
		copy(pkt[off:], msg)
		binary.BigEndian.PutUint16(pkt[off+2:], ^inetsum.Sum(pkt[off:], 0))
	}
	return pkt, off
}

// Option builders.
func optTimestamps(val, ecr uint32) []byte {
	b := []byte{optNOP, optNOP, optTS, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], val)
	binary.BigEndian.PutUint32(b[8:], ecr)
	return b
}

func optSACKBlocks(edges ...uint32) []byte {
	b := []byte{optSACK, byte(2 + 4*len(edges))}
	for _, e := range edges {
		b = binary.BigEndian.AppendUint32(b, e)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// checkTCP verifies the TCP checksum of a built, unfragmented segment.
func checkTCP(pkt []byte, l4 int, s seg) bool {
	src, dst := s.src, s.dst
	if !src.IsValid() {
		src, dst = client4, server4
		if s.v6 {
			src, dst = client6, server6
		}
	}
	return sumValid(pkt[l4:], inetsum.Pseudo(src, dst, ProtocolTCP, len(pkt)-l4))
}

// checkICMP verifies the ICMP checksum of a packet built by icmpErr.
func checkICMP(pkt []byte, off int, v6 bool, dst netip.Addr) bool {
	if v6 {
		return sumValid(pkt[off:], inetsum.Pseudo(router6, dst, ProtocolICMPv6, len(pkt)-off))
	}
	return sumValid(pkt[off:], 0)
}
