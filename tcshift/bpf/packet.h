/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parsing helpers and checksum arithmetic of the client-facing programs. Every offset is relative to
 * skb->data (the Ethernet header at tc), and every pointer is compared with data_end before it
 * is read: the verifier insists, and a packet may be shorter than its headers claim.
 */
#ifndef SEQSHIFTD_PACKET_H
#define SEQSHIFTD_PACKET_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

/* The most a program reads: Ethernet, the largest IPv4 header, the largest TCP header. */
#define MAX_HEADERS (ETH_HLEN + 60 + 60)

#define TCP_OPTS_MAX 40 /* 60-byte header, 20 fixed */
#define TCPOPT_EOL  0
#define TCPOPT_NOP  1
#define TCPOPT_SACK 5
/* A bit every 4 bytes: the edges of a SACK option of 4 blocks, from its first edge on. */
#define SACK_EDGE_BITS 0x11111111ULL

#define IPV4_MF     0x2000
#define IPV4_OFFSET 0x1fff

/* What parse_ip found. Offsets are from skb->data. */
struct pkt {
	__u32 l4;     /* the upper-layer header */
	__u32 end;    /* where the IP packet ends (its own length, not the frame's) */
	__u8 family;  /* 4 or 6 */
	__u8 proto;   /* upper-layer protocol (IPv6: the first next header) */
	__u8 unusual; /* IPv4 options, a fragment, an IPv6 extension chain, or bad lengths */
	__u8 first;   /* not a non-first fragment: the upper-layer header is there */
	__u8 src[16]; /* addresses, IPv4 as ::ffff:a.b.c.d */
	__u8 dst[16];
};

static __always_inline void count(__u32 stat)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &stat);

	/* Always found (stat < NUM_STATS); the check is for the verifier. Per-CPU, so no atomic. */
	if (c)
		*c += 1;
}

static __always_inline void mapped_v4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/*
 * If the headers a program may read are not all in the linear part of the skb (a GSO packet
 * from some drivers, or a small head), pull them in once. bpf_skb_pull_data also unclones, and
 * it invalidates every packet pointer: the caller reads data and data_end afterwards.
 */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	__u32 want = skb->len < MAX_HEADERS ? skb->len : MAX_HEADERS;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* Compared as pointers: the verifier refuses 32-bit arithmetic on packet pointers. */
	if (data + want > data_end)
		bpf_skb_pull_data(skb, want);
}

/* is_ipv6_ext says whether an IPv6 next header is an extension header the daemon walks
 * (rewrite/classify.go walkIPv6). Others (UDP, ESP, ICMPv6 informational...) are not TCP. */
static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == 0 /* hop-by-hop */ || nh == 43 /* routing */ || nh == 44 /* fragment */ ||
	       nh == 60 /* destination options */;
}

/* parse_ip reads the IP header after the Ethernet header. It returns 1 when it did, 0 if the
 * frame is not IPv4 or IPv6 or is shorter than the fixed IP header (the stack drops those),
 * and -1 for an IP packet whose header is not in the linear data even after pull_headers (it
 * could not pull): the caller cannot tell whether it is intercepted, so the daemon decides. */
static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 hl, tot;

		if ((void *)(ip + 1) > data_end)
			return skb->len < ETH_HLEN + sizeof(*ip) ? 0 : -1;
		if (ip->version != 4 || ip->ihl < 5)
			return 0;
		hl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		p->family = 4;
		p->proto = ip->protocol;
		p->l4 = ETH_HLEN + hl;
		/* Linux BIG TCP sends IPv4 super-packets with a total length of 0: the buffer is the
		 * packet (as rewrite's ipv4Bounds). */
		p->end = tot ? ETH_HLEN + tot : skb->len;
		p->first = (ip->frag_off & bpf_htons(IPV4_OFFSET)) == 0;
		p->unusual = hl != sizeof(*ip) || (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET)) ||
			     p->end > skb->len || hl > p->end - ETH_HLEN;
		mapped_v4(p->src, ip->saddr);
		mapped_v4(p->dst, ip->daddr);
		return 1;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u32 pl;

		if ((void *)(ip6 + 1) > data_end)
			return skb->len < ETH_HLEN + sizeof(*ip6) ? 0 : -1;
		if (ip6->version != 6)
			return 0;
		pl = bpf_ntohs(ip6->payload_len);
		p->family = 6;
		p->proto = ip6->nexthdr;
		p->l4 = ETH_HLEN + sizeof(*ip6);
		/* A payload length of 0 is a jumbogram or a BIG TCP super-packet (rewrite's
		 * ipv6Bounds): the buffer is the packet. */
		p->end = pl ? ETH_HLEN + sizeof(*ip6) + pl : skb->len;
		p->first = 1;
		p->unusual = is_ipv6_ext(p->proto) || p->end > skb->len;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		return 1;
	}
	return 0;
}

/* is_icmp_error says whether the packet is an ICMP or ICMPv6 error, the kind that quotes the
 * offending packet and that Linux matches to a TCP socket by the quoted seq (rewrite's
 * isError): v4 destination unreachable, redirect, time exceeded, parameter problem; v6
 * destination unreachable, packet too big, time exceeded, parameter problem. */
