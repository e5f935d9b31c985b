package verify

import (
	"bytes"
	"testing"

	"github.com/seqshiftd/seqshiftd/capture"
)

// FuzzVerify feeds arbitrary capture pairs to verify: whatever the packets hold (options,
// quotes, lengths the link layer and the IP header disagree on), it must not panic, and a
// capture compared with itself must map with offset 0 in both directions.
func FuzzVerify(f *testing.F) {
	c := transfer(false, true)
	f.Add(writeCapture(f, c.render(0), capture.LinkEthernet, false, 0), writeCapture(f, c.render(1), capture.LinkRaw, true, 64))
	c6 := transfer(true, false)
	f.Add(writeCapture(f, c6.render(0), capture.LinkSLL2, true, 0), writeCapture(f, c6.render(1), capture.LinkSLL, false, 0))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if _, err := Readers(bytes.NewReader(a), bytes.NewReader(b), Options{}); err != nil {
			return
		}
		r, err := Readers(bytes.NewReader(a), bytes.NewReader(a), Options{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, conn := range r.Connections {
			for _, d := range []Direction{conn.ClientToServer, conn.ServerToClient} {
				if d.OffsetKnown && d.Offset != 0 {
					t.Fatalf("a capture against itself: offset %+d in %+v", d.Offset, conn)
				}
			}
			if conn.FirstBreak != nil && conn.FirstBreak.What != "" && conn.ClientToServer.Broken+conn.ServerToClient.Broken > 0 {
				// Only a checksum can break a capture against itself: both copies are wrong.
				if !bytes.Contains([]byte(conn.FirstBreak.What), []byte("checksum")) {
					t.Fatalf("a capture against itself breaks: %s", conn.FirstBreak.What)
				}
			}
		}
	})
}
