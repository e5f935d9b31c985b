package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// commandHelp is each subcommand's synopsis and what it does, shown by `seqshiftd CMD --help`
// above its flags.
var commandHelp = map[string]string{
	"run":      "run [-c FILE]\n\nRun the daemon: restore the flow snapshot, open the TUN, install steering, serve.",
	"check":    "check [-c FILE] [--portable] [--plan]\n\nValidate the file without touching the system: exit 1 on any error, and on anything\nrun would refuse on this host (a missing intercept interface, an unusable ISN key);\nwarnings are FILE:LINE:COL: warning: .... --plan prints what run would install.",
	"status":   "status [-c FILE | --socket PATH] [--json]\n\nShow the running daemon's state; exit 0 only when it runs and its steering is installed.",
	"flows":    "flows [-c FILE | --socket PATH] [--json] [-C] [--src ADDR[/LEN]] [--dst ADDR[/LEN]] [--sport PORT] [--dport PORT] [--rule NAME] [--state STATE] [--watch]\n\nList the tracked connections that match every filter given, like conntrack -L\n(--src is the client, which sent the SYN); -C prints only their number;\n--watch streams them as they appear and go away, like conntrack -E.\nText keys are the JSON names.",
	"teardown": "teardown [-c FILE] [-record PATH] [-table N] [-priority N] [-protocol N] [-tun NAME]\n\nRemove exactly what seqshiftd installed (tc filters and the clsact qdiscs it created, policy rules and routes), from the install record and the tags; a broken or missing FILE is a warning.",
	"reload":   "reload [-c FILE] [--socket PATH] [--pid PID]\n\nCheck the file, signal the daemon to reload it (SIGHUP) and wait for its verdict:\nexit 0 when the new policy is in force, 1 when the daemon kept the old one.\nThe unit's ExecReload, so that `systemctl reload` fails on a broken file.",
	"verify":   "verify CLIENT.pcap SERVER.pcap [--json] [--strict]",
	"lab":      "lab [--keep]\n\nBuild a namespace lab, run connections through seqshiftd and show both sides.",
}

// parseFlags parses a subcommand's arguments the way scripts need: --help prints the
// subcommand's help on stdout and succeeds; an unknown flag or a stray argument ("check FILE"
// without -c, "flows -c F extra --json", where Go's flag package would stop at "extra" and
// ignore --json) is a usage error, exit 2, with the help on stderr. It returns -1 to go on, or
// the exit code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	name := strings.TrimPrefix(fs.Name(), "seqshiftd ")
	fs.SetOutput(io.Discard)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: seqshiftd %s\n\nflags:\n", commandHelp[name])
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "seqshiftd %s: %v\n", name, err)
		usage(stderr)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "seqshiftd %s: unexpected argument %q (flags must come before it; the file is given with -c)\n", name, fs.Arg(0))
		usage(stderr)
		return 2
	}
	return -1
}
