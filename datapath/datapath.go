// Package datapath is seqshiftd's packet loop: it reads batches from the TUN, classifies each
// packet, finds or creates its flow, shifts its sequence numbers and writes the batch back.
//
// The whole per-packet story is in (*Engine).serve and (*Engine).handle. The datapath never
// allocates per packet, never logs per packet (it counts instead) and never holds a lock across
// a syscall; it never drops a packet it cannot parse unless the policy says so, and never
// forwards a segment with no flow under a rule it cannot pick up mid-stream (a stateful ISN mode):
// such a segment carries another gateway's (or an earlier run's) numbers or none at all, so it is
// dropped and counted as no_state (unless the rule observes: its connections are never shifted,
// so their raw numbers are the right ones). It never forwards a packet of a shifted flow that it
// could not shift, whatever the policy says, and never rewrites a byte of an observed flow.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/rewrite"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
	"github.com/seqshiftd/seqshiftd/tcshift"
	"github.com/seqshiftd/seqshiftd/tun"
)

// batchSize is how many packets one queue reads before writing them back. Larger batches
// amortise the loop but delay the first packet; 32 matches what TUN readers commonly use.
const batchSize = 32

// Policy is the live policy and its generation, swapped as one value on reload.
type Policy struct {
	Config     *policy.Config
	Generation uint64

	rules *ruleCounts // per-rule counters of this generation, attached by New or SetPolicy
}

// Engine runs the datapath over one TUN device with one goroutine per queue. With the kernel
// datapath the device is the TAP the tc programs hand packets to (kernel.go).
type Engine struct {
	dev    tun.Device
	table  *flowtable.Table
	log    *zap.Logger
	policy atomic.Pointer[Policy]
	queues []*Counters
	warn   *rateLimiter
	kernel Kernel     // nil with the TUN datapath; set by UseKernel before Run, then read-only
	sync   kernelSync // the kernel's counts already folded into each flow
	rules  ruleHistory
}

// UseKernel makes the engine keep k's flow map in line with the table (the kernel datapath).
// Call it before Run.
func (e *Engine) UseKernel(k Kernel) { e.kernel = k }

// New returns an engine for dev and table under the given policy.
func New(dev tun.Device, table *flowtable.Table, p *Policy, log *zap.Logger) *Engine {
	e := &Engine{
		dev:    dev,
		table:  table,
		log:    log.Named("datapath"),
		queues: make([]*Counters, dev.Queues()),
		warn:   newRateLimiter(time.Minute),
	}
	for i := range e.queues {
		e.queues[i] = newCounters()
	}
	e.install(p)
	e.policy.Store(p)
	return e
}

// SetPolicy makes p the policy for flows created from now on; live flows keep their offsets
// and their mode (an observed flow stays unshifted when its rule goes live, and the reverse).
func (e *Engine) SetPolicy(p *Policy) {
	e.install(p)
	e.policy.Store(p)
}

// Policy returns the policy in force.
func (e *Engine) Policy() *Policy { return e.policy.Load() }

// Run serves every queue until ctx is done or the device is closed, then returns.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(e.queues))
	for q := range e.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[q] = e.serve(ctx, q)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serve is one queue's loop: read a batch, handle each packet, write back what passes.
