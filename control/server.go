package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/instance"
)

// Defaults for the server's limits; see options.
const (
	defaultRequestTimeout = 5 * time.Second
	defaultWriteIdle      = 30 * time.Second
	defaultMaxConns       = 16
	// statusSlots connections beyond maxConns are kept for `status` and `version`: a health
	// check must answer while other clients (a stuck script, a slow `flows`) hold every other
	// slot, or the daemon is reported down when it is only busy. Two: a health check and an
	// operator at once.
	statusSlots = 2
	// statusRequestTimeout is how long a connection in a status slot may take to send its
	// request: a health check sends it at once, and an idle client squatting on the slot must
	// give it up quickly.
	statusRequestTimeout = time.Second
	// writeBuffer is the only per-connection memory a flows stream uses besides the socket's own
	// buffer: large enough that a listing costs few syscalls, small enough not to matter.
	writeBuffer = 64 << 10
	// maxSocketPath is sun_path's size less the terminating NUL.
	maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1
)

// options are the server's limits; tests shorten them.
type options struct {
	// requestTimeout bounds how long a client may take to send its request line, counted from
	// accept: a client that connects and says nothing is dropped after it.
	requestTimeout time.Duration
	// writeIdle bounds how long a single write may wait for the client to read. It is an idle
	// timeout, not a total one, so a big listing to a client that keeps reading never times out.
	writeIdle time.Duration
	// maxConns bounds concurrent connections for any command; statusSlots more may only ask
	// for status or version; beyond that they are answered "busy" and closed.
	maxConns int
}

func defaultOptions() options {
	return options{requestTimeout: defaultRequestTimeout, writeIdle: defaultWriteIdle, maxConns: defaultMaxConns}
}

// Server serves the control socket.
type Server struct {
	path string
	h    Handler
	log  *zap.Logger
	opts options
	ln   *net.UnixListener
	lock *instance.Lock // held for the server's lifetime: one daemon per socket path
	self os.FileInfo    // the socket file as bound, so Close removes only its own
	uid  int            // the daemon's effective uid, allowed besides root

	sem     chan struct{} // a slot per connection, any command
	reserve chan struct{} // the status slots, taken only when sem is full
	wg      sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Listen creates the control socket at path, readable and writable only by its owner (0600),
// and serves h on it until Close. It fails if another daemon holds the socket.
func Listen(path string, h Handler, log *zap.Logger) (*Server, error) {
	return listen(path, h, log, defaultOptions())
}

func listen(path string, h Handler, log *zap.Logger, opts options) (*Server, error) {
	if path == "" {
		return nil, errors.New("control socket path is empty")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes long; a unix socket path may have at most %d", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	// 0755: clients that are not allowed in should get "permission denied" from the socket's own
	// 0600 mode, which the CLI turns into "run it with sudo", not a confusing lookup error.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	lock, err := lockPath(path + ".lock")
	if err != nil {
		return nil, err
	}
	s := &Server{
		path:    path,
		h:       h,
		log:     log,
		opts:    opts,
		lock:    lock,
		uid:     os.Geteuid(),
		sem:     make(chan struct{}, opts.maxConns),
		reserve: make(chan struct{}, statusSlots),
		conns:   make(map[net.Conn]struct{}),
	}
	if err := checkStale(path); err != nil {
		lock.Release()
		return nil, err
	}
	if err := s.bind(dir); err != nil {
		lock.Release()
		return nil, err
	}
	s.wg.Add(1)
	go s.acceptLoop()
	log.Info("control socket listening", zap.String("path", path))
	return s, nil
}

// lockPath takes an exclusive lock on a file beside the socket. The lock, not the socket, is
// what decides whether another daemon runs: two daemons starting at once could both find a
// stale socket and the second could unlink the first's fresh one. See package instance for why
// the file is never removed and never followed through a symbolic link.
func lockPath(lockFile string) (*instance.Lock, error) {
	l, err := instance.Acquire(lockFile)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return l, nil
}

// checkStale makes sure nothing live answers at path. A socket nobody listens on is left by a
// crashed run and will be replaced; anything else at path is not ours to replace.
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another seqshiftd is running (something answers on %s)", path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: bind replaces it atomically
	}
	return fmt.Errorf("probe existing control socket %s: %w", path, err)
}

