package main

import (
	"fmt"
	"regexp"
	"strings"
)

// sections maps a README heading's text (without the #s) to the lines under it, up to the next
// heading of any level.
type sections map[string][]string

func parseSections(src string) sections {
	doc := sections{}
	var cur string
	inFence := false
	for _, line := range strings.Split(src, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if !inFence && strings.HasPrefix(line, "#") {
			cur = strings.TrimSpace(strings.TrimLeft(line, "#"))
			doc[cur] = nil
			continue
		}
		if cur != "" {
			doc[cur] = append(doc[cur], line)
		}
	}
	return doc
}

var (
	orderedItem = regexp.MustCompile(`^(\d+)\. (.*)$`)
	bulletItem  = regexp.MustCompile(`^[-*] (.*)$`)
)

// blocks converts the Markdown of one section to roff. It knows paragraphs, fenced code,
// tables, ordered and bullet lists (continuation lines indented), and refuses anything else
// that has block meaning in Markdown (headings cannot occur: sections end at them; quotes and
// HTML can).
func blocks(lines []string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(lines); {
		line := lines[i]
		switch {
		case strings.TrimSpace(line) == "":
			i++
		case strings.HasPrefix(line, "```"):
			j := i + 1
			for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
				j++
			}
			if j == len(lines) {
				return "", fmt.Errorf("unterminated code fence at %q", line)
			}
			b.WriteString(".PP\n.RS 4\n.nf\n")
			for _, l := range lines[i+1 : j] {
				b.WriteString(escapeLine(escapeCode(l)) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
			i = j + 1
		case strings.HasPrefix(line, "|"):
			j := i
			for j < len(lines) && strings.HasPrefix(lines[j], "|") {
				j++
			}
			t, err := table(lines[i:j])
			if err != nil {
				return "", err
			}
			b.WriteString(t)
			i = j
		case orderedItem.MatchString(line) || bulletItem.MatchString(line):
			var tag, text string
			if m := orderedItem.FindStringSubmatch(line); m != nil {
				tag, text = m[1]+".", m[2]
			} else {
				tag, text = `\(bu`, bulletItem.FindStringSubmatch(line)[1]
			}
			j := i + 1
			for j < len(lines) && strings.HasPrefix(lines[j], "  ") && strings.TrimSpace(lines[j]) != "" {
				text += " " + strings.TrimSpace(lines[j])
				j++
			}
			fmt.Fprintf(&b, ".IP %s 4\n%s\n", tag, escapeLine(inline(text)))
			i = j
		case strings.HasPrefix(line, ">"), strings.HasPrefix(line, "<"), strings.HasPrefix(line, "    "):
			return "", fmt.Errorf("unsupported Markdown block at %q", line)
		default:
			j := i
			var para []string
			for j < len(lines) && strings.TrimSpace(lines[j]) != "" && !strings.HasPrefix(lines[j], "|") &&
				!strings.HasPrefix(lines[j], "```") && !orderedItem.MatchString(lines[j]) {
				para = append(para, strings.TrimSpace(lines[j]))
				j++
			}
			b.WriteString(".PP\n" + escapeLine(inline(strings.Join(para, " "))) + "\n")
			i = j
		}
	}
	return b.String(), nil
}

// table renders a Markdown table as a tagged list: the first column is the tag, the other
// columns follow as "header: value" lines (just the value when there is only one), empty cells
// left out. A man page is read in a terminal of any width; a tbl table of the key reference
// would not fit in 80 columns.
func table(rows []string) (string, error) {
	if len(rows) < 2 || !regexp.MustCompile(`^\|[-:| ]+\|$`).MatchString(rows[1]) {
		return "", fmt.Errorf("table without a header separator at %q", rows[0])
	}
	head := cells(rows[0])
	var b strings.Builder
	for _, r := range rows[2:] {
		c := cells(r)
		if len(c) != len(head) {
			return "", fmt.Errorf("table row has %d cells, header %d: %q", len(c), len(head), r)
		}
		b.WriteString(".TP\n" + escapeLine(inline(c[0])) + "\n")
		first := true
		for k := 1; k < len(c); k++ {
			if c[k] == "" {
				continue
			}
			if !first {
				b.WriteString(".br\n")
			}
			first = false
			text := inline(c[k])
			if len(head) > 2 {
				text = escapeText(head[k]) + ": " + text
			}
			b.WriteString(escapeLine(text) + "\n")
		}
	}
	return b.String(), nil
}

// cells splits a table row at its unescaped pipes; `\|` is a literal pipe.
func cells(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(strings.TrimSuffix(row, "|"), "|")
	var out []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// inline converts code spans, bold, italics and links to roff fonts, escaping everything else.
func inline(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		rest := s[i:]
		switch {
		case rest[0] == '`':
			if end := strings.IndexByte(rest[1:], '`'); end >= 0 {
				b.WriteString(codeSpan(rest[1 : 1+end]))
				i += end + 2
				continue
			}
		case strings.HasPrefix(rest, "**"):
			if end := strings.Index(rest[2:], "**"); end > 0 {
				b.WriteString(`\fB` + inline(rest[2:2+end]) + `\fR`)
				i += end + 4
				continue
			}
		case rest[0] == '*' && len(rest) > 1 && rest[1] != ' ':
			if end := strings.IndexByte(rest[1:], '*'); end > 0 && rest[end] != ' ' {
				b.WriteString(`\fI` + inline(rest[1:1+end]) + `\fR`)
				i += end + 2
				continue
			}
		case rest[0] == '[':
			if m := link.FindStringSubmatch(rest); m != nil {
				b.WriteString(inline(m[1]))
				i += len(m[0])
				continue
			}
		}
		// One rune of plain text.
		r := []rune(rest)[0]
		b.WriteString(escapeText(string(r)))
		i += len(string(r))
	}
	return b.String()
}

var link = regexp.MustCompile(`^\[([^\]]+)\]\(([^)\s]+)\)`)

// codeSpan is a literal: bold, and its hyphens are real minus signs (options, negative
// numbers) so that they can be searched for and copied.
func codeSpan(s string) string {
	return `\fB\%` + escapeCode(s) + `\fR`
}

func escapeCode(s string) string {
	return strings.ReplaceAll(escapeText(s), "-", `\-`)
}

// escapeText escapes roff's backslash and writes every non-ASCII character as a named Unicode
// escape, so the page needs no input encoding (groff 1.22 reads Latin-1 without preconv).
func escapeText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r > 0x7e:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// escapeLine protects a text line that would otherwise start a roff request.
func escapeLine(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}
