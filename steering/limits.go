package steering

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The numbers that tag everything seqshiftd installs, their defaults and their ranges. They are
// defined here, by the package that installs the objects, and nowhere else: policy validates
// the file with the Check functions below, so `seqshiftd check` and `seqshiftd run` cannot
// disagree about a value.
const (
	DefaultTable    = 5813 // routing table used when Config.Table is 0
	DefaultPriority = 5813 // rule priority used when Config.Priority is 0: before main (32766)
	DefaultProtocol = 213  // rule and route protocol tag used when Config.Protocol is 0

	// Tables are 32-bit in the kernel (FRA_TABLE, RTA_TABLE), but netlink.Rule and Route carry
	// them as int and the kernel's own tools print them signed in places; the positive int32
	// range is what every layer agrees on.
	MinTable = 1
	MaxTable = 1<<31 - 1

	// Priority 0 is the local table's rule; from 32766 on the main table would answer first.
	MinPriority = 1
	MaxPriority = 32765

	// 0-4 are unspec, redirect, kernel, boot and static, shared with everything else: `ip rule
	// add` tags rules with boot, so tagging ours with it would make teardown remove the admin's.
	MinProtocol = unix.RTPROT_STATIC + 1
	MaxProtocol = 255
)

// outOfRange is the one wording of a range error, the same as policy's for every other key.
func outOfRange(n, lo, hi int64) error { return fmt.Errorf("%d is out of range %d..%d", n, lo, hi) }

// CheckTable reports why n cannot be seqshiftd's routing table, nil if it can. The default,
// main and local tables (253, 254, 255) are refused: seqshiftd's default routes and its
// blackhole would take over all routing.
func CheckTable(n int64) error {
	switch {
	case n < MinTable || n > MaxTable:
		return outOfRange(n, MinTable, MaxTable)
	case n >= unix.RT_TABLE_DEFAULT && n <= unix.RT_TABLE_LOCAL:
		return fmt.Errorf("%d is a reserved table (253 default, 254 main, 255 local)", n)
	}
	return nil
}

// CheckPriority reports why n cannot be the priority of seqshiftd's rules, nil if it can.
func CheckPriority(n int64) error {
	if n < MinPriority || n > MaxPriority {
		return outOfRange(n, MinPriority, MaxPriority)
	}
	return nil
}

// CheckProtocol reports why n cannot be seqshiftd's rule and route protocol tag, nil if it can.
func CheckProtocol(n int64) error {
	if n < MinProtocol || n > MaxProtocol {
		return outOfRange(n, MinProtocol, MaxProtocol)
	}
	return nil
}
