package tcshift

import (
	"strings"

	"github.com/seqshiftd/seqshiftd/counter"
)

// Stat indexes the programs' counters (enum stat in maps.h).
type Stat uint32

// The counters, in the order of enum stat; Counters describes each.
const (
	StatToDaemonNoFlow Stat = iota
	StatToDaemonDaemonMode
	StatToDaemonFlags
	StatToDaemonICMP
	StatToDaemonUnparsed
	StatRewrittenC2S
	StatRewrittenS2C
	StatPassedZeroDelta
	StatPassedMark
	StatPassedNotIP
	StatPassedNotTCP
	StatPassedNotIntercepted
	StatPassedOtherIface
	StatPassedReplyElsewhere
	StatDroppedRewrite
	StatTapReturnedC2S
	StatTapReturnedS2C
	StatTapDroppedBadMeta
	StatTapDroppedNoIface
	NumStats
)

// Family is a family of the programs' packet counters, told apart by one label: metrics show
// it as seqshiftd_kernel_<Name>_packets_total{<Label>="<Counter.Value>"}.
type Family struct {
	Name  string // e.g. "to_daemon"
	Label string // "reason" or "direction"
	Help  string
}

// The families, in the order of their counters in enum stat.
var (
	FamilyToDaemon = &Family{"to_daemon", "reason", "Packets the kernel programs sent to the daemon through the TAP, by reason " +
		"(no_flow: intercepted TCP of no flow in the map, a new connection; daemon_mode: a flow the daemon handles itself; " +
		"flags: SYN, FIN or RST of a kernel-mode flow; icmp: an ICMP or ICMPv6 error; " +
		"unparsed: IP options, fragments, IPv6 extension headers, a bad TCP header or options, headers that could not be pulled into the linear data)."}
	FamilyRewritten = &Family{"rewritten", "direction", "Segments of kernel-mode flows shifted by the kernel programs, by direction (c2s: from the client). A GSO super-packet counts once."}
	FamilyPassed    = &Family{"passed", "reason", "Packets the kernel programs let through unwritten, by reason " +
		"(zero_delta: a kernel-mode flow whose offsets are zero; mark: written back by the daemon; not_ip; not_tcp: neither TCP nor an ICMP error; " +
		"not_intercepted: the server address is not intercepted on the interface; other_iface: a flow decided on another interface; " +
		"reply_elsewhere: the reply of a flow decided on another interface)."}
	FamilyDropped     = &Family{"dropped", "reason", "Packets the kernel programs dropped at a client-facing interface, by reason (rewrite: a shift that could not be completed, the packet possibly half written; never expected)."}
	FamilyTapReturned = &Family{"tap_returned", "direction", "Packets the daemon wrote back to the TAP and the kernel program sent on, by direction (c2s: into the client-facing interface, s2c: out of it)."}
	FamilyTapDropped  = &Family{"tap_dropped", "reason", "Frames on the TAP the kernel program dropped, by reason (bad_meta: no valid metadata; no_iface: an interface the datapath does not serve)."}
	Families          = []*Family{FamilyToDaemon, FamilyRewritten, FamilyPassed, FamilyDropped, FamilyTapReturned, FamilyTapDropped}
)

// Counter is one of the programs' counters: its family and its label's value.
type Counter struct {
	Family *Family
	Value  string
}

// Counters is the table of the programs' counters, indexed by Stat; the counters of a family
// are consecutive. Metrics and status render it as it is: a new counter is an entry here, one
// in enum stat, and its count() in C.
var Counters = [NumStats]Counter{
	StatToDaemonNoFlow:       {FamilyToDaemon, "no_flow"},
	StatToDaemonDaemonMode:   {FamilyToDaemon, "daemon_mode"},
	StatToDaemonFlags:        {FamilyToDaemon, "flags"},
	StatToDaemonICMP:         {FamilyToDaemon, "icmp"},
	StatToDaemonUnparsed:     {FamilyToDaemon, "unparsed"},
	StatRewrittenC2S:         {FamilyRewritten, "c2s"},
	StatRewrittenS2C:         {FamilyRewritten, "s2c"},
	StatPassedZeroDelta:      {FamilyPassed, "zero_delta"},
	StatPassedMark:           {FamilyPassed, "mark"},
	StatPassedNotIP:          {FamilyPassed, "not_ip"},
	StatPassedNotTCP:         {FamilyPassed, "not_tcp"},
	StatPassedNotIntercepted: {FamilyPassed, "not_intercepted"},
	StatPassedOtherIface:     {FamilyPassed, "other_iface"},
	StatPassedReplyElsewhere: {FamilyPassed, "reply_elsewhere"},
	StatDroppedRewrite:       {FamilyDropped, "rewrite"},
	StatTapReturnedC2S:       {FamilyTapReturned, "c2s"},
	StatTapReturnedS2C:       {FamilyTapReturned, "s2c"},
	StatTapDroppedBadMeta:    {FamilyTapDropped, "bad_meta"},
	StatTapDroppedNoIface:    {FamilyTapDropped, "no_iface"},
}

// String returns the counter's family and value, e.g. "to_daemon/no_flow".
func (s Stat) String() string {
	if s < NumStats {
		return Counters[s].Family.Name + "/" + Counters[s].Value
	}
	return "unknown"
}

// cName returns the name of the counter's entry in enum stat.
func (c Counter) cName() string {
	return strings.ToUpper("STAT_" + c.Family.Name + "_" + c.Value)
}

// Stats holds the counters summed over CPUs, indexed by Stat.
type Stats [NumStats]uint64

// counterDescs describes the families for the counter package, which metrics and status read:
// seqshiftd_kernel_<name>_packets_total{<label>=...} and status keys kernel_<name>_<value>.
var counterDescs = func() []*counter.Desc {
	var descs []*counter.Desc
	for _, f := range Families {
		var values []string
		for _, c := range Counters {
			if c.Family == f {
				values = append(values, c.Value)
			}
		}
		descs = append(descs, &counter.Desc{
			Name:   "kernel_" + f.Name + "_packets_total",
			Help:   f.Help,
			Labels: []string{f.Label},
			Values: counter.Each(values...),
			Status: "kernel_" + f.Name + "_%s",
		})
	}
	// NewTable checks the names and labels; tcshift needs none of its Blocks (the counters
	// live in the kernel's per-CPU map).
	counter.NewTable(descs...)
	return descs
}()

// Descs returns the counter families (counter.Set).
func (d *Datapath) Descs() []*counter.Desc { return counterDescs }

// Values returns the counters summed over CPUs, by family (counter.Set). It reads the kernel's
// map: call it at scrape time, never per packet.
func (d *Datapath) Values() [][]uint64 {
	s := d.Stats()
	out := make([][]uint64, len(Families))
	i := 0
	for f := range Families {
		start := i
		for i < len(s) && Counters[i].Family == Families[f] {
			i++
		}
		out[f] = s[start:i:i]
	}
	return out
}

var _ counter.Set = (*Datapath)(nil)
