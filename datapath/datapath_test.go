package datapath

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/tcshift"
	"github.com/seqshiftd/seqshiftd/tun"
)

var (
	client4 = netip.MustParseAddrPort("198.18.1.2:40000")
	server4 = netip.MustParseAddrPort("198.18.2.2:502")
	client6 = netip.MustParseAddrPort("[2001:2:0:1::2]:40000")
	server6 = netip.MustParseAddrPort("[2001:2:0:2::2]:5001")
)

const testPolicy = `
intercept: []
rules:
  - name: plc
    match: {server_ports: [502]}
    client_isn: fixed 1000
    server_isn: keep
  - name: both
    match: {server_ports: [5001]}
    client_isn: fixed 4294967000
    server_isn: fixed 7000000
  - name: stateless
    match: {server_ports: [5004]}
    client_isn: offset +5
    server_isn: offset -7
`

func testEngine(t testing.TB, extra string) (*Engine, *flowtable.Table) {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(testPolicy+extra))
	if err != nil {
		t.Fatal(err)
	}
	table := flowtable.New(flowtable.Config{MaxFlows: 1024})
	return New(newFakeDevice(false), table, &Policy{Config: cfg, Generation: 1}, zap.NewNop()), table
}

// segment builds a TCP segment with a valid checksum.
type segment struct {
	src, dst               netip.AddrPort
	seq, ack               uint32
	syn, ackFlag, fin, rst bool
	payload                []byte
	sack                   [][2]uint32
	md5                    bool
}

func (s segment) bytes(t testing.TB) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()),
		Seq: s.seq, Ack: s.ack, SYN: s.syn, ACK: s.ackFlag, FIN: s.fin, RST: s.rst, Window: 65535,
	}
	if len(s.sack) > 0 {
		data := make([]byte, 0, 8*len(s.sack))
		for _, e := range s.sack {
			data = append(data, byte(e[0]>>24), byte(e[0]>>16), byte(e[0]>>8), byte(e[0]),
				byte(e[1]>>24), byte(e[1]>>16), byte(e[1]>>8), byte(e[1]))
		}
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(data)), OptionData: data})
	}
	if s.md5 {
		tcp.Options = append(tcp.Options,
			layers.TCPOption{OptionType: layers.TCPOptionKind(19), OptionLength: 18, OptionData: make([]byte, 16)},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1})
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if s.src.Addr().Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP(s.src.Addr().AsSlice()), DstIP: net.IP(s.dst.Addr().AsSlice())}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		err = gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(s.payload))
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(s.src.Addr().AsSlice()), DstIP: net.IP(s.dst.Addr().AsSlice())}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		err = gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(s.payload))
	}
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// decoded is what the far end would see.
type decoded struct {
	seq, ack uint32
	sack     [][2]uint32
	csumOK   bool
}

func decode(t testing.TB, pkt []byte) decoded {
	t.Helper()
	first := layers.LayerTypeIPv4
	if pkt[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(pkt, first, gopacket.Default)
	tl, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatalf("no TCP layer in %x", pkt)
	}
	d := decoded{seq: tl.Seq, ack: tl.Ack}
	for _, o := range tl.Options {
		if o.OptionType == layers.TCPOptionKindSACK {
			for i := 0; i+8 <= len(o.OptionData); i += 8 {
				b := o.OptionData[i:]
				d.sack = append(d.sack, [2]uint32{
					uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]),
					uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])})
			}
		}
	}
	// Recompute the checksum with gopacket and compare it with what the packet carries.
	want := tl.Checksum
	var nl gopacket.NetworkLayer
	if ip4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		nl = ip4
	} else {
		nl = p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	}
	_ = tl.SetNetworkLayerForChecksum(nl)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, tl, gopacket.Payload(tl.Payload)); err != nil {
		t.Fatal(err)
	}
	got := uint16(buf.Bytes()[16])<<8 | uint16(buf.Bytes()[17])
	d.csumOK = got == want
	return d
}

// run passes one packet through the engine and returns what it wrote back (nil if dropped).
func run(t testing.TB, e *Engine, pkt []byte) []byte {
	t.Helper()
	c := e.queues[0]
	if !e.handle(c, e.Policy(), pkt, false, tcshift.Meta{}) {
		return nil
	}
	return pkt
}

