package datapath

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/rewrite"
)

// Pass says why a packet was written back without a rewrite.
type Pass uint8

// Reasons a packet passes untouched.
const (
	PassNotTCP     Pass = iota // neither TCP nor an ICMP error quoting TCP
	PassNoFlow                 // TCP without a tracked flow and no rule able to pick it up
	PassExempt                 // its flow is exempt (no rule, TCP-MD5, TCP-AO)
	PassZeroOffset             // its flow's offsets are both zero (keep/keep)
	numPass
)

var passNames = [numPass]string{"not_tcp", "no_flow", "exempt", "zero_offset"}

// String returns the metrics label of the reason.
func (p Pass) String() string {
	if p < numPass {
		return passNames[p]
	}
	return "unknown"
}

// directionCounters counts rewritten traffic of one direction: packets as read from the TUN (a
// GSO super-packet counts once) and TCP payload bytes, as the flows and the metrics count them.
type directionCounters struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64
}

// Counters are one queue's counters. Only that queue's goroutine writes them, so the atomic adds
// are uncontended; they are atomic so that a scrape can read them while the queue runs. The
// padding keeps two queues' counters off the same cache line.
type Counters struct {
	_              [64]byte
	Rewritten      [2]directionCounters
	ICMPTranslated atomic.Uint64
	Passed         [numPass]atomic.Uint64
	Malformed      [rewrite.NumReasons]atomic.Uint64
	Exempt         [flowtable.NumExempt]atomic.Uint64
	Refused        atomic.Uint64
	Adopted        atomic.Uint64
	Restarted      atomic.Uint64
	ReadErrors     atomic.Uint64
	WriteErrors    atomic.Uint64
	_              [64]byte
}

// CounterValues is a plain sum of all queues' counters.
type CounterValues struct {
	RewrittenPackets [2]uint64
	RewrittenBytes   [2]uint64
	ICMPTranslated   uint64
	Passed           [numPass]uint64
	Malformed        [rewrite.NumReasons]uint64
	Exempt           [flowtable.NumExempt]uint64
	Refused          uint64
	Adopted          uint64
	Restarted        uint64
	ReadErrors       uint64
	WriteErrors      uint64
}

func (c *Counters) addTo(v *CounterValues) {
	for d := range c.Rewritten {
		v.RewrittenPackets[d] += c.Rewritten[d].Packets.Load()
		v.RewrittenBytes[d] += c.Rewritten[d].Bytes.Load()
	}
	v.ICMPTranslated += c.ICMPTranslated.Load()
	for i := range c.Passed {
		v.Passed[i] += c.Passed[i].Load()
	}
	for i := range c.Malformed {
		v.Malformed[i] += c.Malformed[i].Load()
	}
	for i := range c.Exempt {
		v.Exempt[i] += c.Exempt[i].Load()
	}
	v.Refused += c.Refused.Load()
	v.Adopted += c.Adopted.Load()
	v.Restarted += c.Restarted.Load()
	v.ReadErrors += c.ReadErrors.Load()
	v.WriteErrors += c.WriteErrors.Load()
}

// rateLimiter lets one warning per key through per interval, so a flood of bad packets or
// refused flows costs one log line a minute, not one per packet.
type rateLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
}

func newRateLimiter(interval time.Duration) *rateLimiter {
	return &rateLimiter{interval: interval, last: make(map[string]time.Time)}
}

func (r *rateLimiter) allow(key string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[key]; ok && now.Sub(t) < r.interval {
		return false
	}
	r.last[key] = now
	return true
}
