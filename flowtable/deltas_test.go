package flowtable

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
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

// TestDeltas_ExemptFlowsAreUnshiftedOnTheWire: an observed (or otherwise exempt) flow keeps
// the offsets it would get, for `flows`, but every delta is zero, so that nothing rewrites it
// and the window tracker reads its acks as they are on the wire.
func TestDeltas_ExemptFlowsAreUnshiftedOnTheWire(t *testing.T) {
	for _, ex := range []Exempt{ExemptObserve, ExemptTCPMD5, ExemptTCPAO, ExemptNoRule, ExemptServerOpened} {
		t.Run(ex.String(), func(t *testing.T) {
			tab := New(Config{MaxFlows: 16})
			k := &conn{t: t, c: cISN, s: sISN} // no offsets on the wire
			f, err := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"),
				Init{ClientOffset: 1000, Server: ServerPlan{Absolute: true, Value: 0x80000000}, ClientISN: cISN, Exempt: ex})
			if err != nil {
				t.Fatal(err)
			}
			k.f = f
			k.want(k.send(c2s, tcpwindow.Segment{Seq: cISN, Flags: FlagSYN, Window: 64240}), tcpwindow.Accept)
			k.c++
			// The SYN-ACK acknowledges the client's real ISN: an observed flow's client
			// offset never reached the server.
			k.want(k.send(s2c, tcpwindow.Segment{Seq: sISN, Ack: k.c, Flags: FlagSYN | FlagACK, Window: 65160}), tcpwindow.Accept)
			k.s++
			for _, d := range []Dir{c2s, s2c} {
				if dl := f.Deltas(d); !dl.Zero() {
					t.Errorf("Deltas(%v) = %+v, want zero", d, dl)
				}
				if dl := f.QuoteDeltas(d); !dl.Zero() {
					t.Errorf("QuoteDeltas(%v) = %+v, want zero", d, dl)
				}
			}
			if got, want := f.Offsets(), [2]seqnum.Delta{1000, seqnum.Value(0x80000000).Sub(sISN)}; got != want {
				t.Errorf("Offsets() = %v, want the would-be %v", got, want)
			}
			// Raw numbers both ways are in window, and the exchange assures the flow.
			k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
			k.want(k.send(c2s, k.fromClient(FlagACK, 100)), tcpwindow.Accept)
			k.c += 100
			k.want(k.send(s2c, k.fromServer(FlagACK, 300)), tcpwindow.Accept)
			k.s += 300
			k.want(k.send(c2s, k.fromClient(FlagACK, 0)), tcpwindow.Accept)
			if f.State() != StateEstablished || !f.Assured() {
				t.Errorf("after an unshifted exchange: %v assured %v", f.State(), f.Assured())
			}
		})
	}
}
