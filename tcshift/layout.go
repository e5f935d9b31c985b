package tcshift

import (
	"encoding/binary"
	"net/netip"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// Directions, the indexes of FlowValue's per-direction arrays (DIR_C2S and DIR_S2C in maps.h),
// the same as flowtable's Dir values.
const (
	C2S = int(flowtable.ClientToServer) // client -> server: rewritten at X's tc ingress
	S2C = int(flowtable.ServerToClient) // server -> client: rewritten at X's tc egress
)

// Hook says which program sent a packet to the daemon (enum hook in maps.h).
type Hook uint8

// Hooks.
const (
	HookIngress Hook = 1 // client_ingress: a packet arriving on X
	HookEgress  Hook = 2 // client_egress: a packet leaving X
)

// Dir returns the direction of the segments the hook sees: C2S at ingress, S2C at egress.
func (h Hook) Dir() int {
	if h == HookEgress {
		return S2C
	}
	return C2S
}

// String returns "ingress" or "egress".
func (h Hook) String() string {
	switch h {
	case HookIngress:
		return "ingress"
	case HookEgress:
		return "egress"
	}
	return "unknown"
}

// Reason says why a packet went to the daemon. Its values are the first entries of the
// counters (enum stat in maps.h): Reason r is counted in Counters[r].
type Reason uint8

// Reasons.
const (
	ReasonNoFlow     Reason = Reason(StatToDaemonNoFlow)     // intercepted TCP of no flow: a new connection
	ReasonDaemonMode Reason = Reason(StatToDaemonDaemonMode) // a flow in ModeDaemon
	ReasonFlags      Reason = Reason(StatToDaemonFlags)      // SYN, FIN or RST of a ModeKernel flow
	ReasonICMP       Reason = Reason(StatToDaemonICMP)       // an ICMP or ICMPv6 error
	ReasonUnparsed   Reason = Reason(StatToDaemonUnparsed)   // intercepted, but beyond what the programs parse
	NumReasons              = int(StatToDaemonUnparsed) + 1
)

// String returns the reason's label, as in the counters table.
func (r Reason) String() string {
	if int(r) < NumReasons {
		return Counters[r].Value
	}
	return "unknown"
}

// EthHeaderLen is the length of the Ethernet header that carries Meta.
const EthHeaderLen = 14

// metaMagic is the first byte of a frame's destination MAC when it carries Meta (META_MAGIC):
// unicast and locally administered, never a real station's address.
const metaMagic = 0x5e

// Meta is what the programs write into the destination MAC of a frame they send to the
// daemon: which hook, why, and the client-facing interface. The daemon writes the frame back
// to the TAP with its Ethernet header as it came (tap_ingress reads Meta from it again).
type Meta struct {
	Hook    Hook
	Reason  Reason
	Ifindex int
}

// ReadMeta reads Meta from a frame that starts at its Ethernet header. ok is false when the
// frame does not carry valid metadata. It never allocates.
func ReadMeta(frame []byte) (m Meta, ok bool) {
	if len(frame) < EthHeaderLen || frame[0] != metaMagic {
		return Meta{}, false
	}
	h, r := Hook(frame[1]&3), Reason(frame[1]>>2)
	if (h != HookIngress && h != HookEgress) || int(r) >= NumReasons {
		return Meta{}, false
	}
	return Meta{Hook: h, Reason: r, Ifindex: int(binary.BigEndian.Uint32(frame[2:6]))}, true
}

// Mode says who rewrites a flow's segments (enum mode in maps.h).
type Mode uint8

// Modes.
const (
	ModeDaemon Mode = 0 // every segment goes to the daemon
	ModeKernel Mode = 1 // the programs shift data segments; SYN, FIN, RST still go to the daemon
)

// FlowKey mirrors struct flow_key: the connection as client -> server. It is a comparable
// value; IPv4 addresses are held as ::ffff:a.b.c.d.
type FlowKey struct {
	Client, Server         [16]byte
	ClientPort, ServerPort [2]byte // big-endian, as on the wire
	Family                 uint8   // 4 or 6
	_                      [3]byte
}

// KeyOf returns the key of the connection from client to server. It never allocates.
func KeyOf(client, server netip.AddrPort) FlowKey {
	k := FlowKey{Client: client.Addr().As16(), Server: server.Addr().As16(), Family: 6}
	if client.Addr().Is4() {
		k.Family = 4
	}
	binary.BigEndian.PutUint16(k.ClientPort[:], client.Port())
	binary.BigEndian.PutUint16(k.ServerPort[:], server.Port())
	return k
}

// Endpoints returns the client and the server of the connection.
func (k FlowKey) Endpoints() (client, server netip.AddrPort) {
	addr := func(b [16]byte) netip.Addr {
		if k.Family == 4 {
			return netip.AddrFrom4([4]byte(b[12:]))
		}
		return netip.AddrFrom16(b)
	}
	return netip.AddrPortFrom(addr(k.Client), binary.BigEndian.Uint16(k.ClientPort[:])),
		netip.AddrPortFrom(addr(k.Server), binary.BigEndian.Uint16(k.ServerPort[:]))
}

// String returns "client -> server".
func (k FlowKey) String() string {
	c, s := k.Endpoints()
	return c.String() + " -> " + s.String()
}

// FlowValue mirrors struct flow_val. The daemon writes the deltas, Ifindex and Mode; the
// programs write Packets, Bytes, LastSeen and Window of ModeKernel flows.
type FlowValue struct {
	SeqDelta [2]seqnum.Delta // added to the seq of segments travelling in [dir]
	AckDelta [2]seqnum.Delta // added to the ack and every SACK edge of segments travelling in [dir]
	Ifindex  uint32          // the client-facing interface the flow was decided on
	Mode     Mode
	Flags    uint8 // the daemon's own; the programs never read or write it
	_        [2]byte
	Packets  [2]uint64 // segments handled by the programs (rewritten, or zero deltas)
	Bytes    [2]uint64 // their TCP payload bytes
	LastSeen uint64    // CLOCK_BOOTTIME ns of the last of them
	Window   [2]Window // conntrack's window state, per direction, in the sender's own space
}

// SetOffsets sets both directions' deltas from a flow's offsets (indexed by direction, as
// flowtable keeps them), by flowtable.DeltasOf: the one statement of the sign rules.
func (v *FlowValue) SetOffsets(off [2]seqnum.Delta) {
	for d := range v.SeqDelta {
		ds := flowtable.DeltasOf(off, flowtable.Dir(d))
		v.SeqDelta[d], v.AckDelta[d] = ds.Seq, ds.Ack
	}
}

// Window mirrors struct flow_window: Linux conntrack's per-direction TCP state (td_end,
// td_maxend, td_maxwin, td_scale), in the sequence space of the direction's sender (before
// any shift). The programs keep End, MaxWin and MaxEnd updated for ModeKernel segments; they
// never act on them.
type Window struct {
	End    uint32 // highest seq + len sent
	MaxEnd uint32 // highest ack + scaled window the receiver allowed
	MaxWin uint32 // largest scaled window this sender advertised
	Scale  uint8  // this sender's window scale, used when Flags has WindowScale
	Flags  uint8  // Window* flags
	_      [2]byte
}

// Window flags (WIN_F_* in maps.h).
const (
	WindowScale  = 0x01 // Scale is in use (both SYNs carried the option); set by the daemon
	WindowEnd    = 0x02 // End and MaxWin hold a value; otherwise the next segment sets them
	WindowMaxEnd = 0x04 // MaxEnd holds a value
)
