// Command seqshiftd is a transparent, in-path TCP sequence-number rewriter for Linux gateways.
//
// It runs as a daemon (`seqshiftd run`) and is operated with the other subcommands, which talk
// to the daemon over its control socket or only read the configuration file.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the module
// version or VCS revision from the build info is used.
var version = ""

const defaultConfig = "/etc/seqshiftd/seqshiftd.yaml"

const usage = `usage: seqshiftd <command> [flags]

commands:
  run       [-c FILE]          run the daemon
  check     [-c FILE]          validate the configuration without touching the system
  status    [-c FILE] [--json] show the running daemon's state (exit 0 only when it is steering)
  flows     [-c FILE] [--json] list tracked connections; filters --src --dst --sport --dport
                               --rule --state, -C counts
  teardown  [-c FILE] [-record PATH] [-table N] [-priority N] [-protocol N] [-tun NAME]
                               remove what seqshiftd installed; a broken or missing FILE
                               is a warning (the install record or the tag is enough)
  reload    [-c FILE]          check, signal the daemon to reload, wait for its verdict (ExecReload)
  lab       [--keep]           build a namespace lab, run connections through seqshiftd, show both sides
  verify    CLIENT.pcap SERVER.pcap [--json] [--strict]  prove from captures on both sides that every segment maps
  version                      print the version

FILE defaults to ` + defaultConfig + `; status and flows also take --socket PATH instead.
` + "`seqshiftd help COMMAND` or `seqshiftd COMMAND --help` describes one command.\n"

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs one subcommand and returns the process exit code.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "flows":
		return cmdFlows(rest, stdout, stderr)
	case "teardown":
		return cmdTeardown(rest, stdout, stderr)
	case "reload":
		return cmdReload(rest, stdout, stderr)
	case "lab":
		return cmdLab(rest, stdout, stderr)
	case "verify":
		return cmdVerify(rest, stdout, stderr)
	case "version", "--version", "-version":
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "seqshiftd version: unexpected argument %q\n\n%s", rest[0], usage)
			return 2
		}
		fmt.Fprintln(stdout, "seqshiftd", buildVersion())
		return 0
	case "help", "-h", "--help":
		// `seqshiftd help CMD` is `seqshiftd CMD --help`.
		if len(rest) == 1 && commandHelp[rest[0]] != "" {
			return dispatch([]string{rest[0], "--help"}, stdout, stderr)
		}
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "seqshiftd help: no command %q\n\n%s", rest[0], usage)
			return 2
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "seqshiftd: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// newFlags returns a flag set for a subcommand with the -c flag every subcommand shares.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("seqshiftd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", defaultConfig, "configuration file")
	return fs, path
}

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
