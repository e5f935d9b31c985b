// Package inlinetest pins the inlining the per-packet code relies on, as net/netip's
// inlining_test.go does: it asks the compiler (go build -gcflags=-m) which functions of a
// package it can inline and fails a test for each listed function it cannot. A small helper
// that silently stops inlining (a new branch, a panic path, a larger body) costs a call per
// field per packet, which no functional test notices.
//
// It must never be imported by non-test code, and never fail for lack of a go tool: it skips.
package inlinetest

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Check fails t for every function in want that the compiler cannot inline in the package
// with import path pkg. Names are as the compiler prints them: "fold", "Value.Add",
// "(*Flow).Offset".
func Check(t *testing.T, pkg string, want []string) {
	t.Helper()
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(gotool); err != nil {
		if gotool, err = exec.LookPath("go"); err != nil {
			t.Skipf("no go tool to ask about inlining: %v", err)
		}
	}
	if testing.Short() {
		t.Skip("builds the package with -gcflags=-m; skipped in -short mode")
	}
	// -gcflags applies to the named package only; its output goes to stderr.
	out, err := exec.Command(gotool, "build", "-gcflags=-m", "-o", "/dev/null", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m %s: %v\n%s", pkg, err, out)
	}
	can := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "rewrite/checksum.go:15:6: can inline change32 with cost 8 as: ..."
		_, rest, ok := strings.Cut(sc.Text(), ": can inline ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		can[name] = true
	}
	for _, fn := range want {
		if !can[fn] {
			t.Errorf("%s: %s is not inlinable any more", pkg, fn)
		}
	}
}
