package flowtable

import (
	"testing"
	"time"
	"unsafe"
)

type seg struct {
	d     Dir
	flags uint8
	n     int // payload bytes
	want  State
}

const (
	c2s = ClientToServer
	s2c = ServerToClient
	SYN = FlagSYN
	ACK = FlagACK
	FIN = FlagFIN | FlagACK
	RST = FlagRST
	PSH = FlagPSH | FlagACK
)

func TestObserve_StateMachine(t *testing.T) {
	handshake := []seg{
		{c2s, SYN, 0, StateSynSent},
		{s2c, SYN | ACK, 0, StateSynRecv},
		{c2s, ACK, 0, StateEstablished},
	}
	for _, tc := range []struct {
		name  string
		adopt bool
		segs  []seg
	}{
		{"client closes first", false, append(handshake[:3:3],
			seg{c2s, PSH, 100, StateEstablished},
			seg{s2c, PSH, 1000, StateEstablished},
			seg{c2s, FIN, 0, StateFinWait},
			seg{c2s, FIN, 0, StateFinWait}, // retransmitted FIN
			seg{c2s, ACK, 0, StateFinWait}, // the closer's own ACK acknowledges nothing new
			seg{s2c, ACK, 0, StateCloseWait},
			seg{s2c, PSH, 500, StateCloseWait}, // half-closed: the server goes on sending
			seg{c2s, ACK, 0, StateCloseWait},
			seg{s2c, FIN, 0, StateLastAck},
			seg{s2c, FIN, 0, StateLastAck},
			seg{s2c, ACK, 0, StateLastAck}, // the second closer cannot acknowledge its own FIN
			seg{c2s, ACK, 0, StateTimeWait},
			seg{s2c, FIN, 0, StateTimeWait}, // a late retransmit
		)},
		{"server closes first", false, append(handshake[:3:3],
			seg{s2c, FIN, 0, StateFinWait},
			seg{c2s, ACK, 0, StateCloseWait},
			seg{c2s, FIN, 0, StateLastAck},
			seg{s2c, ACK, 0, StateTimeWait},
		)},
		{"simultaneous close", false, append(handshake[:3:3],
			seg{c2s, FIN, 0, StateFinWait},
			seg{s2c, FIN, 0, StateLastAck},
			seg{s2c, ACK, 0, StateLastAck},
			seg{c2s, ACK, 0, StateTimeWait},
		)},
		{"FIN before the handshake's last ACK", false, []seg{
			{c2s, SYN, 0, StateSynSent},
			{s2c, SYN | ACK, 0, StateSynRecv},
			{c2s, FIN, 0, StateFinWait},
			{s2c, ACK, 0, StateCloseWait},
		}},
		{"retransmitted SYN and early ACK", false, []seg{
			{c2s, SYN, 0, StateSynSent},
			{c2s, SYN, 0, StateSynSent},
			{c2s, ACK, 0, StateSynSent},
			{s2c, SYN | ACK, 0, StateSynRecv},
			{s2c, SYN | ACK, 0, StateSynRecv},
			{c2s, SYN, 0, StateSynRecv},
			{c2s, ACK, 0, StateEstablished},
			{c2s, SYN, 0, StateEstablished},
		}},
		{"simultaneous open", false, []seg{
			{c2s, SYN, 0, StateSynSent},
			{s2c, SYN, 0, StateSynRecv},
			{c2s, SYN | ACK, 0, StateSynRecv},
			{s2c, SYN | ACK, 0, StateSynRecv},
			{s2c, ACK, 0, StateEstablished},
		}},
		{"RST refused connection", false, []seg{
			{c2s, SYN, 0, StateSynSent},
			{s2c, RST | ACK, 0, StateClose},
			{c2s, ACK, 0, StateClose},
		}},
		{"data after RST revives", false, append(handshake[:3:3],
			seg{c2s, RST, 0, StateClose},
			seg{s2c, ACK, 0, StateClose},
			seg{s2c, PSH, 10, StateEstablished},
			seg{c2s, RST | ACK, 0, StateClose},
			seg{c2s, FIN, 20, StateFinWait}, // revived and closing in one segment
		)},
		{"RST while closing", false, append(handshake[:3:3],
			seg{c2s, FIN, 0, StateFinWait},
			seg{s2c, RST, 0, StateClose},
		)},
		{"adopted mid-stream", true, []seg{
			{s2c, PSH, 100, StateEstablished},
			{s2c, FIN, 0, StateFinWait},
			{c2s, FIN, 0, StateLastAck},
			{s2c, ACK, 0, StateTimeWait},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, _, _ := newTestTable(t, Config{MaxFlows: 8})
			c, s := ap("198.18.0.1:40000"), ap("198.19.0.1:443")
			admit := tab.Admit
			if tc.adopt {
				admit = tab.Adopt
			}
			f, err := admit(c, s, Init{})
			if err != nil {
				t.Fatal(err)
			}
			for i, sg := range tc.segs {
				f.Observe(sg.d, sg.flags, sg.n)
				if got := f.State(); got != sg.want {
					t.Fatalf("segment %d (%v flags %#x len %d): state %v, want %v", i, sg.d, sg.flags, sg.n, got, sg.want)
				}
				var want [NumStates]int
				want[sg.want] = 1
				if got := tab.Stats().ByState; got != want {
					t.Fatalf("segment %d: gauges %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestObserve_CountersAndLastSeen(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 8})
	f, _ := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{})
	if !f.Created().Equal(epoch) || !f.LastSeen().Equal(epoch) {
		t.Fatalf("created %v last seen %v, want %v", f.Created(), f.LastSeen(), epoch)
	}
	f.Observe(c2s, SYN, 0)
	f.Observe(s2c, SYN|ACK, 0)
	f.Observe(c2s, PSH, 1400)
	f.Observe(c2s, PSH, 600)
	if got := f.Counters(c2s); got != (Counters{Packets: 3, Bytes: 2000}) {
		t.Errorf("c2s counters %+v", got)
	}
	if got := f.Counters(s2c); got != (Counters{Packets: 1, Bytes: 0}) {
		t.Errorf("s2c counters %+v", got)
	}
	// Observe reads the coarse clock, which moves on the next tick (expiry slice, Admit...).
	clk.Advance(90 * time.Second)
	f.Observe(s2c, ACK, 0)
	if !f.LastSeen().Equal(epoch) {
		t.Errorf("last seen moved before the coarse clock did: %v", f.LastSeen())
	}
	tab.expire(1)
	f.Observe(s2c, ACK, 0)
	if want := epoch.Add(90 * time.Second); !f.LastSeen().Equal(want) {
		t.Errorf("last seen %v, want %v", f.LastSeen(), want)
	}
	if !f.Created().Equal(epoch) {
		t.Errorf("created moved to %v", f.Created())
	}
}

func TestObserve_DoesNotAllocate(t *testing.T) {
	tab := New(Config{MaxFlows: 8})
	f, _ := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{})
	if n := testing.AllocsPerRun(100, func() {
		f.Observe(c2s, SYN, 0)
		f.Observe(s2c, SYN|ACK, 0)
		f.Observe(c2s, PSH, 100)
		f.Observe(c2s, RST, 0)
	}); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

func TestResolveServerISN_FirstWins(t *testing.T) {
	tab := New(Config{MaxFlows: 8})
	f, _ := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{
		ClientOffset: 111, ClientISN: 5, Server: ServerPlan{Absolute: true, Value: 1000},
	})
	if f.Offset(c2s) != 111 || f.Offset(s2c) != 0 || f.ClientISN() != 5 {
		t.Fatalf("before the SYN-ACK: offsets %d %d isn %d", f.Offset(c2s), f.Offset(s2c), f.ClientISN())
	}
	f.ResolveServerISN(400)
	if got := f.Offset(s2c); got != 600 {
		t.Fatalf("offset s2c %d, want 600", got)
	}
	f.ResolveServerISN(400) // retransmitted SYN-ACK
	f.ResolveServerISN(7)   // a different ISN must not move it
	if got := f.Offset(s2c); got != 600 {
		t.Fatalf("offset s2c moved to %d", got)
	}
	// Wrap-around: the offset is modular.
	g, _ := tab.Admit(ap("198.18.0.2:40000"), ap("198.19.0.1:443"), Init{Server: ServerPlan{Absolute: true, Value: 1}})
	g.ResolveServerISN(2)
	if got := g.Offset(s2c); got != 1<<32-1 {
		t.Fatalf("offset s2c %d, want 2^32-1", got)
	}
}

func TestServerPlanRelative_KnownAtOnce(t *testing.T) {
	tab := New(Config{MaxFlows: 8})
	f, _ := tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{Server: ServerPlan{Value: 42}})
	if f.Offset(s2c) != 42 {
		t.Fatalf("offset s2c %d, want 42", f.Offset(s2c))
	}
	f.ResolveServerISN(9)
	if f.Offset(s2c) != 42 {
		t.Fatalf("ResolveServerISN moved a relative offset to %d", f.Offset(s2c))
	}
	// Adopt: Server.Value is the offset even if marked absolute.
	g, _ := tab.Adopt(ap("198.18.0.2:40000"), ap("198.19.0.1:443"), Init{ClientOffset: 3, Server: ServerPlan{Absolute: true, Value: 9}, Rule: "r", Generation: 4})
	if g.Offset(c2s) != 3 || g.Offset(s2c) != 9 || g.State() != StateEstablished || g.Rule() != "r" || g.Generation() != 4 {
		t.Fatalf("adopted %v: offsets %d %d rule %q gen %d", g, g.Offset(c2s), g.Offset(s2c), g.Rule(), g.Generation())
	}
}

// TestFlow_Layout pins the sizes the memory budget rests on: a 128-byte Flow (the per-packet
// counters on the second cache line) allocated with its 48-byte extension as one 176-byte
// object (one size class), a 40-byte key, 64-byte index groups.
func TestFlow_Layout(t *testing.T) {
	if s := unsafe.Sizeof(Flow{}); s != 128 {
		t.Errorf("Flow is %d bytes, want 128", s)
	}
	if s := unsafe.Sizeof(flowAlloc{}); s != 176 {
		t.Errorf("a flow's allocation is %d bytes, want 176", s)
	}
	if o := unsafe.Offsetof(flowAlloc{}.x); o != 128 {
		t.Errorf("extension at offset %d, want 128", o)
	}
	if o := unsafe.Offsetof(Flow{}.cnt); o != 64 {
		t.Errorf("counters at offset %d, want 64", o)
	}
	if s := unsafe.Sizeof(Key{}); s != 40 {
		t.Errorf("Key is %d bytes, want 40", s)
	}
	if s := unsafe.Sizeof(group{}); s != 64 {
		t.Errorf("group is %d bytes, want 64", s)
	}
	if s := unsafe.Sizeof(shard{}); s%64 != 0 {
		t.Errorf("shard is %d bytes, not whole cache lines", s)
	}
}
