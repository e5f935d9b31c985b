package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// ErrNotRunning is wrapped by Dial's error when no daemon listens on the socket.
var ErrNotRunning = errors.New("seqshiftd is not running")

// ErrPermission is wrapped by Dial's error when the caller may not open the socket.
var ErrPermission = errors.New("permission denied")

// maxResponseLine bounds one response line the client buffers. Status is a few KiB and a flow
// line a few hundred bytes; this only stops a broken peer from eating the client's memory.
const maxResponseLine = 16 << 20

// readBuffer is the client's read buffer: a flows listing is read through it a chunk at a time.
const readBuffer = 64 << 10

// Client talks to a running daemon over its control socket. Each request uses its own
// connection, as the protocol answers one request per connection. A Client is not safe for
// concurrent use.
type Client struct {
	path    string
	timeout time.Duration
	conn    net.Conn // dialled by Dial for the first request, so Dial reports a dead daemon
}

// Dial connects to the daemon's control socket at path. timeout bounds connecting, sending a
// request and every wait for the daemon to send more; 0 means no limit. The error wraps
// ErrNotRunning or ErrPermission when that is the cause.
func Dial(path string, timeout time.Duration) (*Client, error) {
	c := &Client{path: path, timeout: timeout}
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.conn = conn
	return c, nil
}

// Close releases the client's connection, if it still holds one.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

func (c *Client) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.Dial("unix", c.path)
	switch {
	case err == nil:
		return conn, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w (no control socket at %s)", ErrNotRunning, c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w (stale control socket at %s: nothing listens on it)", ErrNotRunning, c.path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w on control socket %s: it is for root only, run with sudo", ErrPermission, c.path)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("control socket %s did not accept within %v: the daemon may be wedged", c.path, c.timeout)
	}
	return nil, fmt.Errorf("connect to control socket %s: %w", c.path, err)
}

// Status returns the daemon's status.
func (c *Client) Status() (Status, error) {
	conn, resp, _, err := c.do(cmdStatus)
	if err != nil {
		return Status{}, err
	}
	conn.Close()
	if resp.Status == nil {
		return Status{}, errors.New("daemon answered status without a status")
	}
	return *resp.Status, nil
}

// Version returns the running daemon's version.
func (c *Client) Version() (string, error) {
	conn, resp, _, err := c.do(cmdVersion)
	if err != nil {
		return "", err
	}
	conn.Close()
	return resp.Version, nil
}

// Flows calls fn for each flow as the daemon streams it, until the listing ends or fn returns an
// error, which Flows then returns. A listing the daemon cut short is an error, so a caller never
// mistakes a partial list for the whole table.
func (c *Client) Flows(fn func(FlowInfo) error) error {
	conn, resp, br, err := c.do(cmdFlows)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !resp.Flows {
		return errors.New("daemon answered flows without a listing")
	}
	var n uint64
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("flows listing cut short after %d flows: %w", n, err)
		}
		var fl flowLine
		if err := json.Unmarshal(line, &fl); err != nil {
			return fmt.Errorf("flows listing: bad line after %d flows: %w", n, err)
		}
		if fl.Error != "" {
			return fmt.Errorf("flows listing cut short after %d flows: daemon: %s", n, fl.Error)
		}
		if fl.End {
			if fl.Count != n {
				return fmt.Errorf("flows listing: daemon sent %d flows but says %d", n, fl.Count)
			}
			return nil
		}
		n++
		if err := fn(fl.FlowInfo); err != nil {
			return err
		}
	}
}

// do sends one request on a fresh (or Dial's) connection and reads the response line. On success
// the caller owns conn and may read further from br.
func (c *Client) do(cmd string) (net.Conn, response, *bufio.Reader, error) {
	conn := c.conn
	c.conn = nil
	if conn == nil {
		var err error
		if conn, err = c.dial(); err != nil {
			return nil, response{}, nil, err
		}
	}
	fail := func(err error) (net.Conn, response, *bufio.Reader, error) {
		conn.Close()
		return nil, response{}, nil, err
	}
	if c.timeout > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	req, _ := json.Marshal(request{Cmd: cmd})
	_, werr := conn.Write(append(req, '\n'))
	br := bufio.NewReaderSize(&idleReader{c: conn, idle: c.timeout}, readBuffer)
	line, err := readLine(br)
	if werr != nil && err != nil {
		// A daemon that refuses a client (busy, wrong uid) answers and closes at once, maybe
		// before the request is written; its answer is the useful error when it arrived.
		return fail(fmt.Errorf("send %s request: %w", cmd, werr))
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fail(fmt.Errorf("%s: the daemon closed the connection without answering", cmd))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fail(fmt.Errorf("%s: the daemon did not answer within %v", cmd, c.timeout))
		}
		return fail(fmt.Errorf("read %s response: %w", cmd, err))
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fail(fmt.Errorf("bad %s response: %w", cmd, err))
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = "request failed without a reason"
		}
		return fail(fmt.Errorf("daemon: %s", resp.Error))
	}
	return conn, resp, br, nil
}

// readLine returns the next line, however many buffer fills it spans, up to maxResponseLine.
// The returned slice is valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF // a line without its newline is a cut stream
		}
		return line, err
	}
	buf := append([]byte(nil), line...)
	for {
		line, err = r.ReadSlice('\n')
		buf = append(buf, line...)
		if len(buf) > maxResponseLine {
			return nil, fmt.Errorf("response line longer than %d bytes", maxResponseLine)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
}

// idleReader moves the read deadline forward before every read: the limit is on how long the
// daemon stays silent, not on how long a big listing takes, and time the caller spends in its
// own callback between reads does not count.
type idleReader struct {
	c    net.Conn
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.idle > 0 {
		if err := r.c.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			return 0, err
		}
	}
	return r.c.Read(p)
}