func TestHandshakeAndDataShiftBothWays(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server netip.AddrPort
		clientISN      uint32
		serverISN      uint32
		wantC, wantS   uint32 // ISNs each side should appear to use
	}{
		{"v4 fixed/keep", client4, server4, 3_000_000_000, 123456, 1000, 123456},
		{"v6 fixed/fixed wrapping", client6, server6, 10, 4_294_967_290, 4294967000, 7000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, table := testEngine(t, "")
			c, s := tc.client, tc.server
			syn := run(t, e, segment{src: c, dst: s, seq: tc.clientISN, syn: true}.bytes(t))
			if d := decode(t, syn); d.seq != tc.wantC || !d.csumOK {
				t.Fatalf("server saw SYN seq %d (csum ok %t), want %d", d.seq, d.csumOK, tc.wantC)
			}
			// The server acknowledges the ISN it saw.
			synack := run(t, e, segment{src: s, dst: c, seq: tc.serverISN, ack: tc.wantC + 1, syn: true, ackFlag: true}.bytes(t))
			if d := decode(t, synack); d.seq != tc.wantS || d.ack != tc.clientISN+1 || !d.csumOK {
				t.Fatalf("client saw SYN-ACK seq %d ack %d (csum %t), want %d/%d", d.seq, d.ack, d.csumOK, tc.wantS, tc.clientISN+1)
			}
			// Client data acknowledging what it saw: 500 bytes, of which the server will SACK
			// some (a SACK of data never sent is refused by the window tracking).
			data := run(t, e, segment{src: c, dst: s, seq: tc.clientISN + 1, ack: tc.wantS + 1, ackFlag: true, payload: make([]byte, 500)}.bytes(t))
			if d := decode(t, data); d.seq != tc.wantC+1 || d.ack != tc.serverISN+1 || !d.csumOK {
				t.Fatalf("server saw data seq %d ack %d (csum %t), want %d/%d", d.seq, d.ack, d.csumOK, tc.wantC+1, tc.serverISN+1)
			}
			// The server SACKs in its own (shifted) view of the client's space; the client must
			// get edges in its own space.
			sack := run(t, e, segment{src: s, dst: c, seq: tc.serverISN + 1, ack: tc.wantC + 6, ackFlag: true,
				sack: [][2]uint32{{tc.wantC + 100, tc.wantC + 200}, {tc.wantC + 300, tc.wantC + 400}}}.bytes(t))
			d := decode(t, sack)
			if d.ack != tc.clientISN+6 || len(d.sack) != 2 || d.sack[0] != [2]uint32{tc.clientISN + 100, tc.clientISN + 200} ||
				d.sack[1] != [2]uint32{tc.clientISN + 300, tc.clientISN + 400} || !d.csumOK {
				t.Fatalf("client saw ack %d sack %v (csum %t)", d.ack, d.sack, d.csumOK)
			}
			if st := table.Stats(); st.Active != 1 {
				t.Fatalf("%d flows, want 1", st.Active)
			}
		})
	}
}

func TestRetransmittedSYNKeepsItsOffset(t *testing.T) {
	e, table := testEngine(t, "")
	first := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 555, syn: true}.bytes(t)))
	again := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 555, syn: true}.bytes(t)))
	if first.seq != 1000 || again.seq != 1000 {
		t.Fatalf("SYN seq %d then %d, want 1000 both", first.seq, again.seq)
	}
	if st := table.Stats(); st.Created != 1 {
		t.Fatalf("created %d flows for a retransmitted SYN, want 1", st.Created)
	}
}

// establish runs a full handshake of the plc rule (client ISN shown as 1000) and returns the
// client's and the server's ISNs.
func establish(t *testing.T, e *Engine, clientISN, serverISN uint32) {
	t.Helper()
	run(t, e, segment{src: client4, dst: server4, seq: clientISN, syn: true}.bytes(t))
	run(t, e, segment{src: server4, dst: client4, seq: serverISN, ack: 1001, syn: true, ackFlag: true}.bytes(t))
	run(t, e, segment{src: client4, dst: server4, seq: clientISN + 1, ack: serverISN + 1, ackFlag: true}.bytes(t))
	if f, _, _ := e.table.Lookup(client4, server4); f == nil || f.State() != flowtable.StateEstablished {
		t.Fatalf("handshake did not establish the flow: %v", f)
	}
}

