package tcpwindow

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// The model: two TCP endpoints that follow RFC 9293's send and receive rules (in-order
// receiver, go-back-N retransmission, constant receive windows with RFC 7323 scaling) talk
// through a gateway running the tracker. Segments are lost before the gateway (it never sees
// them), lost after it, delayed and reordered. A blind attacker injects RSTs, SYNs and FINs
// with numbers near the receiver's window.
//
// Properties checked, for thousands of random connections:
//   - every segment an endpoint sends is forwarded (a receiver's acceptable segment is never
//     dropped, nor a retransmission or a reordered ACK);
//   - no forged segment whose numbers a real receiver would reject changes state (its verdict
//     is not Accept), and no segment with any verdict but Accept changes the record;
//   - an RST a receiver would act on at once (seq = RCV.NXT with nothing in flight) closes.

type endpoint struct {
	sndUna, sndNxt uint32
	sndWnd         uint32 // the peer's window, scaled, as last advertised
	rcvNxt         uint32
	rcvWnd         uint32 // own receive window in bytes (constant)
	scale          uint8  // shift of the windows this end advertises
}

func (e *endpoint) win() uint16 { return uint16(e.rcvWnd >> e.scale) }

type inflight struct {
	to  int // receiving endpoint
	seg Segment
}

type model struct {
	t        *testing.T
	rng      *rand.Rand
	w        Conn
	ep       [2]endpoint
	net      []inflight
	mss      uint32
	desc     string
	forged   bool // a forged segment was accepted: stop forging
	absent   bool // the gateway is not tracking yet: the flow is picked up later
	pickedUp bool
}

// gateway passes a legitimate segment from endpoint d through the tracker.
func (m *model) gateway(d int, seg Segment, opening bool) {
	m.t.Helper()
	if m.absent {
		m.net = append(m.net, inflight{d ^ 1, seg})
		return
	}
	before := [2]Side{m.w.Load(0), m.w.Load(1)}
	v := m.w.Track(d, &seg, opening)
	if dbg {
		m.t.Logf("%d %+v -> %v  %+v %+v", d, seg, v, m.w.Load(0), m.w.Load(1))
	}
	if !v.Forward() {
		m.t.Fatalf("%s: legitimate segment from %d %+v got %v\n sender %+v\n receiver %+v\n record before %+v",
			m.desc, d, seg, v, m.ep[d], m.ep[d^1], before)
	}
	if m.rng.IntN(10) == 0 {
		return // lost after the gateway
	}
	m.net = append(m.net, inflight{d ^ 1, seg})
}

func (m *model) send(d int, seq, n uint32, flags uint8) {
	e := &m.ep[d]
	seg := Segment{Seq: v(seq), Ack: v(e.rcvNxt), Len: seqnum.Size(n), Window: e.win(), Flags: flags | flagACK}
	if m.rng.IntN(20) == 0 {
		return // lost before the gateway: nobody sees it
	}
	m.gateway(d, seg, false)
}

func (m *model) deliver(i int) {
	in := m.net[i]
	m.net = append(m.net[:i], m.net[i+1:]...)
	e, seg := &m.ep[in.to], in.seg
	if ack := uint32(seg.Ack); seg.Flags&flagACK != 0 && later(ack, e.sndUna) && !later(ack, e.sndNxt) {
		e.sndUna = ack
		e.sndWnd = uint32(seg.Window) << m.ep[in.to^1].scale
	}
	if seg.Len > 0 {
		if uint32(seg.Seq) == e.rcvNxt {
			e.rcvNxt += uint32(seg.Len)
		}
		m.send(in.to, e.sndNxt, 0, 0) // ACK (a duplicate one for out-of-order data)
	}
}

