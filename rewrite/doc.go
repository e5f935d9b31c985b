// Package rewrite is seqshiftd's packet engine: it classifies one IP packet (IPv4 with options,
// IPv6 with its extension-header chain) and shifts, in place, the TCP sequence numbers it
// carries: a segment's seq, ack and SACK edges, or the seq and ack of the TCP segment an ICMP or
// ICMPv6 error quotes. Checksums are updated incrementally (RFC 1624), so the cost of a rewrite
// does not depend on the payload: a 64 KiB GSO super-packet costs what a pure ACK costs.
//
// Headers are read through typed byte-slice views ([IPv4], [IPv6], [TCP], [ICMP]) in the
// style of gVisor's pkg/tcpip/header; [Classify] checks every length once, and the accessors
// are then used only within the bounds it checked.
//
// What rewrite must never do, whatever the input:
//   - allocate: it runs once per packet on the datapath (every benchmark reports 0 allocs/op);
//   - read or write outside the slice it is given, or panic;
//   - change a packet it does not fully understand: a malformed packet is left byte for byte
//     as it came, with a [Reason] the daemon can count (in [Packet] or returned by [Shift]);
//   - change anything but sequence numbers, acknowledgment numbers, SACK edges and the
//     checksums that cover them (no option is added, removed or resized, no length changes);
//   - touch the TCP checksum of a packet whose checksum is partial (virtio-net NEEDS_CSUM): the
//     field then holds only the pseudo-header sum, which a seq change does not affect, and the
//     kernel completes it later.
//
// rewrite keeps no state; the flow table and the offsets belong to the caller.
package rewrite
