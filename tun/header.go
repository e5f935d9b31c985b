package tun

import "encoding/binary"

// With Offload every packet read from or written to the device starts with struct
// virtio_net_hdr (include/uapi/linux/virtio_net.h), HeaderLen bytes, in host byte order (legacy
// virtio on a little-endian host; the device never gets TUNSETVNETBE):
//
//	offset 0  flags        u8   NEEDS_CSUM (1): the L4 checksum is not finished; the checksum
//	                            field holds only the pseudo-header sum, and whoever transmits
//	                            the packet completes it over csum_start..end.
//	                            DATA_VALID (2): checksum already verified (not set by TUN reads).
//	offset 1  gso_type     u8   NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), UDP_L4 (5), | ECN (0x80):
//	                            not NONE means a super-packet to be cut into gso_size segments.
//	offset 2  hdr_len      u16  length of the IP+TCP headers copied in front of every segment.
//	offset 4  gso_size     u16  payload bytes per segment (the MSS).
//	offset 6  csum_start   u16  where checksumming starts, from the IP header (= IP header length).
//	offset 8  csum_offset  u16  where the checksum goes, from csum_start (16 for TCP).
//
// What seqshiftd relies on: the kernel builds the header from the skb it hands over and rebuilds
// an identical skb from it on write. Rewriting seq/ack changes no length and no offset, so the
// header is passed back untouched. Under NEEDS_CSUM the TCP checksum field covers only the
// pseudo-header (addresses, protocol, length), none of which change, so the rewriter must leave
// it alone (PartialChecksum tells it so); the kernel or the NIC that finally transmits computes
// the full checksum over the rewritten header. GSO segmentation after the write derives each
// segment's sequence number from the (rewritten) first one.
const (
	hdrFlagNeedsCsum = 0x01 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	hdrFlagDataValid = 0x02 // VIRTIO_NET_HDR_F_DATA_VALID

	gsoNone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP
	gsoTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	gsoUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4
	gsoECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

// PartialChecksum reports whether the virtio_net_hdr at buf[:HeaderLen] has NEEDS_CSUM set:
// the packet's TCP checksum is a partial (pseudo-header) sum the kernel will finish, so it must
// not be adjusted. False for a buffer shorter than the header.
func PartialChecksum(buf []byte) bool {
	return len(buf) >= HeaderLen && buf[0]&hdrFlagNeedsCsum != 0
}

// vnetHdr is a view of a virtio_net_hdr at the front of a packet buffer; len >= HeaderLen.
// The datapath never needs it: it documents the layout and serves tests and debugging.
type vnetHdr []byte

func (h vnetHdr) flags() uint8       { return h[0] }
func (h vnetHdr) gsoType() uint8     { return h[1] }
func (h vnetHdr) hdrLen() uint16     { return binary.NativeEndian.Uint16(h[2:]) }
func (h vnetHdr) gsoSize() uint16    { return binary.NativeEndian.Uint16(h[4:]) }
func (h vnetHdr) csumStart() uint16  { return binary.NativeEndian.Uint16(h[6:]) }
func (h vnetHdr) csumOffset() uint16 { return binary.NativeEndian.Uint16(h[8:]) }
func (h vnetHdr) needsCsum() bool    { return h[0]&hdrFlagNeedsCsum != 0 }
func (h vnetHdr) gso() bool          { return h[1]&^gsoECN != gsoNone }
