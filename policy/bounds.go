package policy

import "go.yaml.in/yaml/v3"

// maxNodes bounds the size of the configuration as the decoder sees it, every alias counted as
// the nodes of its anchor. YAML aliases let a small file describe a huge one (an anchor of 20k
// prefixes referenced 2000 times is 40M prefixes in half a megabyte), and everything after the
// parser (decoding, Match at every SYN, the checks) costs what the expanded file holds. A file
// at the 4 MiB size limit without aliases has fewer nodes than this, so only expansion can
// reach it.
const maxNodes = 1 << 20

// maxDepth bounds nesting, so that the walk below and the decoder's recursion stay shallow.
const maxDepth = 256

// bounded checks that root, aliases expanded, has at most maxNodes nodes and maxDepth levels.
// It walks each node once (an anchor's expanded size is computed once and reused at every
// alias), so it costs what the file holds, not what it expands to. The error names the node
// at which the running count crossed the limit, normally the alias that did it.
func (d *decoder) bounded(root *yaml.Node) bool {
	b := nodeBudget{expanded: make(map[*yaml.Node]int)}
	b.walk(root, 0)
	switch {
	case b.tooDeep != nil:
		d.errorf(b.tooDeep, "nested more than %d levels deep", maxDepth)
		return false
	case b.over == nil:
		return true
	case b.over.Kind == yaml.AliasNode:
		d.errorf(b.over, "aliases expand the file to more than %d values (this *%s alone adds %d); write the list once, or split it",
			maxNodes, b.over.Value, b.expanded[b.over.Alias])
	default:
		d.errorf(b.over, "the file has more than %d values", maxNodes)
	}
	return false
}

type nodeBudget struct {
	total    int
	over     *yaml.Node // where total first exceeded maxNodes
	tooDeep  *yaml.Node
	expanded map[*yaml.Node]int // nodes a subtree expands to, by its root
}

// walk adds n's expanded size to the total and returns it.
func (b *nodeBudget) walk(n *yaml.Node, depth int) int {
	if n == nil || b.over != nil || b.tooDeep != nil {
		return 0
	}
	if depth > maxDepth {
		b.tooDeep = n
		return 0
	}
	if n.Kind == yaml.AliasNode {
		size, ok := b.expanded[n.Alias]
		if !ok {
			// yaml.v3 defines an anchor before any alias to it, so this is only reached for
			// an alias inside its own anchor, which the parser refuses: count it as one node.
			size = 1
		}
		b.add(n, size)
		return size
	}
	start := b.total
	b.add(n, 1)
	for _, c := range n.Content {
		b.walk(c, depth+1)
	}
	size := b.total - start
	if n.Anchor != "" {
		b.expanded[n] = size
	}
	return size
}

func (b *nodeBudget) add(n *yaml.Node, k int) {
	b.total += k
	if b.total > maxNodes && b.over == nil {
		b.over = n
	}
}
