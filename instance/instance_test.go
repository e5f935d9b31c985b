package instance

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestAcquire_SecondHolderIsRefusedAndToldThePID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seqshiftd.lock")
	first, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	// flock belongs to the open file description, so a second open in this process contends
	// exactly like a second daemon would.
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: %v, want a *HeldError", err)
	}
	if held.PID != os.Getpid() || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("HeldError names PID %d (%q), want %d", held.PID, err, os.Getpid())
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want the holder's PID", b)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	again.Release()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Release removed the lock file: %v", err)
	}
}

func TestAcquire_HolderFromFileWhenTheKernelDoesNotSay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	// A /proc/locks without the entry (another mount or PID namespace): the file's PID is used.
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "locks")
	os.WriteFile(empty, []byte("1: POSIX  ADVISORY  WRITE 77 00:01:2 0 EOF\n"), 0o600)
	if got := lockHolder(empty, st.Dev, st.Ino); got != 0 {
		t.Errorf("lockHolder found %d in a listing without the file", got)
	}
	if got := lockHolder("/proc/locks", st.Dev, st.Ino); got != os.Getpid() {
		t.Errorf("lockHolder(/proc/locks) = %d, want %d", got, os.Getpid())
	}
}

func TestAcquire_RefusesSymlinkFIFOAndDirectory(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.lock")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.lock")
	if err := os.Symlink(filepath.Join(dir, "would-be-created"), dangling); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.lock")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.lock")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"symlink to a file", link, "symbolic link"},
		{"dangling symlink", dangling, "symbolic link"},
		{"FIFO", fifo, "not a regular file"},
		{"directory", sub, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				l, err := Acquire(tc.path)
				if err == nil {
					l.Release()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Acquire(%s) = %v, want an error saying %q", tc.name, err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Acquire(%s) blocked", tc.name)
			}
		})
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "would-be-created")); err == nil {
		t.Error("a dangling symlink's target was created")
	}
}
