package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"
)

// MaxRecord is the largest record Reader accepts: a Linux BIG TCP super-packet is at most
// 512 KiB, and a bound keeps a corrupt length field from allocating gigabytes.
const MaxRecord = 1 << 20

// LinkType is a LINKTYPE_ value (tcpdump.org/linktypes.html): what a frame starts with.
type LinkType uint16

// Link types IP can be found in.
const (
	LinkEthernet LinkType = 1   // Ethernet II, possibly 802.1Q/802.1ad tagged
	LinkRaw      LinkType = 101 // raw IPv4 or IPv6, told apart by the version nibble
	LinkSLL      LinkType = 113 // Linux cooked capture v1 (tcpdump -i any before libpcap 1.10)
	LinkIPv4     LinkType = 228 // raw IPv4
	LinkIPv6     LinkType = 229 // raw IPv6
	LinkSLL2     LinkType = 276 // Linux cooked capture v2 (tcpdump -i any since libpcap 1.10)
)

// Format is the file format a Reader found.
type Format uint8

// File formats.
const (
	FormatPcap Format = iota + 1
	FormatPcapNG
)

func (f Format) String() string {
	switch f {
	case FormatPcap:
		return "pcap"
	case FormatPcapNG:
		return "pcapng"
	}
	return "unknown"
}

// Frame is one captured packet. Data is a view of the Reader's buffer: it is valid until the
// next call to Next, and must be copied to be kept.
type Frame struct {
	Number    int       // 1-based position among the file's packets, as Wireshark numbers them
	Time      time.Time // capture time
	Link      LinkType  // what Data starts with
	Interface int       // pcapng interface index (0 for pcap)
	OrigLen   int       // length on the wire; more than len(Data) when the snap length cut it
	Data      []byte    // the captured bytes
}

// Truncated reports whether the snap length cut the frame.
func (f *Frame) Truncated() bool { return f.OrigLen > len(f.Data) }

// Magic numbers of the file formats. pcap's is written in the writer's byte order; pcapng's
// section header block type reads the same in both, and its byte-order magic tells the order.
const (
	pcapMagicMicro   = 0xa1b2c3d4
	pcapMagicNano    = 0xa1b23c4d
	pcapHeaderSize   = 24
	pcapRecordHeader = 16
	ngSHB            = 0x0a0d0d0a
	ngIDB            = 0x00000001
	ngOPB            = 0x00000002 // obsolete packet block, still written by old tools
	ngSPB            = 0x00000003
	ngEPB            = 0x00000006
	ngByteOrderMagic = 0x1a2b3c4d
	ngOptTSResol     = 9
	ngOptTSOffset    = 14
)

// ngInterface is what an interface description block says about the frames of one interface.
type ngInterface struct {
	link     LinkType
	snap     int
	unitsSec uint64 // timestamp units per second (if_tsresol)
	offset   int64  // seconds added to every timestamp (if_tsoffset)
}

// Reader reads frames from a pcap or pcapng stream.
type Reader struct {
	src    io.Reader
	buf    []byte
	r, w   int   // unread bytes are buf[r:w]
	off    int64 // file offset of buf[r]
	eof    bool
	format Format
	order  binary.ByteOrder
	frames int

	// pcap
	link     LinkType
	unitsSec uint64

	// pcapng: the interfaces of the current section
	ifaces []ngInterface
}

// NewReader reads the file header from src and returns a Reader of its frames.
func NewReader(src io.Reader) (*Reader, error) {
	r := &Reader{src: src, buf: make([]byte, 1<<20)}
	if err := r.ensure(4); err != nil {
		return nil, fmt.Errorf("read file header: %w", noEOF(err))
	}
	le, be := binary.LittleEndian.Uint32(r.buf[r.r:]), binary.BigEndian.Uint32(r.buf[r.r:])
	switch {
	case le == ngSHB:
		r.format = FormatPcapNG
		if err := r.sectionHeader(); err != nil {
			return nil, err
		}
		return r, nil
	case le == pcapMagicMicro || le == pcapMagicNano:
		r.order = binary.LittleEndian
	case be == pcapMagicMicro || be == pcapMagicNano:
		r.order = binary.BigEndian
	default:
		return nil, fmt.Errorf("not a pcap or pcapng file (starts with %08x)", be)
	}
	r.format = FormatPcap
	if err := r.ensure(pcapHeaderSize); err != nil {
		return nil, fmt.Errorf("read pcap header: %w", noEOF(err))
	}
	h := r.buf[r.r : r.r+pcapHeaderSize]
	r.unitsSec = 1e6
	if r.order.Uint32(h) == pcapMagicNano {
		r.unitsSec = 1e9
	}
	// The upper bits of the link-type field carry FCS information (pcap-savefile(5)); the
	// link type itself is the low 16 bits.
	r.link = LinkType(r.order.Uint32(h[20:]))
	r.consume(pcapHeaderSize)
	return r, nil
}

