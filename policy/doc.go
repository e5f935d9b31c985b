// Package policy reads seqshiftd's configuration file (one YAML file: daemon settings plus the
// ordered list of rules) and answers the two questions the datapath asks at a connection's SYN:
// which rule matches this connection ([Config.Match]), and what initial sequence number each
// side is to show the other ([Side.Plan]).
//
// Decoding is strict and positional: the file is walked as a yaml.v3 node tree, so every
// unknown key, duplicate key, wrong type, out-of-range number or malformed prefix, port or ISN
// mode is reported as "FILE:LINE:COL: message" at the offending node, and a file with any
// error yields no Config at all. That is what lets the daemon validate a reloaded file
// completely before swapping it in.
//
// The ISN modes, as written after client_isn: and server_isn: (see deploy/seqshiftd.yaml):
//
//	keep                   no rewrite of that side
//	fixed N                every connection starts at N
//	sequential START STEP  START, START+STEP, ... per connection (mod 2^32); the counter carries
//	                       across a reload when the rule keeps its name and spec (Config.Inherit)
//	range LO-HI            uniform in [LO, HI], drawn from crypto/rand without modulo bias
//	random                 uniform 32-bit value from crypto/rand (pf's "modulate state")
//	offset ±N              constant shift of N; needs no memory of the ISN
//	keyed                  SipHash-2-4 of (self addr, self port, peer addr, peer port) under the
//	                       128-bit key in isn_key_file: the same shift on every gateway sharing
//	                       the key and after any restart, never 0
//
// What policy must never do: touch the system while parsing (Load reads one file; only
// LoadKey, which the daemon calls, may create the key file, CheckKey only reads it, and only
// Warnings looks at the host's interfaces), allocate in Match or Plan, accept a file it only
// half understood, or let a small file cost what its aliases expand to (see maxNodes).
package policy