// assure establishes the flow and has each side's data acknowledged by the other, so that
// it counts as established for eviction (assured).
func assure(t *testing.T, e *Engine, clientISN, serverISN uint32) {
	t.Helper()
	establish(t, e, clientISN, serverISN)
	run(t, e, segment{src: client4, dst: server4, seq: clientISN + 1, ack: serverISN + 1, ackFlag: true, payload: []byte("ping")}.bytes(t))
	run(t, e, segment{src: server4, dst: client4, seq: serverISN + 1, ack: 1005, ackFlag: true, payload: []byte("pong")}.bytes(t))
	run(t, e, segment{src: client4, dst: server4, seq: clientISN + 5, ack: serverISN + 5, ackFlag: true}.bytes(t))
	if f, _, _ := e.table.Lookup(client4, server4); f == nil || !f.Assured() {
		t.Fatalf("the exchange did not assure the flow: %v", f)
	}
}

func TestSYNOnEstablishedFlowKeepsItsOffsets(t *testing.T) {
	e, table := testEngine(t, "")
	establish(t, e, 5000, 9000)
	// A SYN with another ISN on the established tuple (forged, RFC 5961): shifted with the
	// connection's offsets, not a new flow.
	d := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 777777, syn: true}.bytes(t)))
	if want := uint32(777777 - 5000 + 1000); d.seq != want {
		t.Fatalf("SYN on an established flow: server saw seq %d, want %d (old offset)", d.seq, want)
	}
	// The server's challenge ACK leaves the connection as it was.
	d = decode(t, run(t, e, segment{src: server4, dst: client4, seq: 9001, ack: 1001, ackFlag: true}.bytes(t)))
	if d.ack != 5001 {
		t.Fatalf("challenge ACK reached the client acking %d, want 5001", d.ack)
	}
	if st := table.Stats(); st.Created != 1 {
		t.Fatalf("%d flows created, want 1: a SYN replaced an established flow", st.Created)
	}
	d = decode(t, run(t, e, segment{src: client4, dst: server4, seq: 5001, ack: 9001, ackFlag: true, payload: []byte("x")}.bytes(t)))
	if d.seq != 1001 {
		t.Fatalf("data after the forged SYN: server saw seq %d, want 1001", d.seq)
	}
}

func TestRestartedConnectionIsReadmittedOnItsSYNACK(t *testing.T) {
	e, table := testEngine(t, "")
	establish(t, e, 5000, 9000)
	// The client crashed and reconnects from the same port with a new ISN; the server has
	// forgotten the old connection and answers with a SYN-ACK.
	syn := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 40000, syn: true}.bytes(t)))
	synack := decode(t, run(t, e, segment{src: server4, dst: client4, seq: 123, ack: syn.seq + 1, syn: true, ackFlag: true}.bytes(t)))
	if synack.ack != 40001 || synack.seq != 123 {
		t.Fatalf("client saw SYN-ACK seq %d ack %d, want 123 (keep) and 40001", synack.seq, synack.ack)
	}
	d := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 40001, ack: 124, ackFlag: true, payload: []byte("x")}.bytes(t)))
	if d.seq != syn.seq+1 || d.ack != 124 {
		t.Fatalf("data of the restarted connection: server saw seq %d ack %d, want %d 124", d.seq, d.ack, syn.seq+1)
	}
	if st := table.Stats(); st.Created != 2 {
		t.Fatalf("%d flows created, want 2", st.Created)
	}
	if got := e.count(counterRestarted, 0); got != 1 {
		t.Fatalf("restarted counter %d, want 1", got)
	}
	// A retransmitted SYN-ACK of the new handshake is not another restart.
	run(t, e, segment{src: server4, dst: client4, seq: 123, ack: syn.seq + 1, syn: true, ackFlag: true}.bytes(t))
	if got := e.count(counterRestarted, 0); got != 1 {
		t.Fatalf("a retransmitted SYN-ACK counted as a restart (%d)", got)
	}
}

func TestPortReuseAfterCloseIsANewConnection(t *testing.T) {
	e, table := testEngine(t, "")
	establish(t, e, 5000, 9000)
	run(t, e, segment{src: client4, dst: server4, seq: 5001, ack: 9001, ackFlag: true, rst: true}.bytes(t))
	d := decode(t, run(t, e, segment{src: client4, dst: server4, seq: 60000, syn: true}.bytes(t)))
	if d.seq != 1000 {
		t.Fatalf("SYN after RST: server saw seq %d, want the rule's 1000", d.seq)
	}
	if st := table.Stats(); st.Created != 2 {
		t.Fatalf("%d flows created, want 2", st.Created)
	}
}