// Format returns the file format.
func (r *Reader) Format() Format { return r.format }

// Next reads the next frame into f. It returns io.EOF after the last frame.
func (r *Reader) Next(f *Frame) error {
	if r.format == FormatPcap {
		return r.nextPcap(f)
	}
	return r.nextNG(f)
}

func (r *Reader) nextPcap(f *Frame) error {
	if err := r.ensure(pcapRecordHeader); err != nil {
		return r.atRecord(err)
	}
	h := r.buf[r.r : r.r+pcapRecordHeader]
	sec, frac := r.order.Uint32(h), r.order.Uint32(h[4:])
	caplen, orig := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if caplen > MaxRecord {
		return fmt.Errorf("offset %d: record of %d bytes (more than %d)", r.off, caplen, MaxRecord)
	}
	n := pcapRecordHeader + int(caplen)
	if err := r.ensure(n); err != nil {
		return fmt.Errorf("offset %d: record of %d bytes: %w", r.off, caplen, noEOF(err))
	}
	r.frames++
	*f = Frame{
		Number:  r.frames,
		Time:    time.Unix(int64(sec), int64(uint64(frac)*1e9/r.unitsSec)),
		Link:    r.link,
		OrigLen: max(int(orig), int(caplen)),
		Data:    r.buf[r.r+pcapRecordHeader : r.r+n : r.r+n],
	}
	r.consume(n)
	return nil
}

func (r *Reader) nextNG(f *Frame) error {
	for {
		if err := r.ensure(8); err != nil {
			return r.atRecord(err)
		}
		typ := r.order.Uint32(r.buf[r.r:])
		if typ == ngSHB {
			// A new section may switch the byte order and starts with no interfaces.
			if err := r.sectionHeader(); err != nil {
				return err
			}
			continue
		}
		n := int(r.order.Uint32(r.buf[r.r+4:]))
		if n < 12 || n%4 != 0 || n > MaxRecord+64 {
			return fmt.Errorf("offset %d: block type %#x of length %d", r.off, typ, n)
		}
		if err := r.ensure(n); err != nil {
			return fmt.Errorf("offset %d: block of %d bytes: %w", r.off, n, noEOF(err))
		}
		body := r.buf[r.r+8 : r.r+n-4 : r.r+n-4]
		var ok bool
		var err error
		switch typ {
		case ngIDB:
			err = r.interfaceDescription(body)
		case ngEPB, ngOPB, ngSPB:
			ok, err = r.packetBlock(typ, body, f)
		}
		if err != nil {
			return fmt.Errorf("offset %d: %w", r.off, err)
		}
		r.consume(n)
		if ok {
			return nil
		}
	}
}

// sectionHeader reads the section header block at the read position.
func (r *Reader) sectionHeader() error {
	if err := r.ensure(12); err != nil {
		return fmt.Errorf("offset %d: section header: %w", r.off, noEOF(err))
	}
	switch binary.LittleEndian.Uint32(r.buf[r.r+8:]) {
	case ngByteOrderMagic:
		r.order = binary.LittleEndian
	case bits.ReverseBytes32(ngByteOrderMagic):
		r.order = binary.BigEndian
	default:
		return fmt.Errorf("offset %d: section header without the byte-order magic", r.off)
	}
	n := int(r.order.Uint32(r.buf[r.r+4:]))
	if n < 28 || n%4 != 0 || n > MaxRecord {
		return fmt.Errorf("offset %d: section header of length %d", r.off, n)
	}
	if err := r.ensure(n); err != nil {
		return fmt.Errorf("offset %d: section header: %w", r.off, noEOF(err))
	}
	if major := r.order.Uint16(r.buf[r.r+12:]); major != 1 {
		return fmt.Errorf("offset %d: pcapng major version %d (only 1 is defined)", r.off, major)
	}
	r.ifaces = r.ifaces[:0]
	r.consume(n)
	return nil
}

