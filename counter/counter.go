// Package counter is seqshiftd's one table of counters: each counter family is described once,
// by the package that increments it (its name, help text, labels and status key), and
// everything that shows counters (`seqshiftd status`, the Prometheus endpoint) reads the
// descriptions and the values through Set, with no code per counter. Adding a counter is one
// Desc in its owner's table plus its increment.
//
// Values live in Blocks: one per writer (a datapath queue), padded so that two writers never
// share a cache line, written with uncontended atomic adds and summed only when read.
//
// counter must never allocate or take a lock on the increment path, and never be what makes a
// packet slower: a scrape reads the atomics, it never asks the writer for anything.
package counter

import (
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
)

// Desc describes one counter family: a single counter, or one counter per combination of
// label values listed in Values.
type Desc struct {
	// Name is the Prometheus metric name without the seqshiftd_ prefix, e.g.
	// "passed_packets_total".
	Name string
	// Help is the metric's help text.
	Help string
	// Labels are the label names; empty for a single counter.
	Labels []string
	// Values are the label values of each counter of the family, in the order the owner
	// indexes them (len(Values[i]) == len(Labels)); nil for a single counter.
	Values [][]string
	// Status is the family's key in `seqshiftd status`, "" to leave it out. For a family with
	// labels, a key with %s verbs is filled with each counter's label values (one key per
	// counter, e.g. "passed_%s" gives passed_no_flow); a key without verbs shows the family's
	// sum (e.g. "malformed").
	Status string

	base int // the family's first slot in its Table's Blocks
}

// Len returns the number of counters in the family.
func (d *Desc) Len() int {
	if len(d.Labels) == 0 {
		return 1
	}
	return len(d.Values)
}

// Each returns one label-value list per counter, for a family with one label.
func Each(values ...string) [][]string {
	out := make([][]string, len(values))
	for i, v := range values {
		out[i] = []string{v}
	}
	return out
}

// A Set is a source of counters: its families, fixed for its lifetime, and their current
// values. The datapath is one; the kernel datapath's per-CPU map is another.
type Set interface {
	// Descs returns the families, always the same ones in the same order.
	Descs() []*Desc
	// Values returns the current values: [i][j] is the j-th counter of Descs()[i]. Counters
	// only grow while the daemon runs. It is called at scrape time, never per packet.
	Values() [][]uint64
}

// Table is a fixed list of families and the layout of their counters in a Block.
type Table struct {
	descs []*Desc
	slots int
}

var metricName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// NewTable lays out descs. It panics on a table that could not be shown (a bad or duplicate
// name, label values not matching the labels, a Desc in two tables): tables are package-level
// values, so that is a programming error found by any test that loads the package.
func NewTable(descs ...*Desc) *Table {
	t := &Table{descs: descs}
	seen := map[string]bool{}
	for _, d := range descs {
		switch {
		case !metricName.MatchString(d.Name) || seen[d.Name]:
			panic(fmt.Sprintf("counter: bad or duplicate name %q", d.Name))
		case d.Help == "":
			panic(fmt.Sprintf("counter: %s has no help text", d.Name))
		case len(d.Labels) == 0 && d.Values != nil, len(d.Labels) != 0 && len(d.Values) == 0:
			panic(fmt.Sprintf("counter: %s: label values do not match labels %v", d.Name, d.Labels))
		case d.base != 0:
			panic(fmt.Sprintf("counter: %s is in two tables", d.Name))
		}
		for _, v := range d.Values {
			if len(v) != len(d.Labels) {
				panic(fmt.Sprintf("counter: %s: label values %v do not match labels %v", d.Name, v, d.Labels))
			}
		}
		seen[d.Name] = true
		d.base = t.slots + 1 // slot 0 stays unused, so that base 0 means "in no table"
		t.slots += d.Len()
	}
	return t
}

// Descs returns the table's families.
func (t *Table) Descs() []*Desc { return t.descs }

// pad is how many slots (8 bytes each) keep a Block's counters off its neighbours' cache lines
// (64 bytes, and the adjacent-line prefetcher's 128).
const pad = 16

// Block is one writer's counters for a Table. Only one goroutine should write a Block, so that
// its atomic adds are uncontended; they are atomic so that a scrape can read them meanwhile.
type Block struct {
	v []atomic.Uint64
}

// NewBlock returns a zeroed Block for t, padded on both sides.
func (t *Table) NewBlock() *Block {
	v := make([]atomic.Uint64, pad+t.slots+1+pad)
	return &Block{v: v[pad : pad+t.slots+1]}
}

// Add adds n to the i-th counter of family d (0 for a single counter). It does not allocate;
// an i outside the family panics (in a bounds check) only if it is outside the whole Block.
func (b *Block) Add(d *Desc, i int, n uint64) { b.v[d.base+i].Add(n) }

// Inc adds one to the i-th counter of family d.
func (b *Block) Inc(d *Desc, i int) { b.v[d.base+i].Add(1) }

// Load returns the i-th counter of family d.
func (b *Block) Load(d *Desc, i int) uint64 { return b.v[d.base+i].Load() }

// Sum returns the values of t summed over blocks, in the shape Set.Values returns.
func (t *Table) Sum(blocks []*Block) [][]uint64 {
	flat := make([]uint64, t.slots+1)
	for _, b := range blocks {
		for i := range flat {
			flat[i] += b.v[i].Load()
		}
	}
	out := make([][]uint64, len(t.descs))
	for i, d := range t.descs {
		out[i] = flat[d.base : d.base+d.Len() : d.base+d.Len()]
	}
	return out
}

// AddStatus adds s's counters to m under their status keys (see Desc.Status).
func AddStatus(m map[string]uint64, s Set) {
	vals := s.Values()
	for i, d := range s.Descs() {
		if d.Status == "" {
			continue
		}
		if !strings.Contains(d.Status, "%") {
			var sum uint64
			for _, v := range vals[i] {
				sum += v
			}
			m[d.Status] += sum
			continue
		}
		for j, v := range vals[i] {
			args := make([]any, len(d.Values[j]))
			for k, l := range d.Values[j] {
				args[k] = l
			}
			m[fmt.Sprintf(d.Status, args...)] += v
		}
	}
}