func TestUnmatchedPassesUntouchedAndStaysUntouchedAfterReload(t *testing.T) {
	e, _ := testEngine(t, "")
	other := netip.MustParseAddrPort("198.18.2.2:8080")
	pkt := segment{src: client4, dst: other, seq: 42, syn: true}.bytes(t)
	orig := append([]byte(nil), pkt...)
	if out := run(t, e, pkt); string(out) != string(orig) {
		t.Fatal("unmatched SYN was modified")
	}
	// A reload that now matches port 8080 must not start shifting the live connection.
	cfg, err := policy.Parse("new.yaml", []byte("rules:\n  - name: late\n    match: {server_ports: [8080]}\n    client_isn: fixed 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(&Policy{Config: cfg, Generation: 2})
	data := segment{src: client4, dst: other, seq: 43, ack: 9, ackFlag: true, payload: []byte("x")}.bytes(t)
	orig = append([]byte(nil), data...)
	if out := run(t, e, data); string(out) != string(orig) {
		t.Fatal("a connection that began unshifted was shifted after a reload")
	}
}

func TestMD5FlowExempt(t *testing.T) {
	e, table := testEngine(t, "")
	pkt := segment{src: client4, dst: server4, seq: 77, syn: true, md5: true}.bytes(t)
	orig := append([]byte(nil), pkt...)
	if out := run(t, e, pkt); string(out) != string(orig) {
		t.Fatal("TCP-MD5 SYN was modified")
	}
	f, _, ok := table.Lookup(client4, server4)
	if !ok || f.Exempt() != flowtable.ExemptTCPMD5 {
		t.Fatalf("flow tracked %t, exempt %v; want tcp_md5", ok, f)
	}
	if got := e.count(counterExempt, int(flowtable.ExemptTCPMD5)-1); got != 1 {
		t.Fatalf("exempt counter %d, want 1", got)
	}
}

func TestStatelessRulePicksUpMidStream(t *testing.T) {
	e, table := testEngine(t, "")
	srv := netip.MustParseAddrPort("198.18.2.2:5004")
	// A server->client segment first: the lower port is taken as the server.
	d := decode(t, run(t, e, segment{src: srv, dst: client4, seq: 1000, ack: 2000, ackFlag: true, payload: []byte("x")}.bytes(t)))
	if d.seq != 1000-7 || d.ack != 2000-5 {
		t.Fatalf("picked-up s2c seq %d ack %d, want %d %d", d.seq, d.ack, 1000-7, 2000-5)
	}
	if st := table.Stats(); st.Adopted != 1 {
		t.Fatalf("adopted %d, want 1", st.Adopted)
	}
}

// A gateway that never saw a connection's SYN cannot know the offsets a stateful side was given
// (by another gateway of a pair, or by a run that lost its snapshot): forwarding the segment raw
// could land inside the peer's window, so it is dropped and counted, in either direction and
// whatever its flags. Rules that need no state, and no rule at all, still pass.
func TestNoFlow_StatefulRuleIsDroppedNeverForwardedRaw(t *testing.T) {
	const extra = `
  - name: rnd
    match: {server_ports: [5010]}
    client_isn: random
    server_isn: random
  - name: seq
    match: {server_ports: [5011]}
    client_isn: keep
    server_isn: sequential 100 10
  - name: rng
    match: {server_ports: [5012]}
    client_isn: range 1-1000
    server_isn: keep
  - name: kept
    match: {server_ports: [5013]}
    client_isn: keep
    server_isn: keep
`
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(server4.Addr(), port) }
	for _, tc := range []struct {
		name     string
		seg      segment
		dropped  bool
		passedNF bool // counted as passed no_flow
	}{
		{"fixed client side, c2s data", segment{src: client4, dst: server4, seq: 5, ack: 6, ackFlag: true, payload: []byte("x")}, true, false},
		{"fixed client side, s2c data (reverse orientation)", segment{src: server4, dst: client4, seq: 6, ack: 5, ackFlag: true, payload: []byte("x")}, true, false},
		{"random both, pure ACK", segment{src: client4, dst: at(5010), seq: 5, ack: 6, ackFlag: true}, true, false},
		{"random both, SYN-ACK whose SYN went elsewhere", segment{src: at(5010), dst: client4, seq: 6, ack: 5, syn: true, ackFlag: true}, true, false},
		{"sequential server side, FIN", segment{src: at(5011), dst: client4, seq: 6, ack: 5, fin: true, ackFlag: true}, true, false},
		{"range client side, RST", segment{src: client6, dst: netip.AddrPortFrom(server6.Addr(), 5012), seq: 5, rst: true}, true, false},
		{"keep/keep passes untouched", segment{src: client4, dst: at(5013), seq: 5, ack: 6, ackFlag: true}, false, true},
		{"no rule passes untouched", segment{src: client4, dst: at(8080), seq: 5, ack: 6, ackFlag: true}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, table := testEngine(t, extra)
			pkt := tc.seg.bytes(t)
			orig := append([]byte(nil), pkt...)
			out := run(t, e, pkt)
			if tc.dropped != (out == nil) {
				t.Fatalf("written back %t, want dropped %t", out != nil, tc.dropped)
			}
			if out != nil && string(out) != string(orig) {
				t.Fatal("a segment with no flow was modified")
			}
			if got, want := e.count(counterDropped, int(DropNoState)), map[bool]uint64{true: 1}[tc.dropped]; got != want {
				t.Errorf("dropped no_state %d, want %d", got, want)
			}
			if got, want := e.count(counterPassed, int(PassNoFlow)), map[bool]uint64{true: 1}[tc.passedNF]; got != want {
				t.Errorf("passed no_flow %d, want %d", got, want)
			}
			if st := table.Stats(); st.Active != 0 || st.Adopted != 0 {
				t.Errorf("a segment with no flow left %d flows (%d adopted)", st.Active, st.Adopted)
			}
		})
	}
}