// interfaceDescription reads an interface description block's body.
func (r *Reader) interfaceDescription(b []byte) error {
	if len(b) < 8 {
		return errors.New("interface description block too short")
	}
	if len(r.ifaces) >= 1<<16 {
		return errors.New("more than 65536 interfaces in one section")
	}
	ifc := ngInterface{link: LinkType(r.order.Uint16(b)), snap: int(r.order.Uint32(b[4:])), unitsSec: 1e6}
	for opts := b[8:]; len(opts) >= 4; {
		code, l := r.order.Uint16(opts), int(r.order.Uint16(opts[2:]))
		if code == 0 || 4+l > len(opts) {
			break
		}
		v := opts[4 : 4+l]
		switch {
		case code == ngOptTSResol && l == 1:
			// The high bit chooses a power of two, else a power of ten (pcapng section 4.2).
			e := uint(v[0] & 0x7f)
			switch {
			case v[0]&0x80 != 0 && e <= 63:
				ifc.unitsSec = 1 << e
			case v[0]&0x80 == 0 && e <= 19:
				ifc.unitsSec = pow10(e)
			default:
				return fmt.Errorf("if_tsresol %#x out of range", v[0])
			}
		case code == ngOptTSOffset && l == 8:
			ifc.offset = int64(r.order.Uint64(v))
		}
		opts = opts[4+(l+3)&^3:]
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

func pow10(e uint) uint64 {
	v := uint64(1)
	for range e {
		v *= 10
	}
	return v
}

// packetBlock fills f from an enhanced, obsolete or simple packet block's body; ok is false for
// a block that holds no frame.
func (r *Reader) packetBlock(typ uint32, b []byte, f *Frame) (ok bool, err error) {
	var ifc int
	var ts uint64
	var caplen, orig int
	var data []byte
	switch typ {
	case ngSPB:
		// The simple packet block has no captured length: it is the original length cut to
		// the first interface's snap length (and to the block).
		if len(b) < 4 {
			return false, errors.New("simple packet block too short")
		}
		orig = int(r.order.Uint32(b))
		caplen = min(orig, len(b)-4)
		data = b[4:]
	default:
		if len(b) < 20 {
			return false, errors.New("packet block too short")
		}
		if typ == ngEPB {
			ifc = int(r.order.Uint32(b))
		} else {
			ifc = int(r.order.Uint16(b))
		}
		ts = uint64(r.order.Uint32(b[4:]))<<32 | uint64(r.order.Uint32(b[8:]))
		caplen, orig = int(r.order.Uint32(b[12:])), int(r.order.Uint32(b[16:]))
		data = b[20:]
	}
	if ifc < 0 || ifc >= len(r.ifaces) {
		return false, fmt.Errorf("packet of interface %d, which no interface description block declared", ifc)
	}
	in := &r.ifaces[ifc]
	if typ == ngSPB && in.snap > 0 {
		caplen = min(caplen, in.snap)
	}
	if caplen < 0 || caplen > len(data) {
		return false, fmt.Errorf("captured length %d beyond the block", caplen)
	}
	sec := ts / in.unitsSec
	hi, lo := bits.Mul64(ts%in.unitsSec, 1e9)
	ns, _ := bits.Div64(hi, lo, in.unitsSec)
	r.frames++
	*f = Frame{
		Number:    r.frames,
		Time:      time.Unix(int64(sec)+in.offset, int64(ns)),
		Link:      in.link,
		Interface: ifc,
		OrigLen:   max(orig, caplen),
		Data:      data[:caplen:caplen],
	}
	return true, nil
}

// atRecord turns a failure to read at a record boundary into io.EOF when the file simply ended.
func (r *Reader) atRecord(err error) error {
	if err == io.EOF && r.w == r.r {
		return io.EOF
	}
	return fmt.Errorf("offset %d: file ends inside a record: %w", r.off, noEOF(err))
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ensure makes n unread bytes available at buf[r:], reading and growing the buffer as needed.
// It returns io.EOF when the stream ends first (whatever it had read stays unread).
func (r *Reader) ensure(n int) error {
	if r.w-r.r >= n {
		return nil
	}
	if n > len(r.buf) {
		nb := make([]byte, max(n, 2*len(r.buf)))
		r.w = copy(nb, r.buf[r.r:r.w])
		r.buf, r.r = nb, 0
	} else if r.r+n > len(r.buf) {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	for r.w-r.r < n {
		if r.eof {
			return io.EOF
		}
		m, err := r.src.Read(r.buf[r.w:])
		r.w += m
		if err == io.EOF {
			r.eof = true
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) consume(n int) {
	r.r += n
	r.off += int64(n)
}
