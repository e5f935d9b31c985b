package control

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// nobody is the uid the cross-user tests connect as.
const nobody = 65534

// helperEnv makes the test binary, re-executed as another user, dial instead of testing.
const helperEnv = "SEQSHIFTD_CONTROL_TEST_DIAL"

// TestHelperDial is not a test: run as another user by runAsNobody, it dials the socket named
// in helperEnv, asks for the status and prints the error, if any.
func TestHelperDial(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for the cross-user tests")
	}
	c, err := Dial(path, 5*time.Second)
	if err == nil {
		_, err = c.Status()
	}
	if err != nil {
		io.WriteString(os.Stdout, "ERR "+err.Error()+"\n")
		return
	}
	io.WriteString(os.Stdout, "OK\n")
}

// runAsNobody runs this test binary's TestHelperDial as uid nobody against path and returns
// what it printed. The binary is copied where nobody can execute it: go test's build directory
// is private to root.
func runAsNobody(t *testing.T, pub, path string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(pub, "control.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperDial$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
	}
	return string(out)
}

// publicDir makes a directory any user can traverse; t.TempDir is private to its creator.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "seqshiftd-control-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestServer_OtherUsersAreRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects to the socket as another user")
	}
	pub := publicDir(t)
	path := filepath.Join(pub, "control.sock")
	s, err := Listen(path, &fakeHandler{status: testStatus()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	t.Run("mode 0600 stops them at connect", func(t *testing.T) {
		out := runAsNobody(t, pub, path)
		want := "permission denied on control socket " + path + ": it is for root only, run with sudo"
		if !strings.Contains(out, want) {
			t.Errorf("as nobody: %q, want %q", out, want)
		}
	})
	t.Run("SO_PEERCRED stops them if the mode is loosened", func(t *testing.T) {
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(path, 0o600)
		out := runAsNobody(t, pub, path)
		if !strings.Contains(out, "permission denied: uid 65534") {
			t.Errorf("as nobody with a 0666 socket: %q", out)
		}
	})
}
