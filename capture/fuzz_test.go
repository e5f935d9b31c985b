package capture

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// FuzzReader feeds arbitrary files to Reader: it must never panic, never hold more than its
// bounded buffer, hand out frames that are consistent, and every frame it reads must come back
// unchanged through Writer and Reader (the round trip the integration tests rely on).
func FuzzReader(f *testing.F) {
	frames := []testFrame{{t: t0, data: payload(60, 1), orig: 60}, {t: t0.Add(time.Millisecond), data: payload(20, 2), orig: 1500}}
	f.Add(pcapFile(binary.LittleEndian, false, LinkEthernet, 0, frames))
	f.Add(pcapFile(binary.BigEndian, true, LinkRaw, 64, frames))
	ng := ngSection(binary.BigEndian)
	ng = append(ng, ngInterfaceBlock(binary.BigEndian, ngIface{link: LinkSLL2, tsresol: 0x80 | 30})...)
	ng = append(ng, epbBlock(binary.BigEndian, ngIface{tsresol: 0x80 | 30}, 0, frames[0])...)
	ng = append(ng, spbBlock(binary.BigEndian, frames[1])...)
	f.Add(ng)
	f.Fuzz(func(t *testing.T, file []byte) {
		r, err := NewReader(bytes.NewReader(file))
		if err != nil {
			return
		}
		var fr Frame
		for range 1000 {
			if err := r.Next(&fr); err != nil {
				break
			}
			if len(r.buf) > 2<<20 {
				t.Fatalf("buffer grew to %d bytes", len(r.buf))
			}
			if len(fr.Data) > MaxRecord || len(fr.Data) > fr.OrigLen {
				t.Fatalf("frame %d: %d bytes captured of %d", fr.Number, len(fr.Data), fr.OrigLen)
			}
			if ip, linkLen, ok := fr.IP(); ok && (linkLen+len(ip) != len(fr.Data) || len(ip) == 0) {
				t.Fatalf("frame %d: IP at %d, %d bytes, of %d", fr.Number, linkLen, len(ip), len(fr.Data))
			}
			roundTrip(t, &fr)
		}
	})
}

// roundTrip writes fr with Writer and reads it back. pcap holds seconds in 32 bits, so frames
// outside 1970..2106 are left out.
func roundTrip(t *testing.T, fr *Frame) {
	if fr.Time.Unix() < 0 || fr.Time.Unix() > 1<<32-1 || fr.OrigLen > 1<<32-1 {
		return
	}
	var b bytes.Buffer
	w, err := NewWriter(&b, fr.Link, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(fr.Time, fr.Data, fr.OrigLen); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(&b)
	if err != nil {
		t.Fatalf("reading back: %v", err)
	}
	var back Frame
	if err := r.Next(&back); err != nil {
		t.Fatalf("reading back: %v", err)
	}
	if !back.Time.Equal(fr.Time) || back.Link != fr.Link || back.OrigLen != fr.OrigLen || !bytes.Equal(back.Data, fr.Data) {
		t.Fatalf("round trip changed the frame:\n was  %v link %d orig %d %x\n back %v link %d orig %d %x",
			fr.Time, fr.Link, fr.OrigLen, fr.Data, back.Time, back.Link, back.OrigLen, back.Data)
	}
}
