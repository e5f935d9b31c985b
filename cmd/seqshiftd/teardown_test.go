package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/footprint"
	"github.com/seqshiftd/seqshiftd/internal/nstest"
	"github.com/seqshiftd/seqshiftd/steering"
	"github.com/seqshiftd/seqshiftd/tun"
)

// installed sets up a fresh namespace with a TUN and seqshiftd's steering under sc's numbers,
// as a daemon would leave it with on_stop: fail-closed.
func installed(t *testing.T, scs ...steering.Config) {
	t.Helper()
	nstest.SetUp(t)
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ic0"}, PeerName: "ic0p"}); err != nil {
		t.Fatal(err)
	}
	d, err := tun.Open(tun.Config{Name: "sst0", Offload: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, sc := range scs {
		sc.TunName = "sst0"
		sc.Intercepts = []steering.Intercept{{Iface: "ic0", To: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}}}
		if _, err := steering.Install(sc, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// tagged counts the rules and routes carrying protocol tag proto in the namespace.
func tagged(t *testing.T, proto int) int {
	t.Helper()
	n := 0
	rules, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if int(r.Protocol) == proto {
			n++
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: 0, Protocol: netlink.RouteProtocol(proto)},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		n += len(routes)
	}
	return n
}

// The operator's edit broke the file and traffic is blackholed: teardown must still restore
// plain routing, here from the record the daemon wrote (numbers other than the defaults, which
// the broken file can no longer tell).
func TestTeardown_BrokenFileUsesTheRecord(t *testing.T) {
	sc := steering.Config{Table: 7001, Priority: 7001, Protocol: 201}
	installed(t, sc)
	if tagged(t, 201) == 0 {
		t.Fatal("nothing installed")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "seqshiftd.yaml")
	os.WriteFile(cfg, []byte("state_file: "+dir+"/flows.state\nsteering: {table: 7001, priority: 7001, protocol: 201\nrules: [\n"), 0o600)
	sc.TunName = "sst0"
	sc.Intercepts = []steering.Intercept{{Iface: "ic0"}}
	rec := filepath.Join(dir, "installed.json")
	if err := footprint.Write(rec, footprint.Record{Objects: []footprint.Object{steeringObject(sc)}}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("teardown", "-c", cfg, "-record", rec)
	if code != 0 {
		t.Fatalf("teardown exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "warning:") || !strings.Contains(errs, "seqshiftd.yaml:") {
		t.Errorf("the broken file is not reported as a warning:\n%s", errs)
	}
	if n := tagged(t, 201); n != 0 {
		t.Errorf("%d objects left after teardown", n)
	}
	if _, err := os.Stat(rec); !os.IsNotExist(err) {
		t.Errorf("the record of removed objects is still there: %v", err)
	}
}

// No file, no record: the tag alone, from flags or the defaults.
func TestTeardown_MissingFileAndRecordUseTheTag(t *testing.T) {
	installed(t, steering.Config{}, steering.Config{Table: 7002, Priority: 7002, Protocol: 202})
	dir := t.TempDir()
	missing := filepath.Join(dir, "gone.yaml")
	code, out, errs := runCLI("teardown", "-c", missing, "-record", filepath.Join(dir, "none.json"))
	if code != 0 || tagged(t, steering.DefaultProtocol) != 0 {
		t.Fatalf("teardown with defaults: exit %d, %d left\n%s\n%s", code, tagged(t, steering.DefaultProtocol), out, errs)
	}
	if tagged(t, 202) == 0 {
		t.Fatal("the defaults removed objects with other numbers")
	}
	code, out, errs = runCLI("teardown", "-c", missing, "-record", "", "-table", "7002", "-priority", "7002", "-protocol", "202")
	if code != 0 || tagged(t, 202) != 0 {
		t.Fatalf("teardown with flags: exit %d, %d left\n%s\n%s", code, tagged(t, 202), out, errs)
	}
	// Idempotent: nothing left to remove is not an error.
	if code, out, errs := runCLI("teardown", "-c", missing); code != 0 {
		t.Fatalf("second teardown: exit %d\n%s\n%s", code, out, errs)
	}
}

// A record listing a kind this version cannot remove (a kernel datapath's filters) still gets
// everything else removed; the exit code and the record say what is left.
func TestTeardown_UnknownKindIsReportedAndKept(t *testing.T) {
	installed(t, steering.Config{})
	dir := t.TempDir()
	rec := filepath.Join(dir, "installed.json")
	tc := footprint.Object{Kind: "tc-filter", Ifaces: []string{"ic0"}, IDs: map[string]int{"priority": 3}}
	footprint.Write(rec, footprint.Record{Objects: []footprint.Object{tc}})
	code, _, errs := runCLI("teardown", "-c", filepath.Join(dir, "none.yaml"), "-record", rec)
	if code != 1 || !strings.Contains(errs, "cannot remove") {
		t.Errorf("exit %d, want 1 naming what it cannot remove:\n%s", code, errs)
	}
	if n := tagged(t, steering.DefaultProtocol); n != 0 {
		t.Errorf("%d steering objects left", n)
	}
	left, err := footprint.Read(rec)
	if err != nil || len(left.Objects) != 1 || !left.Objects[0].Equal(tc) {
		t.Errorf("record after teardown: %+v, %v; want only the tc object", left, err)
	}
}

// A record planted as a symbolic link is not followed: a warning, and the tag still works.
func TestTeardown_SymlinkedRecordIsIgnored(t *testing.T) {
	installed(t, steering.Config{})
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	footprint.Write(real, footprint.Record{Objects: []footprint.Object{{Kind: footprint.KindSteering,
		IDs: map[string]int{"table": 100, "priority": 100, "protocol": 100}}}})
	link := filepath.Join(dir, "installed.json")
	os.Symlink(real, link)
	code, out, errs := runCLI("teardown", "-c", filepath.Join(dir, "none.yaml"), "-record", link)
	if code != 0 || !strings.Contains(errs, "symbolic link") || strings.Contains(out, "table=100") {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
	if n := tagged(t, steering.DefaultProtocol); n != 0 {
		t.Errorf("%d steering objects left", n)
	}
}

func TestCheck_RefusesWhatRunRefuses(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "isn.key")
	os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o644)
	os.Chmod(key, 0o644)
	for name, tc := range map[string]struct{ body, want string }{
		"tun name with %d": {"tun: {name: \"x%d\"}\n", "bad.yaml:1:13: tun.name"},
		"key file 0644":    {"isn_key_file: " + key + "\nrules:\n  - {name: k, client_isn: keyed}\n", "bad.yaml:1:15: isn_key_file"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.yaml")
			os.WriteFile(path, []byte(tc.body), 0o600)
			code, out, errs := runCLI("check", "-c", path)
			if code != 1 || !strings.Contains(errs, tc.want) {
				t.Errorf("check exit %d, want 1 with %q\nstdout:\n%s\nstderr:\n%s", code, tc.want, out, errs)
			}
		})
	}
}

func TestCheck_KeyFileThatRunWouldCreateIsAWarning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ok.yaml")
	os.WriteFile(path, []byte("isn_key_file: "+dir+"/new.key\nrules:\n  - {name: k, client_isn: keyed}\n"), 0o600)
	code, _, errs := runCLI("check", "-c", path)
	if code != 0 || !strings.Contains(errs, "run will create it") {
		t.Errorf("exit %d\n%s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.key")); err == nil {
		t.Error("check created the key file")
	}
}

func TestCheck_FIFOAsKeyFileIsRefusedWithoutHanging(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "isn.key")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ok.yaml")
	os.WriteFile(path, []byte("isn_key_file: "+fifo+"\nrules:\n  - {name: k, client_isn: keyed}\n"), 0o600)
	done := make(chan int, 1)
	go func() { code, _, _ := runCLI("check", "-c", path); done <- code }()
	select {
	case code := <-done:
		if code != 1 {
			t.Errorf("check exit %d, want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("check hung on a FIFO at isn_key_file")
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }
