// Command seqshiftd is a transparent, in-path TCP sequence-number rewriter for Linux gateways.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "seqshiftd: not built yet")
	os.Exit(2)
}