// bind creates the listening socket in a private 0700 directory beside path, sets its mode to
// 0600 and only then renames it into place. A socket is created with the process umask's mode
// and accepts connections from the moment it listens; chmod after Listen would leave a window in
// which any local user could connect, and changing the process-wide umask would race with every
// other goroutine creating files. Inside the private directory nobody but the owner can reach it
// before the chmod, and rename atomically replaces a stale socket left at path.
func (s *Server) bind(dir string) error {
	tmpDir, err := os.MkdirTemp(dir, ".ctl")
	if err != nil {
		return fmt.Errorf("create private directory for the control socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return fmt.Errorf("control socket directory %s is too long: binding needs %d bytes, a unix socket path may have at most %d", dir, len(tmp), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fmt.Errorf("bind control socket: %w", err)
	}
	// The bound name moves with the rename; Close removes the real path itself.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod control socket: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		ln.Close()
		return fmt.Errorf("move control socket into place: %w", err)
	}
	fi, err := os.Lstat(s.path)
	if err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	s.ln, s.self = ln, fi
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, ends every open connection, waits for their goroutines, removes the
// socket file and releases the lock. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	// Remove the file only if it is still the socket this server bound: after a forced start
	// elsewhere it might be someone else's.
	if fi, statErr := os.Lstat(s.path); statErr == nil && os.SameFile(fi, s.self) {
		if rmErr := os.Remove(s.path); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove control socket: %w", rmErr))
		}
	}
	s.lock.Release()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off like net/http does instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("control socket accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		slot, statusOnly := s.sem, false
		select {
		case s.sem <- struct{}{}:
		default:
			select {
			case s.reserve <- struct{}{}:
				slot, statusOnly = s.reserve, true
			default:
				// A fresh socket's send buffer is empty, so this write cannot block the accept loop.
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				writeLine(c, response{Error: busy})
				c.Close()
				s.log.Warn("control connection refused: too many open", zap.Int("max", s.opts.maxConns+statusSlots))
				continue
			}
		}
		if !s.track(c) {
			<-slot
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slot }()
			defer s.untrack(c)
			s.serve(c, statusOnly)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// busy is the answer when no slot is free for a connection or its command.
const busy = "busy: too many control connections, try again"

// serve answers the one request of one connection. A connection in a status slot (statusOnly)
// has less time to send its request and is answered only for status and version.
func (s *Server) serve(c *net.UnixConn, statusOnly bool) {
	defer func() {
		// A bug in a handler must cost one control request, not the daemon.
		if r := recover(); r != nil {
			s.log.Error("control request panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			writeLine(c, response{Error: fmt.Sprintf("internal error: %v", r)})
		}
	}()
	if err := s.checkPeer(c); err != nil {
		s.log.Warn("control connection refused", zap.Error(err))
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		writeLine(c, response{Error: err.Error()})
		return
	}
	timeout := s.opts.requestTimeout
	if statusOnly {
		timeout = min(timeout, statusRequestTimeout)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	cmd, err := readRequest(bufio.NewReaderSize(c, maxRequest))
	out := &idleWriter{c: c, idle: s.opts.writeIdle}
	if err != nil {
		s.log.Debug("bad control request", zap.Error(err))
		writeLine(out, response{Error: err.Error()})
		return
	}
	if statusOnly && cmd != cmdStatus && cmd != cmdVersion {
		s.log.Warn("control connection refused: only status and version may use the reserved slots", zap.String("cmd", cmd))
		writeLine(out, response{Error: busy})
		return
	}
	s.log.Debug("control request", zap.String("cmd", cmd))
	switch cmd {
	case cmdStatus:
		st := s.h.Status()
		writeLine(out, response{OK: true, Status: &st})
	case cmdVersion:
		writeLine(out, response{OK: true, Version: s.version()})
	case cmdFlows:
		if err := s.streamFlows(out); err != nil {
			s.log.Debug("flows listing cut short", zap.Error(err))
		}
	case cmdEvents:
		if err := s.streamEvents(c, out); err != nil {
			s.log.Debug("event stream ended", zap.Error(err))
		}
	}
}

// checkPeer lets in only root and the daemon's own user. The socket's 0600 mode already does so;
// this is the second lock on the door in case the mode or the directory is ever loosened.
func (s *Server) checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials: %w", credErr)
	}
	if !allowedPeer(cred.Uid, s.uid) {
		return fmt.Errorf("permission denied: uid %d (pid %d) may not use the control socket; run as root", cred.Uid, cred.Pid)
	}
	return nil
}

// allowedPeer says whether a peer with uid may talk to a daemon running as self.
func allowedPeer(uid uint32, self int) bool {
	return uid == 0 || int64(uid) == int64(self)
}

// version answers `version` without Status when the handler can: Status may ask the kernel
// about steering, which a version probe does not need.
func (s *Server) version() string {
	if v, ok := s.h.(interface{ Version() string }); ok {
		return v.Version()
	}
	return s.h.Status().Version
}

// streamFlows writes the flows header, one line per flow and the trailer through a fixed-size
// buffer: memory does not grow with the table.
func (s *Server) streamFlows(out io.Writer) error {
	bw := bufio.NewWriterSize(out, writeBuffer)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(response{OK: true, Flows: true}); err != nil {
		return err
	}
	var n uint64
	var werr error
	var panicked any
	func() {
		// Recovered here rather than in serve so the client gets a well-formed trailer saying
		// the listing is incomplete instead of half a line.
		defer func() {
			if panicked = recover(); panicked != nil {
				s.log.Error("control flows listing panicked", zap.Any("panic", panicked), zap.ByteString("stack", debug.Stack()))
			}
		}()
		s.h.Flows(func(f FlowInfo) bool {
			if werr = enc.Encode(&f); werr != nil {
				return false
			}
			n++
			return true
		})
	}()
	if werr != nil {
		return werr // the client is gone or stuck: nobody to send a trailer to
	}
	t := trailer{End: true, Count: n}
	if panicked != nil {
		t.Error = fmt.Sprintf("internal error after %d flows: %v", n, panicked)
	}
	if err := enc.Encode(t); err != nil {
		return err
	}
	return bw.Flush()
}

// readRequest reads and decodes the request line.
func readRequest(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", fmt.Errorf("request too large (more than %d bytes)", maxRequest)
	case errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0:
		// A request without its newline followed by a half-close is still a request.
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "", errors.New("timed out waiting for the request")
	case err != nil:
		return "", fmt.Errorf("read request: %w", err)
	}
	return parseRequest(line)
}

