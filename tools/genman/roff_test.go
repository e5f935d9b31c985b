package main

import (
	"os"
	"strings"
	"testing"
)

func TestBlocks_ConvertsTheMarkdownTheREADMEUses(t *testing.T) {
	for _, tc := range []struct {
		name, md, want string
	}{
		{"paragraph lines are joined", "one\ntwo", ".PP\none two\n"},
		{"code span is bold, hyphens are minus signs, no hyphenation", "run `seqshiftd check -c F`", ".PP\nrun \\fB\\%seqshiftd check \\-c F\\fR\n"},
		{"bold and italics", "**Fail-closed.** *other* side", ".PP\n\\fBFail-closed.\\fR \\fIother\\fR side\n"},
		{"link keeps its text", "see [`the example`](deploy/x.yaml) now", ".PP\nsee \\fB\\%the example\\fR now\n"},
		{"non-ASCII as Unicode escapes", "a ≤ b — c", ".PP\na \\[u2264] b \\[u2014] c\n"},
		{"backslash escaped", `a\b`, ".PP\na\\eb\n"},
		{"a line starting with a dot is protected", "`.yaml` files", ".PP\n\\fB\\%.yaml\\fR files\n"},
		{"code fence is no-fill and escaped", "```sh\n$ a -b\n.x\n```", ".PP\n.RS 4\n.nf\n$ a \\-b\n\\&.x\n.fi\n.RE\n"},
		{"ordered list with continuation", "1. first\n   more\n2. second", ".IP 1. 4\nfirst more\n.IP 2. 4\nsecond\n"},
		{"two-column table: value only", "| a | b |\n|---|---|\n| `x` | y |", ".TP\n\\fB\\%x\\fR\ny\n"},
		{"wide table: header: value, empty cells left out, escaped pipe",
			"| key | type | meaning |\n|---|---|---|\n| `k` | `a` \\| `b` | |",
			".TP\n\\fB\\%k\\fR\ntype: \\fB\\%a\\fR | \\fB\\%b\\fR\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := blocks(strings.Split(tc.md, "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestBlocks_RefusesWhatItWouldDrop(t *testing.T) {
	for _, md := range []string{
		"> a quote",
		"<details>",
		"    indented code",
		"```\nunterminated",
		"| a | b |\n| c | d |",
		"| a | b |\n|---|---|\n| c |",
	} {
		if _, err := blocks(strings.Split(md, "\n")); err == nil {
			t.Errorf("%q: no error", md)
		}
	}
}

// TestPages_RenderFromTheREADME is what `make deb` runs: every section the pages name exists
// in the README and converts, and the key reference is complete.
func TestPages_RenderFromTheREADME(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := parseSections(string(src))
	for _, p := range pages {
		text, err := p.render(doc, "1.2.3", "2026-01-02")
		if err != nil {
			t.Fatalf("%s(%s): %v", p.name, p.section, err)
		}
		if !strings.Contains(text, `"seqshiftd 1.2.3"`) || !strings.Contains(text, "2026-01-02") {
			t.Errorf("%s(%s): no version or date in the .TH line", p.name, p.section)
		}
		if strings.Contains(text, "deploy/seqshiftd.yaml") {
			t.Errorf("%s(%s) names the source-tree path deploy/seqshiftd.yaml", p.name, p.section)
		}
	}
	five, _ := pages[1].render(doc, "1", "2026-01-02")
	for _, line := range doc["Keys"] {
		if m := strings.SplitN(line, "`", 3); strings.HasPrefix(line, "| `") && len(m) == 3 {
			if !strings.Contains(five, `\fB\%`+escapeCode(m[1])+`\fR`) {
				t.Errorf("seqshiftd.yaml(5) lacks key %s", m[1])
			}
		}
	}
	eight, _ := pages[0].render(doc, "1", "2026-01-02")
	if !strings.Contains(eight, "seqshiftd check") || !strings.Contains(eight, ".SH SYNOPSIS") {
		t.Error("seqshiftd(8) has no command synopsis")
	}
}
