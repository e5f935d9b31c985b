package policy

// The strict YAML decoder: it walks yaml.v3's node tree, so that every problem is reported at
// its FILE:LINE:COL, and reads each kind of value (mapping, sequence, string, integer, boolean,
// enum, duration) with the checks every key of that kind shares.

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.v3 node tree and collects positional errors.
type decoder struct {
	file string
	errs Errors
	more int // errors beyond maxErrors, only counted
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, max(n.Column, 1)
	}
	d.errAt(line, col, fmt.Sprintf(format, args...))
}

func (d *decoder) errAt(line, col int, msg string) {
	if len(d.errs) >= maxErrors {
		d.more++
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: col, Msg: msg})
}

// err returns the collected errors, or nil.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	es := d.errs
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	if d.more > 0 {
		last := es[len(es)-1]
		es = append(es, &Error{File: d.file, Line: last.Line, Col: last.Col,
			Msg: fmt.Sprintf("... and %d more errors", d.more)})
	}
	return es
}

// yamlLine finds the line number in a yaml.v3 syntax error ("yaml: line 3: ..."). yaml.v3 does
// not report the column of syntax errors, so they are given column 1.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func (d *decoder) syntaxError(err error) {
	msg := err.Error()
	line := 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	d.errAt(max(line, 1), 1, "YAML syntax: "+msg)
}

// deref follows aliases (bounded, in case of a cycle) so that anchors can share prefix lists.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// describe names a node's type for messages: "a list", "the integer 5", "a string".
func describe(n *yaml.Node) string {
	n = deref(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!int":
		return "the integer " + n.Value
	case "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	case "!!str":
		return "the string " + strconv.Quote(truncate(n.Value, 40))
	}
	return "a value tagged " + n.ShortTag()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// isNull reports an absent value: `key:` with nothing after it, or `~`/`null`.
func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// mapping checks that n is a mapping whose keys are unique strings from known, reports every
// other key, and returns the values by key. A null n is an empty mapping.
func (d *decoder) mapping(n *yaml.Node, what string, known []string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	n = deref(n)
	if isNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%swant a mapping, got %s", label(what), describe(n))
		return out
	}
	keys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || (k.ShortTag() != "!!str" && k.ShortTag() != "!!merge") {
			d.errorf(k, "%sa key must be a string, got %s", label(what), describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorf(k, "%smerge keys (<<) are not supported; write the keys out", label(what))
			continue
		}
		if first, dup := keys[k.Value]; dup {
			d.errorf(k, "%sduplicate key %q (first at line %d)", label(what), k.Value, first.Line)
			continue
		}
		keys[k.Value] = k
		if !contains(known, k.Value) {
			d.errorf(k, "%sunknown key %q%s", label(what), k.Value, suggest(k.Value, known))
			continue
		}
		out[k.Value] = v
	}
	return out
}

// label prefixes a message with the section it is about; the top level has none.
func label(what string) string {
	if what == "" {
		return ""
	}
	return what + ": "
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest names the closest known key when one is a likely typo, otherwise lists them all.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dd := editDistance(s, k); dd < bestD {
			best, bestD = k, dd
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return "; want one of: " + strings.Join(known, ", ")
}

// editDistance is the Levenshtein distance, for typo suggestions on short keys.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sequence checks that n is a list and returns its items; null is an empty list.
func (d *decoder) sequence(n *yaml.Node, what string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(" (write [%s] for a list of one)", n.Value)
		}
		d.errorf(n, "%s: want a list, got %s%s", what, describe(n), hint)
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = deref(it)
	}
	return items
}

// str returns a string scalar. Numbers and booleans are refused rather than converted, so that
// `name: 0123` or `iface: no` cannot silently become something else.
func (d *decoder) str(n *yaml.Node, what string) (string, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		hint := ""
		if n != nil && n.Kind == yaml.ScalarNode {
			if n.ShortTag() == "!!null" {
				hint = ` (write "" for an empty string)`
			} else {
				hint = " (quote it if it is meant as a string)"
			}
		}
		d.errorf(n, "%s: want a string, got %s%s", what, describe(n), hint)
		return "", false
	}
	return n.Value, true
}

// integerLiteral matches what YAML would read as an integer had it fitted in 64 bits.
var integerLiteral = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)

// integer returns an integer scalar within [lo, hi].
func (d *decoder) integer(n *yaml.Node, what string, lo, hi int64) (int64, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: want an integer, got %s", what, describe(n))
		return 0, false
	}
	if n.ShortTag() != "!!int" {
		if n.ShortTag() == "!!float" && integerLiteral.MatchString(n.Value) {
			d.errorf(n, "%s: %s is out of range %d..%d", what, n.Value, lo, hi)
		} else {
			d.errorf(n, "%s: want an integer, got %s", what, describe(n))
		}
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < lo || v > hi {
		d.errorf(n, "%s: %s is out of range %d..%d", what, n.Value, lo, hi)
		return 0, false
	}
	return v, true
}

// limited reads an integer that some other package owns the limits of: lo..hi is the owner's
// range (reported in the same words as every other range) and check the owner's own
// validation, whose verdict is final, so that the file is refused exactly when the owner would
// refuse the value.
func (d *decoder) limited(n *yaml.Node, what string, lo, hi int64, check func(int64) error) (int64, bool) {
	v, ok := d.integer(n, what, lo, hi)
	if !ok {
		return 0, false
	}
	if err := check(v); err != nil {
		d.errorf(n, "%s: %v", what, err)
		return 0, false
	}
	return v, true
}

// boolean returns a true/false scalar. yes/no/on/off are refused: YAML 1.1 and 1.2 disagree.
func (d *decoder) boolean(n *yaml.Node, what string) (bool, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.errorf(n, "%s: want true or false, got %s", what, describe(n))
		return false, false
	}
	v, err := strconv.ParseBool(strings.ToLower(n.Value))
	if err != nil {
		d.errorf(n, "%s: want true or false, got %s", what, describe(n))
		return false, false
	}
	return v, true
}

// enum returns a string scalar that must be one of choices.
func (d *decoder) enum(n *yaml.Node, what string, choices ...string) (string, bool) {
	s, ok := d.str(n, what)
	if !ok {
		return "", false
	}
	if !contains(choices, s) {
		d.errorf(n, "%s: %q is not one of %s", what, s, strings.Join(choices, ", "))
		return "", false
	}
	return s, true
}

// duration returns a Go duration string ("5s", "2m30s", "120h") of at least lo. A bare 0 is
// accepted; any other bare number is refused because its unit would be a guess.
func (d *decoder) duration(n *yaml.Node, what string, lo time.Duration) (time.Duration, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		d.errorf(n, "%s: want a duration such as 5s, 2m or 1h30m, got %s", what, describe(n))
		return 0, false
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		hint := ""
		switch {
		case integerLiteral.MatchString(n.Value):
			hint = fmt.Sprintf(" (a unit is required: %ss?)", n.Value)
		case strings.HasSuffix(n.Value, "d"):
			hint = " (there is no day unit: write hours, e.g. 120h)"
		}
		d.errorf(n, "%s: %q is not a duration such as 5s, 2m or 1h30m%s", what, n.Value, hint)
		return 0, false
	}
	if v < 0 || (v != 0 && v < lo) {
		d.errorf(n, "%s: %s is too short: want 0 (the default) or at least %s", what, n.Value, lo)
		return 0, false
	}
	return v, true
}
