// Package control is seqshiftd's local control socket: a unix stream socket on which the daemon
// answers `status`, `flows` and `version` requests from the seqshiftd CLI, and the client and
// text renderers the CLI uses.
//
// The protocol is line-delimited JSON, one request per connection:
//
//	request:  {"cmd":"status"} | {"cmd":"flows"} | {"cmd":"version"}   (one line, at most 4 KiB)
//	response: {"ok":true,"status":{...}}
//	          {"ok":true,"version":"..."}
//	          {"ok":true,"flows":true}   then one FlowInfo object per line, then
//	          {"end":true,"count":N}     (or {"end":true,"count":N,"error":"..."} when cut short)
//	          {"ok":false,"error":"..."}
//
// The flows listing is streamed through a fixed-size buffer, never built in memory, so a table of
// a million flows costs the daemon the same memory as one of ten.
//
// The control socket must never let a client stall the daemon: every connection is served in its
// own goroutine with a deadline on the request and an idle deadline on every write, the number of
// connections is bounded (with two slots beyond the bound kept for status and version, so that
// a health check answers while idle or slow clients hold the rest), and the socket is reachable
// only by root and the daemon's own user.
package control

import (
	"net/netip"
	"time"
)

// Handler is what the daemon implements to answer control requests.
//
// Both methods are called from connection goroutines, concurrently with each other and with the
// datapath. Flows calls fn for one flow at a time and fn may block for as long as the client
// takes to read (up to the write idle timeout), so Flows must not hold a lock the datapath needs
// while it calls fn: copy a shard's flows out, release the lock, then call fn.
type Handler interface {
	// Status returns the daemon's current state.
	Status() Status
	// Flows calls fn for each tracked flow until fn returns false.
	Flows(fn func(FlowInfo) bool)
}

// Status is the daemon's state as `seqshiftd status` shows it.
type Status struct {
	Version         string    `json:"version"`
	UptimeSeconds   float64   `json:"uptime_seconds"`
	Generation      uint64    `json:"generation"`
	LastReloadError string    `json:"last_reload_error"`
	LastReloadTime  time.Time `json:"last_reload_time,omitzero"`
	Steering        bool      `json:"steering"`
	SteeringDetail  string    `json:"steering_detail,omitempty"`
	// Datapath is where established flows are shifted: "kernel" or "tun"; DatapathDetail says
	// why the TUN runs when the file asked for auto and the kernel datapath was not available.
	Datapath       string         `json:"datapath"`
	DatapathDetail string         `json:"datapath_detail,omitempty"`
	FlowsActive    int            `json:"flows_active"`
	FlowsByState   map[string]int `json:"flows_by_state,omitempty"`
	// FlowsUnassured counts live flows of which one side has not yet had anything acknowledged
	// by the other outside a SYN (conntrack's ASSURED): the ones evicted first.
	FlowsUnassured int               `json:"flows_unassured"`
	Counters       map[string]uint64 `json:"counters"`
}

// FlowInfo is one tracked connection as `seqshiftd flows` shows it. Offsets are the values added
// modulo 2^32 to the sequence numbers of each direction.
type FlowInfo struct {
	Client     netip.AddrPort `json:"client"`
	Server     netip.AddrPort `json:"server"`
	State      string         `json:"state"`
	Rule       string         `json:"rule"`
	Generation uint64         `json:"generation"`
	OffsetC2S  uint32         `json:"offset_c2s"`
	OffsetS2C  uint32         `json:"offset_s2c"`
	// ShiftC2S and ShiftS2C are the offsets as the signed distance they move each side's
	// numbers (offset 4294967173 is a shift of -123), what the text listing shows under the
	// same names. The renderers fill them from the offsets.
	ShiftC2S int32  `json:"shift_c2s"`
	ShiftS2C int32  `json:"shift_s2c"`
	Exempt   string `json:"exempt"`
	// Assured: each side has had something acknowledged by the other outside a SYN; until then
	// the flow is evicted first and times out at flows.timeouts.unassured.
	Assured bool `json:"assured"`
	// Where the flow's established segments are shifted now: "kernel" (the tc programs),
	// "daemon" (its handshake or close: every segment crosses the daemon) or "" (TUN datapath).
	ShiftedIn   string  `json:"shifted_in,omitempty"`
	PacketsC2S  uint64  `json:"packets_c2s"`
	BytesC2S    uint64  `json:"bytes_c2s"`
	PacketsS2C  uint64  `json:"packets_s2c"`
	BytesS2C    uint64  `json:"bytes_s2c"`
	AgeSeconds  float64 `json:"age_seconds"`
	IdleSeconds float64 `json:"idle_seconds"`
}

// Wire commands.
const (
	cmdStatus  = "status"
	cmdFlows   = "flows"
	cmdVersion = "version"
	cmdEvents  = "events"
)

// maxRequest bounds a request line: the largest valid request is a few dozen bytes, so anything
// near this is garbage or an attack and is answered with an error instead of being buffered.
const maxRequest = 4 << 10

// request is the one line a client sends.
type request struct {
	Cmd string `json:"cmd"`
}

// response is the first line the daemon sends back.
type response struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Status  *Status `json:"status,omitempty"`
	Version string  `json:"version,omitempty"`
	Flows   bool    `json:"flows,omitempty"`
	Events  bool    `json:"events,omitempty"`
}

// trailer ends a flows stream, so that a client can tell a complete listing from a cut one.
type trailer struct {
	End   bool   `json:"end"`
	Count uint64 `json:"count"`
	Error string `json:"error,omitempty"`
}

// flowLine decodes either a flow or the trailer: the trailer's field names do not clash with
// FlowInfo's, and a flow line never has "end".
type flowLine struct {
	FlowInfo
	End   bool   `json:"end"`
	Count uint64 `json:"count"`
	Error string `json:"error"`
}
