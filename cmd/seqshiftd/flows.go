package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/seqshiftd/seqshiftd/control"
)

// flowStates are the states `flows --state` accepts, in a connection's life order (the names
// the daemon reports).
var flowStates = []string{"syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close"}

// flowFilter selects flows like conntrack -L's options: --src/--dst are the client's and the
// server's address (conntrack's original direction: the client sent the SYN), --sport/--dport
// their ports. Zero values match anything.
type flowFilter struct {
	src, dst     netip.Prefix
	sport, dport uint16
	rule, state  string
}

func (f *flowFilter) match(fl *control.FlowInfo) bool {
	return (!f.src.IsValid() || f.src.Contains(fl.Client.Addr().Unmap())) &&
		(!f.dst.IsValid() || f.dst.Contains(fl.Server.Addr().Unmap())) &&
		(f.sport == 0 || fl.Client.Port() == f.sport) &&
		(f.dport == 0 || fl.Server.Port() == f.dport) &&
		(f.rule == "" || fl.Rule == f.rule || f.rule == "-" && fl.Rule == "") &&
		(f.state == "" || fl.State == f.state)
}

// prefixFlag accepts an address (one host) or a prefix.
type prefixFlag struct{ p *netip.Prefix }

func (v prefixFlag) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}

func (v prefixFlag) Set(s string) error {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		*v.p = p.Masked()
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*v.p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	return nil
}

type portFlag struct{ p *uint16 }

func (v portFlag) String() string {
	if v.p == nil || *v.p == 0 {
		return ""
	}
	return strconv.Itoa(int(*v.p))
}

func (v portFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port %q: want 1..65535", s)
	}
	*v.p = uint16(n)
	return nil
}

type stateFlag struct{ s *string }

func (v stateFlag) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v stateFlag) Set(s string) error {
	if !slices.Contains(flowStates, s) {
		return fmt.Errorf("state %q: one of %s", s, strings.Join(flowStates, ", "))
	}
	*v.s = s
	return nil
}

func addFilterFlags(fs *flag.FlagSet, f *flowFilter) {
	fs.Var(prefixFlag{&f.src}, "src", "only flows whose client (the SYN's sender) is this address or in this prefix")
	fs.Var(prefixFlag{&f.dst}, "dst", "only flows whose server is this address or in this prefix")
	fs.Var(portFlag{&f.sport}, "sport", "only flows from this client port")
	fs.Var(portFlag{&f.dport}, "dport", "only flows to this server port")
	fs.StringVar(&f.rule, "rule", "", "only flows of this rule; - for flows no rule matched (shown as rule=-)")
	fs.Var(stateFlag{&f.state}, "state", "only flows in this state ("+strings.Join(flowStates, ", ")+")")
}

func cmdFlows(args []string, stdout, stderr io.Writer) int {
	fs, path, socket, asJSON := daemonFlags("flows", stderr)
	var filter flowFilter
	addFilterFlags(fs, &filter)
	count := fs.Bool("C", false, "print only the number of (matching) flows, like conntrack -C")
	watch := fs.Bool("watch", false, "stream flows as they appear and go away, like conntrack -E (text, or JSON lines with --json)")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	if *watch && *count {
		fmt.Fprintln(stderr, "seqshiftd flows: --watch and -C do not go together")
		return 2
	}
	c, code := dialDaemon(*path, *socket, stderr)
	if c == nil {
		return code
	}
	defer c.Close()
	matching := func(yield func(control.FlowInfo) error) error {
		return c.Flows(func(f control.FlowInfo) error {
			if !filter.match(&f) {
				return nil
			}
			return yield(f)
		})
	}
	var err error
	switch {
	case *watch:
		err = watchFlows(c, &filter, *asJSON, stdout, stderr)
	case *count:
		n := 0
		err = matching(func(control.FlowInfo) error { n++; return nil })
		if err == nil {
			if *asJSON {
				fmt.Fprintf(stdout, "{\"count\": %d}\n", n)
			} else {
				fmt.Fprintln(stdout, n)
			}
		}
	case *asJSON:
		err = control.WriteFlowsJSON(stdout, matching)
	default:
		err = control.WriteFlowsTable(stdout, matching)
	}
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	return 0
}

// watchFlows prints each event that passes the filter as it arrives, flushing every line so a
// pipe (`| grep`) sees it at once. It ends only when the daemon does or stdout is gone.
func watchFlows(c *control.Client, filter *flowFilter, asJSON bool, stdout, stderr io.Writer) error {
	return c.Watch(func(ev control.Event) error {
		if ev.Lost > 0 {
			fmt.Fprintf(stderr, "seqshiftd: %d events lost: this watcher read too slowly\n", ev.Lost)
		}
		if !filter.match(&ev.Flow) {
			return nil
		}
		return control.WriteEvent(stdout, ev, asJSON)
	})
}
