package netlab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are bind-mounted, shared with `ip netns` and
// github.com/vishvananda/netns.
const netnsDir = "/run/netns"

// NS is a named network namespace, as `ip netns` knows it.
type NS struct {
	Name string
}

// Do runs fn on a locked OS thread inside n and returns what fn returns.
//
// Sockets fn creates stay in n for life, wherever they are used afterwards. Goroutines fn starts
// do not run in n. A panic in fn is re-raised in the caller once the thread is back home.
func (n *NS) Do(fn func() error) error {
	target, err := netns.GetFromPath(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", n.Name, err)
	}
	defer target.Close()
	return doIn(target, fn)
}

// doIn runs fn in a fresh goroutine locked to its thread: should the thread's namespace fail to be
// restored, the goroutine exits still locked and the runtime destroys the thread instead of
// handing it to unrelated code.
func doIn(target netns.NsHandle, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("get current namespace: %w", err)}
			return
		}
		defer home.Close()
		if err := netns.Set(target); err != nil {
			// setns(2) leaves the thread where it was when it fails.
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter namespace: %w", err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.value = true, p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(home); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("restore namespace (thread discarded): %w", err))
			done <- r // still locked: the thread dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// createNamed makes a new named namespace without moving any thread that outlives the call.
func createNamed(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("invalid namespace name %q", name)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer home.Close()
		h, err := netns.NewNamed(name) // unshare(2)s this thread into the new namespace
		if err == nil {
			h.Close()
		} else if !errors.Is(err, fs.ErrExist) {
			// NewNamed may leave an unmounted placeholder file behind.
			_ = unix.Unmount(filepath.Join(netnsDir, name), unix.MNT_DETACH)
			_ = os.Remove(filepath.Join(netnsDir, name))
		}
		if serr := netns.Set(home); serr != nil {
			done <- errors.Join(err, fmt.Errorf("restore namespace (thread discarded): %w", serr))
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("create namespace %s: %w", name, err)
		}
		done <- err
	}()
	if err := <-done; err != nil {
		return nil, err
	}
	return &NS{Name: name}, nil
}

// remove deletes the namespace's name. The namespace itself, with its links, goes away once
// nothing (a process, a socket, an open handle) holds it any more.
func (n *NS) remove() error {
	p := filepath.Join(netnsDir, n.Name)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = unix.Unmount(p, unix.MNT_DETACH)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove namespace %s: %w", n.Name, err)
	}
	return nil
}

// Command returns a command that runs name inside n (through `ip netns exec`, which also gives it
// a /sys of n).
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside n and returns its combined output; a failure's error includes it.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Listen is net.Listen with the socket created inside n.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	return n.ListenWith(context.Background(), &net.ListenConfig{}, network, addr)
}

// ListenWith is lc.Listen with the socket created inside n; lc.Control can set socket options.
func (n *NS) ListenWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = lc.Listen(ctx, network, addr)
		return err
	})
	return ln, err
}

// Dial is net.Dialer.DialContext with the socket created inside n.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.DialWith(ctx, &net.Dialer{}, network, addr)
}

// DialWith is d.DialContext with the socket created inside n; d.Control can set socket options.
// addr must be a literal address: a name lookup would run partly outside n.
func (n *NS) DialWith(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Sysctl sets a sysctl of n, e.g. Sysctl("net.ipv4.ip_forward", "1").
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error { return writeSysctl(key, value) })
}

// ReadSysctl returns a sysctl's value in n, without the trailing newline.
func (n *NS) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// writeSysctl writes a sysctl of the calling thread's namespace: /proc/sys/net resolves to the
// namespace of the thread that opens it.
func writeSysctl(key, value string) error {
	if err := os.WriteFile(sysctlPath(key), []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// sysctlPath maps net.ipv4.conf.eth0.rp_filter to its /proc/sys file.
func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}