func (e *Engine) serve(ctx context.Context, q int) error {
	c := e.queues[q]
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, tun.MaxPacket)
	}
	sizes := make([]int, batchSize)
	out := make([][]byte, 0, batchSize)
	offload, tap := e.dev.Offload(), e.dev.TAP()
	for ctx.Err() == nil {
		n, err := e.dev.Read(q, bufs, sizes)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			c.failed(opRead)
			if e.warn.allow("read") {
				e.log.Warn("read from TUN failed", zap.Int("queue", q), zap.Error(err))
			}
			continue
		}
		out = out[:0]
		pol := e.policy.Load()
		for i := 0; i < n; i++ {
			buf := bufs[i][:sizes[i]]
			pkt, partial := buf, false
			if offload {
				if len(buf) < tun.HeaderLen {
					c.failed(opRead)
					continue
				}
				pkt, partial = buf[tun.HeaderLen:], tun.PartialChecksum(buf)
			}
			// From the TAP, the programs say in the Ethernet header where the packet was
			// caught; the header goes back unchanged and tells them where to send it on.
			var meta tcshift.Meta
			if tap {
				var ok bool
				if meta, ok = tcshift.ReadMeta(pkt); !ok {
					c.kernel(KernelNoMeta)
					continue
				}
				pkt = pkt[tcshift.EthHeaderLen:]
			}
			if e.handle(c, pol, pkt, partial, meta) {
				out = append(out, buf)
			}
		}
		if len(out) == 0 {
			continue
		}
		if _, err := e.dev.Write(q, out); err != nil {
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			c.failed(opWrite)
			if e.warn.allow("write") {
				e.log.Warn("write to TUN failed", zap.Int("queue", q), zap.Error(err))
			}
		}
	}
	return nil
}

// handle rewrites one packet in place and reports whether it is to be written back. meta is
// where the kernel datapath caught it (zero with the TUN datapath).
func (e *Engine) handle(c *Counters, pol *Policy, pkt []byte, partial bool, meta tcshift.Meta) bool {
	var p rewrite.Packet
	rewrite.Classify(pkt, &p)
	switch p.Kind {
	case rewrite.KindTCP:
		return e.handleTCP(c, pol, pkt, &p, partial, meta)
	case rewrite.KindICMPQuotingTCP:
		return e.handleICMP(c, pkt, &p, meta.Hook)
	case rewrite.KindMalformed:
		c.malformed(p.Reason)
		return e.malformedPacket(c, pol, pkt)
	default:
		c.passed(PassNotTCP)
		return true
	}
}

func (e *Engine) handleTCP(c *Counters, pol *Policy, pkt []byte, p *rewrite.Packet, partial bool, meta tcshift.Meta) bool {
	src := netip.AddrPortFrom(p.Src, p.SrcPort)
	dst := netip.AddrPortFrom(p.Dst, p.DstPort)
	f, dir, ok := e.table.Lookup(src, dst)
	switch {
	case p.Flags&(rewrite.FlagSYN|rewrite.FlagACK) == rewrite.FlagSYN:
		// A SYN opens a connection only where there is none, or where the tracked one is over
		// or still opening with another ISN (NewConnection): a SYN on a live connection is
		// judged by Track below (RFC 5961), and the server's own SYN while the client's is
		// unanswered is a simultaneous open of the same connection.
		if !ok || f.NewConnection(dir, p.Seq) {
			var admitted bool
			if f, admitted = e.admit(c, pol, src, dst, p, meta.Hook == tcshift.HookEgress); !admitted {
				return pol.Config.Flows.WhenFull != policy.WhenFullDrop
			}
			dir = flowtable.ClientToServer
		}
	case !ok:
		var stateful bool
		if f, dir, stateful = e.adopt(c, pol, p, src, dst, meta.Hook); f == nil {
			if stateful {
				// This gateway never saw the offsets another gateway (or an earlier run without
				// a snapshot) gave the flow; raw numbers could land inside the peer's window and
				// be taken as data. Dropped, as pf drops a packet with no state under
				// `modulate state`.
				c.dropped(DropNoState)
				return false
			}
			c.passed(PassNoFlow)
			return true
		}
	}
	if meta.Hook != 0 && !facing(f, dir, meta.Hook) {
		// Caught on its way through the server-facing side of the gateway (an intercept entry
		// there serves connections opened from that side): not this hook's to shift, count or
		// publish. It goes on, and is handled where it crosses its own client-facing interface;
		// publishing from here would give the map the wrong interface.
		c.passed(PassOtherHook)
		return true
	}
	if f.Unconfirmed() && p.Flags&rewrite.FlagACK != 0 && p.Flags&rewrite.FlagRST == 0 {
		// A picked-up flow: the first acknowledgement from the other side says whether the
		// connection was being shifted at all (Flow.Confirm). Until then the kernel datapath
		// leaves its segments to the daemon (kernelModeFor).
		if _, unshifted := f.Confirm(dir, p.Ack); unshifted {
			c.inc(counterUnshifted)
		}
	}
	if e.kernel != nil && f.KernelMode() == flowtable.KernelShift {
		// The kernel shifted this flow's data and learned its window meanwhile; the segment
		// now in hand (a FIN, an RST, a SYN) is judged against what it learned.
		e.loadWindow(f)
	}
	var seg tcpwindow.Segment
	seg.Read(p.TCPHeader(pkt), p.PayloadLen)
	v := f.Track(dir, &seg)
	if v == tcpwindow.Restart {
		if nf, ok := e.restart(c, pol, f); ok {
			f, v = nf, nf.Track(dir, &seg)
		} else {
			v = tcpwindow.SYNOnLive // no room: the old flow stays, and the SYN-ACK passes as before
		}
	}
	c.verdict(v)
	if !v.Forward() {
		return false // numbers the endpoint would refuse: they change nothing, and go nowhere
	}
	if e.kernel != nil {
		// The kernel's map may be out of date (or have lost the flow, if the programs said
		// no_flow): bring it in line before this packet goes back and its replies come.
		e.publish(c, f, meta.Ifindex, meta.Reason == tcshift.ReasonNoFlow && f.KernelMode() != flowtable.KernelNone)
	}
	if f.Exempt() != flowtable.ExemptNone {
		c.passed(PassExempt)
		return true
	}
	d := f.Deltas(dir)
	if d.Zero() {
		c.passed(PassZeroOffset)
		return true
	}
	if r := rewrite.Shift(pkt, p, d.Seq, d.Ack, partial); r != rewrite.ReasonNone {
		// Whatever `malformed` says: forwarded, it would carry the raw numbers the shift hides.
		c.malformed(r)
		c.dropped(DropUnshiftable)
		pol.rules.countFlow(f, RuleMalformed)
		return false
	}
	c.rewritten(dir, p.PayloadLen)
	return true
}