// parseRequest decodes one request line strictly: unknown fields and commands are errors, so a
// typo is reported instead of silently answered with something else.
func parseRequest(line []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var req request
	if err := dec.Decode(&req); err != nil {
		return "", fmt.Errorf("malformed request: %w", err)
	}
	if dec.More() {
		return "", errors.New("malformed request: more than one JSON value")
	}
	switch req.Cmd {
	case cmdStatus, cmdFlows, cmdVersion, cmdEvents:
		return req.Cmd, nil
	case "":
		return "", errors.New(`malformed request: missing "cmd"`)
	}
	return "", fmt.Errorf("unknown command %q (want status, flows, events or version)", req.Cmd)
}

// writeLine writes v as one JSON line; errors mean the client went away, which is its business.
func writeLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(response{Error: "encode response: " + err.Error()})
	}
	_, _ = w.Write(append(b, '\n'))
}

// idleWriter moves the write deadline forward before every write, so a client that stops
// reading is dropped after the idle time while one that keeps reading is never cut off.
type idleWriter struct {
	c    net.Conn
	idle time.Duration
}

func (w *idleWriter) Write(p []byte) (int, error) {
	if err := w.c.SetWriteDeadline(time.Now().Add(w.idle)); err != nil {
		return 0, err
	}
	return w.c.Write(p)
}
