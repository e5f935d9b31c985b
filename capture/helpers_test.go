package capture

import (
	"bytes"
	"encoding/binary"
	"time"
)

// The builders below write capture files byte by byte from the format documents
// (pcap-savefile(5), draft-ietf-opsawg-pcapng), for layouts gopacket's writers do not produce:
// big-endian files, nanosecond pcap, pcapng with several sections, power-of-two timestamp
// resolutions and simple packet blocks.

// byteOrder is what the builders need of binary.LittleEndian and binary.BigEndian.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

type testFrame struct {
	t     time.Time
	data  []byte
	orig  int
	iface int
}

func pcapFile(order byteOrder, nano bool, link LinkType, snap int, frames []testFrame) []byte {
	var b bytes.Buffer
	magic := uint32(pcapMagicMicro)
	if nano {
		magic = pcapMagicNano
	}
	put32 := func(v uint32) { b.Write(order.AppendUint32(nil, v)) }
	put32(magic)
	b.Write(order.AppendUint16(nil, 2))
	b.Write(order.AppendUint16(nil, 4))
	put32(0)
	put32(0)
	put32(uint32(snap))
	put32(uint32(link))
	for _, f := range frames {
		put32(uint32(f.t.Unix()))
		if nano {
			put32(uint32(f.t.Nanosecond()))
		} else {
			put32(uint32(f.t.Nanosecond() / 1000))
		}
		put32(uint32(len(f.data)))
		put32(uint32(f.orig))
		b.Write(f.data)
	}
	return b.Bytes()
}

// ngIface is an interface description for pcapngFile: tsresol is the raw if_tsresol byte
// (0: the option is left out, microseconds).
type ngIface struct {
	link    LinkType
	snap    int
	tsresol byte
}

// ngBlock returns a pcapng block of type typ with body (padded to 4 bytes).
func ngBlock(order byteOrder, typ uint32, body []byte) []byte {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(12 + len(body))
	b := order.AppendUint32(nil, typ)
	b = order.AppendUint32(b, n)
	b = append(b, body...)
	return order.AppendUint32(b, n)
}

func ngSection(order byteOrder) []byte {
	body := order.AppendUint32(nil, ngByteOrderMagic)
	body = order.AppendUint16(body, 1)
	body = order.AppendUint16(body, 0)
	body = order.AppendUint64(body, ^uint64(0)) // section length unknown
	return ngBlock(order, ngSHB, body)
}

func ngInterfaceBlock(order byteOrder, i ngIface) []byte {
	body := order.AppendUint16(nil, uint16(i.link))
	body = order.AppendUint16(body, 0)
	body = order.AppendUint32(body, uint32(i.snap))
	// An option Reader ignores first (if_name), then if_tsresol, then the end of options.
	body = order.AppendUint16(body, 2)
	body = order.AppendUint16(body, 3)
	body = append(body, 'e', 't', 'h', 0)
	if i.tsresol != 0 {
		body = order.AppendUint16(body, ngOptTSResol)
		body = order.AppendUint16(body, 1)
		body = append(body, i.tsresol, 0, 0, 0)
	}
	body = order.AppendUint32(body, 0)
	return ngBlock(order, ngIDB, body)
}

// unitsOf returns the timestamp units per second of an if_tsresol byte.
func unitsOf(tsresol byte) uint64 {
	switch {
	case tsresol == 0:
		return 1e6
	case tsresol&0x80 != 0:
		return 1 << (tsresol & 0x7f)
	}
	return pow10(uint(tsresol))
}

func epbBlock(order byteOrder, ifc ngIface, idx int, f testFrame) []byte {
	u := unitsOf(ifc.tsresol)
	ts := uint64(f.t.Unix())*u + uint64(f.t.Nanosecond())*u/1e9
	body := order.AppendUint32(nil, uint32(idx))
	body = order.AppendUint32(body, uint32(ts>>32))
	body = order.AppendUint32(body, uint32(ts))
	body = order.AppendUint32(body, uint32(len(f.data)))
	body = order.AppendUint32(body, uint32(f.orig))
	body = append(body, f.data...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	body = order.AppendUint32(body, 0) // opt_endofopt
	return ngBlock(order, ngEPB, body)
}

func spbBlock(order byteOrder, f testFrame) []byte {
	return ngBlock(order, ngSPB, append(order.AppendUint32(nil, uint32(f.orig)), f.data...))
}