// malformedPacket decides a packet Classify found malformed and reports whether it is written
// back. When its endpoints can still be read (rewrite.Endpoints) and name a tracked flow, it is
// counted for the flow's rule and mode (an observed rule's packets that an active one could
// not rewrite). One of a flow with a non-zero offset is dropped and counted whatever
// `malformed` says: `malformed: pass` is for packets of no shifted flow, since forwarding one
// of a shifted flow would show each end the other's raw sequence numbers, exactly what a
// random or keyed ISN is meant to hide.
func (e *Engine) malformedPacket(c *Counters, pol *Policy, pkt []byte) bool {
	shifted := false
	if src, dst, ok := rewrite.Endpoints(pkt); ok {
		if f, dir, ok := e.table.Lookup(src, dst); ok {
			pol.rules.countFlow(f, RuleMalformed)
			shifted = f.Exempt() == flowtable.ExemptNone && !f.Deltas(dir).Zero()
		}
	}
	switch {
	case pol.Config.Malformed == policy.MalformedDrop:
		return false
	case shifted:
		c.dropped(DropUnshiftable)
		return false
	}
	return true
}

// restart replaces f by a new connection on its tuple: the client sent a SYN that passed f as a
// SYN on a live connection, and the server has just answered exactly that SYN (Track said
// Restart): it accepted a new connection while the old one was still tracked (the client
// crashed and reused its port, or the flow was restored or picked up long after its own
// handshake). The server saw that SYN shifted by f's client offset, so the new flow keeps it;
// the server's ISN is still to be shown to the client, so its side follows the policy in force.
func (e *Engine) restart(c *Counters, pol *Policy, f *flowtable.Flow) (*flowtable.Flow, bool) {
	client, server := f.Client(), f.Server()
	in := flowtable.Init{
		ClientOffset: f.Offset(flowtable.ClientToServer),
		Rule:         f.Rule(),
		Generation:   pol.Generation,
		Exempt:       f.Exempt(),
	}
	// An observed flow plans its server side too: it stays observed (its mode was decided at
	// its first SYN, and the server saw this SYN unshifted), with the offsets it would get.
	if in.Exempt == flowtable.ExemptNone || in.Exempt == flowtable.ExemptObserve {
		if rule := pol.Config.Match(client.Addr(), server.Addr(), server.Port()); rule != nil {
			abs, v := rule.Server.Plan(server, client)
			in.Server = flowtable.ServerPlan{Absolute: abs, Value: v}
		}
	}
	nf, err := e.table.Restart(f, in)
	if err != nil {
		// No room: keep shifting with the old flow, which at least keeps both ends consistent.
		c.inc(counterRefused)
		pol.rules.countFlow(f, RuleRefused)
		return f, false
	}
	c.inc(counterRestarted)
	pol.rules.countFlow(nf, RuleAdmitted)
	return nf, true
}

