package netns_test

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// TestSystemd_NotifyStatusShowsGenerationAndLastReloadError plays systemd's side of
// sd_notify: `systemctl status` shows the STATUS= line, so it must name the generation in
// force and, after a refused reload, the error, and a good reload must clear it. Not parallel:
// NOTIFY_SOCKET is set in this process's environment for the daemon to inherit.
func TestSystemd_NotifyStatusShowsGenerationAndLastReloadError(t *testing.T) {
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: reloadRules(1000)})
	sock := filepath.Join(e.dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	d := e.start()

	// next returns the next notification that carries STATUS=.
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no notification: %v", err)
			}
			msg := string(buf[:n])
			if strings.Contains(msg, "STATUS=") {
				return msg
			}
		}
	}
	if msg := next(); !strings.Contains(msg, "READY=1") || !strings.Contains(msg, "STATUS=policy generation 1 in force") {
		t.Errorf("start: %q", msg)
	}

	e.writeRaw(e.configText(e.config) + "  - name: broken\n    client_isn: fixed 4294967296\n")
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := next(); !strings.Contains(msg, "READY=1") || !strings.Contains(msg, "STATUS=policy generation 1 in force; last reload FAILED: ") ||
		!strings.Contains(msg, "4294967296") || strings.Count(msg, "\n") > 1 {
		t.Errorf("after a refused reload: %q", msg)
	}

	e.writeConfig(config{Offload: true, Rules: reloadRules(2000)})
	if err := d.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := next(); !strings.Contains(msg, "STATUS=policy generation 2 in force") || strings.Contains(msg, "FAILED") {
		t.Errorf("after a good reload: %q", msg)
	}
}
