package flowtable

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// ipv4TCP builds a 20-byte IPv4 header and a TCP header with one SACK block (ACK set), checksum
// fields left as they are: Shift updates them incrementally, so a round trip must restore them.
func ipv4TCP(seq, ack, sackL, sackR uint32) []byte {
	b := make([]byte, 20+32)
	b[0], b[8], b[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{198, 18, 0, 1, 198, 19, 0, 1})
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 443)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 8<<4, rewrite.FlagACK
	binary.BigEndian.PutUint16(t[16:], 0x1234)
	copy(t[20:], []byte{1, 1, 5, 10}) // NOP NOP SACK len 10
	binary.BigEndian.PutUint32(t[24:], sackL)
	binary.BigEndian.PutUint32(t[28:], sackR)
	return b
}

// fragNeeded wraps seg in an ICMPv4 fragmentation-needed that a router between seqshiftd and
// seg's destination sent back toward seg's source.
func fragNeeded(seg []byte) []byte {
	b := make([]byte, 20+8+len(seg))
	b[0], b[8], b[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], []byte{198, 19, 0, 254, 198, 18, 0, 1})
	b[20], b[21] = 3, 4
	binary.BigEndian.PutUint16(b[22:], 0xbeef)
	copy(b[28:], seg)
	return b
}

func shift(t *testing.T, pkt []byte, d Deltas) {
	t.Helper()
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	if r := rewrite.Shift(pkt, &p, d.Seq, d.Ack, false); r != rewrite.ReasonNone {
		t.Fatalf("Shift (%v): %v", p.Kind, r)
	}
}

func tcpField(pkt []byte, at int) uint32 { return binary.BigEndian.Uint32(pkt[20+at:]) }

// TestDeltas_SignRules is the one test of the sign rules: a client-to-server segment leaves
// with its seq in the server's view of the client's space and its ack and SACK edges in the
// server's own space; the ICMP error a router sends back about that segment reaches the client
// quoting it exactly as the client wrote it. Offsets near the wrap make a wrong sign visible.
func TestDeltas_SignRules(t *testing.T) {
	tab := New(Config{MaxFlows: 16})
	const c2sOff, s2cOff = seqnum.Delta(0xfffffff0), seqnum.Delta(1000) // client ISN shown 16 lower
	f, err := tab.Adopt(ap("198.18.0.1:40000"), ap("198.19.0.1:443"),
		Init{ClientOffset: c2sOff, Server: ServerPlan{Value: uint32(s2cOff)}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Deltas(ClientToServer), DeltasOf([2]seqnum.Delta{c2sOff, s2cOff}, ClientToServer); got != want {
		t.Fatalf("Flow.Deltas %+v, DeltasOf %+v", got, want)
	}
	for _, tc := range []struct {
		d    Dir
		want Deltas
	}{
		{ClientToServer, Deltas{Seq: c2sOff, Ack: s2cOff.Neg()}},
		{ServerToClient, Deltas{Seq: s2cOff, Ack: c2sOff.Neg()}},
	} {
		if got := f.Deltas(tc.d); got != tc.want {
			t.Errorf("Deltas(%v) = %+v, want %+v", tc.d, got, tc.want)
		}
		if got := f.QuoteDeltas(tc.d); got != tc.want.Inverse() {
			t.Errorf("QuoteDeltas(%v) = %+v, want %+v", tc.d, got, tc.want.Inverse())
		}
	}

	// The client sends seq 100 and acknowledges the server's byte 5000 as the client sees it
	// (server's own 4000), SACKing 6000..7000 of the client's view.
	orig := ipv4TCP(100, 5000, 6000, 7000)
	wire := bytes.Clone(orig)
	shift(t, wire, f.Deltas(ClientToServer))
	for _, c := range []struct {
		name string
		at   int
		want uint32
	}{
		{"seq", 4, 100 - 16}, {"ack", 8, 4000}, {"sack left", 24, 5000}, {"sack right", 28, 6000},
	} {
		if got := tcpField(wire, c.at); got != c.want {
			t.Errorf("c2s %s on the wire = %d, want %d", c.name, got, c.want)
		}
	}

	// A router past seqshiftd quotes the segment as it saw it; the client must get back the
	// seq and ack it sent (Linux matches the quoted seq against its send window). The quoted
	// checksum still covers the shifted SACK edges the quote does not hold, so it is not
	// compared here; rewrite's oracle tests check it.
	icmp := fragNeeded(wire[:20+24]) // IP header and 24 bytes of TCP: seq, ack, flags, checksum
	shift(t, icmp, f.QuoteDeltas(ClientToServer))
	if got, want := icmp[28+20+4:28+20+12], orig[20+4:20+12]; !bytes.Equal(got, want) {
		t.Errorf("quoted seq and ack after translation: % x, want % x", got, want)
	}
	// And the inverse deltas undo the segment's own shift byte for byte (checksum included).
	back := bytes.Clone(wire)
	shift(t, back, f.QuoteDeltas(ClientToServer))
	if !bytes.Equal(back, orig) {
		t.Errorf("c2s shift then QuoteDeltas:\n got % x\nwant % x", back, orig)
	}
}