// admit decides a new connection's offsets from the policy at its SYN and creates its flow.
// Unmatched and exempt connections are tracked too, with zero offsets, so that a later reload
// never starts shifting a connection that began unshifted.
//
// farSide says the kernel datapath caught the SYN leaving a client-facing interface: it was sent
// from beyond the gateway toward the side this policy calls the clients'. Such a connection is
// tracked, unshifted, with the roles its SYN gives it: the programs serve the interface's
// clients, and a connection seen the other way round must never be picked up mid-stream and
// shifted as if it were one of theirs.
func (e *Engine) admit(c *Counters, pol *Policy, client, server netip.AddrPort, p *rewrite.Packet, farSide bool) (*flowtable.Flow, bool) {
	in := flowtable.Init{ClientISN: p.Seq, Generation: pol.Generation}
	rule := pol.Config.Match(client.Addr(), server.Addr(), server.Port())
	mode, event := ModeActive, RuleAdmitted
	if pol.Config.Observes(rule) {
		mode = ModeObserve
	}
	switch {
	case farSide:
		in.Exempt = flowtable.ExemptServerOpened
	case p.Auth != rewrite.AuthNone:
		// RFC 2385 and RFC 5925 signatures cover the sequence numbers: shifting them would make
		// every segment fail verification, so such flows pass untouched whatever the rule says.
		in.Exempt, event = flowtable.ExemptTCPMD5, RuleTCPMD5
		if p.Auth == rewrite.AuthAO {
			in.Exempt, event = flowtable.ExemptTCPAO, RuleTCPAO
		}
		if rule != nil {
			in.Rule = rule.Name
		}
		if e.warn.allow("exempt") {
			e.log.Info("connection exempt from rewriting",
				zap.Stringer("client", client), zap.Stringer("server", server),
				zap.Stringer("reason", in.Exempt), zap.String("rule", in.Rule))
		}
	case rule == nil:
		in.Exempt = flowtable.ExemptNoRule
	default:
		in.Rule = rule.Name
		abs, v := rule.Client.Plan(client, server)
		in.ClientOffset = seqnum.Delta(v)
		if abs {
			// The client's ISN is to appear as v.
			in.ClientOffset = seqnum.Value(v).Sub(seqnum.Value(p.Seq))
		}
		abs, v = rule.Server.Plan(server, client)
		in.Server = flowtable.ServerPlan{Absolute: abs, Value: v}
		if mode == ModeObserve {
			// Planned exactly as if active, offsets kept for `flows`; exempt, so that not one
			// byte of it is rewritten on either datapath.
			in.Exempt = flowtable.ExemptObserve
		}
	}
	f, err := e.table.Admit(client, server, in)
	if !farSide {
		if err != nil {
			event = RuleRefused
		}
		pol.rules.count(rule, mode, event)
	}
	if err != nil {
		c.inc(counterRefused)
		if e.warn.allow("refused") {
			e.log.Warn("flow table refused a new connection",
				zap.Stringer("client", client), zap.Stringer("server", server), zap.Error(err))
		}
		return nil, false
	}
	c.exempt(in.Exempt)
	if in.Exempt == flowtable.ExemptObserve {
		if ce := e.log.Check(zap.DebugLevel, "connection admitted under observe: tracked, not rewritten"); ce != nil {
			ce.Write(zap.Stringer("client", client), zap.Stringer("server", server), zap.String("rule", in.Rule),
				zap.Uint32("would_shift_c2s", uint32(in.ClientOffset)))
		}
	}
	return f, true
}

