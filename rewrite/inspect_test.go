package rewrite

import (
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// The accessors verify reads packets with agree with gopacket on where the fields are.
func TestInspect_AccessorsAgreeWithGopacket(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []layers.TCPOption
	}{
		{"no options", nil},
		{"timestamps then SACK, as Linux writes them", []layers.TCPOption{nop, nop, tsOpt, nop, nop, sackOption(10, 20, 30, 40)}},
		{"SACK at an odd offset", []layers.TCPOption{nop, sackOption(1, 2, 3, 4, 5, 6)}},
		{"two SACK options", []layers.TCPOption{sackOption(7, 8), nop, nop, sackOption(9, 10, 11, 12)}},
	} {
		for _, v6 := range []bool{false, true} {
			pkt := gpSegment{v6: v6, tcp: layers.TCP{SrcPort: 1, DstPort: 2, Seq: 3, Ack: 4, ACK: true, Window: 4321, Options: tt.opts}, payload: []byte("data")}.build(t)
			var p Packet
			Classify(pkt, &p)
			want := decodeTCP(t, pkt)
			h := p.TCPHeader(pkt)
			if p.Kind != KindTCP || h.WindowSize() != want.Window || h.SequenceNumber() != 3 || len(h) != int(want.DataOffset)*4 {
				t.Fatalf("%s v6=%v: kind %v, window %d, header %d bytes", tt.name, v6, p.Kind, h.WindowSize(), len(h))
			}
			if got, exp := p.SACKEdges(pkt, nil), gpSACKEdges(want); !slices.Equal(got, exp) {
				t.Errorf("%s v6=%v: SACK edges %v, gopacket %v", tt.name, v6, got, exp)
			}
			if off := p.TCPOffset(); off != len(pkt)-len(want.Contents)-len(want.Payload) {
				t.Errorf("%s v6=%v: TCP at %d", tt.name, v6, off)
			}
		}
	}
	var p Packet
	Classify([]byte{0x45}, &p)
	if p.TCPHeader([]byte{0x45}) != nil || p.SACKEdges(nil, nil) != nil {
		t.Error("a malformed packet has a TCP header")
	}
}
