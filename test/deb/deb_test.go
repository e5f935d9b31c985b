// Package deb tests the Debian package that tools/build-deb makes: lintian's verdict, and what
// dpkg does with it in a scratch root: install, upgrade over an edited conffile, remove, purge.
//
// The tests must never touch the host's packages or services: dpkg runs with --root on a
// temporary directory and --force-script-chrootless, so the maintainer scripts run with
// DPKG_ROOT set, under which they (and deb-systemd-helper) only touch files below it and never
// start, stop or tear down anything.
package deb

import (
	"bytes"
	"debug/buildinfo"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/seqshiftd/seqshiftd/policy"
)

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: installing into a scratch dpkg root needs root (dpkg chowns files to root)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install dpkg-dev lintian init-system-helpers)", tool)
		}
	}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil // a dpkg conffile prompt must fail, not wait
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// builds holds the two packages every test shares: the tree's version and a bumped one whose
// changelog has one more entry, as a real upgrade would. Building takes most of a minute, so
// it is done once.
var builds struct {
	once        sync.Once
	err         string
	v1, v2      string // versions
	deb1, deb2  string // paths
	dir         string
	buildOutput string
}

func packages(t *testing.T) (v1, deb1, v2, deb2 string) {
	t.Helper()
	root := repoRoot(t)
	builds.once.Do(func() {
		dir, err := os.MkdirTemp("", "seqshiftd-deb-")
		if err != nil {
			builds.err = err.Error()
			return
		}
		builds.dir = dir
		vb, err := os.ReadFile(filepath.Join(root, "VERSION"))
		if err != nil {
			builds.err = err.Error()
			return
		}
		builds.v1 = strings.TrimSpace(string(vb))
		builds.v2 = builds.v1 + "+upgradetest1"
		cl, err := os.ReadFile(filepath.Join(root, "deploy/debian/changelog"))
		if err != nil {
			builds.err = err.Error()
			return
		}
		entry := "seqshiftd (" + builds.v2 + ") unstable; urgency=medium\n\n" +
			"  * Test build: same tree, bumped version, to exercise an upgrade.\n\n" +
			" -- seqshiftd maintainers <maintainers@users.noreply.r-seed-d775c7a3.example>  Mon, 30 Nov 2026 13:00:00 +0000\n\n"
		cl2 := filepath.Join(dir, "changelog")
		if err := os.WriteFile(cl2, append([]byte(entry), cl...), 0o644); err != nil {
			builds.err = err.Error()
			return
		}
		for _, b := range []struct {
			env []string
			out *string
		}{
			{[]string{"OUT=" + dir}, &builds.deb1},
			{[]string{"OUT=" + dir, "VERSION=" + builds.v2, "CHANGELOG=" + cl2}, &builds.deb2},
		} {
			cmd := exec.Command(filepath.Join(root, "tools/build-deb"))
			cmd.Env = append(os.Environ(), b.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				builds.err = "tools/build-deb: " + err.Error() + "\n" + stderr.String()
				return
			}
			*b.out = strings.TrimSpace(string(out))
		}
	})
	if builds.err != "" {
		t.Fatal(builds.err)
	}
	return builds.v1, builds.deb1, builds.v2, builds.deb2
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

func TestDeb_LintianReportsNothing(t *testing.T) {
	needTools(t, "dpkg-deb", "lintian")
	_, deb1, _, _ := packages(t)
	// Warnings fail too; the one tolerated tag is overridden, with the reason, in
	// deploy/debian/lintian-overrides. Informational tags (no init.d script: the package is
	// for systemd hosts) are not failures.
	out := run(t, nil, "lintian", "--fail-on", "error,warning", deb1)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
			t.Errorf("lintian: %s", line)
		}
	}
}

func TestDeb_FileNameAndControl(t *testing.T) {
	needTools(t, "dpkg-deb")
	v1, deb1, _, _ := packages(t)
	arch := strings.TrimSpace(run(t, nil, "dpkg", "--print-architecture"))
	if want := "seqshiftd_" + v1 + "_" + arch + ".deb"; filepath.Base(deb1) != want {
		t.Errorf("package file %s, want %s", filepath.Base(deb1), want)
	}
	if got := strings.TrimSpace(run(t, nil, "dpkg-deb", "--field", deb1, "Version")); got != v1 {
		t.Errorf("Version %q, want the VERSION file's %q", got, v1)
	}
	if got := strings.TrimSpace(run(t, nil, "dpkg-deb", "--info", deb1, "conffiles")); got != "/etc/seqshiftd/seqshiftd.yaml" {
		t.Errorf("conffiles %q do not name /etc/seqshiftd/seqshiftd.yaml", got)
	}
}

