package tcshift

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// privateBPFFS mounts a bpffs of the test's own in a mount namespace of the test's thread
// alone, so that nothing is pinned where the host could see it, and returns a directory on it.
func privateBPFFS(t *testing.T) string {
	t.Helper()
	// The thread leaves the host's mount namespace for good: this lock is never undone, so
	// the runtime discards the thread with the test's goroutine instead of reusing it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare mount namespace: %v", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return filepath.Join(dir, "seqshiftd")
}

func TestPin_FlowsSurviveALoad(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.PinDir = privateBPFFS(t)
	dp, err := Load(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	k := KeyOf(mustAddrPort("198.18.0.2:1000"), mustAddrPort("198.19.0.2:443"))
	v := FlowValue{Ifindex: 7, Mode: ModeKernel, SeqDelta: [2]seqnum.Delta{1, 2}, Packets: [2]uint64{3, 4}}
	if err := dp.Put(k, v); err != nil {
		t.Fatal(err)
	}
	dp.Close() // a crash

	again, err := Load(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Load over the pin: %v", err)
	}
	if got, ok, err := again.Lookup(k); !ok || err != nil || got != v {
		t.Fatalf("after a new Load: %+v, %t, %v; want %+v", got, ok, err, v)
	}
	again.Close()

	// flows.max changed: a new map of the new size, holding the old entries, pinned instead.
	bigger := cfg
	bigger.MaxFlows = 2 * cfg.MaxFlows
	resized, err := Load(bigger, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Load with another size: %v", err)
	}
	if got, ok, _ := resized.Lookup(k); !ok || got != v {
		t.Fatalf("after resizing: %+v, %t", got, ok)
	}
	if info, _ := resized.objs.Flows.Info(); info.MaxEntries != uint32(bigger.MaxFlows) {
		t.Fatalf("resized map holds %d entries", info.MaxEntries)
	}
	resized.Close()
	if dp, err := Load(bigger, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("Load over the resized pin: %v", err)
	} else if _, ok, _ := dp.Lookup(k); !ok {
		t.Fatal("the resized map was not the one pinned")
	} else {
		dp.Close()
	}

	// Teardown leaves nothing pinned.
	if err := Detach(bigger); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bigger.PinDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory left behind: %v", err)
	}
}
