package netlab

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newPair(t *testing.T, opts PairOptions) *Pair {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived is not installed (apt-get install keepalived): skipped")
	}
	p, err := NewPair(opts)
	if err != nil {
		t.Fatalf("NewPair: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, g := range []*Gateway{p.A, p.B} {
				t.Logf("keepalived %s log:\n%s", g.Name, tailLines(g.KeepalivedLog(), 30))
			}
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// keepalivedPids returns the pids of the keepalived processes running in ns.
func keepalivedPids(t *testing.T, ns *NS) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		return nil // the namespace is gone
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && isKeepalived(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPair_VIPsMoveTogetherAndTrafficFollows: A is master at start; when it fails (links cut,
// keepalived killed) B takes all four virtual addresses and traffic flows through it; when A
// recovers it preempts and traffic flows through A again. Close leaves no namespace, no
// keepalived and no file behind.
func TestPair_VIPsMoveTogetherAndTrafficFollows(t *testing.T) {
	p := newPair(t, PairOptions{AdvertInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, g := range []*Gateway{p.A, p.B} {
		if err := g.StartVRRP(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.WaitMaster(ctx, p.A); err != nil {
		t.Fatal(err)
	}
	// Both families, each end sending, through whichever gateway is master.
	both := func() {
		t.Helper()
		exchange(t, p.Lab(p.A), p.ServerAddr4, 64<<10)
		exchange(t, p.Lab(p.A), p.ServerAddr6, 64<<10)
	}
	both()

	failed := time.Now()
	if err := p.A.Fail(); err != nil {
		t.Fatal(err)
	}
	if pids := keepalivedPids(t, p.A.NS); len(pids) != 0 {
		t.Errorf("keepalived still runs in A after Fail: %v", pids)
	}
	at, err := p.WaitMaster(ctx, p.B)
	if err != nil {
		t.Fatal(err)
	}
	// The master-down interval is 3 advertisements plus a skew under one.
	if took := at.Sub(failed); took > 5*p.AdvertInterval {
		t.Errorf("B took over after %s, want under %s", took, 5*p.AdvertInterval)
	} else {
		t.Logf("B master %s after A failed (advert interval %s)", took.Round(time.Millisecond), p.AdvertInterval)
	}
	both()

	if err := p.A.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitMaster(ctx, p.A); err != nil {
		t.Fatal(err)
	}
	both()

	pids := append(keepalivedPids(t, p.A.NS), keepalivedPids(t, p.B.NS)...)
	if len(pids) < 2 {
		t.Fatalf("keepalived processes before Close: %v, want both gateways'", pids)
	}
	names, dir := p.Namespaces(), p.dir
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if isKeepalived(pid) {
			t.Errorf("keepalived %d still runs after Close", pid)
		}
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n.Name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists: %v", n.Name, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists: %v", dir, err)
	}
}
