package flowtable

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// FuzzRestore feeds arbitrary bytes to the snapshot reader: it must never panic, and whatever
// it accepts must leave a consistent table.
func FuzzRestore(f *testing.F) {
	tab, _, _ := newTestTable(f, Config{MaxFlows: 64})
	var flows []*Flow
	for _, pair := range [][2]string{{"198.18.0.1:1", "198.19.0.1:2"}, {"[2001:2::1]:3", "[2001:2::2]:4"}} {
		fl, _ := tab.Admit(ap(pair[0]), ap(pair[1]), Init{Rule: "r", Generation: 1})
		flows = append(flows, fl)
	}
	handshake(flows[0])
	flows[1].Track(ClientToServer, &tcpwindow.Segment{Seq: 100, Flags: FlagSYN, Window: 1000, Opts: tcpwindow.OptWScale, WScale: 7})
	path := filepath.Join(f.TempDir(), "seed.state")
	if err := tab.Snapshot(path); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(toVersion1(f, seed))
	f.Add(seed[:headerLen])
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		fresh := New(Config{MaxFlows: 64, Shards: 2, Clock: newFakeClock()})
		n, err := fresh.restore(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			if n != 0 || fresh.Stats().Active != 0 {
				t.Fatalf("rejected file admitted %d flows", n)
			}
			return
		}
		if fresh.Stats().Active != n {
			t.Fatalf("restored %d, table holds %d", n, fresh.Stats().Active)
		}
		checkInvariants(t, fresh)
	})
}