// facing reports whether a segment of f travelling in dir, caught by the kernel datapath at
// hook, was caught at f's client-facing interface: arriving on it from the client, or leaving
// it toward the client. A connection opened from the far side sits there with its roles the
// other way round (kernelKey).
func facing(f *flowtable.Flow, dir flowtable.Dir, hook tcshift.Hook) bool {
	fromClient := dir == flowtable.ClientToServer
	if f.Exempt() == flowtable.ExemptServerOpened {
		fromClient = !fromClient
	}
	return (hook == tcshift.HookIngress) == fromClient
}

// adopt picks up, mid-stream, a connection whose SYN was never seen (a restart without a
// snapshot, a second gateway taking over). Only rules whose both sides are stateless can do so:
// their offsets do not depend on an ISN this gateway never saw. With no flow, stateful reports
// that the segment's rule is one that cannot (fixed, random, sequential, range on either side).
// A segment carrying SYN or RST is never picked up: a SYN-ACK of no tracked flow answers a SYN
// that went through unshifted (the table was full, or the connection was opened from the far
// side), shifting its connection from here on would break it, and an RST would make a flow only
// to close it (a blind one, nothing at all).
//
// hook is where the kernel datapath caught the segment: its programs serve the clients of the
// interface, so a segment arriving on it comes from the client and one leaving it goes to the
// client. The TUN datapath has no such knowledge and guesses (pickUpRoles).
func (e *Engine) adopt(c *Counters, pol *Policy, p *rewrite.Packet, src, dst netip.AddrPort, hook tcshift.Hook) (f *flowtable.Flow, dir flowtable.Dir, stateful bool) {
	var client, server netip.AddrPort
	var rule *policy.Rule
	switch hook {
	case tcshift.HookIngress, tcshift.HookEgress:
		// The hook gives the roles, if this is the segment's client-facing interface. A
		// segment caught at the server-facing side looks like one of a connection opened from
		// there; the rules tell them apart as for the TUN datapath (pickUpRoles): when they
		// prefer the other orientation, the segment is left to the other interface.
		client, server = src, dst
		if hook == tcshift.HookEgress {
			client, server = dst, src
		}
		if c, _, r := pickUpRoles(pol.Config, src, dst); r == nil || c != client {
			return nil, 0, false
		}
		rule = pol.Config.Match(client.Addr(), server.Addr(), server.Port())
	default:
		client, server, rule = pickUpRoles(pol.Config, src, dst)
	}
	if rule == nil || (rule.Client.Keep() && rule.Server.Keep()) {
		return nil, 0, false
	}
	observe := pol.Config.Observes(rule)
	if !rule.Client.Stateless() || !rule.Server.Stateless() {
		// An observed connection was never shifted, so its raw numbers are the right ones:
		// passed, not dropped, even though its would-be offsets cannot be recomputed.
		return nil, 0, !observe
	}
	if p.Flags&(rewrite.FlagSYN|rewrite.FlagRST) != 0 {
		return nil, 0, false
	}
	_, cOff := rule.Client.Plan(client, server)
	_, sOff := rule.Server.Plan(server, client)
	in := flowtable.Init{
		ClientOffset: seqnum.Delta(cOff),
		Server:       flowtable.ServerPlan{Value: sOff},
		Rule:         rule.Name,
		Generation:   pol.Generation,
	}
	mode := ModeActive
	if observe {
		in.Exempt, mode = flowtable.ExemptObserve, ModeObserve
	}
	f, err := e.table.Adopt(client, server, in)
	if err != nil {
		c.inc(counterRefused)
		pol.rules.count(rule, mode, RuleRefused)
		return nil, 0, false
	}
	c.inc(counterAdopted)
	pol.rules.count(rule, mode, RulePickedUp)
	c.exempt(in.Exempt)
	dir = flowtable.ClientToServer
	if src != client {
		dir = flowtable.ServerToClient
	}
	// Nothing yet says the connection was ever shifted: it is shifted as the rule says, and
	// the other side's first acknowledgement confirms that, or shows it was forwarded
	// unshifted all along (refused while the table was full, opened before its rule), and
	// then it stays unshifted. An observed flow is never shifted: nothing to confirm, and its
	// would-be offsets are what it is observed for.
	if f.Exempt() == flowtable.ExemptNone {
		f.Probe(dir, p.Seq)
	}
	return f, dir, false
}

