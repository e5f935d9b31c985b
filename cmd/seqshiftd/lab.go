package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/seqshiftd/seqshiftd/lab"
)

// cmdLab runs the demonstration lab with this very binary as the daemon.
func cmdLab(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("seqshiftd lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keep := fs.Bool("keep", false, "leave the namespaces and the daemon running, and print how to poke at them")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd lab:", err)
		return 1
	}
	// A closed stdout (`seqshiftd lab | head`) must not kill the lab before it cleans up.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := lab.Run(ctx, lab.Options{Binary: bin, Keep: *keep, Out: stdout}); err != nil {
		fmt.Fprintln(stderr, "seqshiftd lab:", err)
		return 1
	}
	return 0
}
