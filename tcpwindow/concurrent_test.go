package tcpwindow

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// TestTrack_ConcurrentQueuesLoseNothing tracks one connection from three goroutines at once,
// as two TUN queues and the reverse direction would: the client's segments split between two
// goroutines (so they commit out of order), the server's ACKs from a third. Every segment must
// be accepted, and the record must end at the highest end sent: the compare-and-swap maxima
// never lose progress.
func TestTrack_ConcurrentQueuesLoseNothing(t *testing.T) {
	var w Conn
	w.Track(0, &Segment{Seq: 0, Flags: syn, Window: 65535, Opts: OptWScale, WScale: 14}, true)
	w.Track(1, &Segment{Seq: 0, Ack: 1, Flags: synack, Window: 65535, Opts: OptWScale, WScale: 14}, true)
	w.Track(0, &Segment{Seq: 1, Ack: 1, Flags: ack, Window: 65535}, true)
	w.Track(1, &Segment{Seq: 1, Ack: 1, Flags: ack, Window: 65535}, false) // opens the scaled window
	const n, size = 20000, 1000
	var sent atomic.Uint32 // highest end a client goroutine has tracked
	var bad atomic.Int64
	var wg sync.WaitGroup
	for q := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := q; i < n; i += 2 {
				seq := seqnum.Value(1 + i*size)
				if v := w.Track(0, &Segment{Seq: seq, Ack: 1, Flags: ack, Len: size, Window: 65535}, false); v != Accept {
					bad.Add(1)
				}
				for {
					cur := sent.Load()
					if !after(seq+size, seqnum.Value(cur)) || sent.CompareAndSwap(cur, uint32(seq+size)) {
						break
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			// The server acknowledges no more than the client's side has recorded.
			a := w.Load(0).End
			if v := w.Track(1, &Segment{Seq: 1, Ack: a, Flags: ack, Window: 65535}, false); v != Accept {
				bad.Add(1)
			}
		}
	}()
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d segments refused", bad.Load())
	}
	if got, want := w.Load(0).End, seqnum.Value(1+n*size); got != want {
		t.Fatalf("client end %d, want %d", got, want)
	}
}
