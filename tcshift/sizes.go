package tcshift

import "encoding/binary"

// Sizes of the map entries, checked against the object's BTF by layout_test.go.
var (
	flowKeySize   = binary.Size(FlowKey{})
	flowValueSize = binary.Size(FlowValue{})
)
