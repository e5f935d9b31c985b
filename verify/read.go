package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/seqshiftd/seqshiftd/capture"
	"github.com/seqshiftd/seqshiftd/rewrite"
)

// connKey is a connection's two ends, the smaller first, so both directions share it.
type connKey struct{ a, b netip.AddrPort }

func keyOf(src, dst netip.AddrPort) (k connKey, dir int) {
	if src.Compare(dst) <= 0 {
		return connKey{src, dst}, 0
	}
	return connKey{dst, src}, 1
}

// end returns the source of direction dir (0: a to b, 1: b to a).
func (k connKey) end(dir int) netip.AddrPort {
	if dir == 0 {
		return k.a
	}
	return k.b
}

// ident is what a gateway leaves alone in a segment, and so what pairs it with its peer in the
// other capture. The IPv4 ID tells apart segments that share everything else (pure ACKs in
// one millisecond); IPv6 has none, and pairs equals by order and exact fields.
type ident struct {
	tsval, tsecr uint32
	plen         uint32
	win          uint16
	ipid         uint16
	flags        uint8
	hasTS        bool
}

// seg is one TCP segment as verify keeps it: 64 bytes, so that a gigabyte capture costs
// tens of megabytes, not a gigabyte.
type seg struct {
	id       ident
	time     int64 // Unix nanoseconds
	frame    uint32
	seq, ack uint32
	sackAt   uint32 // first edge in dirRecs.sack
	nsack    uint8  // number of edges
	csum     csum
	state    uint8  // pairing state, see match.go
	peer     int32  // index of the paired segment in the other capture's direction
	covered  uint32 // a super-packet's bytes found as pieces in the other capture
}

// end returns the sequence number after the segment's data (SYN and FIN count one).
func (s *seg) end() uint32 {
	n := s.seq + s.id.plen
	if s.id.flags&(rewrite.FlagSYN|rewrite.FlagFIN) != 0 {
		n++
	}
	return n
}

// icmpRec is an ICMP or ICMPv6 error quoting a segment of a connection.
type icmpRec struct {
	time       int64
	frame      uint32
	from       netip.Addr // the error's source (the router that sent it)
	typ, code  uint8
	ipid       uint16 // the error's own IPv4 ID
	quoteLen   uint16 // quoted TCP bytes
	dir        int    // direction of the quoted segment
	seq, ack   uint32
	hasAck     bool
	csum       csum
	paired     bool
	quoteFlags uint8
}

// dirRecs are one direction's segments in one capture, in capture order.
type dirRecs struct {
	segs     []seg
	sack     []uint32
	retrans  int    // data segments starting below the highest end seen before
	high     uint32 // highest end seen
	haveHigh bool
	syn      int  // index of the first SYN or SYN-ACK, -1 if none
	opener   bool // that was a SYN without ACK: this direction's sender is the client
	pastSYN  bool // a segment without SYN followed it
}

// connRecs is one connection in one capture. A tuple reused by a later connection (a new SYN
// with another ISN) starts a new connRecs.
type connRecs struct {
	key   connKey
	gen   int
	dirs  [2]dirRecs
	icmps []icmpRec
}

// captureRecs is what verify keeps of one capture.
type captureRecs struct {
	Summary FileSummary
	conns   map[connKey][]*connRecs // generations, oldest first
	order   []*connRecs             // in order of first appearance
	scratch []byte
	edges   []uint32
}

// FileSummary says what a capture held.
type FileSummary struct {
	Path        string `json:"path"`
	Format      string `json:"format"`
	Frames      int    `json:"frames"`
	TCPSegments int    `json:"tcp_segments"`
	ICMPErrors  int    `json:"icmp_errors_quoting_tcp"`
	Other       int    `json:"other_frames"`     // not IP, or IP but neither TCP nor an ICMP error quoting TCP
	Truncated   int    `json:"truncated_frames"` // cut by the snap length before the end of the IP packet
	Undecodable int    `json:"undecodable"`      // IP whose TCP header could not be read (malformed, or cut inside it)
	// ReadError says why reading stopped before the end of the file (a cut or corrupt file);
	// what came before it was verified.
	ReadError string `json:"read_error,omitempty"`
	// FirstUndecodable names the first such frame and why, for the operator to look at.
	FirstUndecodable string `json:"first_undecodable,omitempty"`
}

