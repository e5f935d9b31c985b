// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * seqshiftd's kernel datapath: three tc (clsact, direct-action) programs.
 *
 *   client_ingress  tc ingress of each client-facing interface X: client -> server segments
 *   client_egress   tc egress of each X: server -> client segments
 *   tap_ingress     tc ingress of the TAP: what the daemon wrote back
 *
 * At X, a TCP segment of a flow in kernel mode gets its seq, ack and SACK edges shifted in place
 * and goes on; anything else that is intercepted (a new connection, SYN/FIN/RST, ICMP errors,
 * flows the daemon still handles, what these programs do not parse) is redirected whole to the
 * TAP with metadata in its Ethernet header, for the daemon to decide. The daemon writes it back
 * to the TAP, and tap_ingress sends it on to where it was going, marked so that X's program lets
 * it pass. The kernel thus forwards and tracks every intercepted connection once, in the
 * server's sequence space, with its real interfaces.
 *
 * Fail-closed: if the TAP is gone (daemon down), the redirect fails and the kernel drops the
 * packet. Nothing here forwards an intercepted segment of a tracked flow unshifted.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "packet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The metadata replaces the destination MAC of a frame sent to the daemon:
 * byte 0 META_MAGIC (unicast, locally administered: never a real station's address),
 * byte 1 hook | reason << 2, bytes 2..5 the ifindex of X, big-endian. */
#define META_MAGIC 0x5e

static __always_inline struct tc_config *get_config(void)
{
	const __u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

/*
 * to_daemon writes the metadata and redirects the frame to the TAP's egress, which hands it to
 * the daemon. At egress the destination MAC (the client's) is kept in the source field first:
 * the source held X's own MAC, which tap_ingress restores from ifaces.
 */
static __always_inline int to_daemon(struct __sk_buff *skb, const struct tc_config *cfg,
				     const enum hook hook, __u32 reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = skb->ifindex;

	/* The caller read the IP header, so the Ethernet header is there; the verifier does not
	 * know that after a helper call invalidated the pointers. */
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	count(reason);
	if (hook == HOOK_EGRESS)
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	eth->h_dest[0] = META_MAGIC;
	eth->h_dest[1] = hook | reason << 2;
	eth->h_dest[2] = ifindex >> 24;
	eth->h_dest[3] = ifindex >> 16;
	eth->h_dest[4] = ifindex >> 8;
	eth->h_dest[5] = ifindex;
	/* bpf_redirect only records the target; a missing TAP makes the kernel drop the packet
	 * afterwards (skb_do_redirect), which is the fail-closed guarantee. */
	return bpf_redirect(cfg->tap_ifindex, 0);
}

/*
 * track_window records conntrack's window state for a kernel-mode segment (tcp_in_window's
 * updates, none of its verdicts): the sender's end and maxwin in its own space (seq before the
 * shift), and the receiver's maxend from the ack after the shift, which is in the receiver's
 * own space. Two CPUs updating one flow at once may lose an update; the daemon reads these as
 * the kernel's view, and the maxima catch up on the next segment.
 */
static __always_inline void track_window(struct flow_val *v, __u32 d, __u32 seq, __u32 len,
					 __u32 ack, int has_ack, __u16 window)
{
	struct flow_window *snd = &v->win[d & 1];
	struct flow_window *rcv = &v->win[(d ^ 1) & 1];
	__u32 win = window;
	__u32 end = seq + len;

	if (snd->flags & WIN_F_SCALE)
		win <<= snd->wscale & 0x0f; /* RFC 7323 caps the shift at 14 */
	if (!(snd->flags & WIN_F_END)) {
		snd->end = end;
		snd->maxwin = win;
		snd->flags |= WIN_F_END;
	} else {
		if (seq_after(end, snd->end))
			snd->end = end;
		if (win > snd->maxwin)
			snd->maxwin = win;
	}
	if (has_ack) {
		__u32 maxend = ack + win;

		if (!(rcv->flags & WIN_F_MAXEND) || seq_after(maxend, rcv->maxend)) {
			rcv->maxend = maxend;
			rcv->flags |= WIN_F_MAXEND;
		}
	}
}

/*
 * shift_segment applies the deltas to the TCP segment whose header is at offset l4 of the
 * packet, whose SACK edges sack_edges_of found. It follows rewrite.Shift exactly (the tests
 * compare the bytes): seq += sd; with ACK, ack and every SACK edge += ad; the checksum is fixed
 * by one bpf_l4_csum_replace of the summed change, which leaves a CHECKSUM_PARTIAL packet's
 * pseudo-header sum alone (seq, ack and options are not in the pseudo-header) and keeps a
 * CHECKSUM_COMPLETE skb->csum right (the data and the checksum change by opposite amounts).
 * It returns 0, or -1 if the packet is not as the caller found it (never seen).
 *
 * A global function, verified once on its own: inlined, its edge loop was verified again for
 * every path of the caller that leads here, which took the verifier to 830k of its 1M
 * instructions.
 */
__attribute__((noinline)) int shift_segment(struct __sk_buff *skb, __u32 l4, __s64 edges,
					    __u32 sd, __u32 ad)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct tcphdr *th;
	__u8 *opts;
	__u64 sum, odd = 0;
	__u32 old, new;

	/* The caller found the header within the first MAX_HEADERS bytes; the check bounds the
	 * offset for the verifier, which knows nothing about the arguments of a global function. */
	if (l4 > ETH_HLEN + 60)
		return -1;
	/* Keep the checked value in a register: clang may otherwise reload l4 from a spill made
	 * before the check, whose bounds the verifier does not know. */
	asm volatile("" : "+r"(l4));
	th = data + l4;
	if ((void *)(th + 1) > data_end)
		return -1;
	opts = (void *)(th + 1);
	/* Like rewrite.Shift, the seq change is summed even when the delta is 0: ~x + x is one's
	 * complement zero, but it decides which of the two spellings of zero the checksum ends as. */
	old = th->seq;
	new = add_be32(old, sd);
	th->seq = new;
	sum = change32(old, new);
	if (th->ack) {
		old = th->ack_seq;
		new = add_be32(old, ad);
		th->ack_seq = new;
		sum += change32(old, new);
		/* An edge starts at most 4 bytes before the end of the 40-byte options area. */
		for (int j = 0; j <= TCP_OPTS_MAX - 4 && edges; j++) {
			__u8 *edge;

			if (!((edges >> j) & 1))
				continue;
			edge = opts + j;
			if ((void *)(edge + 4) > data_end)
				return -1; /* cannot happen: sack_edges_of checked the whole area */
			/* SACK edges may be at any alignment: byte copies, never a wide access. */
			__builtin_memcpy(&old, edge, 4);
			new = add_be32(old, ad);
			__builtin_memcpy(edge, &new, 4);
			/* The TCP header starts at an even offset of what the checksum covers, so an
			 * edge at an odd offset of the options straddles two 16-bit words. */
			if (j & 1)
				odd += change32(old, new);
			else
				sum += change32(old, new);
		}
		if (odd)
			sum += odd_to_even(odd);
	}
	/* A sum of exactly 0 leaves the checksum as it is (rewrite's update(cs, 0) == cs), while
	 * the kernel's csum_replace_by_diff would turn a field of 0xffff into 0x0000. */
	if (!sum)
		return 0;
	return bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), 0, fold(sum), 0) ? -1 : 0;
}

