package flowtable

import (
	"net/netip"
	"testing"
)

func TestMakeKey_SameFromBothDirections(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"198.18.0.1:40000", "198.19.0.1:443"},
		{"198.19.0.1:443", "198.18.0.1:40000"},
		{"198.18.0.1:80", "198.18.0.1:81"}, // same address, ports decide
		{"[2001:2::1]:50000", "[2001:2::ff]:22"},
		{"[2001:2::1]:22", "[2001:2::1]:22"}, // a self-connect
	} {
		a, b := ap(tc.a), ap(tc.b)
		k1, r1 := MakeKey(a, b)
		k2, r2 := MakeKey(b, a)
		if k1 != k2 {
			t.Errorf("%s/%s: keys differ by direction: %v vs %v", a, b, k1, k2)
		}
		if a != b && r1 == r2 {
			t.Errorf("%s/%s: reversed %v both ways", a, b, r1)
		}
		lo, hi := k1.Endpoints()
		if (lo != a || hi != b) && (lo != b || hi != a) {
			t.Errorf("%s/%s: endpoints %s %s", a, b, lo, hi)
		}
		if r1 && lo != b || !r1 && lo != a {
			t.Errorf("%s/%s: reversed=%v but lower endpoint is %s", a, b, r1, lo)
		}
	}
}

func TestMakeKey_IPv4DiffersFromMappedIPv6(t *testing.T) {
	k4, _ := MakeKey(ap("198.18.0.1:1000"), ap("198.19.0.1:443"))
	k6, _ := MakeKey(ap("[::ffff:198.18.0.1]:1000"), ap("[::ffff:198.19.0.1]:443"))
	if k4 == k6 {
		t.Fatal("IPv4 and IPv4-mapped IPv6 connections share a key")
	}
	lo, hi := k6.Endpoints()
	if !lo.Addr().Is4In6() || !hi.Addr().Is4In6() {
		t.Fatalf("mapped endpoints came back as %s %s", lo, hi)
	}
	if got := k4.String(); got != "198.18.0.1:1000<->198.19.0.1:443" {
		t.Fatalf("String() = %q", got)
	}
}

func TestLookup_DirectionFromEitherSide(t *testing.T) {
	tab := New(Config{MaxFlows: 64})
	for _, tc := range []struct{ client, server string }{
		{"198.18.0.1:40000", "198.19.0.1:443"}, // client is the lower endpoint
		{"198.19.0.9:40000", "198.18.0.9:443"}, // client is the higher endpoint
		{"[2001:2::7]:50000", "[2001:2::1]:22"},
	} {
		c, s := ap(tc.client), ap(tc.server)
		f, err := tab.Admit(c, s, Init{})
		if err != nil {
			t.Fatal(err)
		}
		if f.Client() != c || f.Server() != s {
			t.Fatalf("flow %v: client %s server %s", f, f.Client(), f.Server())
		}
		for _, q := range []struct {
			src, dst netip.AddrPort
			dir      Dir
		}{{c, s, ClientToServer}, {s, c, ServerToClient}} {
			g, dir, ok := tab.Lookup(q.src, q.dst)
			if !ok || g != f || dir != q.dir {
				t.Errorf("Lookup(%s, %s) = %v %v %v, want %v %v", q.src, q.dst, g, dir, ok, f, q.dir)
			}
		}
	}
	if _, _, ok := tab.Lookup(ap("198.18.0.1:40001"), ap("198.19.0.1:443")); ok {
		t.Error("lookup of an unknown tuple hit")
	}
}

func TestLookup_DoesNotAllocate(t *testing.T) {
	tab := New(Config{MaxFlows: 64})
	c, s := ap("198.18.0.1:40000"), ap("198.19.0.1:443")
	tab.Admit(c, s, Init{Rule: "r"})
	miss := ap("198.18.0.2:40000")
	if n := testing.AllocsPerRun(100, func() {
		tab.Lookup(s, c)
		tab.Lookup(miss, s)
	}); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}

func TestHash_SymmetricSeededAndSpread(t *testing.T) {
	t1, t2 := New(Config{Shards: 64}), New(Config{Shards: 64})
	c, s := ap("198.18.0.1:40000"), ap("198.19.0.1:443")
	k, _ := MakeKey(c, s)
	var p probe
	spv, dpv := p.fill(s, c)
	if h := t1.hashEndpoint(p.s0, p.s1, spv) + t1.hashEndpoint(p.d0, p.d1, dpv); h != t1.hash(&k) {
		t.Fatal("lookup hash differs from key hash")
	}
	if t1.hash(&k) == t2.hash(&k) {
		t.Fatal("two tables share a hash seed")
	}
	// Ports a sender picks to land in one shard (all equal modulo the shard count) spread.
	var perShard [64]int
	const n = 4096
	for i := range n {
		k, _ := MakeKey(netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(i*16)), s)
		perShard[t1.hash(&k)&t1.mask]++
	}
	for i, m := range perShard {
		if m > 3*n/64 {
			t.Fatalf("shard %d got %d of %d chosen tuples: %v", i, m, n, perShard)
		}
	}
}