// readFile reads the capture at path.
func readFile(path string) (*captureRecs, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := readCapture(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Summary.Path = path
	return c, nil
}

// readCapture reads a capture from r.
func readCapture(r io.Reader) (*captureRecs, error) {
	cr, err := capture.NewReader(r)
	if err != nil {
		return nil, err
	}
	c := &captureRecs{conns: make(map[connKey][]*connRecs), scratch: make([]byte, 0, scratchSize)}
	c.Summary.Format = cr.Format().String()
	var f capture.Frame
	for {
		err := cr.Next(&f)
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		if err != nil {
			// What was read stays usable: a capture cut mid-record (tcpdump killed, a disk
			// full) is common, and its first part still proves or disproves the mapping.
			c.Summary.ReadError = fmt.Sprintf("after frame %d: %v", c.Summary.Frames, err)
			return c, nil
		}
		c.Summary.Frames++
		c.add(&f)
	}
}

// scratchSize bounds the bytes copied from a truncated packet so that Classify can read its
// headers: IPv6 extension headers, ICMP quotes and TCP options fit with room to spare.
const scratchSize = 1024

// add decodes one frame and records what it holds.
func (c *captureRecs) add(f *capture.Frame) {
	ip, linkLen, ok := f.IP()
	if !ok {
		c.Summary.Other++
		return
	}
	declared := declaredLen(ip, f.OrigLen-linkLen)
	pkt, truncated := ip, declared > len(ip)
	if truncated {
		// Classify insists on whole packets; give it the captured part, with the IP length
		// saying so, and take the real lengths from the original header.
		c.Summary.Truncated++
		pkt = c.truncatedCopy(ip)
	} else if declared < len(ip) {
		ip = ip[:declared] // link-layer padding (Ethernet minimum frame)
		pkt = ip
	}
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	switch p.Kind {
	case rewrite.KindTCP:
		c.Summary.TCPSegments++
		c.addTCP(f, ip, pkt, &p, declared, truncated)
	case rewrite.KindICMPQuotingTCP:
		c.Summary.ICMPErrors++
		c.addICMP(f, ip, pkt, &p, truncated)
	case rewrite.KindMalformed:
		c.Summary.Undecodable++
		if c.Summary.FirstUndecodable == "" {
			why := p.Reason.String()
			if truncated {
				why += " (cut by the snap length)"
			}
			c.Summary.FirstUndecodable = fmt.Sprintf("frame %d: %s", f.Number, why)
		}
	default:
		c.Summary.Other++
	}
}

// declaredLen returns the IP packet's length as its header declares it (wire, the length left
// on the wire, when the header says 0: a BIG TCP or jumbo super-packet).
func declaredLen(ip []byte, wire int) int {
	switch {
	case ip[0]>>4 == 4 && len(ip) >= rewrite.IPv4MinimumSize:
		if n := rewrite.IPv4(ip).TotalLength(); n != 0 {
			return n
		}
	case ip[0]>>4 == 6 && len(ip) >= rewrite.IPv6FixedHeaderSize:
		if n := rewrite.IPv6(ip).PayloadLength(); n != 0 {
			return rewrite.IPv6FixedHeaderSize + n
		}
	default:
		return len(ip)
	}
	return max(wire, len(ip))
}

// truncatedCopy copies the start of a truncated IP packet into the scratch buffer with its
// length field set to what was copied.
func (c *captureRecs) truncatedCopy(ip []byte) []byte {
	b := append(c.scratch[:0], ip[:min(len(ip), scratchSize)]...)
	switch {
	case b[0]>>4 == 4 && len(b) >= rewrite.IPv4MinimumSize:
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	case b[0]>>4 == 6 && len(b) >= rewrite.IPv6FixedHeaderSize:
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-rewrite.IPv6FixedHeaderSize))
	}
	return b
}

// conn returns the connection a segment of key belongs to; a SYN with a new ISN on a tuple that
// already had one starts the next connection of that tuple.
func (c *captureRecs) conn(key connKey, dir int, flags uint8, seq uint32) *connRecs {
	gens := c.conns[key]
	if n := len(gens); n > 0 {
		cur := gens[n-1]
		d := &cur.dirs[dir]
		// A SYN again is a retransmission, unless its sender had already moved past the
		// handshake (a new connection on the same tuple, even one with the same ISN, as a
		// fixed client_isn gives the server's side) or it carries another ISN.
		if flags&(rewrite.FlagSYN|rewrite.FlagACK) != rewrite.FlagSYN || d.syn < 0 ||
			(d.segs[d.syn].seq == seq && !d.pastSYN) {
			return cur
		}
	}
	cr := &connRecs{key: key, gen: len(gens)}
	cr.dirs[0].syn, cr.dirs[1].syn = -1, -1
	c.conns[key] = append(gens, cr)
	c.order = append(c.order, cr)
	return cr
}