/*
 * client_hook is the whole per-packet story at a client-facing interface; hook is a constant,
 * so each program gets its own copy with the other hook's branches folded away.
 */
static __always_inline int client_hook(struct __sk_buff *skb, const enum hook hook)
{
	const __u32 d = hook == HOOK_INGRESS ? DIR_C2S : DIR_S2C;
	struct tc_config *cfg = get_config();
	__s64 edges = 0;
	struct flow_key key = {};
	struct pkt p = {};
	struct flow_val *v;
	struct tcphdr *th;
	void *data, *data_end;
	__u32 doff, seq, ack, sd, ad, len;
	int has_ack;

	/* An array's only element always exists; the check is for the verifier. */
	if (!cfg)
		return TC_ACT_OK;
	/* Written back by the daemon: clear our bit so that nftables and the rest of the stack
	 * never see it, and let it go where it was going. */
	if (skb->mark & cfg->mark) {
		skb->mark &= ~cfg->mark;
		count(STAT_PASSED_MARK);
		return TC_ACT_OK;
	}
	pull_headers(skb);
	switch (parse_ip(skb, &p)) {
	case 0:
		count(STAT_PASSED_NOT_IP);
		return TC_ACT_OK;
	case -1:
		/* Never pass unseen what may be an intercepted segment. */
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);
	}
	/* Errors are rare and their sender is often a router on neither side's prefix list: no
	 * intercept check; the daemon knows whether the quote is one of its flows. */
	if (is_icmp_error(skb, &p))
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_ICMP);
	if (p.proto != IPPROTO_TCP && !(p.family == 6 && is_ipv6_ext(p.proto))) {
		count(STAT_PASSED_NOT_TCP);
		return TC_ACT_OK;
	}
	/* The key is the connection as client -> server whichever way the segment travels; the
	 * server address is the one intercept selects (destination at ingress, source at
	 * egress). */
	key.family = p.family;
	if (hook == HOOK_INGRESS) {
		__builtin_memcpy(key.client, p.src, 16);
		__builtin_memcpy(key.server, p.dst, 16);
	} else {
		__builtin_memcpy(key.client, p.dst, 16);
		__builtin_memcpy(key.server, p.src, 16);
	}
	if (!intercepted(skb->ifindex, key.server)) {
		count(STAT_PASSED_NOT_INTERCEPTED);
		return TC_ACT_OK;
	}
	if (p.unusual)
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	/* l4 <= ETH_HLEN + 60; the mask bounds the offset for the verifier. */
	th = data + (p.l4 & 0xff);
	if ((void *)(th + 1) > data_end || p.l4 + sizeof(*th) > p.end)
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);
	doff = th->doff * 4;
	/* A data offset below 5 words, past the segment, or past what pull_headers made readable. */
	if (doff < sizeof(*th) || doff > p.end - p.l4 || (void *)th + doff > data_end)
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);

	if (hook == HOOK_INGRESS) {
		key.client_port = th->source;
		key.server_port = th->dest;
	} else {
		key.client_port = th->dest;
		key.server_port = th->source;
	}
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v) {
		/* Not ours as client -> server. It may be the other direction of a flow that faces
		 * another interface (X is then its server side): look the tuple up reversed. */
		struct flow_key rev = {
			.client_port = key.server_port,
			.server_port = key.client_port,
			.family = key.family,
		};

		__builtin_memcpy(rev.client, key.server, 16);
		__builtin_memcpy(rev.server, key.client, 16);
		if (bpf_map_lookup_elem(&flows, &rev)) {
			count(STAT_PASSED_REPLY_ELSEWHERE);
			return TC_ACT_OK;
		}
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_NO_FLOW);
	}
	if (v->ifindex != skb->ifindex) {
		count(STAT_PASSED_OTHER_IFACE);
		return TC_ACT_OK;
	}
	if (v->mode != MODE_KERNEL)
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_DAEMON_MODE);
	/* The daemon decides every change of state. */
	if (th->syn || th->fin || th->rst)
		return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_FLAGS);
	if (doff > sizeof(*th)) {
		edges = sack_edges_of(skb, p.l4 + sizeof(*th), doff - sizeof(*th));
		if (edges < 0)
			return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);
		/* A call invalidates packet pointers; th is read again below. */
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		th = data + (p.l4 & 0xff);
		if ((void *)(th + 1) > data_end)
			return to_daemon(skb, cfg, hook, STAT_TO_DAEMON_UNPARSED);
	}

	seq = bpf_ntohl(th->seq);
	ack = bpf_ntohl(th->ack_seq);
	has_ack = th->ack;
	len = p.end - p.l4 - doff;
	sd = v->seq_delta[d];
	ad = v->ack_delta[d];
	track_window(v, d, seq, len, ack + ad, has_ack, bpf_ntohs(th->window));
	__sync_fetch_and_add(&v->packets[d], 1);
	__sync_fetch_and_add(&v->bytes[d], len);
	v->last_seen = bpf_ktime_get_boot_ns();

	/* Zero deltas (a flow tracked but not shifted): nothing to write. */
	if (sd == 0 && (!has_ack || ad == 0)) {
		count(STAT_PASSED_ZERO_DELTA);
		return TC_ACT_OK;
	}
	if (shift_segment(skb, p.l4, edges, sd, ad) < 0) {
		/* The segment may be half written: never forward it (the sender retransmits). */
		count(STAT_DROPPED_REWRITE);
		return TC_ACT_SHOT;
	}
	count(hook == HOOK_INGRESS ? STAT_REWRITTEN_C2S : STAT_REWRITTEN_S2C);
	return TC_ACT_OK;
}

