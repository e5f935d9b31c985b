package netns_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// TestReloadCommand_FailsOnABrokenFileAndTheOldPolicyStays is `systemctl reload` as the unit
// runs it (ExecReload=seqshiftd reload): a good file reloads and exits 0; a file check refuses
// is not even signalled; a file the daemon refuses when it reads it (an ISN key readable by
// others) exits 1 with the daemon's own error, and the running policy is unchanged either way.
func TestReloadCommand_FailsOnABrokenFileAndTheOldPolicyStays(t *testing.T) {
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: reloadRules(1000)})
	e.start()

	e.writeConfig(config{Offload: true, Rules: reloadRules(2000)})
	out, code := e.cliWith(e.cfg, "reload")
	if code != 0 || !strings.Contains(out, "reloaded: generation 2") {
		t.Fatalf("reload of a good file: exit %d:\n%s", code, out)
	}

	// Refused by the check, before any signal: the daemon never sees it.
	good := e.configText(e.config)
	e.writeRaw(good + "  - name: broken\n    client_isn: fixed 4294967296\n")
	out, code = e.cliWith(e.cfg, "reload")
	if code != 1 || !strings.Contains(out, "seqshiftd.yaml:") || !strings.Contains(out, "not signalled") {
		t.Errorf("reload of an invalid file: exit %d, want 1 with FILE:LINE:COL and no signal:\n%s", code, out)
	}
	if st, _ := e.status(t); st.Generation != 2 || st.LastReloadError != "" {
		t.Errorf("after a refused reload: generation %d, last error %q; want 2 and none (never signalled)", st.Generation, st.LastReloadError)
	}

	// A key readable by others: check refuses it (run would), and reload, which checks only
	// the file before signalling, gets the daemon's own refusal.
	if err := os.WriteFile(filepath.Join(e.dir, "isn.key"), []byte(strings.Repeat("ab", 32)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(e.dir, "isn.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.writeRaw(good + "  - name: pair\n    match: {server_ports: [443]}\n    client_isn: keyed\n    server_isn: keyed\n")
	if out, code := e.cliWith(e.cfg, "check"); code != 1 || !strings.Contains(out, "isn_key_file:") {
		t.Errorf("check of a file whose key run would refuse: exit %d\n%s", code, out)
	}
	out, code = e.cliWith(e.cfg, "reload")
	if code != 1 || !strings.Contains(out, "reload failed; generation 2 stays in force") || !strings.Contains(out, "isn.key") {
		t.Errorf("reload refused by the daemon: exit %d, want 1 with the daemon's error:\n%s", code, out)
	}
	if st, code := e.status(t); st.Generation != 2 || st.LastReloadError == "" || code != 0 {
		t.Errorf("after the daemon refused: generation %d, last error %q, status exit %d", st.Generation, st.LastReloadError, code)
	}
}
