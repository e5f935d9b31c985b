/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps shared by the tc programs and the daemon, with their key and value layouts. This is
 * the one place that defines them: tcshift/layout.go mirrors every struct and the stat enum,
 * and tcshift/layout_test.go compares sizes, offsets and names against the BTF of the compiled
 * object, so a change here that is not made there fails the tests.
 */
#ifndef SEQSHIFTD_MAPS_H
#define SEQSHIFTD_MAPS_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* Directions of a connection, indexes of the per-direction arrays of struct flow_val. */
#define DIR_C2S 0 /* client -> server: seen at the client-facing interface's tc ingress */
#define DIR_S2C 1 /* server -> client: seen at its tc egress */

/* Which hook sent a packet to the daemon; written into the metadata, so also ABI. */
enum hook {
	HOOK_INGRESS = 1,
	HOOK_EGRESS = 2,
};

/* flow_val.mode: who rewrites the flow's segments. */
enum mode {
	MODE_DAEMON = 0, /* the daemon sees every segment (handshake, closing, not yet decided) */
	MODE_KERNEL = 1, /* the programs shift data segments; SYN, FIN, RST still go to the daemon */
};

/*
 * The connection as client -> server. IPv4 addresses are stored as ::ffff:a.b.c.d so that one
 * key type serves both families; family tells them apart anyway (an IPv6 packet from a mapped
 * address is a different flow). Ports are in network byte order, as on the wire. The padding
 * must be zero: the hash covers all 40 bytes.
 */
struct flow_key {
	__u8 client[16];
	__u8 server[16];
	__be16 client_port;
	__be16 server_port;
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
};

/*
 * Window state of one direction, as Linux conntrack's struct ip_ct_tcp_state (td_end,
 * td_maxend, td_maxwin, td_scale), in the SENDER's own sequence space (the numbers as the
 * sender of that direction wrote them, before any shift). The kernel only records it; the
 * daemon decides with it.
 */
struct flow_window {
	__u32 end;    /* highest seq + len sent (td_end) */
	__u32 maxend; /* highest ack + window the receiver allowed (td_maxend) */
	__u32 maxwin; /* largest scaled window this sender advertised (td_maxwin) */
	__u8 wscale;  /* this sender's window scale (td_scale), valid with WIN_F_SCALE */
	__u8 flags;   /* WIN_F_* */
	__u8 pad[2];
};

#define WIN_F_SCALE  0x01 /* wscale is in use (both SYNs carried the option); set by the daemon */
#define WIN_F_END    0x02 /* end and maxwin hold a value; the first segment sets them otherwise */
#define WIN_F_MAXEND 0x04 /* maxend holds a value */

struct flow_val {
	__u32 seq_delta[2]; /* added to seq of segments travelling in [dir] */
	__u32 ack_delta[2]; /* added to ack and every SACK edge of segments travelling in [dir] */
	__u32 ifindex;      /* the client-facing interface the flow was decided on */
	__u8 mode;          /* enum mode */
	__u8 flags;         /* the daemon's; the programs never read or write it */
	__u8 pad[2];
	__u64 packets[2];   /* segments rewritten (or passed with zero deltas) by the programs */
	__u64 bytes[2];     /* their TCP payload bytes */
	__u64 last_seen;    /* bpf_ktime_get_boot_ns() of the last such segment */
	struct flow_window win[2];
};

/*
 * Intercept selection: an interface and an address prefix. The LPM trie matches bits from the
 * start of the data, so ifindex (big-endian, whole: its 32 bits are always part of the prefix)
 * comes first and the address (IPv4 as ::ffff:0:0/96) after it: prefixlen = 32 + address bits.
 */
struct intercept_key {
	__u32 prefixlen;
	__be32 ifindex;
	__u8 addr[16];
};

/* ifaces: a client-facing interface's own MAC, to restore the Ethernet header. */
struct iface {
	__u8 mac[6];
	__u8 pad[2];
};

struct tc_config {
	__u32 tap_ifindex; /* where packets for the daemon go */
	__u32 mark;        /* skb->mark bit(s) that say "the daemon wrote this back" */
};

/*
 * Counters, indexes of the per-CPU array stats. Each entry is STAT_<FAMILY>_<VALUE>: a family
 * of counters (to_daemon, rewritten, passed, dropped, tap_returned, tap_dropped) and the value
 * of the one label that tells them apart (a reason or a direction). The Go table
 * (tcshift/stats.go) lists the same entries in the same order, and a test compares the two
 * through BTF. The first NUM_REASONS entries are also the reasons written into the metadata
 * of a packet sent to the daemon.
 */
enum stat {
	STAT_TO_DAEMON_NO_FLOW,         /* intercepted TCP of no flow in the map: a new connection */
	STAT_TO_DAEMON_DAEMON_MODE,     /* a flow the daemon still handles itself */
	STAT_TO_DAEMON_FLAGS,           /* SYN, FIN or RST of a kernel-mode flow */
	STAT_TO_DAEMON_ICMP,            /* an ICMP or ICMPv6 error (may quote an intercepted segment) */
	STAT_TO_DAEMON_UNPARSED,        /* intercepted, but not within what the programs parse */
	STAT_REWRITTEN_C2S,             /* kernel-mode segment shifted at ingress */
	STAT_REWRITTEN_S2C,             /* kernel-mode segment shifted at egress */
	STAT_PASSED_ZERO_DELTA,         /* kernel-mode segment whose deltas are zero: counted, not written */
	STAT_PASSED_MARK,               /* written back by the daemon: the mark bit cleared, passed */
	STAT_PASSED_NOT_IP,             /* not IPv4 or IPv6 (ARP, VLAN-tagged...), or a short IP header */
	STAT_PASSED_NOT_TCP,            /* neither TCP nor an ICMP error, nor an IPv6 extension chain */
	STAT_PASSED_NOT_INTERCEPTED,    /* address not in intercept for this interface */
	STAT_PASSED_OTHER_IFACE,        /* a flow decided on another client-facing interface */
	STAT_PASSED_REPLY_ELSEWHERE,    /* the reverse tuple is a flow: a reply of another interface's flow */
	STAT_DROPPED_REWRITE,           /* the shift could not be completed (never seen) */
	STAT_TAP_RETURNED_C2S,          /* the daemon wrote back a packet for an ingress */
	STAT_TAP_RETURNED_S2C,          /* ... for an egress */
	STAT_TAP_DROPPED_BAD_META,      /* a frame on the TAP without valid metadata */
	STAT_TAP_DROPPED_NO_IFACE,      /* metadata names an interface not in ifaces */
	NUM_STATS,
};

#define NUM_REASONS (STAT_TO_DAEMON_UNPARSED + 1)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* No LRU and no preallocation: the daemon bounds the map (flows.max) and evicts by its own
	 * rules; a kernel eviction would silently forward a live flow unshifted. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1); /* set at load from Config.MaxFlows */
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(max_entries, 65536);
	__type(key, struct intercept_key);
	__type(value, __u32); /* 1; reserved for flags */
} intercept SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); /* ifindex */
	__type(value, struct iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tc_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NUM_STATS);
	/* Keyed by the enum itself (4 bytes, like a __u32) so that the enum is in the object's
	 * BTF, where the Go side reads its names to check its table against it. */
	__type(key, enum stat);
	__type(value, __u64);
} stats SEC(".maps");

#endif /* SEQSHIFTD_MAPS_H */
