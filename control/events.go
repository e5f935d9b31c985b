package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Event is a flow appearing in or leaving the table, as `seqshiftd flows --watch` shows it
// (conntrack -E's NEW and DESTROY).
type Event struct {
	Type string    `json:"event"` // EventNew or EventDestroy
	Time time.Time `json:"time"`
	Flow FlowInfo  `json:"flow"`
	// Lost counts events this watcher missed just before this one because it read too
	// slowly; the daemon never waits for a watcher.
	Lost uint64 `json:"lost,omitempty"`
}

// Event types.
const (
	EventNew     = "new"
	EventDestroy = "destroy"
)

// watchBuffer is how many events a watcher may fall behind before it loses some.
const watchBuffer = 1024

// heartbeat is how often an idle event stream says it is alive: the client's read idle timeout
// must not fire on a quiet gateway, and a watcher that went away is noticed by the next write.
const heartbeat = 5 * time.Second

// Events fans flow events out to the connections watching them. Publish is called by the
// daemon where flows are added and removed, on datapath goroutines: it never blocks and never
// waits for a watcher (a full watcher loses the event and is told how many it lost), and when
// nobody watches, Watching lets the caller skip building the event at all.
type Events struct {
	n        atomic.Int32
	mu       sync.Mutex
	watchers map[*watcher]struct{}
}

type watcher struct {
	ch   chan Event
	lost atomic.Uint64
}

// Watching reports whether any connection watches; one atomic load.
func (e *Events) Watching() bool { return e != nil && e.n.Load() > 0 }

// Publish hands ev to every watcher that has room for it.
func (e *Events) Publish(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for w := range e.watchers {
		select {
		case w.ch <- ev:
		default:
			w.lost.Add(1)
		}
	}
}

func (e *Events) watch() (*watcher, func()) {
	w := &watcher{ch: make(chan Event, watchBuffer)}
	e.mu.Lock()
	if e.watchers == nil {
		e.watchers = make(map[*watcher]struct{})
	}
	e.watchers[w] = struct{}{}
	e.n.Add(1)
	e.mu.Unlock()
	return w, func() {
		e.mu.Lock()
		delete(e.watchers, w)
		e.n.Add(-1)
		e.mu.Unlock()
	}
}

// EventSource is implemented by a Handler whose daemon publishes flow events.
type EventSource interface {
	Events() *Events
}

// eventLine is one line of an event stream: an event, or a heartbeat.
type eventLine struct {
	*Event
	Heartbeat bool `json:"heartbeat,omitempty"`
}

// streamEvents sends events to c until the client hangs up or the server closes c. A reader
// goroutine notices either (the client sends nothing after its request, so any read end is
// the end of the stream).
func (s *Server) streamEvents(c net.Conn, out io.Writer) error {
	src, ok := s.h.(EventSource)
	if !ok || src.Events() == nil {
		writeLine(out, response{Error: "this daemon does not publish flow events"})
		return nil
	}
	w, stop := src.Events().watch()
	defer stop()
	gone := make(chan struct{})
	go func() {
		_ = c.SetReadDeadline(time.Time{})
		_, _ = c.Read(make([]byte, 1))
		close(gone)
	}()
	bw := bufio.NewWriterSize(out, 4<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(response{OK: true, Events: true}); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		var line eventLine
		select {
		case <-gone:
			return nil
		case ev := <-w.ch:
			ev.Lost = w.lost.Swap(0)
			line.Event = &ev
		case <-tick.C:
			line.Heartbeat = true
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
		// Flush per event: a watcher wants to see each one as it happens.
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}

// Watch calls fn for each flow event the daemon publishes, as it happens, until fn returns an
// error (which Watch returns) or the connection ends. It never returns nil on its own: the
// stream has no end but the daemon's.
func (c *Client) Watch(fn func(Event) error) error {
	conn, resp, br, err := c.do(cmdEvents)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !resp.Events {
		return errors.New("daemon answered events without a stream")
	}
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("event stream ended: the daemon stopped")
			}
			return fmt.Errorf("event stream: %w", err)
		}
		var ev struct {
			Event
			Heartbeat bool `json:"heartbeat"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("event stream: bad line: %w", err)
		}
		if ev.Heartbeat {
			continue
		}
		if err := fn(ev.Event); err != nil {
			return err
		}
	}
}
