package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// fakeHandler serves a fixed status and n generated flows, counting how many it has yielded.
type fakeHandler struct {
	status      Status
	flows       []FlowInfo // served first
	generate    int        // then this many generated ones
	yielded     atomic.Int64
	done        chan struct{} // closed when a Flows call returns, if non-nil
	panicStatus bool
	panicAfter  int // Flows panics after this many flows when > 0
}

func (h *fakeHandler) Status() Status {
	if h.panicStatus {
		panic("status exploded")
	}
	return h.status
}

func (h *fakeHandler) Flows(fn func(FlowInfo) bool) {
	if h.done != nil {
		defer close(h.done)
	}
	n := 0
	yield := func(f FlowInfo) bool {
		if h.panicAfter > 0 && n == h.panicAfter {
			panic("flows exploded")
		}
		n++
		h.yielded.Add(1)
		return fn(f)
	}
	for _, f := range h.flows {
		if !yield(f) {
			return
		}
	}
	for i := range h.generate {
		if !yield(genFlow(i)) {
			return
		}
	}
}

// genFlow makes a plausible, distinct flow without storing it anywhere.
func genFlow(i int) FlowInfo {
	return FlowInfo{
		Client:     netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 16), byte(i >> 8)}), uint16(i)),
		Server:     netip.MustParseAddrPort("198.19.2.2:5001"),
		State:      "established",
		Rule:       "reproducible",
		Generation: 1,
		OffsetC2S:  uint32(i) * 2654435761,
		OffsetS2C:  uint32(i) * 40503,
		PacketsC2S: uint64(i), BytesC2S: uint64(i) * 1448,
		PacketsS2C: uint64(i) / 2, BytesS2C: uint64(i) * 10,
		AgeSeconds: 12.5, IdleSeconds: 0.25,
	}
}

func testStatus() Status {
	return Status{
		Version:         "1.2.3",
		UptimeSeconds:   3725.5,
		Generation:      3,
		LastReloadError: "seqshiftd.yaml:4:3: unknown field \"rulez\"",
		LastReloadTime:  time.Date(2025, 11, 25, 4, 51, 0, 123, time.UTC),
		Steering:        true,
		SteeringDetail:  "installed",
		FlowsActive:     12,
		FlowsByState:    map[string]int{"established": 10, "syn_sent": 2},
		Counters:        map[string]uint64{"rewritten_packets_c2s": 1 << 40, "malformed": 7},
	}
}

func testFlows() []FlowInfo {
	return []FlowInfo{
		{
			Client: netip.MustParseAddrPort("198.18.1.2:40000"), Server: netip.MustParseAddrPort("198.18.2.2:5001"),
			State: "established", Rule: "r1", Generation: 1, OffsetC2S: 123, OffsetS2C: 0xFFFFFE38,
			PacketsC2S: 10, BytesC2S: 1234, PacketsS2C: 8, BytesS2C: 567, AgeSeconds: 12.25, IdleSeconds: 1,
		},
		{
			Client: netip.MustParseAddrPort("[2001:2::1]:41000"), Server: netip.MustParseAddrPort("[2001:2:0:1::2]:179"),
			State: "syn_sent", Rule: "bgp", Generation: 2, Exempt: "tcp_md5", AgeSeconds: 0.5,
		},
	}
}

// startServer listens in a fresh directory with opts and closes the server at cleanup.
func startServer(t *testing.T, h Handler, opts options) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := listen(path, h, zaptest.NewLogger(t), opts)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawRequest sends one raw request and returns the first response line.
func rawRequest(t *testing.T, path, req string) response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// A refused or oversize request may be answered and closed before it is all written: what
	// matters is the answer, so a write error is not fatal.
	_, _ = io.WriteString(c, req)
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read response to %q: %v", req, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		t.Fatalf("response %q: %v", line, err)
	}
	return resp
}

func TestServer_StatusRoundTrip(t *testing.T) {
	h := &fakeHandler{status: testStatus()}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	want := testStatus()
	if !got.LastReloadTime.Equal(want.LastReloadTime) {
		t.Errorf("LastReloadTime = %v, want %v", got.LastReloadTime, want.LastReloadTime)
	}
	got.LastReloadTime, want.LastReloadTime = time.Time{}, time.Time{}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status:\n got %+v\nwant %+v", got, want)
	}
	// The same Client can make further requests: each gets its own connection.
	v, err := c.Version()
	if err != nil || v != "1.2.3" {
		t.Errorf("Version() = %q, %v; want 1.2.3", v, err)
	}
}

