package tcpwindow

import (
	"encoding/binary"
	"testing"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// FuzzSegmentRead feeds arbitrary header bytes to Segment.Read: it must never panic or read
// out of bounds, and every option it reports must be in the bytes.
func FuzzSegmentRead(f *testing.F) {
	f.Add(make([]byte, 20), 0)
	f.Add([]byte{0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0xa0, 0x12, 0xff, 0xff, 0, 0, 0, 0,
		2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}, 0)
	f.Add([]byte{0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x10, 0, 1, 0, 0, 0, 0,
		1, 1, 5, 10, 0, 0, 0, 5, 0, 0, 0, 9}, 100)
	f.Fuzz(func(t *testing.T, hdr []byte, n int) {
		var s Segment
		ok := s.Read(hdr, n)
		if ok != (len(hdr) >= 20) {
			t.Fatalf("Read = %v for %d bytes", ok, len(hdr))
		}
		if s.Opts&OptWScale != 0 && s.WScale > maxScale {
			t.Fatalf("window scale %d above 14", s.WScale)
		}
		if s.Opts&OptSACK != 0 && len(hdr) < 20+10 {
			t.Fatal("SACK reported in a header too short to hold one")
		}
	})
}

// FuzzTrack runs arbitrary segment sequences through the tracker: it must never panic, an End
// never moves backwards through anything but a SYN or a first sighting, and a segment whose
// verdict is not Accept never changes the record.
func FuzzTrack(f *testing.F) {
	seg := func(d, flags uint8, seq, ack uint32, n uint16, win uint16) []byte {
		b := make([]byte, 16)
		b[0], b[1] = d, flags
		binary.BigEndian.PutUint32(b[2:], seq)
		binary.BigEndian.PutUint32(b[6:], ack)
		binary.BigEndian.PutUint16(b[10:], n)
		binary.BigEndian.PutUint16(b[12:], win)
		return b
	}
	hs := append(append(seg(0, syn, 100, 0, 0, 1000), seg(1, synack, 900, 101, 0, 1000)...), seg(0, ack, 101, 901, 10, 1000)...)
	f.Add(hs)
	f.Add(append(hs, seg(1, rst, 901, 0, 0, 0)...))
	f.Add(append(hs, seg(1, finack, 901, 111, 0, 10)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w Conn
		for ; len(b) >= 16; b = b[16:] {
			d := int(b[0] & 1)
			s := Segment{
				Flags: b[1], Seq: seqnum.Value(binary.BigEndian.Uint32(b[2:])), Ack: seqnum.Value(binary.BigEndian.Uint32(b[6:])),
				Len: seqnum.Size(binary.BigEndian.Uint16(b[10:])), Window: binary.BigEndian.Uint16(b[12:]),
				Opts: b[14] & 7, WScale: b[15] & 15, SACK: seqnum.Value(binary.BigEndian.Uint32(b[2:]) + uint32(b[15])),
			}
			before := [2]Side{w.Load(0), w.Load(1)}
			v := w.Track(d, &s, b[0]&2 != 0)
			after := [2]Side{w.Load(0), w.Load(1)}
			if v != Accept && after != before && !(v == AcceptLiberal && after[d^1] == before[d^1]) {
				t.Fatalf("%v segment %+v changed the record\n before %+v\n after  %+v", v, s, before, after)
			}
			if v >= NumVerdicts {
				t.Fatalf("verdict %d", v)
			}
			for i := range after {
				if s.Flags&flagSYN == 0 && before[i].Seen() && after[i].End != before[i].End && !before[i].End.LessThan(after[i].End) {
					t.Fatalf("side %d End moved back from %d to %d on %+v", i, before[i].End, after[i].End, s)
				}
			}
		}
	})
}