static __always_inline int is_icmp_error(struct __sk_buff *skb, const struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *type;

	if (!p->first || (p->proto != IPPROTO_ICMP && p->proto != IPPROTO_ICMPV6))
		return 0;
	/* l4 is at most ETH_HLEN + 60; the mask tells the verifier so. */
	type = data + (p->l4 & 0xff);
	if ((void *)(type + 1) > data_end)
		return 0;
	if (p->family == 4 && p->proto == IPPROTO_ICMP)
		return *type == 3 || *type == 5 || *type == 11 || *type == 12;
	if (p->family == 6 && p->proto == IPPROTO_ICMPV6)
		return *type >= 1 && *type <= 4;
	return 0;
}

static __always_inline int intercepted(__u32 ifindex, const __u8 *addr)
{
	struct intercept_key k = {
		.prefixlen = 32 + 128,
		.ifindex = bpf_htonl(ifindex),
	};

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&intercept, &k) != NULL;
}

/*
 * sack_edges_of checks the TCP options area (len bytes at offset off of the packet) the way
 * rewrite/classify.go's walkOptions and Linux's tcp_parse_options do: EOL ends the list, NOP
 * is one byte, every other option has a length of at least 2 that does not run past the area,
 * and a SACK option's length is 2 + 8n with n >= 1. It returns where the SACK edges are (bit i
 * set: an edge starts at byte i of the area; bits 0..39 only), or -1 for an area the daemon must
 * handle. It only reads.
 *
 * A global function (not inlined, verified once on its own): the walk's paths, each NOP
 * chain a distinct constant offset, multiplied by everything the caller does afterwards
 * exceed the verifier's budget when inlined.
 */
__attribute__((noinline)) __s64 sack_edges_of(struct __sk_buff *skb, __u32 off, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *opts;
	__s64 edges = 0;
	__u32 i = 0;

	/* The caller passes the end of a TCP header at most MAX_HEADERS in; the checks bound both
	 * arguments for the verifier, which knows nothing about them in a global function. */
	if (off > MAX_HEADERS || len > TCP_OPTS_MAX)
		return -1;
	opts = data + off;
	/* Every iteration consumes at least one byte of at most 40, which bounds the loop for the
	 * verifier too. No separate iteration counter: the verifier keeps a counter precise, and
	 * then cannot merge the states of two iterations that reach the same i, which multiplied
	 * its work by the number of iterations. */
	while (i < len) {
		__u8 *o, kind, olen;

		/* i < len <= 40: the mask does not change it but bounds the offset for the verifier. */
		o = opts + (i & 0x3f);
		if ((void *)(o + 1) > data_end)
			return -1;
		kind = o[0];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		if (len - i < 2 || (void *)(o + 2) > data_end)
			return -1;
		olen = o[1];
		if (olen < 2 || olen > len - i)
			return -1;
		if (kind == TCPOPT_SACK) {
			/* RFC 2018 blocks of two 4-byte edges. Linux ignores a SACK of another length,
			 * but a receiver that did not would read edges we had not shifted. */
			if (olen < 10 || (olen - 2) % 8 != 0)
				return -1;
			/* The edges fill the olen - 2 (8n <= 32) bytes after the length: one bit
			 * every 4 of them, as rewrite's sackEdges. No loop over the blocks: the
			 * verifier would walk it once per state of the option walk. */
			edges |= (SACK_EDGE_BITS & ((1ULL << ((olen - 2) & 0x3f)) - 1)) << ((i + 2) & 0x3f);
		}
		i += olen;
	}
	return edges;
}

/*
 * One's complement arithmetic, as rewrite/checksum.go: the change of a 32-bit field is
 * ~old + new, summed in 64 bits and folded once. Fields are taken as they lie in memory
 * (network byte order loaded natively), which is how the kernel's csum helpers read the
 * checksum field; the one's complement sum commutes with byte swapping (RFC 1071 2(B)), so this
 * is right on either endianness.
 */
static __always_inline __u64 change32(__u32 old, __u32 new)
{
	return (__u64)(__u32)~old + new;
}

/* fold reduces a 64-bit sum to 16 bits with end-around carries; only 0 folds to 0. */
static __always_inline __u32 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* The changes of fields at odd offsets straddle two 16-bit words: their folded sum,
 * byte-swapped, is the change of even-aligned words (RFC 1071 2(B)). */
static __always_inline __u32 odd_to_even(__u64 odd)
{
	__u32 f = fold(odd);

	return ((f & 0xff) << 8) | (f >> 8);
}

/* add_be32 adds delta to the big-endian 32-bit value v as it lies in memory. */
static __always_inline __u32 add_be32(__u32 v, __u32 delta)
{
	return bpf_htonl(bpf_ntohl(v) + delta);
}

/* seq_after is "a after b" mod 2^32 (the kernel's after()). */
static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

#endif /* SEQSHIFTD_PACKET_H */
