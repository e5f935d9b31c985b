package flowtable

// KernelMode is what the kernel datapath's map holds for a flow, as the daemon last wrote it.
// The datapath records it in the flow so that it writes the map once per change of mode, not
// once per packet it sees.
type KernelMode uint8

// Kernel modes.
const (
	KernelNone   KernelMode = iota // no map entry (TUN datapath, or not yet published)
	KernelDaemon                   // an entry that sends every packet of the flow to the daemon
	KernelShift                    // an entry the kernel shifts established segments by
)

var kernelModeNames = [...]string{"none", "daemon", "kernel"}

// String returns "none", "daemon" or "kernel", as `flows` shows where a flow is shifted.
func (m KernelMode) String() string {
	if int(m) < len(kernelModeNames) {
		return kernelModeNames[m]
	}
	return "unknown"
}

const (
	stKernelShift = 10
	stKernelMask  = 3 << stKernelShift
)

// KernelMode returns the mode last recorded by SetKernelMode.
func (f *Flow) KernelMode() KernelMode {
	return KernelMode(f.state.Load() & stKernelMask >> stKernelShift)
}

// SetKernelMode records that the map now holds mode m for the flow, if it held old, and
// reports whether it did: the goroutine that wins writes the map, the others need not. It
// lives in the state word so that one compare-and-swap orders it with the state changes that
// decide it.
func (f *Flow) SetKernelMode(old, m KernelMode) bool {
	for {
		w := f.state.Load()
		if KernelMode(w&stKernelMask>>stKernelShift) != old {
			return false
		}
		if f.state.CompareAndSwap(w, w&^stKernelMask|uint32(m)<<stKernelShift) {
			return true
		}
	}
}

// Touch moves the flow's last-seen time forward to sec (Unix seconds), never backward: the
// kernel datapath forwards segments the daemon never sees, and an established flow only the
// kernel sees must not expire.
func (f *Flow) Touch(sec uint32) {
	for {
		old := f.lastSeen.Load()
		if sec <= old || f.lastSeen.CompareAndSwap(old, sec) {
			return
		}
	}
}

// AddCounters adds traffic the kernel datapath forwarded in direction d to the flow's counters.
func (f *Flow) AddCounters(d Dir, c Counters) {
	cnt := &f.cnt[d&1]
	cnt.packets.Add(c.Packets)
	cnt.bytes.Add(c.Bytes)
}

// ServerPlan returns how the server's offset is fixed and whether it has been (the server's ISN
// seen, or the plan not absolute). The kernel datapath keeps an unresolved plan in its map so
// that a daemon restarted mid-handshake can finish the handshake the old one began.
func (f *Flow) ServerPlan() (p ServerPlan, resolved bool) {
	return ServerPlan{Absolute: f.bits&flAbsolute != 0, Value: f.plan}, f.state.Load()&stResolved != 0
}
