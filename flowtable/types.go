package flowtable

import (
	"errors"
	"time"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// TCP flag bits as they appear in the TCP header's flags byte. Defined here rather than
// imported from rewrite/ so that the table does not depend on the packet parser.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// Dir is the direction a segment travels relative to the connection's client, the end that
// sent the first SYN.
type Dir uint8

// Directions.
const (
	ClientToServer Dir = 0
	ServerToClient Dir = 1
)

// Reverse returns the opposite direction.
func (d Dir) Reverse() Dir { return d ^ 1 }

// String returns "c2s" or "s2c", the labels used in the flows listing and metrics.
func (d Dir) String() string {
	switch d {
	case ClientToServer:
		return "c2s"
	case ServerToClient:
		return "s2c"
	}
	return "unknown"
}

// State is a connection's TCP state as seen from the middle, in the manner of Linux conntrack.
type State uint8

// States, in the order a connection normally passes through them.
const (
	StateSynSent     State = iota // client SYN seen
	StateSynRecv                  // server SYN-ACK (or a simultaneous-open SYN) seen
	StateEstablished              // handshake completed, or picked up mid-stream
	StateFinWait                  // one side sent FIN, not yet acknowledged
	StateCloseWait                // that FIN was acknowledged; the other side may still send
	StateLastAck                  // both sides sent FIN; waiting for the last ACK
	StateTimeWait                 // the last ACK was seen
	StateClose                    // RST seen
	NumStates                     // number of states, for arrays indexed by State
)

var stateNames = [NumStates]string{
	"syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close",
}

// String returns the conntrack-style snake_case name, e.g. "syn_sent".
func (s State) String() string {
	if s < NumStates {
		return stateNames[s]
	}
	return "unknown"
}

// Exempt says why a tracked flow must not be rewritten.
type Exempt uint8

// Exempt reasons.
const (
	ExemptNone   Exempt = iota // rewritten normally
	ExemptNoRule               // no rule matched at the SYN: tracked with zero offsets, so a reload never starts shifting it
	ExemptTCPMD5               // RFC 2385 signature covers the sequence numbers
	ExemptTCPAO                // RFC 5925 signature covers the sequence numbers
	// ExemptServerOpened: with the kernel datapath, a connection whose SYN came from beyond
	// the client-facing interface (its "server" opened it): tracked unshifted so that it is
	// never picked up mid-stream in the wrong orientation.
	ExemptServerOpened
	// ExemptObserve: the rule (or the whole policy) observes: the flow is admitted, tracked
	// and planned like an active one, its would-be offsets kept (Offset, Offsets), and not one
	// byte of it is rewritten (Deltas and QuoteDeltas are zero).
	ExemptObserve
	NumExempt // number of reasons, for arrays indexed by Exempt
)

var exemptNames = [NumExempt]string{"none", "no_rule", "tcp_md5", "tcp_ao", "server_opened", "observe"}

// String returns the reason's metrics label, e.g. "tcp_md5".
func (e Exempt) String() string {
	if e < NumExempt {
		return exemptNames[e]
	}
	return "unknown"
}

// Timeouts are how long a flow may stay idle in each state before expiry removes it. A zero (or
// negative) field means the default from DefaultTimeouts.
type Timeouts struct {
	SynSent     time.Duration `yaml:"syn_sent"`
	SynRecv     time.Duration `yaml:"syn_recv"`
	Established time.Duration `yaml:"established"`
	FinWait     time.Duration `yaml:"fin_wait"`
	CloseWait   time.Duration `yaml:"close_wait"`
	LastAck     time.Duration `yaml:"last_ack"`
	TimeWait    time.Duration `yaml:"time_wait"`
	Close       time.Duration `yaml:"close"`
	// Unassured caps the timeout of a flow not yet assured (see Flow.Assured), whatever its
	// state: it ends the junk a blind sender leaves (a spoofed SYN and a forged ACK make a
	// flow "established" that the server never completed) without waiting for the
	// established timeout.
	Unassured time.Duration `yaml:"unassured"`
}

// DefaultTimeouts returns the timeouts the package comment justifies.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		SynSent:     75 * time.Second,
		SynRecv:     60 * time.Second,
		Established: 5 * 24 * time.Hour,
		FinWait:     2 * time.Minute,
		CloseWait:   time.Hour,
		LastAck:     30 * time.Second,
		TimeWait:    2 * time.Minute,
		Close:       10 * time.Second,
		Unassured:   5 * time.Minute,
	}
}