type versionHandler struct{ fakeHandler }

func (*versionHandler) Version() string { return "from-version-method" }

func TestServer_VersionDoesNotNeedStatus(t *testing.T) {
	// Status panics: a version probe must not call it when the handler can answer directly.
	h := &versionHandler{fakeHandler{panicStatus: true}}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Version(); err != nil || v != "from-version-method" {
		t.Errorf("Version() = %q, %v", v, err)
	}
}

func TestServer_FlowsRoundTrip(t *testing.T) {
	h := &fakeHandler{flows: testFlows()}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []FlowInfo
	if err := c.Flows(func(f FlowInfo) error { got = append(got, f); return nil }); err != nil {
		t.Fatal(err)
	}
	want := testFlows()
	if len(got) != len(want) {
		t.Fatalf("got %d flows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("flow %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestServer_EmptyFlowsListing(t *testing.T) {
	s := startServer(t, &fakeHandler{}, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	if err := c.Flows(func(FlowInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Flows on an empty table: %d flows, %v", n, err)
	}
}

func TestClient_FlowsCallbackErrorStopsListing(t *testing.T) {
	s := startServer(t, &fakeHandler{generate: 1000}, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := errors.New("enough")
	n := 0
	err = c.Flows(func(FlowInfo) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 10 {
		t.Errorf("Flows = %v after %d flows; want the callback's error after 10", err, n)
	}
}

func TestListen_SocketIsOwnerOnlyAndNothingLeftBehind(t *testing.T) {
	s := startServer(t, &fakeHandler{}, defaultOptions())
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	entries, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "control.sock control.sock.lock" {
		t.Errorf("directory holds %v; want only the socket and its lock (no private bind directory)", names)
	}
}

func TestListen_CreatesMissingParentDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "seqshiftd", "control.sock")
	s, err := Listen(path, &fakeHandler{status: testStatus()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if resp := rawRequest(t, path, `{"cmd":"version"}`+"\n"); !resp.OK || resp.Version != "1.2.3" {
		t.Errorf("version response = %+v", resp)
	}
}

func TestListen_ReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	// A crashed daemon leaves its socket file with nobody listening.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	if _, err := Dial(path, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial to a stale socket = %v, want ErrNotRunning", err)
	}
	s, err := Listen(path, &fakeHandler{status: testStatus()}, zap.NewNop())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer s.Close()
	if resp := rawRequest(t, path, `{"cmd":"status"}`+"\n"); !resp.OK || resp.Status == nil {
		t.Errorf("status response after replacing a stale socket = %+v", resp)
	}
}

func TestListen_RefusesWhileAnotherDaemonRuns(t *testing.T) {
	s := startServer(t, &fakeHandler{status: testStatus()}, defaultOptions())
	_, err := Listen(s.Path(), &fakeHandler{}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "another seqshiftd is running") {
		t.Fatalf("second Listen = %v, want 'another seqshiftd is running'", err)
	}
	// The first one is untouched and still answers.
	if resp := rawRequest(t, s.Path(), `{"cmd":"version"}`+"\n"); !resp.OK {
		t.Errorf("first server stopped answering: %+v", resp)
	}
}

func TestListen_RefusesWhenSomethingElseAnswers(t *testing.T) {
	// A listener that does not hold our lock (an older build, another program) still counts.
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(path, &fakeHandler{}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "something answers on") {
		t.Fatalf("Listen over a live foreign socket = %v", err)
	}
}

func TestListen_RefusesToReplaceNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(path, &fakeHandler{}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("regular file was modified: %q", b)
	}
}

func TestListen_PathTooLong(t *testing.T) {
	path := "/tmp/" + strings.Repeat("x", 120)
	if _, err := Listen(path, &fakeHandler{}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("Listen with a %d-byte path = %v", len(path), err)
	}
}

func TestServer_CloseRemovesSocketAndAllowsRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(path, &fakeHandler{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	_, err = Dial(path, time.Second)
	want := "seqshiftd is not running (no control socket at " + path + ")"
	if !errors.Is(err, ErrNotRunning) || err.Error() != want {
		t.Errorf("Dial after Close = %v, want %q", err, want)
	}
	s2, err := Listen(path, &fakeHandler{}, zap.NewNop())
	if err != nil {
		t.Fatalf("restart after Close: %v", err)
	}
	s2.Close()
}

func TestServer_BadRequestsGetErrorsAndServerSurvives(t *testing.T) {
	s := startServer(t, &fakeHandler{status: testStatus()}, defaultOptions())
	tests := []struct {
		name, req, wantErr string
	}{
		{"garbage", "hello\n", "malformed request"},
		{"oversize", strings.Repeat("a", 3*maxRequest) + "\n", "request too large"},
		{"oversize json", `{"cmd":"` + strings.Repeat("s", maxRequest) + `"}` + "\n", "request too large"},
		{"unknown command", `{"cmd":"reboot"}` + "\n", `unknown command "reboot"`},
		{"unknown field", `{"cmd":"status","force":true}` + "\n", "unknown field"},
		{"missing cmd", "{}\n", `missing "cmd"`},
		{"two values", `{"cmd":"status"} {"cmd":"flows"}` + "\n", "more than one JSON value"},
		{"binary", "\x00\xff\xfe\n", "malformed request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := rawRequest(t, s.Path(), tt.req)
			if resp.OK || !strings.Contains(resp.Error, tt.wantErr) {
				t.Errorf("response = %+v, want an error containing %q", resp, tt.wantErr)
			}
		})
	}
	if resp := rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n"); !resp.OK || resp.Status == nil || resp.Status.Version != "1.2.3" {
		t.Errorf("status after bad requests = %+v", resp)
	}
	// No trailing newline, then a half-close, is still a request.
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.Path(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"cmd":"version"}`)
	c.CloseWrite()
	line, _ := bufio.NewReader(c).ReadBytes('\n')
	if !strings.Contains(string(line), `"version":"1.2.3"`) {
		t.Errorf("half-closed request answered %q", line)
	}
}

func TestServer_SilentClientTimesOutWithoutBlockingOthers(t *testing.T) {
	opts := defaultOptions()
	opts.requestTimeout = 300 * time.Millisecond
	s := startServer(t, &fakeHandler{status: testStatus()}, opts)
	silent, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	// Other clients are served at once while the silent one waits.
	for range 5 {
		c, err := Dial(s.Path(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > opts.requestTimeout {
		t.Errorf("5 status requests took %v while a silent client was connected", d)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(silent).ReadBytes('\n')
	if err != nil {
		t.Fatalf("silent client: %v", err)
	}
	if !strings.Contains(string(line), "timed out waiting for the request") {
		t.Errorf("silent client got %q", line)
	}
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("silent client's connection not closed: %v", err)
	}
	if d := time.Since(start); d < opts.requestTimeout || d > opts.requestTimeout+2*time.Second {
		t.Errorf("silent client dropped after %v, want about %v", d, opts.requestTimeout)
	}
}

// holdIdle opens n connections that never send a request and waits until the server has
// accepted them all (they are tracked), closing them at cleanup.
func holdIdle(t *testing.T, s *Server, n int) []net.Conn {
	t.Helper()
	var hold []net.Conn
	for range n {
		c, err := net.Dial("unix", s.Path())
		if err != nil {
			t.Fatal(err)
		}
		hold = append(hold, c)
		t.Cleanup(func() { c.Close() })
	}
	if !waitUntil(5*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) >= n
	}) {
		t.Fatalf("the server did not accept %d held connections", n)
	}
	return hold
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func TestServer_BusyBeyondMaxConnections(t *testing.T) {
	opts := defaultOptions()
	opts.maxConns = 2
	opts.requestTimeout = time.Minute // the held connections must outlive the test's requests
	s := startServer(t, &fakeHandler{status: testStatus()}, opts)
	hold := holdIdle(t, s, opts.maxConns+statusSlots)
	if resp := rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n"); resp.OK || !strings.Contains(resp.Error, "busy") {
		t.Fatalf("with %d connections held, status = %+v, want busy", len(hold), resp)
	}
	for _, c := range hold {
		c.Close()
	}
	if !waitUntil(5*time.Second, func() bool { return rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n").OK }) {
		t.Fatal("still refused after the held connections closed")
	}
}

// A health check must answer while a stuck script or a slow client holds every ordinary slot:
// sixteen connections that never say anything, as issue 11 found, made `status` fail as busy.
func TestServer_StatusAnswersWhileSixteenIdleClientsHoldTheSlots(t *testing.T) {
	opts := defaultOptions()
	opts.requestTimeout = time.Minute
	s := startServer(t, &fakeHandler{status: testStatus(), flows: testFlows()}, opts)
	holdIdle(t, s, defaultMaxConns)
	for i := range 20 {
		start := time.Now()
		resp := rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n")
		if !resp.OK || resp.Status == nil {
			t.Fatalf("status %d with %d idle connections held: %+v", i, defaultMaxConns, resp)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("status %d took %v", i, d)
		}
	}
	if resp := rawRequest(t, s.Path(), `{"cmd":"version"}`+"\n"); !resp.OK {
		t.Errorf("version in a status slot = %+v", resp)
	}
	// The reserve is for the health check, not a back door around the limit.
	if resp := rawRequest(t, s.Path(), `{"cmd":"flows"}`+"\n"); resp.OK || !strings.Contains(resp.Error, "busy") {
		t.Errorf("flows in a status slot = %+v, want busy", resp)
	}
}

// Idle clients that also squat on the status slots lose them after statusRequestTimeout, while
// the ordinary slots keep their own, longer timeout.
func TestServer_IdleClientsInStatusSlotsAreDroppedQuickly(t *testing.T) {
	opts := defaultOptions()
	opts.requestTimeout = time.Minute
	s := startServer(t, &fakeHandler{status: testStatus()}, opts)
	holdIdle(t, s, defaultMaxConns+statusSlots)
	if resp := rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n"); resp.OK {
		t.Fatalf("status answered with every slot held: %+v", resp)
	}
	start := time.Now()
	if !waitUntil(3*statusRequestTimeout, func() bool { return rawRequest(t, s.Path(), `{"cmd":"status"}`+"\n").OK }) {
		t.Fatal("the status slots were never freed of idle clients")
	}
	t.Logf("status answered again after %v", time.Since(start).Round(time.Millisecond))
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	if n < defaultMaxConns {
		t.Errorf("only %d connections left: the ordinary slots' idle clients were dropped early too", n)
	}
}

func TestServer_HandlerPanicCostsOneRequest(t *testing.T) {
	h := &fakeHandler{status: testStatus(), panicStatus: true}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("Status with a panicking handler = %v", err)
	}
	h.panicStatus = false
	h.generate, h.panicAfter = 100, 3
	n := 0
	err = c.Flows(func(FlowInfo) error { n++; return nil })
	if err == nil || !strings.Contains(err.Error(), "cut short after 3 flows") || n != 3 {
		t.Errorf("Flows with a panicking handler = %v after %d flows", err, n)
	}
	if _, err := c.Status(); err != nil {
		t.Errorf("server did not survive the panics: %v", err)
	}
}

const manyFlows = 100_000

func TestServer_FlowsStreamWaitsForTheReader(t *testing.T) {
	// The listing is produced only as fast as the client reads: a server that built the whole
	// answer in memory first would have iterated every flow by the time the client pauses.
	h := &fakeHandler{generate: manyFlows}
	s := startServer(t, h, defaultOptions())
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"cmd":"flows"}`+"\n")
	br := bufio.NewReader(c)
	if line, err := br.ReadBytes('\n'); err != nil || !strings.Contains(string(line), `"flows":true`) {
		t.Fatalf("header %q, %v", line, err)
	}
	time.Sleep(300 * time.Millisecond)
	paused := h.yielded.Load()
	if paused >= manyFlows/4 {
		t.Errorf("server iterated %d of %d flows while the client read nothing; it is not streaming", paused, manyFlows)
	}
	t.Logf("while the client paused, the server had iterated %d flows (socket buffer + %d KiB)", paused, writeBuffer>>10)
	var n int
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("after %d flows: %v", n, err)
		}
		if strings.Contains(string(line), `"end":true`) {
			if !strings.Contains(string(line), fmt.Sprintf(`"count":%d`, manyFlows)) {
				t.Errorf("trailer %s", line)
			}
			break
		}
		n++
	}
	if n != manyFlows {
		t.Errorf("read %d flows, want %d", n, manyFlows)
	}
}

