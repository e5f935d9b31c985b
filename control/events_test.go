package control

import (
	"errors"
	"testing"
	"time"
)

type eventHandler struct {
	fakeHandler
	ev *Events
}

func (h *eventHandler) Events() *Events { return h.ev }

var errEnough = errors.New("enough")

// TestEvents_WatcherSeesEventsInOrder: events published while a client watches reach it in
// order, and Watching tells the publisher when anyone listens.
func TestEvents_WatcherSeesEventsInOrder(t *testing.T) {
	h := &eventHandler{ev: new(Events)}
	s := startServer(t, h, defaultOptions())
	if h.ev.Watching() {
		t.Fatal("Watching before anyone watches")
	}
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flows := testFlows()
	got := make(chan Event, 4)
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(func(ev Event) error {
			got <- ev
			if len(got) == 2 {
				return errEnough
			}
			return nil
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !h.ev.Watching() {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.ev.Publish(Event{Type: EventNew, Flow: flows[0]})
	h.ev.Publish(Event{Type: EventDestroy, Flow: flows[1]})
	if err := <-done; !errors.Is(err, errEnough) {
		t.Fatalf("Watch: %v", err)
	}
	a, b := <-got, <-got
	if a.Type != EventNew || a.Flow != flows[0] || b.Type != EventDestroy || b.Flow != flows[1] {
		t.Errorf("events %+v, %+v", a, b)
	}
	// The connection closed: the server drops the watcher.
	for h.ev.Watching() {
		if time.Now().After(deadline) {
			t.Fatal("the watcher stayed registered after its client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEvents_PublishNeverBlocksOnASlowWatcher: a watcher that does not read loses events and
// is told how many; the publisher goes on at once.
func TestEvents_PublishNeverBlocksOnASlowWatcher(t *testing.T) {
	var e Events
	w, stop := e.watch()
	defer stop()
	start := time.Now()
	for i := 0; i < watchBuffer+10; i++ {
		e.Publish(Event{Type: EventNew})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("publishing to a stuck watcher took %v", d)
	}
	if len(w.ch) != watchBuffer || w.lost.Load() != 10 {
		t.Errorf("buffered %d, lost %d; want %d and 10", len(w.ch), w.lost.Load(), watchBuffer)
	}
}

// TestEvents_ServerCloseEndsTheStream: stopping the daemon ends a watch with an error instead
// of leaving the watcher hanging, and Close does not wait for a heartbeat.
func TestEvents_ServerCloseEndsTheStream(t *testing.T) {
	h := &eventHandler{ev: new(Events)}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Watch(func(Event) error { return nil }) }()
	for !h.ev.Watching() {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a watcher connected", d)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("Watch returned nil when the daemon went away")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after the server closed")
	}
}

func TestEvents_HandlerWithoutEventsAnswersAnError(t *testing.T) {
	s := startServer(t, &fakeHandler{}, defaultOptions())
	if r := rawRequest(t, s.Path(), `{"cmd":"events"}`+"\n"); r.OK || r.Error == "" {
		t.Errorf("response %+v", r)
	}
}
