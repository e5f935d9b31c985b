package tcshift

import "strings"

// Stat indexes the programs' counters (enum stat in maps.h).
type Stat uint32

// The counters, in the order of enum stat. Counters describes each.
const (
	StatToDaemonNoFlow Stat = iota
	StatToDaemonDaemonMode
	StatToDaemonFlags
	StatToDaemonICMP
	StatToDaemonUnparsed
	StatRewrittenC2S
	StatRewrittenS2C
	StatPassedZeroDeltaC2S
	StatPassedZeroDeltaS2C
	StatPassedMark
	StatPassedNotIP
	StatPassedNotTCP
	StatPassedNotIntercepted
	StatPassedOtherIface
	StatPassedReplyElsewhere
	StatDroppedCsum
	StatTapReturnedC2S
	StatTapReturnedS2C
	StatTapDroppedBadMeta
	StatTapDroppedNoIface
	NumStats
)

// Counter describes one counter: a family (a metric name without prefix or _total), the label
// that tells the family's counters apart (a reason; "" if none), the direction ("c2s", "s2c",
// or ""), and help text. The C enum entry of a counter is STAT_ and the upper-cased Name, Label
// and Dir joined by "_"; a test checks the two lists against each other through BTF.
type Counter struct {
	Name  string
	Label string
	Dir   string
	Help  string
}

// Counters is the table of the programs' counters, indexed by Stat. Metrics and status render
// it as it is: a new counter is an entry here, one in enum stat, and its count() in C.
var Counters = [NumStats]Counter{
	StatToDaemonNoFlow:       {"to_daemon", "no_flow", "", "Intercepted TCP segments of no flow in the kernel map (new connections), sent to the daemon."},
	StatToDaemonDaemonMode:   {"to_daemon", "daemon_mode", "", "Segments of flows the daemon handles itself, sent to the daemon."},
	StatToDaemonFlags:        {"to_daemon", "flags", "", "SYN, FIN or RST segments of kernel-mode flows, sent to the daemon."},
	StatToDaemonICMP:         {"to_daemon", "icmp", "", "ICMP and ICMPv6 errors at a client-facing interface, sent to the daemon."},
	StatToDaemonUnparsed:     {"to_daemon", "unparsed", "", "Intercepted packets beyond what the kernel programs parse (IP options, fragments, extension headers, bad TCP header or options), sent to the daemon."},
	StatRewrittenC2S:         {"rewritten", "", "c2s", "Segments shifted in the kernel."},
	StatRewrittenS2C:         {"rewritten", "", "s2c", "Segments shifted in the kernel."},
	StatPassedZeroDeltaC2S:   {"passed", "zero_delta", "c2s", "Kernel-mode segments of flows whose offsets are zero, counted and passed unwritten."},
	StatPassedZeroDeltaS2C:   {"passed", "zero_delta", "s2c", "Kernel-mode segments of flows whose offsets are zero, counted and passed unwritten."},
	StatPassedMark:           {"passed", "mark", "", "Packets the daemon wrote back, passed with the mark bit cleared."},
	StatPassedNotIP:          {"passed", "not_ip", "", "Frames that are not IPv4 or IPv6, or shorter than their fixed IP header, passed untouched."},
	StatPassedNotTCP:         {"passed", "not_tcp", "", "IP packets that are neither TCP nor an ICMP error, passed untouched."},
	StatPassedNotIntercepted: {"passed", "not_intercepted", "", "TCP packets whose server address is not intercepted on the interface, passed untouched."},
	StatPassedOtherIface:     {"passed", "other_iface", "", "Segments of flows decided on another client-facing interface, passed untouched."},
	StatPassedReplyElsewhere: {"passed", "reply_elsewhere", "", "Segments whose reversed tuple is a flow (its other side faces another interface), passed untouched."},
	StatDroppedCsum:          {"dropped", "csum", "", "Shifted segments dropped because the checksum could not be fixed (never expected)."},
	StatTapReturnedC2S:       {"tap_returned", "", "c2s", "Packets the daemon wrote back to the TAP, sent on into the client-facing interface."},
	StatTapReturnedS2C:       {"tap_returned", "", "s2c", "Packets the daemon wrote back to the TAP, sent on out of the client-facing interface."},
	StatTapDroppedBadMeta:    {"tap_dropped", "bad_meta", "", "Frames on the TAP without valid metadata, dropped."},
	StatTapDroppedNoIface:    {"tap_dropped", "no_iface", "", "Frames on the TAP whose metadata names an interface the datapath does not serve, dropped."},
}

// cName returns the name of the counter's entry in enum stat.
func (c Counter) cName() string {
	parts := []string{"STAT", c.Name}
	for _, p := range []string{c.Label, c.Dir} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.ToUpper(strings.Join(parts, "_"))
}

// Stats holds the counters summed over CPUs, indexed by Stat.
type Stats [NumStats]uint64