func (c *captureRecs) addTCP(f *capture.Frame, ip, pkt []byte, p *rewrite.Packet, declared int, truncated bool) {
	t := p.TCPHeader(pkt)
	src, dst := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
	key, dir := keyOf(src, dst)
	s := seg{
		time:  f.Time.UnixNano(),
		frame: uint32(f.Number),
		seq:   p.Seq,
		ack:   p.Ack,
		peer:  -1,
	}
	s.id.flags, s.id.win = p.Flags, t.WindowSize()
	s.id.plen = uint32(max(declared-p.TCPOffset()-t.DataOffset(), 0))
	if ip[0]>>4 == 4 {
		s.id.ipid = binary.BigEndian.Uint16(ip[4:])
	}
	s.id.tsval, s.id.tsecr, s.id.hasTS = timestamps(t.Options())
	cr := c.conn(key, dir, p.Flags, p.Seq)
	d := &cr.dirs[dir]
	if p.Flags&rewrite.FlagACK != 0 {
		c.edges = p.SACKEdges(pkt, c.edges[:0])
		if len(c.edges) > 0 {
			s.sackAt, s.nsack = uint32(len(d.sack)), uint8(len(c.edges))
			d.sack = append(d.sack, c.edges...)
		}
	}
	switch {
	case truncated:
		s.csum = csumUnchecked
	case ip[0]>>4 == 4 && !checkIPv4Header(ip[:rewrite.IPv4(ip).HeaderLength()]):
		s.csum = csumBadIP
	default:
		s.csum = checkL4(p.Src, p.Dst, rewrite.ProtocolTCP, ip[p.TCPOffset():], 16)
	}
	if s.id.flags&rewrite.FlagSYN != 0 && d.syn < 0 {
		d.syn, d.opener = len(d.segs), s.id.flags&rewrite.FlagACK == 0
	} else if s.id.flags&rewrite.FlagSYN == 0 && d.syn >= 0 {
		d.pastSYN = true
	}
	if s.id.plen > 0 {
		if d.haveHigh && int32(s.seq-d.high) < 0 {
			d.retrans++
		}
		if e := s.end(); !d.haveHigh || int32(e-d.high) > 0 {
			d.high, d.haveHigh = e, true
		}
	}
	d.segs = append(d.segs, s)
}

func (c *captureRecs) addICMP(f *capture.Frame, ip, pkt []byte, p *rewrite.Packet, truncated bool) {
	src, dst := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
	key, dir := keyOf(src, dst)
	gens := c.conns[key]
	if len(gens) == 0 {
		// An error about a connection this capture never saw a segment of: keep it with a
		// connection of its own, so that the report still shows it.
		gens = []*connRecs{c.conn(key, dir, 0, 0)}
	}
	cr := gens[len(gens)-1]
	t := p.TCPHeader(pkt)
	off := p.ICMPOffset()
	msg := rewrite.ICMP(pkt[off:])
	r := icmpRec{
		time:       f.Time.UnixNano(),
		frame:      uint32(f.Number),
		typ:        msg.Type(),
		code:       msg.Code(),
		dir:        dir,
		seq:        p.Seq,
		ack:        p.Ack,
		hasAck:     len(t) >= 14 && p.Flags&rewrite.FlagACK != 0,
		quoteLen:   uint16(len(t)),
		quoteFlags: p.Flags,
	}
	v4 := ip[0]>>4 == 4
	if v4 {
		r.from = rewrite.IPv4(ip).SourceAddress()
		r.ipid = binary.BigEndian.Uint16(ip[4:])
	} else {
		r.from = rewrite.IPv6(ip).SourceAddress()
	}
	switch {
	case truncated:
		r.csum = csumUnchecked
	case v4 && !checkIPv4Header(ip[:rewrite.IPv4(ip).HeaderLength()]):
		r.csum = csumBadIP
	case v4:
		r.csum = checkL4(netip.Addr{}, netip.Addr{}, 0, ip[off:], 2)
	default:
		r.csum = checkL4(r.from, rewrite.IPv6(ip).DestinationAddress(), rewrite.ProtocolICMPv6, ip[off:], 2)
	}
	cr.icmps = append(cr.icmps, r)
}

// timestamps returns the TCP timestamps option's values (RFC 7323), if the options hold one.
func timestamps(opts []byte) (tsval, tsecr uint32, ok bool) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return 0, 0, false
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return 0, 0, false
		}
		n := int(opts[i+1])
		if opts[i] == 8 && n == 10 && i+10 <= len(opts) {
			return binary.BigEndian.Uint32(opts[i+2:]), binary.BigEndian.Uint32(opts[i+6:]), true
		}
		i += n
	}
	return 0, 0, false
}
