package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seqshiftd/seqshiftd/flowtable"
	"github.com/seqshiftd/seqshiftd/policy"
	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcshift"
)

// observeEngine runs the policy src on a table of maxFlows.
func observeEngine(t *testing.T, src string, maxFlows int) (*Engine, *flowtable.Table) {
	t.Helper()
	cfg, err := policy.Parse("observe.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	table := flowtable.New(flowtable.Config{MaxFlows: maxFlows})
	return New(newFakeDevice(false), table, &Policy{Config: cfg, Generation: 1}, zap.NewNop()), table
}

// observeRules is a policy with a stateful rule (fixed both ways, port 5001), a stateless one
// (offsets, port 5004) and a random one (port 5010), each with the observe value given.
func observeRules(fixed, stateless, rnd string) string {
	return `
rules:
  - name: fixed
    match: {server_ports: [5001]}
    client_isn: fixed 4294967000
    server_isn: fixed 7000000
    observe: ` + fixed + `
  - name: stateless
    match: {server_ports: [5004]}
    client_isn: offset +5
    server_isn: offset -7
    observe: ` + stateless + `
  - name: rnd
    match: {server_ports: [5010]}
    client_isn: random
    server_isn: random
    observe: ` + rnd + `
`
}

// through runs pkt through the engine and fails unless it is written back byte for byte.
func through(t *testing.T, e *Engine, s segment) {
	t.Helper()
	pkt := s.bytes(t)
	orig := bytes.Clone(pkt)
	out := run(t, e, pkt)
	if out == nil {
		t.Fatalf("%v->%v seq %d: dropped", s.src, s.dst, s.seq)
	}
	if !bytes.Equal(out, orig) {
		t.Fatalf("%v->%v seq %d: rewritten under observe\n got % x\nwant % x", s.src, s.dst, s.seq, out, orig)
	}
}

// observedConnection runs a whole connection through e: handshake, data both ways with SACK, a
// close; every packet must come out unchanged.
func observedConnection(t *testing.T, e *Engine, client, server netip.AddrPort, cISN, sISN uint32) {
	t.Helper()
	c, s := cISN, sISN
	through(t, e, segment{src: client, dst: server, seq: c, syn: true})
	through(t, e, segment{src: server, dst: client, seq: s, ack: c + 1, syn: true, ackFlag: true})
	c, s = c+1, s+1
	through(t, e, segment{src: client, dst: server, seq: c, ack: s, ackFlag: true})
	through(t, e, segment{src: client, dst: server, seq: c, ack: s, ackFlag: true, payload: []byte("request")})
	c += 7
	through(t, e, segment{src: server, dst: client, seq: s + 100, ack: c, ackFlag: true, payload: []byte("late")})
	through(t, e, segment{src: client, dst: server, seq: c, ack: s, ackFlag: true, sack: [][2]uint32{{s + 100, s + 104}}})
	through(t, e, segment{src: server, dst: client, seq: s, ack: c, ackFlag: true, payload: make([]byte, 100)})
	s += 104
	through(t, e, segment{src: client, dst: server, seq: c, ack: s, ackFlag: true, fin: true})
	through(t, e, segment{src: server, dst: client, seq: s, ack: c + 1, ackFlag: true, fin: true})
	through(t, e, segment{src: client, dst: server, seq: c + 1, ack: s + 1, ackFlag: true})
}

func TestObserve_RuleRewritesNothingAndKeepsWouldBeOffsets(t *testing.T) {
	e, table := observeEngine(t, observeRules("true", "false", "false"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	const cISN, sISN = 1000, 50000
	observedConnection(t, e, client4, srv, cISN, sISN)
	f, _, ok := table.Lookup(client4, srv)
	if !ok {
		t.Fatal("the observed connection is not tracked")
	}
	if f.Exempt() != flowtable.ExemptObserve || f.Rule() != "fixed" {
		t.Fatalf("flow exempt %v rule %q, want observe, fixed", f.Exempt(), f.Rule())
	}
	want := [2]seqnum.Delta{seqnum.Value(4294967000).Sub(cISN), seqnum.Value(7000000).Sub(sISN)}
	if got := f.Offsets(); got != want {
		t.Fatalf("would-be offsets %v, want %v (what the rule would have given)", got, want)
	}
	// The window tracker saw the unshifted numbers as valid: the close completed.
	if f.State() != flowtable.StateTimeWait {
		t.Fatalf("state %v after the close, want time_wait", f.State())
	}
	if got := e.count(counterRewrittenPackets, 0) + e.count(counterRewrittenPackets, 1); got != 0 {
		t.Fatalf("%d packets counted as rewritten", got)
	}
	if got := e.count(counterExempt, int(flowtable.ExemptObserve)-1); got != 1 {
		t.Fatalf("flows_exempt_observe %d, want 1", got)
	}
	rc := e.RuleCounts()
	if got := rc[RuleMode{"fixed", ModeObserve}]; got != (RuleCounts{RuleAdmitted: 1}) {
		t.Fatalf("fixed/observe counts %v, want one admitted", got)
	}
	if got, ok := rc[RuleMode{"fixed", ModeActive}]; ok {
		t.Fatalf("fixed/active listed (%v) though the rule never ran active", got)
	}
	if got, ok := rc[RuleMode{"stateless", ModeActive}]; !ok || got != (RuleCounts{}) {
		t.Fatalf("stateless/active = %v, %t; want listed with zeros", got, ok)
	}
}

// TestObserve_ReloadToActiveChangesOnlyNewFlows: the flow that began observed stays unshifted
// after its rule goes live; a connection that starts after the reload is shifted.
func TestObserve_ReloadToActiveChangesOnlyNewFlows(t *testing.T) {
	e, table := observeEngine(t, observeRules("true", "false", "false"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	through(t, e, segment{src: client4, dst: srv, seq: 1000, syn: true})
	through(t, e, segment{src: srv, dst: client4, seq: 50000, ack: 1001, syn: true, ackFlag: true})
	through(t, e, segment{src: client4, dst: srv, seq: 1001, ack: 50001, ackFlag: true})

	cfg, err := policy.Parse("observe.yaml", []byte(observeRules("false", "false", "false")))
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(&Policy{Config: cfg, Generation: 2})

	through(t, e, segment{src: client4, dst: srv, seq: 1001, ack: 50001, ackFlag: true, payload: []byte("after")})
	through(t, e, segment{src: srv, dst: client4, seq: 50001, ack: 1006, ackFlag: true, payload: []byte("reply")})
	if f, _, _ := table.Lookup(client4, srv); f.Exempt() != flowtable.ExemptObserve || f.Generation() != 1 {
		t.Fatalf("the live flow became %v (generation %d)", f.Exempt(), f.Generation())
	}

	other := netip.MustParseAddrPort("198.18.1.9:40001")
	syn := decode(t, run(t, e, segment{src: other, dst: srv, seq: 1000, syn: true}.bytes(t)))
	if syn.seq != 4294967000 {
		t.Fatalf("a connection after the reload: server saw ISN %d, want the rule's 4294967000", syn.seq)
	}
	synack := decode(t, run(t, e, segment{src: srv, dst: other, seq: 50000, ack: 4294967001, syn: true, ackFlag: true}.bytes(t)))
	if synack.seq != 7000000 || synack.ack != 1001 || !synack.csumOK {
		t.Fatalf("SYN-ACK of the new connection: seq %d ack %d csum %t", synack.seq, synack.ack, synack.csumOK)
	}
	if f, _, _ := table.Lookup(other, srv); f.Exempt() != flowtable.ExemptNone {
		t.Fatalf("new flow exempt %v", f.Exempt())
	}
	rc := e.RuleCounts()
	if got := rc[RuleMode{"fixed", ModeObserve}][RuleAdmitted]; got != 1 {
		t.Errorf("fixed/observe admitted %d, want 1", got)
	}
	if got := rc[RuleMode{"fixed", ModeActive}][RuleAdmitted]; got != 1 {
		t.Errorf("fixed/active admitted %d, want 1", got)
	}
	// Counts outlive the generations they were made in.
	e.SetPolicy(&Policy{Config: cfg, Generation: 3})
	e.SetPolicy(&Policy{Config: cfg, Generation: 4})
	if got := e.RuleCounts(); got[RuleMode{"fixed", ModeObserve}][RuleAdmitted] != 1 || got[RuleMode{"fixed", ModeActive}][RuleAdmitted] != 1 {
		t.Errorf("after two more reloads: %v", got)
	}
}

// TestObserve_WholePolicyOverridesRuleFalse: the top-level switch observes every rule, even one
// that says observe: false.
func TestObserve_WholePolicyOverridesRuleFalse(t *testing.T) {
	e, table := observeEngine(t, "observe: true\n"+observeRules("false", "false", "false"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	observedConnection(t, e, client4, srv, 77, 88)
	if f, _, _ := table.Lookup(client4, srv); f.Exempt() != flowtable.ExemptObserve {
		t.Fatalf("exempt %v, want observe", f.Exempt())
	}
}

// TestObserve_PickUpAndNoState: a stateless observed rule picks a connection up with its
// would-be offsets and rewrites nothing; a stateful observed rule's segment with no flow is
// passed (it was never shifted), not dropped as no_state.
func TestObserve_PickUpAndNoState(t *testing.T) {
	e, table := observeEngine(t, observeRules("false", "true", "true"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5004)
	through(t, e, segment{src: client4, dst: srv, seq: 100, ack: 200, ackFlag: true, payload: []byte("x")})
	f, _, ok := table.Lookup(client4, srv)
	if !ok || f.Exempt() != flowtable.ExemptObserve || f.Offset(flowtable.ClientToServer) != 5 || f.Offset(flowtable.ServerToClient) != seqnum.Delta(7).Neg() {
		t.Fatalf("picked-up flow %v: exempt %v offsets %v", ok, f.Exempt(), f.Offsets())
	}
	through(t, e, segment{src: srv, dst: client4, seq: 200, ack: 101, ackFlag: true, payload: []byte("y")})

	rnd := netip.AddrPortFrom(server4.Addr(), 5010)
	through(t, e, segment{src: client4, dst: rnd, seq: 100, ack: 200, ackFlag: true, payload: []byte("x")})
	if got := e.count(counterDropped, int(DropNoState)); got != 0 {
		t.Fatalf("dropped no_state %d under observe", got)
	}
	if got := e.RuleCounts()[RuleMode{"stateless", ModeObserve}]; got != (RuleCounts{RulePickedUp: 1}) {
		t.Fatalf("stateless/observe %v, want one picked up", got)
	}
}

// TestObserve_MD5AndRefusalsCountedForTheRule: TCP-MD5 still wins (its own exempt reason) but
// is counted for the observed rule; a SYN the full table refuses is counted too.
func TestObserve_MD5AndRefusalsCountedForTheRule(t *testing.T) {
	e, table := observeEngine(t, observeRules("true", "false", "false")+"flows: {max: 1, when_full: pass}\n", 1)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	through(t, e, segment{src: client4, dst: srv, seq: 1, syn: true, md5: true})
	if f, _, _ := table.Lookup(client4, srv); f.Exempt() != flowtable.ExemptTCPMD5 {
		t.Fatalf("MD5 flow exempt %v, want tcp_md5", f.Exempt())
	}
	// The table (one flow) is full of an embryonic flow, which a new SYN evicts; make it
	// assured first so that nothing can be evicted.
	through(t, e, segment{src: srv, dst: client4, seq: 9, ack: 2, syn: true, ackFlag: true, md5: true})
	through(t, e, segment{src: client4, dst: srv, seq: 2, ack: 10, ackFlag: true, md5: true, payload: []byte("a")})
	through(t, e, segment{src: srv, dst: client4, seq: 10, ack: 3, ackFlag: true, md5: true, payload: []byte("b")})
	through(t, e, segment{src: client4, dst: srv, seq: 3, ack: 11, ackFlag: true, md5: true})
	through(t, e, segment{src: netip.MustParseAddrPort("198.18.1.3:40000"), dst: srv, seq: 1, syn: true})
	if got := e.RuleCounts()[RuleMode{"fixed", ModeObserve}]; got != (RuleCounts{RuleTCPMD5: 1, RuleRefused: 1}) {
		t.Fatalf("fixed/observe %v, want one tcp_md5 and one refused", got)
	}
}

// TestObserve_KernelMapHasZeroDeltasAndRecoversObserved: the kernel datapath's entry of an
// observed flow never shifts, and a flow recovered from it after a crash stays observed.
func TestObserve_KernelMapHasZeroDeltasAndRecoversObserved(t *testing.T) {
	e, table := observeEngine(t, observeRules("true", "false", "false"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	through(t, e, segment{src: client4, dst: srv, seq: 1000, syn: true})
	through(t, e, segment{src: srv, dst: client4, seq: 50000, ack: 1001, syn: true, ackFlag: true})
	through(t, e, segment{src: client4, dst: srv, seq: 1001, ack: 50001, ackFlag: true})
	f, _, _ := table.Lookup(client4, srv)
	v := kernelValue(f, flowtable.KernelShift, 7)
	if v.SeqDelta != ([2]seqnum.Delta{}) || v.AckDelta != ([2]seqnum.Delta{}) || v.Mode != tcshift.ModeKernel {
		t.Fatalf("kernel value of an observed flow %+v: want zero deltas in kernel mode", v)
	}
	fresh := flowtable.New(flowtable.Config{MaxFlows: 4})
	if err := RecoverFlow(fresh, kernelKey(f), v); err != nil {
		t.Fatal(err)
	}
	g, _, ok := fresh.Lookup(client4, srv)
	if !ok || g.Exempt() != flowtable.ExemptObserve || !g.Deltas(flowtable.ClientToServer).Zero() {
		t.Fatalf("recovered %t exempt %v", ok, g.Exempt())
	}
}

// TestObserve_MalformedPacketsCountedForTheFlowsRule: a packet of an observed flow that cannot
// be parsed (a bad data offset) but still names its flow is counted for the rule, in observe
// mode; one that names no flow is counted only globally.
func TestObserve_MalformedPacketsCountedForTheFlowsRule(t *testing.T) {
	e, _ := observeEngine(t, observeRules("true", "false", "false"), 64)
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	through(t, e, segment{src: client4, dst: srv, seq: 1000, syn: true})
	bad := segment{src: client4, dst: srv, seq: 1001, ack: 1, ackFlag: true}.bytes(t)
	bad[20+12] = 0x20 // data offset 2 words: below the minimum of 5
	through(t, e, segment{src: srv, dst: client4, seq: 1, ack: 1001, syn: true, ackFlag: true})
	if run(t, e, bad) == nil {
		t.Fatal("malformed: pass dropped the packet")
	}
	stranger := segment{src: netip.MustParseAddrPort("198.18.1.77:1"), dst: srv, seq: 1, ack: 1, ackFlag: true}.bytes(t)
	stranger[20+12] = 0x20
	run(t, e, stranger)
	if got := e.RuleCounts()[RuleMode{"fixed", ModeObserve}]; got != (RuleCounts{RuleAdmitted: 1, RuleMalformed: 1}) {
		t.Fatalf("fixed/observe %v, want one admitted and one malformed", got)
	}
	var n uint64
	for i := range counterMalformed.Len() {
		n += e.count(counterMalformed, i)
	}
	if n != 2 {
		t.Fatalf("malformed counter %d, want 2", n)
	}
}

// TestObserve_LogSaysWhichRulesObserveOncePerPolicy: at info, one line per policy naming the
// observing rules (and one when none observes any more); each observed admission at debug.
func TestObserve_LogSaysWhichRulesObserveOncePerPolicy(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	cfg, err := policy.Parse("observe.yaml", []byte(observeRules("true", "true", "false")))
	if err != nil {
		t.Fatal(err)
	}
	e := New(newFakeDevice(false), flowtable.New(flowtable.Config{MaxFlows: 8}), &Policy{Config: cfg, Generation: 1}, zap.New(core))
	srv := netip.AddrPortFrom(server4.Addr(), 5001)
	through(t, e, segment{src: client4, dst: srv, seq: 1, syn: true})
	live, err := policy.Parse("observe.yaml", []byte(observeRules("false", "false", "false")))
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(&Policy{Config: live, Generation: 2})
	e.SetPolicy(&Policy{Config: live, Generation: 3})

	info := logs.FilterLevelExact(zapcore.InfoLevel).All()
	if len(info) != 2 {
		t.Fatalf("%d info lines, want 2: %v", len(info), info)
	}
	if got := info[0].ContextMap()["rules"]; fmt.Sprint(got) != "[fixed stateless]" {
		t.Errorf("first info line names rules %v, want [fixed stateless]", got)
	}
	if !strings.Contains(info[1].Message, "no rule observes") || info[1].ContextMap()["generation"] != uint64(2) {
		t.Errorf("second info line %q %v, want the end of observe at generation 2", info[1].Message, info[1].ContextMap())
	}
	debug := logs.FilterMessageSnippet("admitted under observe").All()
	if len(debug) != 1 || debug[0].Level != zapcore.DebugLevel || debug[0].ContextMap()["rule"] != "fixed" {
		t.Errorf("observed admission logged as %v, want one debug line for rule fixed", debug)
	}
}
