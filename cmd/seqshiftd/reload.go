package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/policy"
)

// reloadWait bounds how long `seqshiftd reload` waits for the daemon's verdict. A reload
// parses one file (and reads the ISN key): well under a second even for thousands of rules.
const reloadWait = 30 * time.Second

// cmdReload is the unit's ExecReload. SIGHUP alone cannot fail, so `systemctl reload` would
// report success for a file the daemon refused (Type=notify-reload, which would carry the
// daemon's answer, needs systemd 253; Debian bookworm has 252). This checks the file the same
// way `check` does and refuses before signalling, then sends SIGHUP and waits until the daemon
// reports a reload that started after the signal, and exits with its result: 0 when the new
// policy is in force, 1 when the daemon kept the old one (its error is printed, and stays
// in `status` and in the unit's STATUS= line).
func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlags("reload", stderr)
	socket := fs.String("socket", "", "control socket of the running daemon (default: the file's control_socket)")
	pidFlag := fs.Int("pid", 0, "the daemon's process id (systemd: $MAINPID; default: the control socket's peer)")
	if code := parseFlags(fs, args, stdout, stderr); code >= 0 {
		return code
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stderr, "seqshiftd: reload refused: the file is invalid; the daemon was not signalled and keeps its policy")
		return 1
	}
	if *socket == "" {
		*socket = cfg.ControlSocket
	}
	c, err := control.Dial(*socket, controlTimeout)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	defer c.Close()
	before, err := c.Status()
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	pid := *pidFlag
	if pid == 0 {
		if pid, err = socketPeerPID(*socket); err != nil {
			fmt.Fprintln(stderr, "seqshiftd:", err)
			return 1
		}
	}
	sent := time.Now()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "seqshiftd: signal process %d: %v\n", pid, err)
		return 1
	}
	st, err := awaitReload(c, sent, reloadWait)
	if err != nil {
		fmt.Fprintln(stderr, "seqshiftd:", err)
		return 1
	}
	if st.LastReloadError != "" {
		fmt.Fprintf(stderr, "seqshiftd: reload failed; generation %d stays in force:\n%s\n", st.Generation, st.LastReloadError)
		return 1
	}
	fmt.Fprintf(stdout, "seqshiftd: reloaded: generation %d (was %d)\n", st.Generation, before.Generation)
	return 0
}

// awaitReload polls the daemon's status until it reports a reload finished after sent.
// Signals of one kind coalesce, so the reload that follows the signal may also cover an
// earlier one; it still read the file after the signal was sent.
func awaitReload(c *control.Client, sent time.Time, limit time.Duration) (control.Status, error) {
	deadline := time.Now().Add(limit)
	for {
		st, err := c.Status()
		if err != nil {
			return st, err
		}
		if st.LastReloadTime.After(sent) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("the daemon did not report a reload within %v of SIGHUP", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// socketPeerPID returns the process id of the daemon listening on a unix socket, from the
// kernel's record of the listener's credentials (SO_PEERCRED), so that no pid file is needed.
func socketPeerPID(path string) (int, error) {
	conn, err := net.DialTimeout("unix", path, controlTimeout)
	if err != nil {
		return 0, fmt.Errorf("connect to control socket %s: %w", path, err)
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("credentials of control socket %s: %w", path, cerr)
	}
	if cred.Pid <= 0 {
		return 0, errors.New("control socket " + path + " reports no peer process (pass --pid)")
	}
	return int(cred.Pid), nil
}
