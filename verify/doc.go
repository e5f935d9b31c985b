// Package verify proves, from two packet captures taken on both sides of a gateway, that every
// TCP segment of every connection reached the other side shifted by one constant offset per
// direction — sequence number, acknowledgment number, every SACK and D-SACK edge, the sequence
// numbers an ICMP error quotes — with valid checksums; and when it did not, it names the first
// segment that broke the mapping, both sides shown. It is `seqshiftd verify`, and the
// integration tests and `seqshiftd lab` use it to judge seqshiftd the way an operator would.
//
// How segments are paired. The fields under test cannot be used to pair (a tampered seq would
// then look like a drop), so a segment is first paired by what a gateway leaves alone: flags,
// payload length, TCP timestamps, window and IPv4 ID. Among equals, the one whose fields map
// exactly wins; a segment of one side whose only candidate maps exactly to a later equal of its
// own side is a drop, not a break. Segments left over are paired by byte range (a GSO/GRO
// super-packet on one side, its segments on the other), and what is still left is one-sided:
// drops between the capture points, or capture loss.
//
// The offsets come from the SYNs when both captures hold them, else (a connection that started
// before the capture) from the most common seq difference of the first paired segments.
//
// What verify must never do:
//   - call a mapping good that it did not check: a field it could not see (cut by the snap
//     length) is counted as unchecked and reported, never as matched;
//   - call a drop a break, or a break a drop, when the captures hold enough to tell;
//   - hold a file in memory: captures are streamed; what it keeps is about 64 bytes per TCP
//     segment (plus 4 per SACK edge), not the packets.
package verify