func TestMalformedCountedAndPassedOrDropped(t *testing.T) {
	for _, drop := range []bool{false, true} {
		extra := "malformed: pass\n"
		if drop {
			extra = "malformed: drop\n"
		}
		e, _ := testEngine(t, extra)
		pkt := segment{src: client4, dst: server4, seq: 1, syn: true}.bytes(t)
		pkt[20+12] = 0x20 // data offset 2 words: below the minimum of 5
		orig := append([]byte(nil), pkt...)
		out := run(t, e, pkt)
		if drop != (out == nil) {
			t.Fatalf("malformed %s: written back %t", extra, out != nil)
		}
		if !drop && string(out) != string(orig) {
			t.Fatal("malformed packet was modified")
		}
		var n uint64
		for i := range counterMalformed.Len() {
			n += e.count(counterMalformed, i)
		}
		if n != 1 {
			t.Fatalf("malformed counter %d, want 1", n)
		}
	}
}

// With `malformed: pass`, a segment an attacker (or a broken middlebox) makes unparseable must
// still never reach the other end with the raw sequence numbers of a shifted flow: such a
// packet is dropped and counted; malformed packets of unshifted flows and of no flow pass.
func TestMalformedOfAShiftedFlowIsDroppedEvenWithPass(t *testing.T) {
	const unshifted = `
  - name: untouched
    match: {server_ports: [8080]}
`
	e, _ := testEngine(t, unshifted+"malformed: pass\n")
	establish(t, e, 5000, 9000) // plc: the client's side is shifted
	plain := netip.MustParseAddrPort("198.18.2.2:8080")
	run(t, e, segment{src: client4, dst: plain, seq: 1, syn: true}.bytes(t))
	stranger := netip.MustParseAddrPort("198.18.2.9:9999")
	broken := func(src, dst netip.AddrPort, seq uint32) []byte {
		pkt := segment{src: src, dst: dst, seq: seq, ack: 9001, ackFlag: true, payload: []byte("x")}.bytes(t)
		pkt[20+12] = 0x20 // data offset 2 words: Classify finds it malformed
		return pkt
	}
	for _, tc := range []struct {
		name     string
		pkt      []byte
		passed   bool
		shiftedN uint64
	}{
		{"client to server of the shifted flow", broken(client4, server4, 5001), false, 1},
		{"server to client of the shifted flow", broken(server4, client4, 9001), false, 2},
		{"a flow with zero offsets", broken(client4, plain, 2), true, 2},
		{"no flow at all", broken(client4, stranger, 2), true, 2},
	} {
		orig := append([]byte(nil), tc.pkt...)
		out := run(t, e, tc.pkt)
		if (out != nil) != tc.passed {
			t.Errorf("%s: written back %t, want %t", tc.name, out != nil, tc.passed)
		}
		if out != nil && string(out) != string(orig) {
			t.Errorf("%s: a malformed packet was modified", tc.name)
		}
		if got := e.count(counterDropped, int(DropUnshiftable)); got != tc.shiftedN {
			t.Errorf("%s: dropped unshiftable %d, want %d", tc.name, got, tc.shiftedN)
		}
	}
}

