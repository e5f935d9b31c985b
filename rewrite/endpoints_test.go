package rewrite

import (
	"net/netip"
	"testing"
)

// A malformed segment of a shifted flow must be found by its tuple so that the datapath can
// drop it instead of forwarding its raw sequence numbers.
func TestEndpoints_FindTheTupleOfMalformedTCP(t *testing.T) {
	hopByHop := ext{typ: extHopByHop, body: make([]byte, 6)}
	for _, tc := range []struct {
		name string
		s    seg
	}{
		{"IPv4 bad SACK length", seg{sport: 40000, dport: 502, opts: []byte{5, 7, 0, 0, 0, 0, 0}}},
		{"IPv4 data offset past the segment", seg{sport: 40000, dport: 502, doffOverride: 15}},
		{"IPv6 option length 1", seg{v6: true, sport: 40001, dport: 443, opts: []byte{8, 1}}},
		{"IPv6 behind hop-by-hop, data offset 4", seg{v6: true, sport: 40002, dport: 22, exts: []ext{hopByHop}, doffOverride: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := tc.s.pkt()
			var p Packet
			Classify(pkt, &p)
			if p.Kind != KindMalformed {
				t.Fatalf("Classify: %v, want malformed (the case does not test what it says)", p.Kind)
			}
			src, dst, ok := Endpoints(pkt)
			wantSrc, wantDst := client4, server4
			if tc.s.v6 {
				wantSrc, wantDst = client6, server6
			}
			if !ok || src != netip.AddrPortFrom(wantSrc, tc.s.sport) || dst != netip.AddrPortFrom(wantDst, tc.s.dport) {
				t.Errorf("Endpoints = %v %v %v", src, dst, ok)
			}
		})
	}
}

func TestEndpoints_NoTupleWithoutPortsOrIntactIP(t *testing.T) {
	good := seg{sport: 1, dport: 2}.pkt()
	for name, pkt := range map[string][]byte{
		"empty":              nil,
		"version 5":          append([]byte{0x50}, good[1:]...),
		"truncated IP":       good[:19],
		"two bytes of TCP":   func() []byte { b := append([]byte(nil), good[:22]...); b[2], b[3] = 0, 22; return b }(),
		"not TCP":            seg{proto: 17, sport: 1, dport: 2}.pkt(),
		"non-first fragment": seg{sport: 1, dport: 2, fragOff: 8}.pkt(),
	} {
		if _, _, ok := Endpoints(pkt); ok {
			t.Errorf("%s: Endpoints found a tuple", name)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Endpoints(good) }); n != 0 {
		t.Errorf("Endpoints allocates %v times", n)
	}
}

func FuzzEndpoints(f *testing.F) {
	f.Add(seg{sport: 40000, dport: 502, opts: []byte{5, 7, 0, 0, 0, 0, 0}}.pkt())
	f.Add(seg{v6: true, sport: 1, dport: 2, exts: []ext{{typ: extFragment, body: make([]byte, 6)}}}.pkt())
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, dst, ok := Endpoints(pkt)
		var p Packet
		Classify(pkt, &p)
		// Where Classify finds a TCP header, Endpoints must find the same tuple.
		if p.Kind == KindTCP && (!ok || src != netip.AddrPortFrom(p.Src, p.SrcPort) || dst != netip.AddrPortFrom(p.Dst, p.DstPort)) {
			t.Fatalf("Classify found %s:%d -> %s:%d, Endpoints %v %v %v", p.Src, p.SrcPort, p.Dst, p.DstPort, src, dst, ok)
		}
	})
}
