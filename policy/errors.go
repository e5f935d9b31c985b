package policy

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration file, at the node it was found.
type Error struct {
	File      string
	Line, Col int // 1-based
	Msg       string
}

// Error returns "FILE:LINE:COL: message", the form editors and compilers use, so that an
// operator can jump to it.
func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem Parse found, in file order. Its message is one line per problem.
type Errors []*Error

// maxErrors bounds how many problems one Parse reports: past that they are mostly
// consequences of the first ones.
const maxErrors = 20

// Error returns every problem, one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual problems.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
