package tcpwindow

import (
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// TCP option kinds the tracker reads (IANA "TCP Option Kind Numbers").
const (
	optEOL      = 0
	optNOP      = 1
	optWScale   = 3 // RFC 7323, length 3
	optSACKPerm = 4 // RFC 2018, length 2
	optSACK     = 5 // RFC 2018, 2 + 8n
)

// Read fills s from a TCP header (options included, as rewrite.Packet.TCPHeader returns it for
// a KindTCP packet; not for an ICMP quote) and the segment's payload length. It reads only within tcp and never allocates; a header
// shorter than 20 bytes leaves s zero and reports false. Options are read up to the first
// malformed one (Classify has already rejected such packets; the tracker only needs to stay
// in bounds).
func (s *Segment) Read(tcp rewrite.TCP, payloadLen int) bool {
	*s = Segment{}
	if len(tcp) < rewrite.TCPMinimumSize {
		return false
	}
	s.Seq, s.Ack = seqnum.Value(tcp.SequenceNumber()), seqnum.Value(tcp.AckNumber())
	s.Flags, s.Window = tcp.Flags(), tcp.WindowSize()
	s.Len = seqnum.Size(max(payloadLen, 0))
	if doff := tcp.DataOffset(); doff > rewrite.TCPMinimumSize && doff <= len(tcp) {
		s.readOptions(tcp.Options())
	}
	return true
}

// readOptions walks the options area as RFC 9293 3.2 lays it out: EOL ends it, NOP is one byte,
// every other option has a length byte of at least 2 that must fit.
func (s *Segment) readOptions(opts []byte) {
	for i := 0; i < len(opts); {
		kind := opts[i]
		if kind == optEOL {
			return
		}
		if kind == optNOP {
			i++
			continue
		}
		if i+1 >= len(opts) {
			return
		}
		n := int(opts[i+1])
		if n < 2 || i+n > len(opts) {
			return
		}
		o := opts[i : i+n]
		switch {
		case kind == optWScale && n == 3:
			s.Opts |= OptWScale
			s.WScale = min(o[2], maxScale)
		case kind == optSACKPerm && n == 2:
			s.Opts |= OptSACKPerm
		case kind == optSACK && n >= 10 && (n-2)%8 == 0:
			for b := 2; b+8 <= n; b += 8 {
				right := seqnum.Value(o[b+4])<<24 | seqnum.Value(o[b+5])<<16 | seqnum.Value(o[b+6])<<8 | seqnum.Value(o[b+7])
				if s.Opts&OptSACK == 0 || after(right, s.SACK) {
					s.SACK = right
				}
				s.Opts |= OptSACK
			}
		}
		i += n
	}
}
