package flowtable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/seqnum"
)

// populate fills tab with flows covering the fields a snapshot must carry.
func populate(t *testing.T, tab *Table) []*Flow {
	t.Helper()
	var out []*Flow
	add := func(f *Flow, err error) *Flow {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
		return f
	}
	// IPv4, client the lower endpoint, absolute server plan resolved, data both ways.
	f := add(tab.Admit(ap("198.18.0.1:40000"), ap("198.19.0.1:443"), Init{
		ClientOffset: 0xdeadbeef, ClientISN: 77, Server: ServerPlan{Absolute: true, Value: 5000}, Rule: "web", Generation: 3,
	}))
	handshake(f)
	f.ResolveServerISN(1234)
	f.Observe(c2s, PSH, 300)
	f.Observe(s2c, PSH, 9000)
	// IPv6, client the higher endpoint, absolute plan not yet resolved (SYN seen only).
	add(tab.Admit(ap("[2001:2::ff]:50000"), ap("[2001:2::1]:22"), Init{
		ClientOffset: 1, ClientISN: 0xffffffff, Server: ServerPlan{Absolute: true, Value: 9}, Rule: "ssh", Generation: 3,
	}))
	// Exempt, no rule.
	add(tab.Admit(ap("198.18.0.2:1000"), ap("198.19.0.2:179"), Init{Exempt: ExemptTCPMD5}))
	// Observed: would-be offsets kept, the absolute server plan resolved from the SYN-ACK.
	o := add(tab.Admit(ap("198.18.0.6:41000"), ap("198.19.0.6:443"), Init{
		ClientOffset: 0x12345678, ClientISN: 5, Server: ServerPlan{Absolute: true, Value: 0x9abc}, Rule: "try", Generation: 4, Exempt: ExemptObserve,
	}))
	o.ResolveServerISN(0x1000)
	// Adopted, relative offsets, half-closed by the server: the first FIN's direction must
	// survive for the state machine to go on correctly.
	g := add(tab.Adopt(ap("198.18.0.3:3000"), ap("198.19.0.3:80"), Init{ClientOffset: 10, Server: ServerPlan{Value: 20}, Rule: "web", Generation: 2}))
	g.Observe(s2c, FIN, 0)
	// A v4-mapped IPv6 connection, and one in close.
	add(tab.Adopt(ap("[::ffff:198.18.0.4]:1"), ap("[::ffff:198.19.0.4]:2"), Init{Rule: strings.Repeat("r", 300)}))
	h := add(tab.Adopt(ap("198.18.0.5:1"), ap("198.19.0.5:2"), Init{}))
	h.Observe(c2s, RST, 0)
	return out
}

func sameFlow(t *testing.T, got, want *Flow) {
	t.Helper()
	type view struct {
		Client, Server       netip.AddrPort
		State                State
		Exempt               Exempt
		OffC2S, OffS2C       seqnum.Delta
		ISN                  uint32
		Rule                 string
		Gen                  uint64
		C2S, S2C             Counters
		Created, LastSeen    int64
		Absolute, Resolved   bool
		ClientHigher, FinDir uint32
	}
	v := func(f *Flow) view {
		w := f.state.Load()
		return view{f.Client(), f.Server(), f.State(), f.Exempt(), f.Offset(c2s), f.Offset(s2c), f.ClientISN(),
			f.Rule(), f.Generation(), f.Counters(c2s), f.Counters(s2c), f.Created().Unix(), f.LastSeen().Unix(),
			f.bits&flAbsolute != 0, w&stResolved != 0, uint32(f.bits & flClientHigher), w >> stFinShift & 1}
	}
	if a, b := v(got), v(want); a != b {
		t.Errorf("restored flow differs:\n got %+v\nwant %+v", a, b)
	}
}

func TestSnapshot_RoundTrip(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 64})
	flows := populate(t, tab)
	path := filepath.Join(t.TempDir(), "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}

	// A restart 5 seconds later (within even close's timeout): a new table, its own seed.
	clk.Advance(5 * time.Second)
	tab2 := New(Config{MaxFlows: 64, Clock: clk})
	n, err := tab2.Restore(path)
	if err != nil || n != len(flows) {
		t.Fatalf("Restore = %d, %v; want %d", n, err, len(flows))
	}
	for _, want := range flows {
		got, dir, ok := tab2.Lookup(want.Server(), want.Client())
		if !ok || dir != s2c {
			t.Fatalf("%v not restored (%v %v)", want, dir, ok)
		}
		sameFlow(t, got, want)
	}
	st := tab2.Stats()
	if st.Restored != uint64(len(flows)) || st.Active != len(flows) || st.ByState != tab.Stats().ByState {
		t.Fatalf("stats %+v", st)
	}
	// The restored flows go on: the unresolved plan resolves, the half-close completes.
	ssh, _, _ := tab2.Lookup(ap("[2001:2::ff]:50000"), ap("[2001:2::1]:22"))
	ssh.ResolveServerISN(4)
	if ssh.Offset(s2c) != 5 {
		t.Fatalf("restored plan resolved to %d", ssh.Offset(s2c))
	}
	half, _, _ := tab2.Lookup(ap("198.18.0.3:3000"), ap("198.19.0.3:80"))
	half.Observe(s2c, ACK, 0) // the closer's own ACK
	half.Observe(c2s, ACK, 0)
	if half.State() != StateCloseWait {
		t.Fatalf("restored fin_wait went to %v", half.State())
	}
	checkInvariants(t, tab2)
}