// pickUpRoles guesses which end of a connection seen mid-stream is the client. The intercepts
// decide first: what is steered travels toward one of their `to` prefixes, so when only one end
// lies in those prefixes it is the server side, and the other end the client, whatever the
// ports say (a connection its server side opened toward a client's port, with only the client
// side intercepted, is then never taken for one of the rule's). Otherwise a rule that matches
// only one orientation decides; when both match, the end with the lower port is taken as the
// server, as services listen on low ports and clients use ephemeral ones.
func pickUpRoles(cfg *policy.Config, src, dst netip.AddrPort) (client, server netip.AddrPort, rule *policy.Rule) {
	switch srcTo, dstTo := interceptTarget(cfg, src.Addr()), interceptTarget(cfg, dst.Addr()); {
	case dstTo && !srcTo:
		return src, dst, cfg.Match(src.Addr(), dst.Addr(), dst.Port())
	case srcTo && !dstTo:
		return dst, src, cfg.Match(dst.Addr(), src.Addr(), src.Port())
	}
	fwd := cfg.Match(src.Addr(), dst.Addr(), dst.Port())
	rev := cfg.Match(dst.Addr(), src.Addr(), src.Port())
	switch {
	case fwd != nil && (rev == nil || dst.Port() <= src.Port()):
		return src, dst, fwd
	case rev != nil:
		return dst, src, rev
	}
	return src, dst, nil
}

// interceptTarget reports whether a lies in one of the intercepts' `to` prefixes.
func interceptTarget(cfg *policy.Config, a netip.Addr) bool {
	a = a.Unmap()
	for _, ic := range cfg.Intercept {
		for _, p := range ic.To {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// handleICMP translates the sequence numbers an ICMP error quotes back into the space of the
// host receiving it: the quoted segment travelled the other way and was shifted on its way out.
// Linux ignores a fragmentation-needed whose quoted seq is outside its send window, so without
// this path-MTU discovery breaks for rewritten flows.
//
// hook is where the kernel datapath caught the error. An error travels toward the sender of the
// segment it quotes, so it crosses the flow's client-facing interface at the one hook where that
// sender's segments are shifted the other way: leaving it (egress) for a quoted client segment,
// arriving on it (ingress) for a quoted server segment. Caught anywhere else (the server-facing
// interface, when it is listed as an intercept too) it is not yet, or no longer, the daemon's
// to translate: it would otherwise be translated twice.
func (e *Engine) handleICMP(c *Counters, pkt []byte, p *rewrite.Packet, hook tcshift.Hook) bool {
	src := netip.AddrPortFrom(p.Src, p.SrcPort)
	dst := netip.AddrPortFrom(p.Dst, p.DstPort)
	f, q, ok := e.table.Lookup(src, dst)
	if !ok || f.Exempt() != flowtable.ExemptNone {
		c.passed(PassNoFlow)
		return true
	}
	if hook != 0 && (hook == tcshift.HookEgress) != (q == flowtable.ClientToServer) {
		c.passed(PassOtherHook)
		return true
	}
	d := f.QuoteDeltas(q)
	if d.Zero() {
		c.passed(PassZeroOffset)
		return true
	}
	if r := rewrite.Shift(pkt, p, d.Seq, d.Ack, false); r != rewrite.ReasonNone {
		// Untranslated, the quote would show its receiver the peer's shifted numbers.
		c.malformed(r)
		c.dropped(DropUnshiftable)
		return false
	}
	c.inc(counterICMPTranslated)
	return true
}

// String describes the engine for logs.
func (e *Engine) String() string {
	return fmt.Sprintf("datapath on %s (%d queues, offload %t)", e.dev.Name(), len(e.queues), e.dev.Offload())
}
