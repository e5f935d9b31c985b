// Package netlab builds small topologies of Linux network namespaces joined by veth links, for
// `seqshiftd lab` and the real-kernel integration tests:
//
//	client ──veth── gateway ──veth── server                          (default)
//	client ──veth── gateway ──veth── router ──veth(RouterMTU)── server (Options.Router)
//	client ── bridge ──┬── gateway A ──┬── bridge ── server         (NewPair: keepalived moves
//	                   └── gateway B ──┘                              the next hops, VRRP)
//
// The gateway forwards IPv4 and IPv6 and is where seqshiftd runs; the client and server use their
// own kernel TCP stacks. Every address comes from the benchmarking ranges 198.18.0.0/15 and
// 2001:2::/48 (RFC 2544, RFC 5180), so a lab can never be mistaken for a real network.
//
// A Lab also offers what tests need to look at the wire: a raw AF_PACKET capture that decodes TCP
// segments itself (independent of seqshiftd's own parser, so it can judge it), and a userspace
// loss and reordering stage in the router for kernels built without tc's netem.
//
// netlab never touches the root namespace's links, routes, rules or sysctls, and never leaves an
// OS thread in a namespace other than the one it found it in: a thread whose namespace cannot be
// restored is kept locked so that the Go runtime destroys it.
package netlab
