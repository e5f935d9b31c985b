package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// journalFile returns a file and the JOURNAL_STREAM value systemd would set for it.
func journalFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestLogger_JournalStreamLinesCarrySyslogPriority(t *testing.T) {
	f, stream := journalFile(t)
	t.Setenv("JOURNAL_STREAM", stream)
	log := newLogger("json", zap.NewAtomicLevelAt(zap.DebugLevel), f)
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{`<7>{"level":"debug"`, `<6>{"level":"info"`, `<4>{"level":"warn"`, `<3>{"level":"error"`}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(lines), b)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %s, want prefix %s", i, lines[i], w)
		}
	}
}

func TestLogger_NoPriorityWhenStderrIsNotTheJournal(t *testing.T) {
	for name, env := range map[string]string{
		"unset":        "",
		"other stream": "1:2",
		"garbage":      "x:y",
	} {
		t.Run(name, func(t *testing.T) {
			f, _ := journalFile(t)
			t.Setenv("JOURNAL_STREAM", env)
			newLogger("json", zap.NewAtomicLevelAt(zap.InfoLevel), f).Error("e")
			b, _ := os.ReadFile(f.Name())
			if !strings.HasPrefix(string(b), `{"level":"error"`) {
				t.Errorf("line %q has a prefix", b)
			}
		})
	}
}