func TestServer_FlowsStreamUsesBoundedMemory(t *testing.T) {
	h := &fakeHandler{generate: manyFlows}
	s := startServer(t, h, defaultOptions())
	c, err := Dial(s.Path(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A steady GC target makes the peak heap measure what is live, not when GC happened to run.
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	var n, encoded int
	err = c.Flows(func(f FlowInfo) error {
		if f != genFlow(n) {
			return fmt.Errorf("flow %d = %+v, want %+v", n, f, genFlow(n))
		}
		b, _ := json.Marshal(&f)
		encoded += len(b) + 1
		if n++; n%5000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != manyFlows {
		t.Fatalf("got %d flows, want %d", n, manyFlows)
	}
	growth := peak - base
	t.Logf("%d flows, %d MiB on the wire, peak heap growth %d KiB", n, encoded>>20, growth>>10)
	if growth > uint64(encoded)/4 {
		t.Errorf("heap grew by %d KiB streaming %d KiB: the listing is being held in memory", growth>>10, encoded>>10)
	}
}

func TestServer_StalledReaderIsDroppedAndReleasesTheHandler(t *testing.T) {
	opts := defaultOptions()
	opts.writeIdle = 200 * time.Millisecond
	h := &fakeHandler{generate: manyFlows, done: make(chan struct{})}
	s := startServer(t, h, opts)
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"cmd":"flows"}`+"\n")
	// Never read: the daemon's Flows iteration must end on its own, not wait for us forever.
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler's Flows still blocked 5s after the client stopped reading")
	}
	if y := h.yielded.Load(); y >= manyFlows {
		t.Errorf("all %d flows yielded to a client that read nothing", y)
	}
}

func TestServer_CloseEndsStuckConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	h := &fakeHandler{generate: manyFlows}
	s, err := Listen(path, h, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	stuck, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	io.WriteString(stuck, `{"cmd":"flows"}`+"\n")
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for h.yielded.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close blocked behind a stuck reader and a silent client")
	}
}

func TestClient_DialErrorsSayWhatToDo(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	_, err := Dial(missing, time.Second)
	if !errors.Is(err, ErrNotRunning) || err.Error() != "seqshiftd is not running (no control socket at "+missing+")" {
		t.Errorf("Dial(missing) = %v", err)
	}
}

func TestAllowedPeer(t *testing.T) {
	tests := []struct {
		peer, self uint32
		want       bool
	}{
		{0, 0, true},
		{0, 991, true},
		{991, 991, true},
		{1000, 991, false},
		{1000, 0, false},
	}
	for _, tt := range tests {
		if got := allowedPeer(tt.peer, int(tt.self)); got != tt.want {
			t.Errorf("allowedPeer(%d, self %d) = %v, want %v", tt.peer, tt.self, got, tt.want)
		}
	}
}

func TestServer_ResponsesAreSingleJSONLines(t *testing.T) {
	s := startServer(t, &fakeHandler{status: testStatus()}, defaultOptions())
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"cmd":"status"}`+"\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(all), "\n") != 1 || !strings.HasSuffix(string(all), "\n") {
		t.Errorf("status response is not one line: %q", all)
	}
	var m map[string]any
	if err := json.Unmarshal(all, &m); err != nil || m["ok"] != true {
		t.Errorf("status response %s: %v", all, err)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"cmd":"status"}`, `{"cmd":"flows"}`, `{"cmd":"version"}`, `{}`, `[]`, `{"cmd":1}`, "", `{"cmd":"status"}{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseRequest(line)
		if err != nil {
			if cmd != "" {
				t.Errorf("error %v with command %q", err, cmd)
			}
			return
		}
		switch cmd {
		case cmdStatus, cmdFlows, cmdVersion:
		default:
			t.Errorf("parseRequest(%q) accepted command %q", line, cmd)
		}
	})
}
