package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func keyedSrc(keyFile string) string {
	return "isn_key_file: " + keyFile + "\nrules:\n  - name: k\n    client_isn: keyed\n"
}

func TestLoadKey_CreatesOnceAndRereads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "isn.key")
	cfg := mustParse(t, keyedSrc(path))
	if err := cfg.LoadKey(false); err == nil || !strings.HasPrefix(err.Error(), "c.yaml:1:15: isn_key_file: ") {
		t.Fatalf("missing key without create: %v", err)
	}
	if err := cfg.LoadKey(true); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != KeyLen {
		t.Errorf("created key: mode %v size %d", st.Mode(), st.Size())
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v", dst.Mode())
	}
	first, _ := os.ReadFile(path)
	_, v1 := cfg.Rules[0].Client.Plan(tupleC, tupleS)

	// A reload, or a restart, reads the same key and derives the same offsets.
	again := mustParse(t, keyedSrc(path))
	if err := again.LoadKey(true); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, first) {
		t.Errorf("LoadKey(true) replaced an existing key")
	}
	if _, v2 := again.Rules[0].Client.Plan(tupleC, tupleS); v1 != v2 || v1 == 0 {
		t.Errorf("offsets after re-reading the key: %#x, %#x", v1, v2)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestLoadKey_NothingToDoWithoutKeyedRules(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "isn.key")
	cfg := mustParse(t, "isn_key_file: "+path+"\nrules:\n  - {name: r, client_isn: random}\n")
	if err := cfg.LoadKey(true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a key file was created for a policy without keyed rules")
	}
}

func TestLoadKey_Errors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		msg     string
	}{
		{"short", "abc", 0o600, "want 32 bytes, or 64 hexadecimal digits, got 3 bytes"},
		{"long", strings.Repeat("x", 33), 0o600, "got 33 bytes"},
		{"bad hex", strings.Repeat("g", 64), 0o600, "got 64 bytes"},
		{"world readable", strings.Repeat("x", 32), 0o644, "accessible by group or others (mode 0644)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			// The error points at the first keyed rule when isn_key_file is left to default.
			cfg := mustParse(t, "rules:\n  - name: k\n    server_isn: keyed\n")
			cfg.ISNKeyFile = p
			err := cfg.LoadKey(true)
			if err == nil || !strings.HasPrefix(err.Error(), "c.yaml:2:5: isn_key_file: ") || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got %v, want c.yaml:2:5: ...%s", err, tt.msg)
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		cfg := mustParse(t, keyedSrc(dir))
		if err := cfg.LoadKey(true); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("got %v", err)
		}
	})
}
