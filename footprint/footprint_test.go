package footprint

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func steeringObj(table int) Object {
	return Object{Kind: KindSteering, Tun: "seqshift0", Ifaces: []string{"eth0", "eth1"},
		IDs: map[string]int{"table": table, "priority": 5813, "protocol": 213}}
}

func TestWriteRead_RoundTripIsPrivateAndAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "installed.json")
	in := Record{PID: 42, Written: time.Unix(1700000000, 0).UTC(), Config: "/etc/x.yaml",
		Objects: []Object{steeringObj(5813), {Kind: "tc", Ifaces: []string{"eth0"}, IDs: map[string]int{"priority": 7}}}}
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.PID != 42 || out.Config != in.Config || len(out.Objects) != 2 || !out.Objects[0].Equal(in.Objects[0]) || !out.Objects[1].Equal(in.Objects[1]) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries; a temporary file was left behind", len(ents))
	}
}

func TestMerge_KeepsWhatAnEarlierRunLeftAndDropsDuplicates(t *testing.T) {
	prev := []Object{steeringObj(5813), steeringObj(6000)}
	got := Merge(prev, []Object{steeringObj(5813)})
	if len(got) != 2 || got[0].IDs["table"] != 5813 || got[1].IDs["table"] != 6000 {
		t.Errorf("Merge = %v", got)
	}
}

// A restart finds the clsact qdiscs the previous run created already there: that they are
// seqshiftd's must come from the record, or teardown would leave them behind.
func TestMerge_CarriesWhatAnEarlierRunCreated(t *testing.T) {
	tc := Object{Kind: KindTC, Tun: "tap0", Ifaces: []string{"eth0"}, IDs: map[string]int{"priority": 1}}
	earlier := tc
	earlier.Created = []string{"tap0", "eth0"}
	got := Merge([]Object{earlier}, []Object{tc})
	if len(got) != 1 || strings.Join(got[0].Created, ",") != "tap0,eth0" {
		t.Errorf("Merge = %v", got)
	}
}

// A record planted or damaged by someone else must never be followed or trusted: teardown
// removes whatever it lists.
func TestRead_RefusesWhatItCannotTrust(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := Write(good, Record{Objects: []Object{steeringObj(5813)}}); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, f func(p string) error) string {
		p := filepath.Join(dir, name)
		if err := f(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(data string, mode os.FileMode) func(string) error {
		return func(p string) error {
			if err := os.WriteFile(p, []byte(data), mode); err != nil {
				return err
			}
			return os.Chmod(p, mode)
		}
	}
	goodData, _ := os.ReadFile(good)
	cases := []struct{ name, path, want string }{
		{"symlink", mk("link.json", func(p string) error { return os.Symlink(good, p) }), "symbolic link"},
		{"FIFO", mk("fifo.json", func(p string) error { return unix.Mkfifo(p, 0o600) }), "not a regular file"},
		{"world-writable", mk("ww.json", write(string(goodData), 0o666)), "writable by group or others"},
		{"oversize", mk("big.json", write(strings.Repeat(" ", maxSize+1), 0o600)), "more than a record can be"},
		{"garbage", mk("garbage.json", write("{\"version\":1,\"objects\":[", 0o600)), "install record"},
		{"unknown field", mk("unknown.json", write(`{"version":1,"objects":[],"extra":1}`, 0o600)), "unknown field"},
		{"other version", mk("v2.json", write(`{"version":2,"objects":[]}`, 0o600)), "version 2"},
		{"no kind", mk("nokind.json", write(`{"version":1,"objects":[{"ids":{"table":1}}]}`, 0o600)), "no kind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := Read(tc.path); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Read = %v, want an error containing %q", err, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Read blocked")
			}
		})
	}
	if _, err := Read(filepath.Join(dir, "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing record: %v, want fs.ErrNotExist", err)
	}
}
