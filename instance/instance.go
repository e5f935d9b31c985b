// Package instance makes sure only one seqshiftd runs per lock file, and says which process
// runs when another tries to start.
//
// Acquire takes an exclusive flock(2) on a file and writes the holder's PID into it. The kernel
// drops the lock when the process dies, so a crash never leaves it behind, and a second process
// is refused at once, told the PID of the first: the PID the kernel lists for the lock in
// /proc/locks, or, failing that, the one the holder wrote.
//
// What instance must never do: follow a symbolic link or open anything but a regular file at
// the lock path (a link planted there could make the daemon truncate a file of the attacker's
// choice, and a FIFO would block it for ever); block waiting for a lock; remove the lock file
// (removing it while another process is opening it is how two processes end up holding "the"
// lock on two different files); or write to a file whose lock it does not hold.
package instance

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock is a held instance lock. The zero value is not usable; get one from Acquire.
type Lock struct {
	f    *os.File
	path string
}

// HeldError says that another process holds the lock. PID is 0 when it cannot be told (the
// holder is in another PID namespace, or has not written its PID yet).
type HeldError struct {
	Path string
	PID  int
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("another seqshiftd is running: process %d holds %s", e.PID, e.Path)
	}
	return fmt.Sprintf("another seqshiftd is running: a process this one cannot identify holds %s", e.Path)
}

// Acquire creates path if needed (mode 0600) and takes its lock without waiting. It refuses a
// symbolic link, and anything that is not a regular file, at path. When another process holds
// the lock the error is a *HeldError.
func Acquire(path string) (*Lock, error) {
	f, err := openNoFollow(path, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: holder(f)}
		}
		return nil, fmt.Errorf("instance lock %s: %w", path, err)
	}
	// For the operator who looks, and for a contender that cannot read /proc/locks. Errors do
	// not matter: the lock, not the content, is what excludes.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f, path: path}, nil
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release drops the lock; the file stays (see the package comment). It is safe to call twice.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// openNoFollow opens a regular file at path without following a symbolic link in its last
// component and without blocking on a FIFO or device, then checks through the descriptor (not
// the path, which may have changed since) that it is a regular file.
func openNoFollow(path string, flags int, perm uint32) (*os.File, error) {
	fd, err := unix.Open(path, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link; refusing to follow it", path)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file (mode %#o); refusing to use it", path, st.Mode&unix.S_IFMT)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// holder finds the PID holding the flock on f: the kernel's word from /proc/locks first, then
// what the holder wrote into the file.
func holder(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err == nil {
		if pid := lockHolder("/proc/locks", st.Dev, st.Ino); pid > 0 {
			return pid
		}
	}
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// lockHolder reads a /proc/locks listing for the FLOCK write lock on the file dev:ino. Lines
// look like "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (major and minor in hex, inode
// in decimal); lines of waiters start with "->" and are skipped by the field count.
func lockHolder(procLocks string, dev, ino uint64) int {
	f, err := os.Open(procLocks)
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[3] != "WRITE" || fs[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fs[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}