// TestRestore_WallClockTimes: the times in the file are wall clock, so a flow idle before the
// restart stays idle by the same amount, and one idle past its timeout is not restored.
func TestRestore_WallClockTimes(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 64})
	est, _ := tab.Adopt(ap("198.18.0.1:1"), ap("198.19.0.1:2"), Init{})
	clk.Advance(40 * time.Second)
	tab.Admit(ap("198.18.0.2:1"), ap("198.19.0.1:2"), Init{}) // syn_sent, 75s timeout
	path := filepath.Join(t.TempDir(), "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}
	// Down for 50 seconds: the SYN is 50s old (kept), the established flow 90s idle (kept).
	clk.Advance(50 * time.Second)
	tab2 := New(Config{MaxFlows: 64, Clock: clk})
	if n, err := tab2.Restore(path); err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v", n, err)
	}
	got, _, _ := tab2.Lookup(est.Client(), est.Server())
	if !got.LastSeen().Equal(epoch) || !got.Created().Equal(epoch) {
		t.Fatalf("last seen %v created %v, want %v", got.LastSeen(), got.Created(), epoch)
	}
	// Down for 80 seconds: the SYN (80s > 75s) is skipped.
	clk.Advance(30 * time.Second)
	tab3 := New(Config{MaxFlows: 64, Clock: clk})
	if n, err := tab3.Restore(path); err != nil || n != 1 {
		t.Fatalf("Restore = %d, %v; want only the established flow", n, err)
	}
	// A clock that went back across the restart: last seen is clamped to now.
	back := newFakeClock()
	back.Advance(-time.Hour)
	tab4 := New(Config{MaxFlows: 64, Clock: back})
	if n, err := tab4.Restore(path); err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v", n, err)
	}
	got, _, _ = tab4.Lookup(est.Client(), est.Server())
	if !got.LastSeen().Equal(back.Time()) {
		t.Fatalf("last seen %v from the future", got.LastSeen())
	}
}

