package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/seqshiftd/seqshiftd/verify"
)

// cmdVerify is `seqshiftd verify CLIENT.pcap SERVER.pcap [--json] [--strict]`: it proves from two
// captures, one on each side of the gateway, that every segment maps with one offset per
// direction. Exit 0 when all connections map, 1 when one does not, 2 when a file cannot be read.
func cmdVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("seqshiftd verify", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON (stable field names)")
	strict := fs.Bool("strict", false, "also fail a connection with segments only one capture holds (drops)")
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: seqshiftd verify CLIENT.pcap SERVER.pcap [--json] [--strict]")
		fmt.Fprintln(w, "CLIENT.pcap is captured on the gateway's client-side link, SERVER.pcap on its server-side link (pcap or pcapng)")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	// The flag package would print its own usage on stderr; --help is success on stdout
	// (parseFlags' rule for every command), a bad flag a usage error on stderr.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// Flags may come before or after the two files.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		} else if err != nil {
			fmt.Fprintf(stderr, "seqshiftd verify: %v\n", err)
			usage(stderr)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		files, rest = append(files, fs.Arg(0)), fs.Args()[1:]
	}
	if len(files) != 2 {
		usage(stderr)
		return 2
	}
	r, err := verify.Files(files[0], files[1], verify.Options{Strict: *strict})
	if err != nil {
		fmt.Fprintf(stderr, "seqshiftd verify: %v\n", err)
		return 2
	}
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "seqshiftd verify: %v\n", err)
		return 2
	}
	if !r.OK {
		return 1
	}
	return 0
}
