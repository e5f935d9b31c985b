// Package flowtable is seqshiftd's table of tracked TCP connections: one entry per connection,
// found from either direction, holding the two sequence offsets the datapath applies (as
// seqnum.Deltas, with the one statement of which goes where in DeltasOf and QuoteDeltasOf), a
// conntrack-like TCP state with per-state timeouts, counters, and enough to survive a restart
// through an atomic, checksummed snapshot file.
//
// # Design
//
//	Lookup(src, dst) ── hash(src)+hash(dst) ──┬─ low bits: shard ─┐
//	                                          └─ high bits: group, 7-bit tag
//	shard i:  mu (writers only) │ idx ──> [ctrl|p0..p6][ctrl|p0..p6] ...  (64-byte groups)
//	                                              │
//	                                              └──> *Flow (128 bytes, never reused)
//
// A connection's [Key] is a small comparable value: the two endpoints' addresses and ports,
// lower endpoint first, so both directions give the same key. The table is split into a
// power-of-two number of shards chosen by a keyed hash of it; each shard has a mutex for
// writers and an open-addressing index of pointers to individually allocated flows, laid out
// as Abseil's Swiss tables are: groups of seven slots sharing a cache line with a control
// word of 7-bit hash tags (see index.go).
//
//   - Lookup takes no lock and does not allocate. It reads the index with atomic loads and
//     stops at the first group with an empty slot; writers never move an entry within an
//     index and empty a slot only where no probe sequence can pass, and a rehash builds a new
//     index and publishes it, so a lookup never misses a live flow and needs no retry. It
//     hashes the segment's tuple as the sum of the endpoints' hashes and compares stored keys
//     in both orientations, so it never orders the endpoints; the comparison tells the
//     direction.
//   - The hash is wyhash's multiply-fold mix (the Go runtime's map hash where AES is missing)
//     with secret per-table seeds drawn from hash/maphash, so a sender cannot aim tuples at one
//     shard or probe sequence. hash/maphash itself was measured at 15-25 ns for the key, as
//     much as the rest of a lookup.
//   - Flows are never reused. A datapath goroutine that still holds a *Flow after the flow was
//     expired, evicted or replaced touches a dead flow (its counters and clock) and nothing
//     else; the garbage collector frees it when the last pointer goes. This is why the index
//     stores pointers rather than slab indices.
//   - Per-packet updates (Observe, Track, Offset) are atomics on the flow itself: a connection is
//     mostly served by one core, so they do not bounce between cores. The table keeps no
//     table-wide per-packet counter; per-state gauges and the created/expired/... counters live
//     in the shards and change once per state transition or per connection. The one
//     table-wide word written by several cores is the live-flow count, touched once per
//     admitted and once per removed connection, never per packet.
//   - Last-seen times have a resolution of one second and come from a coarse clock that Admit,
//     Adopt, Restore and every expiry slice advance, so Observe reads a word instead of the
//     clock (as conntrack uses jiffies). Times are wall-clock Unix seconds, so a snapshot
//     carries idle times across a restart.
//
// Cost: a lookup whose index group and flow are in cache takes about 45 ns (BenchmarkLookup1M,
// active256: 256 busy flows among a million); a lookup of a cold flow waits for two dependent
// memory accesses, index group then flow, which is the memory system's latency rather than the
// table's (about 360 ns on the 2-core VM that measured it, whose dependent DRAM read alone
// costs 160 ns).
//
// Memory: a Flow is exactly 128 bytes (two cache lines: what lookups read, then what packets
// write). It is allocated in one object with a 48-byte flowExt holding what packets rarely or
// never touch on the lookup path: the window records (tcpwindow.Conn, 32 bytes, the layout of
// the kernel map's), the table pointer and a pending-SYN number; 176 bytes, one allocation
// per flow as before. The index costs 64 bytes per seven slots at a load between 7/16 and
// 7/8 (BenchmarkMemoryPerFlow measures the total).
//
// # States, windows and timeouts
//
// The state machine follows Linux conntrack (net/netfilter/nf_conntrack_proto_tcp.c), and
// [Flow.Track] checks every segment's numbers against the connection's window first
// (package tcpwindow, conntrack's tcp_in_window with RFC 5961's rules for RST and SYN):
// a segment whose numbers a receiver would reject moves no state. In particular an RST closes
// only at the exact left edge of the window (one merely in the window is passed on for the
// endpoint's challenge ACK), a SYN or SYN-ACK on a synchronised connection changes nothing
// unless the server answers the client's new SYN (a restart, see Table.Restart), FINs count
// only in the window and only when acknowledged, and both SYNs crossing is a simultaneous
// open of one connection (RFC 9293 3.5), not two. [Flow.Observe] is the same state machine
// without numbers, for a datapath that tracks no windows: an ACK from the other side after a
// FIN is then taken to acknowledge it.
//
// A flow is assured ([Flow.Assured], conntrack's ASSURED) once each side has had something
// acknowledged by the other in a segment that is not a SYN. A server that completed its
// handshake sends such a segment (data or an ACK) sooner or later; one still in SYN-RECEIVED
// (because the client's ACK was forged, or sent to die after the gateway) sends only SYN-ACKs.
// Picked-up flows are unassured until both sides have been seen to acknowledge each other.
// Until then a flow is evicted before any other and its idle timeout is capped by the
// unassured timeout.
//
// Default timeouts, each replaceable through [Timeouts] (a zero field keeps the default):
//
//	state        default  why
//	syn_sent     75s      Linux retries a SYN after 1,2,4,...,64 s (tcp_syn_retries=6); each
//	                      retransmit refreshes last-seen, so the entry must outlive the longest
//	                      gap (64 s) or a late SYN-ACK would find no flow. Embryonic, evicted
//	                      first when the table is full, so a flood costs no established flow.
//	syn_recv     60s      covers the server's SYN-ACK retransmit gaps (tcp_synack_retries=5,
//	                      longest gap 32 s), as conntrack.
//	established  5 days   conntrack's value; long-idle connections (SSH, database pools) must
//	                      not lose their offsets, since a forgotten flow breaks the connection.
//	fin_wait     2m       one FIN seen, not yet acknowledged; conntrack's value.
//	close_wait   1h       half-closed: the FIN was acknowledged and the other side may go on
//	                      sending (shutdown(SHUT_WR) clients). conntrack uses 60 s because it can
//	                      re-learn a flow mid-stream; a rewriter cannot, so be generous.
//	last_ack     30s      both FINs seen, waiting for the last ACK; conntrack's value.
//	time_wait    2m       2*MSL with MSL 60 s, so a retransmitted last FIN is still shifted.
//	close        10s      RST seen; short, as conntrack. Data seen after an RST revives the
//	                      flow (see Flow.Observe).
//	unassured    5m       caps every state's timeout until the flow is assured. conntrack's
//	                      tcp_timeout_unacknowledged: long enough for a client that connects
//	                      and waits for its user before the first byte, short against the
//	                      5-day established timeout that blind junk would otherwise get. A
//	                      full table is protected by the eviction order, not by this value;
//	                      it bounds how long junk holds memory in a table that is not full.
//	                      A connection that stays silent in both directions for 5 minutes
//	                      right after its handshake (a parked pool connection) loses its flow.
//
// Expiry runs in the background (Table.RunExpiry) in slices: each shard lock is held for at most
// 32 index groups (224 slots), and each tick examines only the share of the table that makes
// one full sweep every ten seconds. An entry therefore goes at most about ten seconds after its
// timeout.
//
// # Capacity
//
// Config.MaxFlows bounds the live flows. When the table is full, Admit and Adopt evict, as
// conntrack's early drop: first the oldest unassured flow (embryonic, or never confirmed by
// both sides) of the first shard that has one, starting at the new flow's shard (each shard
// queues its unassured flows in admission order); failing that, the least recently seen
// time_wait or close flow. If there is neither, they return ErrFull and the datapath applies
// its when_full policy.
//
// # What it must never do
//
// flowtable never evicts an assured established (or fin_wait, close_wait, last_ack) flow to
// admit a new one, so neither a SYN flood nor blind junk that reached "established" can push
// out live connections; it never lets a segment whose numbers fail the window checks change a
// flow's state (Track); it never allocates or takes a lock in Lookup, Observe or Track; it
// never holds a shard lock while calling user code (OnRemove, the Range callback) or doing
// I/O; it never admits anything from a snapshot file that fails its checks; and no other
// package decides the sign of an offset: callers ask Deltas.
package flowtable
