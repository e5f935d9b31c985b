package verify

import (
	"bytes"
	"testing"

	"github.com/seqshiftd/seqshiftd/capture"
)

// bulk is a conversation of n full-size segments from the client, acknowledged every second
// one, with timestamps that tick every eight segments (as a fast sender's do).
func bulk(n int, v6 bool) *conv {
	c := transfer(v6, false)
	c.segs = c.segs[:3]
	for k := range n {
		ts := uint32(1000 + k/8)
		c.segs = append(c.segs, spec{c2s: true, flags: fACK, seq: 1 + uint32(k)*1448, ack: 1, n: 1448, tsval: ts})
		if k%2 == 1 {
			c.segs = append(c.segs, spec{flags: fACK, seq: 1, ack: 1 + uint32(k+1)*1448, tsval: ts})
		}
	}
	return c
}

// BenchmarkVerify reads and verifies a capture pair of one bulk connection held in memory: the
// MB/s column is both files' bytes per second (reading, checksumming every byte, pairing).
//
//	go test -run XXX -bench Verify -benchmem ./verify/
func BenchmarkVerify(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "IPv4"
		if v6 {
			name = "IPv6"
		}
		b.Run(name, func(b *testing.B) {
			c := bulk(20000, v6)
			cf, sf := c.render(0), c.render(1)
			client := writeCapture(b, cf, capture.LinkEthernet, false, 0)
			server := writeCapture(b, sf, capture.LinkSLL2, true, 0)
			b.SetBytes(int64(len(client) + len(server)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r, err := Readers(bytes.NewReader(client), bytes.NewReader(server), Options{Strict: true})
				if err != nil || !r.OK {
					b.Fatalf("not OK: %v", err)
				}
			}
		})
	}
}
