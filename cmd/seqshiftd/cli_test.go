package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/control"
)

func TestCLI_ExitCodesAndWhereUsageGoes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     string // substring; "" = must be empty
		stderr     string // substring; "" = must be empty
		stdoutNone bool
	}{
		{name: "no command", args: nil, code: 2, stderr: "usage: seqshiftd <command>", stdoutNone: true},
		{name: "--help succeeds on stdout", args: []string{"--help"}, code: 0, stdout: "usage: seqshiftd <command>"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`, stdoutNone: true},
		{name: "check --help is specific", args: []string{"check", "--help"}, code: 0, stdout: "usage: seqshiftd check"},
		{name: "help CMD is CMD --help", args: []string{"help", "flows"}, code: 0, stdout: "usage: seqshiftd flows"},
		{name: "help of no command", args: []string{"help", "nope"}, code: 2, stderr: `no command "nope"`, stdoutNone: true},
		{name: "check FILE without -c is refused", args: []string{"check", "some.yaml"}, code: 2, stderr: `unexpected argument "some.yaml"`, stdoutNone: true},
		{name: "a stray word before --json is refused", args: []string{"flows", "-c", "x.yaml", "extra", "--json"}, code: 2, stderr: `unexpected argument "extra"`, stdoutNone: true},
		{name: "unknown flag", args: []string{"status", "--jsn"}, code: 2, stderr: "flag provided but not defined: -jsn", stdoutNone: true},
		{name: "bad port", args: []string{"flows", "--dport", "0"}, code: 2, stderr: "want 1..65535", stdoutNone: true},
		{name: "bad state", args: []string{"flows", "--state", "ESTABLISHED"}, code: 2, stderr: `state "ESTABLISHED"`, stdoutNone: true},
		{name: "bad prefix", args: []string{"flows", "--src", "198.18.1.300"}, code: 2, stderr: "invalid value", stdoutNone: true},
		{name: "version with a stray argument", args: []string{"version", "x"}, code: 2, stderr: "unexpected argument", stdoutNone: true},
		{name: "reload --help", args: []string{"reload", "--help"}, code: 0, stdout: "wait for its verdict"},
		{name: "reload of an invalid file signals nobody", args: []string{"reload", "-c", "/nonexistent/seqshiftd.yaml"}, code: 1, stderr: "not signalled", stdoutNone: true},
		{name: "watch and count together", args: []string{"flows", "--watch", "-C"}, code: 2, stderr: "do not go together", stdoutNone: true},
		{name: "status on a socket nobody listens on", args: []string{"status", "--socket", "/nonexistent/seqshiftd.sock"}, code: 1, stderr: "not running", stdoutNone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errs)
			}
			if tc.stdout != "" && !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out)
			}
			if tc.stdoutNone && out != "" {
				t.Errorf("stdout should be empty on an error:\n%s", out)
			}
			if tc.stderr != "" && !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errs)
			}
			if tc.code == 0 && errs != "" {
				t.Errorf("stderr should be empty on success:\n%s", errs)
			}
		})
	}
}

func TestStatus_SocketFlagDoesNotReadTheFile(t *testing.T) {
	// An unreadable file must not matter when the socket is given: the error is about the
	// socket, not the file.
	code, _, errs := runCLI("status", "-c", "/nonexistent/seqshiftd.yaml", "--socket", "/nonexistent/control.sock")
	if code != 1 || strings.Contains(errs, "seqshiftd.yaml") || !strings.Contains(errs, "control.sock") {
		t.Errorf("exit %d, stderr:\n%s", code, errs)
	}
	code, _, errs = runCLI("status", "-c", "/nonexistent/seqshiftd.yaml")
	if code != 1 || !strings.Contains(errs, "--socket") {
		t.Errorf("an unreadable file should point at --socket: exit %d, stderr:\n%s", code, errs)
	}
}

func TestFlowFilter_MatchesLikeConntrack(t *testing.T) {
	fl := control.FlowInfo{
		Client: netip.MustParseAddrPort("198.18.1.2:40000"),
		Server: netip.MustParseAddrPort("[2001:2::5]:502"),
		State:  "established", Rule: "plc",
	}
	none := fl
	none.Rule = ""
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		f    flowFilter
		fl   control.FlowInfo
		want bool
	}{
		{"no filter matches all", flowFilter{}, fl, true},
		{"src prefix", flowFilter{src: p("198.18.1.0/24")}, fl, true},
		{"src host", flowFilter{src: p("198.18.1.2/32")}, fl, true},
		{"src is the client, not the server", flowFilter{src: p("2001:2::/48")}, fl, false},
		{"dst prefix", flowFilter{dst: p("2001:2::/48")}, fl, true},
		{"sport", flowFilter{sport: 40000}, fl, true},
		{"sport is the client's port", flowFilter{sport: 502}, fl, false},
		{"dport", flowFilter{dport: 502}, fl, true},
		{"rule", flowFilter{rule: "plc"}, fl, true},
		{"other rule", flowFilter{rule: "web"}, fl, false},
		{"rule - is no rule", flowFilter{rule: "-"}, none, true},
		{"rule - does not match a ruled flow", flowFilter{rule: "-"}, fl, false},
		{"state", flowFilter{state: "established"}, fl, true},
		{"other state", flowFilter{state: "time_wait"}, fl, false},
		{"all must match", flowFilter{dport: 502, state: "time_wait"}, fl, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.match(&tc.fl); got != tc.want {
				t.Errorf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCompletionKnowsEveryCommandAndFlag keeps the bash completion in step with the CLI: every
// command of the usage and every flag of each command's --help is offered.
func TestCompletionKnowsEveryCommandAndFlag(t *testing.T) {
	comp, err := os.ReadFile("../../deploy/completion/seqshiftd.bash")
	if err != nil {
		t.Fatal(err)
	}
	commands := regexp.MustCompile(`local commands="([^"]*)"`).FindSubmatch(comp)
	if commands == nil {
		t.Fatal("no command list in the completion")
	}
	offered := strings.Fields(string(commands[1]))
	for name := range commandHelp {
		if !strings.Contains(" "+string(commands[1])+" ", " "+name+" ") {
			t.Errorf("completion does not offer the command %s", name)
		}
	}
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)`)
	for _, name := range offered {
		if commandHelp[name] == "" {
			continue // version, help
		}
		_, out, _ := runCLI(name, "--help")
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(name) + `[^)]*\) flags="([^"]*)"`)
		m := re.FindSubmatch(comp)
		if m == nil {
			t.Errorf("completion has no flag list for %s", name)
			continue
		}
		have := " " + string(m[1]) + " "
		for _, f := range flagLine.FindAllStringSubmatch(out, -1) {
			want := "--" + f[1]
			if len(f[1]) == 1 {
				want = "-" + f[1]
			}
			if !strings.Contains(have, " "+want+" ") {
				t.Errorf("completion for %s lacks %s", name, want)
			}
		}
	}
}

// TestCompletion_CompletesInBash runs the completion function as bash would for a few command
// lines (needs bash and the bash-completion package; skips otherwise).
func TestCompletion_CompletesInBash(t *testing.T) {
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		t.Skip("skipping: bash-completion is not installed (apt-get install bash-completion)")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("skipping: no bash")
	}
	for _, tc := range []struct {
		words string // the command line, the last word being completed
		want  string // COMPREPLY, space-joined
	}{
		{"seqshiftd fl", "flows"},
		{"seqshiftd re", "reload"},
		{"seqshiftd check --p", "--portable --plan"},
		{"seqshiftd flows --d", "--dst --dport"},
		{"seqshiftd flows --state est", "established"},
		{"seqshiftd flows --w", "--watch"},
	} {
		script := fmt.Sprintf(`source %s; source ../../deploy/completion/seqshiftd.bash
COMP_WORDS=(%s); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE=%q; COMP_POINT=${#COMP_LINE}
_seqshiftd; echo "${COMPREPLY[*]}"`, lib, tc.words, tc.words)
		out, err := exec.Command(bash, "-c", script).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("%q completes to %q (%v), want %q", tc.words, got, err, tc.want)
		}
	}
}