// For returns the timeout of state s, the default where t leaves it zero.
func (t Timeouts) For(s State) time.Duration {
	return t.table()[s&7]
}

// table returns the timeouts indexed by state with defaults filled in.
func (t Timeouts) table() [NumStates]time.Duration {
	d := DefaultTimeouts()
	v := [NumStates]time.Duration{t.SynSent, t.SynRecv, t.Established, t.FinWait, t.CloseWait, t.LastAck, t.TimeWait, t.Close}
	def := [NumStates]time.Duration{d.SynSent, d.SynRecv, d.Established, d.FinWait, d.CloseWait, d.LastAck, d.TimeWait, d.Close}
	for i := range v {
		if v[i] <= 0 {
			v[i] = def[i]
		}
	}
	return v
}

// Clock tells the time as nanoseconds since the Unix epoch. Tests inject a fake one; the
// default follows the monotonic clock from the wall time at start-up, so that a wall-clock
// step (NTP, an admin) neither expires every flow at once nor keeps them forever.
type Clock interface {
	Now() int64
}

// ClockFunc adapts a function to Clock.
type ClockFunc func() int64

// Now calls f.
func (f ClockFunc) Now() int64 { return f() }

// monotonicClock is the default Clock: wall time at creation plus monotonic time since.
type monotonicClock struct{ start time.Time }

func (c monotonicClock) Now() int64 { return c.start.UnixNano() + int64(time.Since(c.start)) }

// ServerPlan says how the server side's offset is fixed once its ISN is seen in the SYN-ACK.
type ServerPlan struct {
	// Absolute: the server's ISN is to appear as Value (a seqnum.Value), so offset = Value -
	// ISN. Otherwise the offset is Value itself (a seqnum.Delta) and is known at once. It is
	// kept as a plain uint32 because it is either.
	Absolute bool
	Value    uint32
}

// Init is what the datapath decided for a new flow at its SYN (Admit) or on pick-up (Adopt).
type Init struct {
	ClientOffset seqnum.Delta // added to the client's sequence numbers
	Server       ServerPlan   // how the server's offset is fixed
	ClientISN    uint32       // the SYN's sequence number: tells a retransmitted SYN from a new connection
	Rule         string       // name of the rule that set the offsets ("" for none)
	Generation   uint64       // policy generation the rule came from
	Exempt       Exempt       // why the flow must not be rewritten, if it must not
}

// Counters are one direction's traffic on a flow.
type Counters struct {
	Packets uint64
	Bytes   uint64 // TCP payload bytes
}

// Stats is a point-in-time summary of the table. Fields are read without a global lock, so
// they may be mutually off by the few flows changing while they are summed.
type Stats struct {
	Active   int            // live flows
	ByState  [NumStates]int // live flows per state, indexed by State
	Created  uint64         // flows created by Admit (including replacements)
	Adopted  uint64         // flows picked up mid-stream by Adopt
	Replaced uint64         // flows replaced by a new connection on the same tuple (port reuse)
	Restored uint64         // flows loaded from a snapshot
	Expired  uint64         // flows removed by their state's timeout
	Evicted  uint64         // embryonic or closing flows removed early to make room
	Refused  uint64         // Admit/Adopt/Restore calls that found no room (ErrFull)
	// Unassured: live flows of which one side has not yet had anything acknowledged by the
	// other outside a SYN (embryonic ones included); evicted first, short timeout.
	Unassured int
}

// ErrFull is returned when the table holds MaxFlows flows and none of them may be evicted. It is
// returned unwrapped so that the datapath can compare it without allocating.
var ErrFull = errors.New("flowtable: full: no embryonic or closing flow to evict")

// ErrCorrupt is wrapped by every Restore error about the file's contents (bad magic, version,
// checksum, truncation, impossible values), as opposed to errors opening or reading it.
var ErrCorrupt = errors.New("corrupt snapshot")
