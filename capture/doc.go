// Package capture reads packet captures — pcap (either byte order, microsecond or nanosecond
// timestamps) and pcapng (section header, interface description, enhanced and simple packet
// blocks; several interfaces and sections, either byte order) — as a stream of frames, and finds
// the IP packet inside each frame for the link types tcpdump writes on Linux: Ethernet (with
// 802.1Q/802.1ad tags), Linux cooked capture v1 and v2, and raw IP. It also writes pcap files,
// which the integration tests use to hand netlab's captures to `seqshiftd verify`.
//
// It exists for `seqshiftd verify`, which reads two captures of the same connections taken on
// both sides of a gateway, and must keep up with gigabyte files: frames are handed out as views
// of the read buffer, valid until the next call, so reading costs no allocation per frame.
//
// What capture must never do, whatever the file holds:
//   - read the whole file into memory: it streams, and its memory is bounded by the largest
//     record it accepts (MaxRecord), not by the file;
//   - panic or loop forever on a malformed or truncated file: every length is checked before it
//     is used, and an error names the byte offset where the file stopped making sense;
//   - interpret what is above the IP header: that is the rewrite package's business.
package capture
