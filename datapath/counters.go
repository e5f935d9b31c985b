package datapath

import (
	"sync"
	"time"

	"github.com/seqshiftd/seqshiftd/counter"
	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// Pass says why a packet was written back without a rewrite.
type Pass uint8

// Reasons a packet passes untouched.
const (
	PassNotTCP     Pass = iota // neither TCP nor an ICMP error quoting TCP
	PassNoFlow                 // TCP without a tracked flow whose rule is none or keep/keep
	PassExempt                 // its flow is exempt (no rule, TCP-MD5, TCP-AO, observed)
	PassZeroOffset             // its flow's offsets are both zero (keep/keep)
	PassOtherHook              // an ICMP error caught where it is not to be translated (kernel datapath)
	numPass
)

var passNames = [numPass]string{"not_tcp", "no_flow", "exempt", "zero_offset", "icmp_other_hook"}

// String returns the metrics label of the reason.
func (p Pass) String() string {
	if p < numPass {
		return passNames[p]
	}
	return "unknown"
}

// Drop says why the datapath itself dropped a packet (malformed drops are counted by their
// rewrite reason, a full table's as refused).
type Drop uint8

// Reasons a packet is dropped.
const (
	// DropNoState: TCP without a tracked flow whose rule has a stateful side (fixed, random,
	// sequential, range), so its offsets cannot be recomputed here; as after a failover to a
	// gateway that never saw the SYN.
	DropNoState Drop = iota
	// DropUnshiftable: a packet of a shifted flow that could not be shifted (Classify or Shift
	// found it malformed, or an ICMP quote could not be translated): forwarded, it would show
	// each end the other's raw numbers, so it is dropped whatever `malformed` says.
	DropUnshiftable
	numDrop
)

var dropNames = [numDrop]string{"no_state", "unshiftable"}

// String returns the metrics label of the reason.
func (d Drop) String() string {
	if d < numDrop {
		return dropNames[d]
	}
	return "unknown"
}

// The datapath's counters, each described once: status, the Prometheus endpoint and the tests
// read them through Engine's counter.Set. A new counter is one Desc here, in table, plus its
// increment. Help texts and names are what dashboards and alerts already use: keep them.
var (
	counterRewrittenPackets = &counter.Desc{
		Name:   "datapath_rewritten_packets_total",
		Help:   "Packets whose sequence numbers the datapath shifted, by direction (c2s: from the client). With TUN offload a GSO super-packet counts once.",
		Labels: []string{"direction"}, Values: byDir, Status: "rewritten_packets_%s",
	}
	counterRewrittenBytes = &counter.Desc{
		Name:   "datapath_rewritten_bytes_total",
		Help:   "TCP payload bytes of the packets whose sequence numbers the datapath shifted, by direction.",
		Labels: []string{"direction"}, Values: byDir, Status: "rewritten_bytes_%s",
	}
	counterICMPTranslated = &counter.Desc{
		Name:   "icmp_translated_packets_total",
		Help:   "ICMP errors quoting a rewritten TCP segment whose quoted sequence numbers were translated.",
		Status: "icmp_translated",
	}
	counterPassed = &counter.Desc{
		Name:   "passed_packets_total",
		Help:   "Packets written back without a rewrite, by reason.",
		Labels: []string{"reason"}, Values: counter.Each(passNames[:]...), Status: "passed_%s",
	}
	counterDropped = &counter.Desc{
		Name:   "dropped_packets_total",
		Help:   "Packets the datapath dropped, by reason (no_state: TCP with no flow under a rule with a stateful side, as after a failover to a gateway that never saw the SYN; unshiftable: a packet of a shifted flow that could not be shifted, dropped whatever the malformed setting says).",
		Labels: []string{"reason"}, Values: counter.Each(dropNames[:]...), Status: "dropped_%s",
	}
	// Indexed by rewrite.Reason - 1: ReasonNone is no reason to count.
	counterMalformed = &counter.Desc{
		Name:   "malformed_packets_total",
		Help:   "Packets that could not be parsed or rewritten, by reason; they are passed or dropped per the malformed setting.",
		Labels: []string{"reason"}, Values: malformedReasons(), Status: "malformed",
	}
	// Indexed by flowtable.Exempt - 1: ExemptNone flows are rewritten.
	counterExempt = &counter.Desc{
		Name:   "flows_exempt_total",
		Help:   "TCP connections tracked but never rewritten, by reason (no_rule: no rule matched; tcp_md5, tcp_ao: signed segments; server_opened: opened from beyond a client-facing interface; observe: the rule observes, admitted or picked up).",
		Labels: []string{"reason"}, Values: exemptReasons(), Status: "flows_exempt_%s",
	}
	counterRefused = &counter.Desc{
		Name:   "flows_refused_total",
		Help:   "New TCP connections the flow table could not admit because it was full; they are handled per flows.when_full.",
		Status: "flows_refused",
	}
	counterAdopted = &counter.Desc{
		Name:   "flows_adopted_total",
		Help:   "TCP connections picked up mid-stream under a stateless rule (their SYN was never seen).",
		Status: "flows_adopted",
	}
	counterUnshifted = &counter.Desc{
		Name:   "flows_adopted_unshifted_total",
		Help:   "Connections picked up mid-stream that the other side's first acknowledgement showed had been forwarded unshifted (refused while the table was full, opened before their rule): their offsets are zero from then on.",
		Status: "flows_adopted_unshifted",
	}
	counterRestarted = &counter.Desc{
		Name:   "flows_restarted_total",
		Help:   "Tracked connections replaced by a new connection on the same tuple whose SYN-ACK showed the server had accepted it.",
		Status: "flows_restarted",
	}
	// Indexed by tcpwindow.Verdict.
	counterVerdicts = &counter.Desc{
		Name:   "tracked_segments_total",
		Help:   "TCP segments of tracked flows the daemon judged against the connection's window, by verdict (accept and the accept_*, rst_in_window and syn_on_live ones are forwarded, the drop_* ones dropped; only accept changes a flow's state). With the kernel datapath only the segments the programs hand to the daemon are judged here.",
		Labels: []string{"verdict"}, Values: counter.Each(tcpwindow.VerdictNames()...), Status: "verdict_%s",
	}
	// Indexed by KernelOp.
	counterKernel = &counter.Desc{
		Name:   "kernel_map_operations_total",
		Help:   "What the daemon did to the kernel datapath's flow map and its TAP frames, by op (published: an entry written as a flow changed mode; put_failed: a write that failed, so the flow's packets keep crossing the daemon; no_meta: a TAP frame without the programs' metadata, dropped).",
		Labels: []string{"op"}, Values: counter.Each(kernelOpNames[:]...), Status: "kernel_%s",
	}
	// Indexed by op below.
	counterErrors = &counter.Desc{
		Name:   "datapath_errors_total",
		Help:   "Failed reads from and writes to the TUN device, by operation (read, write).",
		Labels: []string{"op"}, Values: counter.Each("read", "write"), Status: "%s_errors",
	}

	table = counter.NewTable(counterRewrittenPackets, counterRewrittenBytes, counterICMPTranslated,
		counterPassed, counterDropped, counterMalformed, counterExempt, counterRefused, counterAdopted,
		counterUnshifted, counterRestarted, counterVerdicts, counterKernel, counterErrors)
)

// KernelOp indexes counterKernel.
type KernelOp uint8

// What the engine counts about the kernel datapath.
const (
	KernelPublished KernelOp = iota // an entry written (a flow changed mode, or was found missing)
	KernelPutFailed                 // a write that failed
	KernelNoMeta                    // a TAP frame without valid metadata, dropped
	numKernelOps
)

var kernelOpNames = [numKernelOps]string{"published", "put_failed", "no_meta"}

// Indexes of counterErrors.
const (
	opRead  = 0
	opWrite = 1
)

// byDir labels per-direction families, indexed by flowtable.Dir.
var byDir = counter.Each(flowtable.ClientToServer.String(), flowtable.ServerToClient.String())

func malformedReasons() [][]string {
	var names []string
	for r := rewrite.Reason(1); r < rewrite.NumReasons; r++ {
		names = append(names, r.String())
	}
	return counter.Each(names...)
}

func exemptReasons() [][]string {
	var names []string
	for e := flowtable.Exempt(1); e < flowtable.NumExempt; e++ {
		names = append(names, e.String())
	}
	return counter.Each(names...)
}

// Counters are one queue's counters: a Block of the table, written only by that queue's
// goroutine (so the atomic adds are uncontended), padded off other queues' cache lines.
type Counters struct{ b *counter.Block }

func newCounters() *Counters { return &Counters{b: table.NewBlock()} }

func (c *Counters) rewritten(d flowtable.Dir, payload int) {
	c.b.Inc(counterRewrittenPackets, int(d&1))
	c.b.Add(counterRewrittenBytes, int(d&1), uint64(payload))
}
func (c *Counters) passed(p Pass)              { c.b.Inc(counterPassed, int(p)) }
func (c *Counters) dropped(d Drop)             { c.b.Inc(counterDropped, int(d)) }
func (c *Counters) malformed(r rewrite.Reason) { c.b.Inc(counterMalformed, int(r)-1) }
func (c *Counters) exempt(e flowtable.Exempt) {
	if e != flowtable.ExemptNone {
		c.b.Inc(counterExempt, int(e)-1)
	}
}
func (c *Counters) inc(d *counter.Desc) { c.b.Inc(d, 0) }
func (c *Counters) kernel(op KernelOp)  { c.b.Inc(counterKernel, int(op)) }
func (c *Counters) verdict(v tcpwindow.Verdict) {
	c.b.Inc(counterVerdicts, int(v))
}
func (c *Counters) failed(op int) { c.b.Inc(counterErrors, op) }

// Descs implements counter.Set: the datapath's counter families.
func (e *Engine) Descs() []*counter.Desc { return table.Descs() }

// Values implements counter.Set: every queue's counters summed.
func (e *Engine) Values() [][]uint64 {
	blocks := make([]*counter.Block, len(e.queues))
	for i, c := range e.queues {
		blocks[i] = c.b
	}
	return table.Sum(blocks)
}

// count returns the i-th counter of family d summed over the queues, for tests.
func (e *Engine) count(d *counter.Desc, i int) uint64 {
	var n uint64
	for _, c := range e.queues {
		n += c.b.Load(d, i)
	}
	return n
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
