package rewrite

import (
	"encoding/binary"
	"net/netip"
)

// The views below follow gVisor's pkg/tcpip/header: a named []byte whose methods read and write
// fields in place. Like gVisor's, an accessor panics if the view is shorter than the field it
// touches; Classify checks the lengths first, and every other caller must do the same.

// Protocol numbers (IANA "Assigned Internet Protocol Numbers") that Classify acts on.
const (
	ProtocolICMP     = 1  // ICMP for IPv4
	ProtocolTCP      = 6  // TCP
	ProtocolICMPv6   = 58 // ICMP for IPv6
	extHopByHop      = 0
	extRouting       = 43
	extFragment      = 44
	extDestinationOp = 60
)

// IPv4 is a view of an IPv4 header (RFC 791), options included.
type IPv4 []byte

// Field offsets and sizes of the IPv4 header.
const (
	IPv4MinimumSize = 20 // header without options
	ipv4TotalLength = 2
	ipv4FlagsFrag   = 6
	ipv4Protocol    = 9
	ipv4SrcAddr     = 12
	ipv4DstAddr     = 16
	ipv4MoreFrags   = 0x2000
	ipv4FragOffMask = 0x1fff
)

// Version returns the IP version nibble (4 for a well-formed IPv4 header).
func (b IPv4) Version() uint8 { return b[0] >> 4 }

// HeaderLength returns the header length in bytes, options included (IHL × 4).
func (b IPv4) HeaderLength() int { return int(b[0]&0x0f) * 4 }

// TotalLength returns the total length field: header plus payload, in bytes.
func (b IPv4) TotalLength() int { return int(binary.BigEndian.Uint16(b[ipv4TotalLength:])) }

// Protocol returns the protocol number of the payload.
func (b IPv4) Protocol() uint8 { return b[ipv4Protocol] }

// FragmentOffset returns the fragment's offset in the original datagram, in bytes.
func (b IPv4) FragmentOffset() int {
	return int(binary.BigEndian.Uint16(b[ipv4FlagsFrag:])&ipv4FragOffMask) * 8
}

// MoreFragments reports the MF flag: more fragments of this datagram follow.
func (b IPv4) MoreFragments() bool {
	return binary.BigEndian.Uint16(b[ipv4FlagsFrag:])&ipv4MoreFrags != 0
}

// SourceAddress returns the source address.
func (b IPv4) SourceAddress() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4SrcAddr:])) }

// DestinationAddress returns the destination address.
func (b IPv4) DestinationAddress() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4DstAddr:])) }

// IPv6 is a view of the fixed IPv6 header (RFC 8200).
type IPv6 []byte

// Field offsets and sizes of the fixed IPv6 header.
const (
	IPv6FixedHeaderSize = 40 // the fixed header; extension headers follow it
	ipv6PayloadLength   = 4
	ipv6NextHeader      = 6
	ipv6SrcAddr         = 8
	ipv6DstAddr         = 24
)

// Version returns the IP version nibble (6 for a well-formed IPv6 header).
func (b IPv6) Version() uint8 { return b[0] >> 4 }

// PayloadLength returns the payload length field: extension headers plus upper layer, in bytes.
func (b IPv6) PayloadLength() int { return int(binary.BigEndian.Uint16(b[ipv6PayloadLength:])) }

// NextHeader returns the type of the header that follows the fixed header.
func (b IPv6) NextHeader() uint8 { return b[ipv6NextHeader] }

// SourceAddress returns the source address.
func (b IPv6) SourceAddress() netip.Addr { return netip.AddrFrom16([16]byte(b[ipv6SrcAddr:])) }

// DestinationAddress returns the destination address (of this hop, if a routing header follows).
func (b IPv6) DestinationAddress() netip.Addr {
	return netip.AddrFrom16([16]byte(b[ipv6DstAddr:]))
}

// IPv6ExtHdr is a view of an IPv6 extension header in the generic TLV layout RFC 8200 section
// 4.8 mandates: hop-by-hop options, routing, destination options.
type IPv6ExtHdr []byte

// IPv6ExtHdrMinimumSize is the smallest extension header: the length field counts 8-octet
// units beyond the first 8 octets.
const IPv6ExtHdrMinimumSize = 8

// NextHeader returns the type of the header that follows this one.
func (b IPv6ExtHdr) NextHeader() uint8 { return b[0] }

// Length returns the length of this header in bytes.
func (b IPv6ExtHdr) Length() int { return (int(b[1]) + 1) * 8 }

// IPv6Fragment is a view of an IPv6 fragment header (RFC 8200 section 4.5).
type IPv6Fragment []byte

// IPv6FragmentSize is the fixed size of the fragment header.
const IPv6FragmentSize = 8

// NextHeader returns the type of the header that follows the fragment header.
func (b IPv6Fragment) NextHeader() uint8 { return b[0] }