func TestRunServesQueuesUntilClosed(t *testing.T) {
	cfg, err := policy.Parse("test.yaml", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	dev := newFakeDevice(false)
	e := New(dev, flowtable.New(flowtable.Config{MaxFlows: 16}), &Policy{Config: cfg, Generation: 1}, zap.NewNop())
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	dev.in <- segment{src: client4, dst: server4, seq: 9, syn: true}.bytes(t)
	select {
	case out := <-dev.out:
		if d := decode(t, out); d.seq != 1000 {
			t.Fatalf("SYN seq %d through Run, want 1000", d.seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet written back")
	}
	_ = dev.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func TestICMPFragNeededQuoteTranslatedBack(t *testing.T) {
	e, _ := testEngine(t, "")
	run(t, e, segment{src: client4, dst: server4, seq: 500, syn: true}.bytes(t))
	run(t, e, segment{src: server4, dst: client4, seq: 9000, ack: 1001, syn: true, ackFlag: true}.bytes(t))
	// What left the gateway toward the server: seq in the server's view (1001), ack in the
	// server's own space.
	shifted := segment{src: client4, dst: server4, seq: 1001, ack: 9001, ackFlag: true, payload: make([]byte, 1400)}.bytes(t)
	router := net.IP{198, 18, 3, 1}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded)}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: router, DstIP: net.IP(client4.Addr().AsSlice())}
	buf := gopacket.NewSerializeBuffer()
	// Linux quotes as much of the offending packet as fits in 576 bytes.
	quote := shifted[:548]
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, icmp, gopacket.Payload(quote)); err != nil {
		t.Fatal(err)
	}
	pkt := append([]byte(nil), buf.Bytes()...)
	if out := run(t, e, pkt); out == nil {
		t.Fatal("ICMP error dropped")
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatal("no ICMP layer")
	}
	q := ic.Payload
	seq := uint32(q[20+4])<<24 | uint32(q[20+5])<<16 | uint32(q[20+6])<<8 | uint32(q[20+7])
	ack := uint32(q[20+8])<<24 | uint32(q[20+9])<<16 | uint32(q[20+10])<<8 | uint32(q[20+11])
	if seq != 501 || ack != 9001 {
		t.Fatalf("quoted seq %d ack %d, want the client's own 501 and 9001", seq, ack)
	}
	// The ICMP checksum must still be valid: recompute over the ICMP message.
	var sum uint32
	msg := pkt[20:]
	for i := 0; i+1 < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	if len(msg)%2 == 1 {
		sum += uint32(msg[len(msg)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("ICMP checksum invalid after translation (folded sum %#x)", sum)
	}
	if got := e.count(counterICMPTranslated, 0); got != 1 {
		t.Fatalf("icmp_translated %d, want 1", got)
	}
}

// BenchmarkHandleData is the per-packet cost of the datapath for an established rewritten flow:
// classify, look up, observe, shift. It must not allocate.
func BenchmarkHandleData(b *testing.B) {
	e, _ := testEngine(b, "")
	run(b, e, segment{src: client4, dst: server4, seq: 1, syn: true}.bytes(b))
	run(b, e, segment{src: server4, dst: client4, seq: 50, ack: 1001, syn: true, ackFlag: true}.bytes(b))
	pkt := segment{src: client4, dst: server4, seq: 2, ack: 51, ackFlag: true, payload: make([]byte, 1400)}.bytes(b)
	c, pol := e.queues[0], e.Policy()
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		e.handle(c, pol, pkt, false, tcshift.Meta{})
	}
}

// fakeDevice is a tun.Device fed and drained through channels.
type fakeDevice struct {
	offload   bool
	in, out   chan []byte
	closeOnce sync.Once
	closed    chan struct{}
}

var _ tun.Device = (*fakeDevice)(nil)

func newFakeDevice(offload bool) *fakeDevice {
	return &fakeDevice{offload: offload, in: make(chan []byte, 16), out: make(chan []byte, 16), closed: make(chan struct{})}
}

func (d *fakeDevice) Name() string  { return "fake0" }
func (d *fakeDevice) Queues() int   { return 1 }
func (d *fakeDevice) Offload() bool { return d.offload }
func (d *fakeDevice) TAP() bool     { return false }
func (d *fakeDevice) MTU() int      { return 1500 }
func (d *fakeDevice) Read(q int, bufs [][]byte, sizes []int) (int, error) {
	select {
	case p := <-d.in:
		sizes[0] = copy(bufs[0], p)
		return 1, nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}
func (d *fakeDevice) Write(q int, bufs [][]byte) (int, error) {
	for _, b := range bufs {
		d.out <- append([]byte(nil), b...)
	}
	return len(bufs), nil
}
func (d *fakeDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

func TestWhenFullPassOrDrop(t *testing.T) {
	for _, drop := range []bool{false, true} {
		extra := "flows: {max: 1, when_full: pass}\n"
		if drop {
			extra = "flows: {max: 1, when_full: drop}\n"
		}
		cfg, err := policy.Parse("test.yaml", []byte(testPolicy+extra))
		if err != nil {
			t.Fatal(err)
		}
		table := flowtable.New(flowtable.Config{MaxFlows: cfg.Flows.Max})
		e := New(newFakeDevice(false), table, &Policy{Config: cfg, Generation: 1}, zap.NewNop())
		assure(t, e, 5000, 9000) // fills the table with an assured flow
		other := netip.MustParseAddrPort("198.18.1.3:40000")
		pkt := segment{src: other, dst: server4, seq: 1, syn: true}.bytes(t)
		orig := append([]byte(nil), pkt...)
		out := run(t, e, pkt)
		if drop != (out == nil) {
			t.Fatalf("%s: SYN that found the table full written back: %t", extra, out != nil)
		}
		if !drop && string(out) != string(orig) {
			t.Fatal("a SYN the table could not admit was modified")
		}
		if f, _, ok := table.Lookup(client4, server4); !ok || f.State() != flowtable.StateEstablished {
			t.Fatal("the established flow was evicted to make room")
		}
		if got := e.count(counterRefused, 0); got != 1 {
			t.Fatalf("refused %d, want 1", got)
		}
	}
}

// TestCounters_KeepTheirNames pins the metric names and status keys that dashboards, alerts,
// scripts and the netns suite read: the table may grow, but these must not move.
func TestCounters_KeepTheirNames(t *testing.T) {
	e, _ := testEngine(t, "")
	metricNames := map[string]bool{}
	statusKeys := map[string]bool{}
	for _, d := range e.Descs() {
		metricNames[d.Name] = true
		if d.Status == "" {
			continue
		}
		if !strings.Contains(d.Status, "%") {
			statusKeys[d.Status] = true
			continue
		}
		for _, v := range d.Values {
			statusKeys[fmt.Sprintf(d.Status, v[0])] = true
		}
	}
	for _, name := range []string{"passed_packets_total", "malformed_packets_total",
		"icmp_translated_packets_total", "flows_exempt_total", "flows_refused_total",
		"flows_adopted_total", "datapath_errors_total"} {
		if !metricNames[name] {
			t.Errorf("metric seqshiftd_%s is gone", name)
		}
	}
	for _, key := range []string{"rewritten_packets_c2s", "rewritten_packets_s2c", "rewritten_bytes_c2s",
		"rewritten_bytes_s2c", "icmp_translated", "flows_refused", "flows_adopted", "flows_restarted",
		"read_errors", "write_errors", "malformed", "passed_not_tcp", "passed_no_flow", "passed_exempt",
		"passed_zero_offset"} {
		if !statusKeys[key] {
			t.Errorf("status key %s is gone", key)
		}
	}
	// Every reason has its label, and none is counted for "none".
	if got := len(counterMalformed.Values); got != int(rewrite.NumReasons)-1 {
		t.Errorf("%d malformed labels for %d reasons", got, rewrite.NumReasons-1)
	}
	if got := len(counterExempt.Values); got != int(flowtable.NumExempt)-1 {
		t.Errorf("%d exempt labels for %d reasons", got, flowtable.NumExempt-1)
	}
	if vals := e.Values(); len(vals) != len(e.Descs()) {
		t.Errorf("%d value rows for %d families", len(vals), len(e.Descs()))
	}
}