// forge injects a blind segment towards endpoint `to` and checks what the tracker says.
func (m *model) forge(to int) {
	m.t.Helper()
	from := to ^ 1
	r := &m.ep[to]
	near := func(v uint32) uint32 { return v + uint32(m.rng.IntN(1<<22)) - 1<<21 }
	var seg Segment
	kind := m.rng.IntN(3)
	if m.pickedUp && kind == 2 {
		// A picked-up flow knows its windows only unscaled, so a FIN near the window with a
		// plausible ack may pass where the receiver's real window ends (conntrack accepts
		// anything there). RSTs stay exact and SYNs never count.
		kind = 0
	}
	switch kind {
	case 0:
		seg = Segment{Seq: v(near(r.rcvNxt)), Flags: flagRST}
	case 1:
		seg = Segment{Seq: v(m.rng.Uint32()), Flags: flagSYN, Window: 1000}
	case 2:
		seg = Segment{Seq: v(near(r.rcvNxt)), Ack: v(near(r.sndNxt)), Flags: flagFIN | flagACK, Window: 1000}
	}
	before := [2]Side{m.w.Load(0), m.w.Load(1)}
	v := m.w.Track(from, &seg, false)
	if v == AcceptLiberal && !before[from].Seen() {
		// A pick-up learns a side from its first segment, forged or not: nothing can tell.
		// The record now follows the attacker's numbers, so the attack ends here (the flow
		// stays unassured: the real side never acknowledges them).
		m.forged = true
		return
	}
	if v != Accept {
		if after := [2]Side{m.w.Load(0), m.w.Load(1)}; after != before && !(v == AcceptLiberal && after[to] == before[to]) {
			m.t.Fatalf("%s: forged %+v got %v but changed the record\n before %+v\n after  %+v", m.desc, seg, v, before, after)
		}
		return
	}
	if dbg {
		m.t.Logf("FORGED %d %+v -> %v  %+v %+v", from, seg, v, m.w.Load(0), m.w.Load(1))
	}
	sq, ak := uint32(seg.Seq), uint32(seg.Ack)
	inWindow := !later(r.rcvNxt, sq) && later(r.rcvNxt+r.rcvWnd, sq)
	switch kind {
	case 0:
		if !inWindow {
			m.t.Fatalf("%s: forged RST seq %d outside the receiver's window [%d, +%d) accepted", m.desc, seg.Seq, r.rcvNxt, r.rcvWnd)
		}
	case 1:
		m.t.Fatalf("%s: forged SYN on a live connection accepted", m.desc)
	case 2:
		if !inWindow || later(ak, r.sndNxt) || later(r.sndUna, ak+1<<30) {
			m.t.Fatalf("%s: forged FIN %+v accepted; receiver %+v", m.desc, seg, *r)
		}
		// A FIN a receiver would take: the tracker may take it too. The record has moved
		// where the endpoints did not, so the attacker stops here.
		m.forged = true
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	m := &model{t: t, rng: rng, mss: uint32(536 + rng.IntN(9000))}
	var opt [2]uint8
	var isn [2]uint32
	for d := range m.ep {
		isn[d] = rng.Uint32()
		if rng.IntN(4) != 0 {
			opt[d] = OptWScale
			m.ep[d].scale = uint8(rng.IntN(15))
		}
	}
	if opt[0] == 0 || opt[1] == 0 {
		m.ep[0].scale, m.ep[1].scale = 0, 0
	}
	for d := range m.ep {
		m.ep[d].rcvWnd = 1 + uint32(rng.Int64N(int64(65535)<<m.ep[d].scale))
		m.ep[d].sndUna, m.ep[d].sndNxt = isn[d], isn[d]+1
		m.ep[d^1].rcvNxt = isn[d] + 1
	}
	m.desc = fmt.Sprintf("seed %d", seed)
	// Handshake (not lost: the model's point is what comes after it).
	c, s := &m.ep[0], &m.ep[1]
	synWin := func(e *endpoint) uint16 { return uint16(min(e.rcvWnd, 65535)) }
	if v := m.w.Track(0, &Segment{Seq: v(isn[0]), Flags: flagSYN, Window: synWin(c), Opts: opt[0], WScale: c.scale}, true); v != Accept {
		t.Fatalf("SYN: %v", v)
	}
	if v := m.w.Track(1, &Segment{Seq: v(isn[1]), Ack: v(isn[0] + 1), Flags: flagSYN | flagACK, Window: synWin(s), Opts: opt[1] & opt[0], WScale: s.scale}, true); v != Accept {
		t.Fatalf("SYN-ACK: %v", v)
	}
	c.sndUna, s.sndUna = c.sndNxt, s.sndNxt
	c.sndWnd, s.sndWnd = uint32(synWin(s)), uint32(synWin(c))
	if v := m.w.Track(0, &Segment{Seq: v(c.sndNxt), Ack: v(c.rcvNxt), Flags: flagACK, Window: c.win()}, true); v != Accept {
		t.Fatalf("ACK: %v", v)
	}
	s.sndWnd = uint32(c.win()) << c.scale
	pickUp := seed%4 == 3 // the gateway comes up mid-stream, without state: conntrack's pick-up
	if pickUp {
		m.w = Conn{}
		m.absent, m.pickedUp = true, true
	}
	for i := range 400 {
		if pickUp && i == 100 {
			m.absent = false
		}
		d := rng.IntN(2)
		e := &m.ep[d]
		switch op := rng.IntN(10); {
		case op < 4: // new data
			room := e.sndUna + e.sndWnd - e.sndNxt
			if int32(room) <= 0 {
				continue
			}
			n := min(room, 1+uint32(rng.IntN(int(m.mss))))
			seq := e.sndNxt
			e.sndNxt += n
			m.send(d, seq, n, 0)
		case op < 5: // go-back-N retransmission
			if n := min(e.sndNxt-e.sndUna, m.mss); n > 0 {
				m.send(d, e.sndUna, n, 0)
			}
		case op < 8: // delivery, in any order
			if len(m.net) > 0 {
				m.deliver(rng.IntN(len(m.net)))
			}
		case op < 9: // keep-alive: one below SND.NXT, no data
			m.send(d, e.sndNxt-1, 0, 0)
		default:
			if !m.forged && !m.absent {
				m.forge(d)
			}
		}
	}
	// Drain the network, then each side closes with a FIN and the other acknowledges it.
	for len(m.net) > 0 {
		m.deliver(0)
	}
	for d := range 2 {
		e := &m.ep[d]
		for e.sndUna != e.sndNxt { // retransmit what was lost, without loss now
			seq, n := e.sndUna, min(e.sndNxt-e.sndUna, m.mss)
			m.gatewayNoLoss(d, Segment{Seq: v(seq), Ack: v(e.rcvNxt), Len: seqnum.Size(n), Window: e.win(), Flags: flagACK})
			m.ep[d^1].rcvNxt = max32(m.ep[d^1].rcvNxt, seq+n)
			e.sndUna = seq + n
		}
	}
	// The exact RST of an endpoint that aborts, with nothing in flight, closes (unless a
	// forged FIN the receiver would also have taken moved the record beyond the endpoint).
	if m.forged {
		return
	}
	d := rng.IntN(2)
	if v := m.w.Track(d, &Segment{Seq: v(m.ep[d].sndNxt), Flags: flagRST}, false); v != Accept {
		t.Fatalf("%s: exact RST at SND.NXT %d: %v (record %+v)", m.desc, m.ep[d].sndNxt, v, m.w.Load(d))
	}
}

func (m *model) gatewayNoLoss(d int, seg Segment) {
	m.t.Helper()
	if v := m.w.Track(d, &seg, false); !v.Forward() {
		m.t.Fatalf("%s: retransmission %+v from %d got %v (record %+v / %+v)", m.desc, seg, d, v, m.w.Load(d), m.w.Load(d^1))
	}
}

var dbg bool

// v and later keep the model's own arithmetic in plain uint32, apart from the tracker's types.
func v(x uint32) seqnum.Value { return seqnum.Value(x) }

func later(a, b uint32) bool { return int32(a-b) > 0 }

func max32(a, b uint32) uint32 {
	if later(a, b) {
		return a
	}
	return b
}

var modelSeeds = flag.Int("model.seeds", 3000, "connections TestTrack_ModelOfTwoEndpoints runs")

func TestTrack_ModelOfTwoEndpoints(t *testing.T) {
	n := *modelSeeds
	if testing.Short() {
		n = min(n, 300)
	}
	for seed := range uint64(n) {
		runModel(t, seed)
		if t.Failed() {
			return
		}
	}
}