// FragmentOffset returns the fragment's offset in the original packet, in bytes.
func (b IPv6Fragment) FragmentOffset() int { return int(binary.BigEndian.Uint16(b[2:]) &^ 7) }

// More reports the M flag: more fragments follow.
func (b IPv6Fragment) More() bool { return b[3]&1 != 0 }

// TCP is a view of a TCP header (RFC 9293), options included.
type TCP []byte

// Field offsets and sizes of the TCP header.
const (
	TCPMinimumSize  = 20 // header without options
	TCPMaximumSize  = 60 // data offset 15
	tcpSrcPort      = 0
	tcpDstPort      = 2
	tcpSeqNum       = 4
	tcpAckNum       = 8
	tcpDataOffset   = 12
	tcpFlags        = 13
	tcpChecksum     = 16
	tcpQuoteMinimum = 8  // ports and seq: what RFC 792 guarantees an ICMP error quotes
	tcpQuoteFlags   = 14 // up to the flags: the quoted ack is known to be valid
	tcpQuoteCsum    = 18 // up to the checksum: the quoted checksum can be kept consistent
)

// TCP flags, as in the flags byte of the header.
const (
	FlagFIN uint8 = 0x01 // no more data from the sender
	FlagSYN uint8 = 0x02 // synchronise sequence numbers
	FlagRST uint8 = 0x04 // reset the connection
	FlagPSH uint8 = 0x08 // push
	FlagACK uint8 = 0x10 // the acknowledgment number is valid
)

// SourcePort returns the source port.
func (b TCP) SourcePort() uint16 { return binary.BigEndian.Uint16(b[tcpSrcPort:]) }

// DestinationPort returns the destination port.
func (b TCP) DestinationPort() uint16 { return binary.BigEndian.Uint16(b[tcpDstPort:]) }

// SequenceNumber returns the sequence number.
func (b TCP) SequenceNumber() uint32 { return binary.BigEndian.Uint32(b[tcpSeqNum:]) }

// SetSequenceNumber writes the sequence number; the checksum is the caller's business.
func (b TCP) SetSequenceNumber(v uint32) { binary.BigEndian.PutUint32(b[tcpSeqNum:], v) }

// AckNumber returns the acknowledgment number (meaningful only with FlagACK).
func (b TCP) AckNumber() uint32 { return binary.BigEndian.Uint32(b[tcpAckNum:]) }

// SetAckNumber writes the acknowledgment number; the checksum is the caller's business.
func (b TCP) SetAckNumber(v uint32) { binary.BigEndian.PutUint32(b[tcpAckNum:], v) }

// DataOffset returns the header length in bytes, options included (data offset × 4).
func (b TCP) DataOffset() int { return int(b[tcpDataOffset]>>4) * 4 }

// Flags returns the flags byte (FlagFIN ... FlagACK, plus URG, ECE, CWR).
func (b TCP) Flags() uint8 { return b[tcpFlags] }

// Checksum returns the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[tcpChecksum:]) }

// SetChecksum writes the checksum field.
func (b TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[tcpChecksum:], v) }

// Options returns the options area: from the end of the fixed header to the data offset.
func (b TCP) Options() []byte { return b[TCPMinimumSize:b.DataOffset()] }

// TCP option kinds (IANA "TCP Option Kind Numbers") that Classify acts on.
const (
	optEOL  = 0  // end of option list
	optNOP  = 1  // padding
	optTS   = 8  // timestamps, length 10
	optSACK = 5  // RFC 2018: 2 + 8n bytes, n left/right edge pairs
	optMD5  = 19 // RFC 2385 TCP-MD5 signature
	optAO   = 29 // RFC 5925 TCP authentication option
)

// ICMP is a view of an ICMP (RFC 792) or ICMPv6 (RFC 4443) message: both start with type,
// code, checksum and four bytes whose meaning depends on the type, and an error message then
// quotes the packet that caused it.
type ICMP []byte

// ICMPHeaderSize is the size of the ICMP and ICMPv6 header in front of an error's quote.
const ICMPHeaderSize = 8

// ICMP error types whose quote Classify looks into. Linux checks the quoted seq of each of them
// against its send window (tcp_v4_err, tcp_v6_err) before acting on it.
const (
	icmpv4DestUnreachable = 3 // includes code 4, fragmentation needed (path MTU discovery)
	icmpv4Redirect        = 5
	icmpv4TimeExceeded    = 11
	icmpv4ParamProblem    = 12
	icmpv6DestUnreachable = 1
	icmpv6PacketTooBig    = 2
	icmpv6TimeExceeded    = 3
	icmpv6ParamProblem    = 4
)

// Type returns the message type.
func (b ICMP) Type() uint8 { return b[0] }

// Code returns the message code.
func (b ICMP) Code() uint8 { return b[1] }

// Checksum returns the checksum field.
func (b ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// SetChecksum writes the checksum field.
func (b ICMP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }

// Quote returns what an error message quotes: the start of the offending packet.
func (b ICMP) Quote() []byte { return b[ICMPHeaderSize:] }
