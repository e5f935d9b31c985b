package capture

import "encoding/binary"

// EtherTypes that lead to IP, and the VLAN tags that may stand before them.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherType8021Q = 0x8100
	etherTypeQinQ  = 0x88a8
	etherTypeQinQ9 = 0x9100 // pre-standard QinQ, still seen on some switches
	ethHeaderSize  = 14
	vlanTagSize    = 4
	sllHeaderSize  = 16
	sll2HeaderSize = 20
)

// IP returns the IP packet the frame carries and how many link-layer bytes precede it; ok is
// false when the frame carries something else (ARP, an unknown link type) or is cut before the
// IP header starts. The packet may itself be cut by the snap length: Frame.OrigLen - linkLen is
// its length on the wire.
func (f *Frame) IP() (pkt []byte, linkLen int, ok bool) {
	d := f.Data
	var proto uint16
	switch f.Link {
	case LinkEthernet:
		off := ethHeaderSize
		if len(d) < off {
			return nil, 0, false
		}
		proto = binary.BigEndian.Uint16(d[12:])
		for proto == etherType8021Q || proto == etherTypeQinQ || proto == etherTypeQinQ9 {
			if len(d) < off+vlanTagSize {
				return nil, 0, false
			}
			proto = binary.BigEndian.Uint16(d[off+2:])
			off += vlanTagSize
		}
		linkLen = off
	case LinkSLL:
		if len(d) < sllHeaderSize {
			return nil, 0, false
		}
		proto, linkLen = binary.BigEndian.Uint16(d[14:]), sllHeaderSize
	case LinkSLL2:
		if len(d) < sll2HeaderSize {
			return nil, 0, false
		}
		proto, linkLen = binary.BigEndian.Uint16(d), sll2HeaderSize
	case LinkRaw, LinkIPv4, LinkIPv6:
		if len(d) == 0 {
			return nil, 0, false
		}
		switch d[0] >> 4 {
		case 4:
			proto = etherTypeIPv4
		case 6:
			proto = etherTypeIPv6
		}
	default:
		return nil, 0, false
	}
	if proto != etherTypeIPv4 && proto != etherTypeIPv6 || len(d) == linkLen {
		return nil, 0, false
	}
	return d[linkLen:], linkLen, true
}