SEC("tc")
int client_ingress(struct __sk_buff *skb)
{
	return client_hook(skb, HOOK_INGRESS);
}

SEC("tc")
int client_egress(struct __sk_buff *skb)
{
	return client_hook(skb, HOOK_EGRESS);
}

/*
 * tap_ingress sends a frame the daemon wrote back to where it was going: into X's receive path
 * for the ingress hook (so routing, conntrack, NAT and the forward chain see it once, with iif
 * X), out of X for the egress hook. The mark tells X's program to let it pass. A frame without
 * valid metadata is dropped: the daemon decides by writing a frame back or not, and nothing
 * else is expected on the TAP.
 */
SEC("tc")
int tap_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct tc_config *cfg = get_config();
	struct ethhdr *eth = data;
	struct iface *x;
	__u32 ifindex;
	__u8 hook;

	if (!cfg || (void *)(eth + 1) > data_end || eth->h_dest[0] != META_MAGIC) {
		count(STAT_TAP_DROPPED_BAD_META);
		return TC_ACT_SHOT;
	}
	hook = eth->h_dest[1] & 3;
	if (hook != HOOK_INGRESS && hook != HOOK_EGRESS) {
		count(STAT_TAP_DROPPED_BAD_META);
		return TC_ACT_SHOT;
	}
	ifindex = (__u32)eth->h_dest[2] << 24 | (__u32)eth->h_dest[3] << 16 |
		  (__u32)eth->h_dest[4] << 8 | eth->h_dest[5];
	x = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!x) {
		count(STAT_TAP_DROPPED_NO_IFACE);
		return TC_ACT_SHOT;
	}
	if (hook == HOOK_INGRESS) {
		/* The source field still holds the client's MAC; X receives it as from the client. */
		__builtin_memcpy(eth->h_dest, x->mac, ETH_ALEN);
	} else {
		/* to_daemon kept the client's MAC in the source field; X sends it from itself. */
		__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, x->mac, ETH_ALEN);
	}
	skb->mark |= cfg->mark;
	if (hook == HOOK_INGRESS) {
		count(STAT_TAP_RETURNED_C2S);
		return bpf_redirect(ifindex, BPF_F_INGRESS);
	}
	count(STAT_TAP_RETURNED_S2C);
	return bpf_redirect(ifindex, 0);
}