// scratchRoot makes an empty dpkg database in a temporary directory.
func scratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func dpkg(t *testing.T, root string, args ...string) string {
	t.Helper()
	base := []string{"--root=" + root, "--force-script-chrootless", "--log=/dev/null", "--no-debsig"}
	return run(t, nil, "dpkg", append(base, args...)...)
}

func installedVersion(t *testing.T, root string) string {
	t.Helper()
	out, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"),
		"-W", "-f=${db:Status-Abbrev}${Version}", "seqshiftd").Output()
	return string(out)
}

func TestDeb_InstallUpgradeKeepsConffileEditPurgeRemovesAll(t *testing.T) {
	needTools(t, "dpkg", "dpkg-deb", "dpkg-query", "deb-systemd-helper")
	v1, deb1, v2, deb2 := packages(t)
	root := scratchRoot(t)
	at := func(p string) string { return filepath.Join(root, p) }
	conf := at("etc/seqshiftd/seqshiftd.yaml")

	// Install.
	dpkg(t, root, "-i", deb1)
	if got := installedVersion(t, root); got != "ii "+v1 {
		t.Fatalf("after install dpkg-query says %q, want %q", got, "ii "+v1)
	}
	if out := run(t, nil, at("usr/sbin/seqshiftd"), "version"); strings.TrimSpace(out) != "seqshiftd "+v1 {
		t.Errorf("installed binary says %q, want %q", out, "seqshiftd "+v1)
	}
	for _, f := range []string{
		"lib/systemd/system/seqshiftd.service",
		"usr/share/man/man8/seqshiftd.8.gz",
		"usr/share/man/man5/seqshiftd.yaml.5.gz",
		"usr/share/bash-completion/completions/seqshiftd",
		"usr/share/doc/seqshiftd/copyright",
		"usr/share/doc/seqshiftd/changelog.gz",
		"usr/share/doc/seqshiftd/examples/seqshiftd.yaml",
		// postinst enabled the unit (deb-systemd-helper under DPKG_ROOT).
		"etc/systemd/system/multi-user.target.wants/seqshiftd.service",
	} {
		if _, err := os.Lstat(at(f)); err != nil {
			t.Errorf("after install: %v", err)
		}
	}
	// The conffile as shipped is valid and intercepts nothing: installing changes no packet.
	cfg, err := policy.Load(conf)
	if err != nil {
		t.Fatalf("shipped conffile: %v", err)
	}
	if len(cfg.Intercept) != 0 || len(cfg.Rules) != 0 {
		t.Errorf("shipped conffile intercepts %v with %d rules, want nothing", cfg.Intercept, len(cfg.Rules))
	}
	// What the unit's ExecStartPre runs passes on the shipped file, on any host; the
	// installed example (written for a gateway with eth0 and eth1) passes as a portable file.
	if out, err := exec.Command(at("usr/sbin/seqshiftd"), "check", "-c", conf).CombinedOutput(); err != nil {
		t.Errorf("check of the shipped conffile: %v\n%s", err, out)
	}
	if out, err := exec.Command(at("usr/sbin/seqshiftd"), "check", "--portable", "-c", at("usr/share/doc/seqshiftd/examples/seqshiftd.yaml")).CombinedOutput(); err != nil {
		t.Errorf("check --portable of the installed example: %v\n%s", err, out)
	}

	// The operator edits the conffile; an upgrade must keep the edit without asking (the
	// package's own copy did not change).
	edited := []byte(strings.Replace(readFile(t, conf), `metrics_listen: ""`, `metrics_listen: 127.0.0.1:9617 # local edit`, 1))
	if !bytes.Contains(edited, []byte("local edit")) {
		t.Fatal("shipped conffile has no metrics_listen line to edit")
	}
	if err := os.WriteFile(conf, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	// State the daemon would have left: with DynamicUser=yes systemd keeps it in
	// /var/lib/private/seqshiftd and links /var/lib/seqshiftd to it.
	if err := os.MkdirAll(at("var/lib/private/seqshiftd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(at("var/lib/private/seqshiftd/flows.state"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("private/seqshiftd", at("var/lib/seqshiftd")); err != nil {
		t.Fatal(err)
	}

	dpkg(t, root, "-i", deb2)
	if got := installedVersion(t, root); got != "ii "+v2 {
		t.Fatalf("after upgrade dpkg-query says %q, want %q", got, "ii "+v2)
	}
	if out := run(t, nil, at("usr/sbin/seqshiftd"), "version"); strings.TrimSpace(out) != "seqshiftd "+v2 {
		t.Errorf("upgraded binary says %q, want %q", out, "seqshiftd "+v2)
	}
	if got := readFile(t, conf); got != string(edited) {
		t.Errorf("upgrade changed the edited conffile:\n%s", got)
	}
	if _, err := os.Stat(at("var/lib/private/seqshiftd/flows.state")); err != nil {
		t.Errorf("upgrade lost the state directory: %v", err)
	}

	// Remove: the program goes, the conffile and the state stay (dpkg -r semantics).
	dpkg(t, root, "-r", "seqshiftd")
	if _, err := os.Stat(at("usr/sbin/seqshiftd")); err == nil {
		t.Error("after remove /usr/sbin/seqshiftd is still there")
	}
	if got := readFile(t, conf); got != string(edited) {
		t.Error("remove changed the conffile")
	}

	// Purge: nothing of seqshiftd is left outside dpkg's own database.
	dpkg(t, root, "-P", "seqshiftd")
	if got := installedVersion(t, root); strings.HasPrefix(got, "ii") || strings.HasPrefix(got, "rc") {
		t.Errorf("after purge dpkg-query says %q", got)
	}
	var left []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/dpkg" {
			return filepath.SkipDir
		}
		if !d.IsDir() || strings.Contains(rel, "seqshiftd") {
			left = append(left, rel)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("after purge these remain in the root:\n%s", strings.Join(left, "\n"))
	}
}

// TestDeb_CopyrightNamesEveryLinkedModule keeps debian/copyright honest about the statically
// linked Go modules: adding a dependency without its license paragraph fails here.
func TestDeb_CopyrightNamesEveryLinkedModule(t *testing.T) {
	needTools(t, "dpkg-deb")
	_, deb1, _, _ := packages(t)
	dir := t.TempDir()
	run(t, nil, "dpkg-deb", "-x", deb1, dir)
	info, err := buildinfo.ReadFile(filepath.Join(dir, "usr/sbin/seqshiftd"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Deps) == 0 {
		t.Fatal("the packaged binary lists no linked modules")
	}
	copyright := readFile(t, filepath.Join(dir, "usr/share/doc/seqshiftd/copyright"))
	for _, m := range info.Deps {
		if !strings.Contains(copyright, m.Path+"/*") {
			t.Errorf("copyright has no Files: paragraph for the linked module %s", m.Path)
		}
	}
}

// TestDeb_ManPagesRenderWithoutWarnings renders the installed pages as man(1) would, with
// groff's warnings on, and checks they carry the README's reference.
func TestDeb_ManPagesRenderWithoutWarnings(t *testing.T) {
	needTools(t, "dpkg-deb", "man")
	_, deb1, _, _ := packages(t)
	dir := t.TempDir()
	run(t, nil, "dpkg-deb", "-x", deb1, dir)
	for page, wants := range map[string][]string{
		"usr/share/man/man8/seqshiftd.8.gz":      {"seqshiftd check", "seqshiftd flows", "Signals and lifecycle"},
		"usr/share/man/man5/seqshiftd.yaml.5.gz": {"flows.timeouts.close_wait", "isn_key_file", "sequential START STEP"},
	} {
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", filepath.Join(dir, page))
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("%s: %v\n%s", page, err, stderr.String())
		}
		text := exec.Command("man", "-l", filepath.Join(dir, page))
		text.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=200", "MAN_KEEP_FORMATTING=0")
		out, err := text.Output()
		if err != nil {
			t.Fatalf("man -l %s: %v", page, err)
		}
		plain := stripOverstrike(string(out))
		for _, w := range wants {
			if !strings.Contains(plain, w) {
				t.Errorf("%s does not say %q", page, w)
			}
		}
	}
}

var overstrike = regexp.MustCompile(".\b")

func stripOverstrike(s string) string { return overstrike.ReplaceAllString(s, "") }

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