func TestSnapshot_AtomicReplace(t *testing.T) {
	tab, _, _ := newTestTable(t, Config{MaxFlows: 64})
	populate(t, tab)
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.state")
	if err := os.WriteFile(path, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tab.Snapshot(path); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "flows.state" {
		t.Fatalf("directory holds %v", ents)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
	if err := tab.Snapshot(filepath.Join(dir, "missing", "flows.state")); err == nil {
		t.Fatal("snapshot into a missing directory succeeded")
	}
	// An empty table round-trips too.
	empty := filepath.Join(dir, "empty.state")
	if err := New(Config{}).Snapshot(empty); err != nil {
		t.Fatal(err)
	}
	if n, err := New(Config{}).Restore(empty); n != 0 || err != nil {
		t.Fatalf("Restore(empty) = %d, %v", n, err)
	}
}

func TestRestore_MissingFile(t *testing.T) {
	_, err := New(Config{}).Restore(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

// TestRestore_RejectsCorruptFiles damages a good snapshot in every way: each bit flip, each
// truncation, a future version, bad magic, trailing garbage. Every one is refused with
// ErrCorrupt, and nothing is admitted from it.
func TestRestore_RejectsCorruptFiles(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 64})
	populate(t, tab)
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.state")
	fresh := New(Config{MaxFlows: 64, Shards: 1, Clock: clk})
	try := func(name string, data []byte, wantMsg string) {
		t.Helper()
		// Through the file for the named cases, from memory for the thousands of bit flips.
		var n int
		var err error
		if name == "bit flip" || name == "truncation" {
			n, err = fresh.restore(bytes.NewReader(data))
		} else {
			if err := os.WriteFile(bad, data, 0o600); err != nil {
				t.Fatal(err)
			}
			n, err = fresh.Restore(bad)
		}
		if !errors.Is(err, ErrCorrupt) || n != 0 || fresh.Stats().Active != 0 {
			t.Fatalf("%s: Restore = %d, %v (%d flows admitted)", name, n, err, fresh.Stats().Active)
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("%s: error %q does not mention %q", name, err, wantMsg)
		}
	}
	for i := range len(good) * 8 {
		data := append([]byte(nil), good...)
		data[i/8] ^= 1 << (i % 8)
		try("bit flip", data, "")
	}
	for n := range len(good) {
		try("truncation", good[:n], "")
	}
	try("trailing garbage", append(append([]byte(nil), good...), 0), "after the checksum")
	// A future version with a correct checksum is still refused, by version.
	future := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(future[8:], snapVersion+1)
	binary.LittleEndian.PutUint32(future[len(future)-4:], crc32.Checksum(future[:len(future)-4], castagnoli))
	try("future version", future, "unsupported version 3")
	notOurs := append([]byte(nil), good...)
	copy(notOurs, "NOTFLOWS")
	try("bad magic", notOurs, "bad magic")
	try("empty", nil, "truncated")
	try("bit flip in the checksum", append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^0x80), "checksum mismatch")

	// A record whose checksum is right but whose contents are impossible.
	forged := append([]byte(nil), good...)
	forged[headerLen+2] = 0x0f // state 15 (after the tag and family bytes)
	binary.LittleEndian.PutUint32(forged[len(forged)-4:], crc32.Checksum(forged[:len(forged)-4], castagnoli))
	try("impossible state", forged, "bad state")
}

// TestRestore_KeepsLiveFlows: a restore into a table that already tracks a tuple keeps the
// live flow.
func TestRestore_KeepsLiveFlows(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 64})
	flows := populate(t, tab)
	path := filepath.Join(t.TempDir(), "flows.state")
	if err := tab.Snapshot(path); err != nil {
		t.Fatal(err)
	}
	tab2 := New(Config{MaxFlows: 64, Clock: clk})
	live, _ := tab2.Adopt(ap("198.19.0.1:443"), ap("198.18.0.1:40000"), Init{ClientOffset: 1})
	n, err := tab2.Restore(path)
	if err != nil || n != len(flows)-1 {
		t.Fatalf("Restore = %d, %v", n, err)
	}
	if got, _, _ := tab2.Lookup(ap("198.18.0.1:40000"), ap("198.19.0.1:443")); got != live {
		t.Fatal("restore replaced a live flow")
	}
	// A table too small for the file takes what fits (unassured flows giving way, as on
	// admission); the rest is refused, not an error.
	small := New(Config{MaxFlows: 2, Clock: clk})
	if n, err := small.Restore(path); err != nil || n == 0 || small.Stats().Active != 2 || small.Stats().Refused+small.Stats().Evicted == 0 {
		t.Fatalf("Restore into a small table = %d, %v, %+v", n, err, small.Stats())
	}
}

// TestRestore_RefusesUntrustedFiles: what a local attacker or an accident can put at
// state_file is refused before a byte is read, and never blocks the start.
func TestRestore_RefusesUntrustedFiles(t *testing.T) {
	tab, clk, _ := newTestTable(t, Config{MaxFlows: 64})
	populate(t, tab)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.state")
	if err := tab.Snapshot(good); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, f func(p string) error) string {
		p := filepath.Join(dir, name)
		if err := f(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	copyMode := func(mode os.FileMode) func(string) error {
		return func(p string) error {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return err
			}
			return os.Chmod(p, mode)
		}
	}
	cases := []struct{ name, path, want string }{
		{"FIFO", mk("fifo.state", func(p string) error { return unix.Mkfifo(p, 0o600) }), "not a regular file"},
		{"symlink to a good snapshot", mk("link.state", func(p string) error { return os.Symlink(good, p) }), "symbolic link"},
		{"directory", mk("dir.state", func(p string) error { return os.Mkdir(p, 0o700) }), "not a regular file"},
		{"mode 0666", mk("ww.state", copyMode(0o666)), "writable by group or others"},
		{"mode 0620", mk("gw.state", copyMode(0o620)), "writable by group or others"},
		{"larger than flows.max allows", mk("huge.state", func(p string) error {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return err
			}
			return os.Truncate(p, maxSnapshotSize(64)+1) // sparse: the check must not read it
		}), "more than a snapshot of flows.max 64"},
	}
	if os.Geteuid() == 0 {
		cases = append(cases, struct{ name, path, want string }{"owned by another user",
			mk("other.state", func(p string) error {
				if err := os.WriteFile(p, data, 0o600); err != nil {
					return err
				}
				return os.Chown(p, 65534, 65534)
			}), "owned by uid 65534"})
	} else {
		t.Log("not root: the other-owner case is skipped (it needs chown)")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fresh := New(Config{MaxFlows: 64, Clock: clk})
			done := make(chan error, 1)
			go func() { _, err := fresh.Restore(tc.path); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Restore = %v, want ErrUntrusted saying %q", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Restore blocked")
			}
			if fresh.Stats().Active != 0 {
				t.Errorf("%d flows loaded from an untrusted file", fresh.Stats().Active)
			}
		})
	}
	if n, err := New(Config{MaxFlows: 64, Clock: clk}).Restore(good); err != nil || n == 0 {
		t.Fatalf("the good snapshot itself: %d, %v", n, err)
	}
}
