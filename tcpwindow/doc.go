// Package tcpwindow tracks the sequence space of a TCP connection from the middle, as Linux
// conntrack's tcp_in_window (net/netfilter/nf_conntrack_proto_tcp.c) and OpenBSD pf's
// pf_tcp_track_full do, and decides whether a segment's numbers are acceptable: whether a
// receiver in the state the gateway has seen would take it. A firewall uses the answer to keep
// blind senders (who know the tuple but not the numbers) from changing a flow: an RST, SYN or
// FIN changes state only when its numbers are acceptable (RFC 5961).
//
// It is its own package, not part of flowtable, because the same per-direction record is kept
// by two datapaths: the Go one (flowtable holds a [Conn] per flow) and the kernel one, whose
// flow map value carries the same 16 bytes per direction ([Side]) and updates them for the
// segments it rewrites itself. Keeping the rules beside the record, apart from the table's
// locking and eviction, lets both be tested against one model.
//
// # What is tracked
//
// Per direction (the sender of that direction), conntrack's td_end, td_maxend, td_maxwin and
// td_scale, each side in its own sequence space (a segment's seq as its sender wrote it, its
// ack as its receiver will read it: flowtable converts acks through the flow's offsets):
//
//	End     the highest sequence number the sender has used, plus one (seq + len + SYN + FIN)
//	MaxEnd  the highest the sender may use: the receiver's highest ack + its window, plus one
//	MaxWin  the largest window the sender has advertised (scaled), the slack for old segments
//	Scale   the sender's RFC 7323 window shift, from its SYN when both SYNs carried the option
//
// A segment from A to B is acceptable when (conntrack's four conditions)
//
//	I    seq <= A.MaxEnd                         not beyond what B's window allows
//	II   end >  A.End - B.MaxWin                 not wholly older than one window back
//	III  ack <= B.End                            does not acknowledge what B never sent
//	IV   ack >  B.End - max(A.MaxWin, 66000)     does not acknowledge far in the past
//
// with ack the highest SACK right edge when the segment carries SACK blocks. Retransmissions
// within a window pass (II), as do keep-alives and zero-window probes.
//
// # Special segments
//
//   - RST (RFC 5961 section 3): acceptable only with seq in [A.End - B.MaxWin, A.MaxEnd]. If seq
//     is exactly A.End (the receiver's RCV.NXT once it has everything A sent) the RST closes
//     ([Accept]); in window but not exact it is passed on for the receiver's challenge ACK and
//     changes nothing ([RSTInWindow]); outside it is dropped ([DropRST]). An RST answering a SYN
//     is acceptable only if it acknowledges that SYN exactly (RFC 793 SYN-SENT).
//   - SYN and SYN-ACK on a synchronised connection (RFC 5961 section 4): passed on for the
//     endpoint's challenge ACK, changing nothing ([SYNOnLive]); flowtable turns a SYN-ACK that
//     answers such a SYN into a restart. During the handshake a SYN-ACK must acknowledge the SYN
//     exactly ([DropSYNACK] otherwise), and a SYN from the other side is a simultaneous open.
//   - Pick-up without the SYNs (conntrack's loose pick-up): a side first seen mid-stream is
//     learned from its segment, and the side it acknowledges is inferred from the ack (and
//     follows later acks until it is seen). Such a flow is liberal ([FlagLiberal]): windows
//     are known only unscaled, so data beyond the known window but within what scale 14 would
//     allow passes when its ack is plausible (the ack slack is likewise the window at scale
//     14), and a segment that fails anyway is forwarded without moving any state
//     ([AcceptLiberal]); the sender's own end still follows its data. RSTs get no slack (only
//     the exact one closes; from a side not yet seen, exact means the other side's last ack,
//     which is what a host without the connection answers with). FINs get no window slack,
//     and a FIN that is the first thing seen of its side moves nothing. A pick-up cannot tell
//     a forged first segment from a real one; such a flow stays unassured.
//
// # Concurrency
//
// [Conn.Track] takes no lock. Every field moves in one direction only (End and MaxEnd forward
// in sequence space, MaxWin up, flags set), so concurrent segments commit with atomic
// compare-and-swap maxima and never lose progress; a segment that raced with another sees the
// state before or after it, which is what it would have seen had it arrived a moment earlier or
// later. Only (re)initialisation at a SYN or a first sighting stores outright.
//
// # What it must never do
//
// tcpwindow never allocates or takes a lock, never lets a segment whose numbers fail the checks
// change the record (except a liberal pick-up's, see above), never reports a segment a real
// receiver would accept as one to drop (the model test of two endpoints checks this), and
// never reads past a slice it is given.
package tcpwindow
