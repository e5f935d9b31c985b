// Package tcshift is seqshiftd's kernel datapath: three tc programs (bpf/tcshift.c) and their
// loader. At each client-facing interface X, client_ingress shifts client -> server segments and
// client_egress server -> client segments of the flows the daemon has put into the flows map in
// kernel mode, in place, inside the kernel's one forwarding pass; everything else that is
// intercepted goes whole to the daemon through a TAP, with [Meta] in its Ethernet header, and
// tap_ingress sends what the daemon writes back to where it was going.
//
// The Go side loads the objects ([Load]), attaches them with netlink as tagged cls_bpf filters
// on clsact qdiscs ([Datapath.Attach]) so that they outlive the daemon, and gives the daemon the
// flows map ([Datapath.Put], [Datapath.Range], ...) and the counters ([Datapath.Stats],
// [Counters], and [Datapath] as a counter.Set). A previous instance's flows are found through
// its attached programs ([Datapath.PreviousFlows]) or, with [Config.PinDir], kept in a pinned
// map that the next [Load] reuses. Every C layout is mirrored here and compared with the
// object's BTF by the tests.
//
// The TAP contract. A frame the programs send to the daemon starts with its Ethernet header,
// whose destination MAC holds [Meta] ([ReadMeta]); at the egress hook the client's MAC has been
// moved into the source field. The daemon decides, rewrites what lies after the Ethernet
// header as it likes, and writes the frame back to the TAP with the first 14 bytes as they
// came (or drops it by not writing it). tap_ingress then restores the Ethernet header, sets
// the mark and sends the frame on: into X's receive path for [HookIngress] (toward the server
// side), out of X for [HookEgress] (toward the client). The daemon can inject a packet of its
// own the same way: a frame whose metadata names the hook, with the client's MAC in the source
// field. A GSO super-packet stays whole through the TAP when the daemon opens it with
// IFF_VNET_HDR; one carrying a FIN goes to the daemon whole. Config.Mark must be a bit that
// nothing else on the gateway sets: the programs pass any packet carrying it unshifted.
//
// What tcshift must never do:
//   - forward an intercepted segment of a flow in kernel mode unshifted: it is shifted, or goes
//     to the daemon, or is dropped;
//   - forward a packet the daemon has not seen when it cannot parse it or it changes a flow's
//     state (SYN, FIN, RST, ICMP errors): those always go to the daemon;
//   - touch a packet that is not intercepted (interface and prefix), not ours (another
//     interface's flow, or the reply of one), or not IP: it passes byte for byte;
//   - drop what is not ours: the only drops are a frame on the TAP without valid metadata, a
//     segment whose shift could not be completed (never seen), and redirects to a TAP that is
//     gone (the daemon is down: fail-closed);
//   - evict: the flows map is a hash without LRU; the daemon bounds it and removes entries;
//   - touch a tc filter or qdisc it did not install: filters are found by handle, priority and
//     name, and a clsact qdisc is removed only by the Datapath that created it, once empty (or
//     by teardown, through RemoveClsactIfEmpty, from the record of a Datapath that did);
//   - leave our mark bit on a packet: the programs clear it before anything else sees it.
package tcshift
