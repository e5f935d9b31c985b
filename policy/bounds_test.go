package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bomb is issue 11's file: one anchor of n prefixes referenced refs times.
func bomb(n, refs int) []byte {
	var b strings.Builder
	b.WriteString("rules:\n  - name: anchor\n    match:\n      servers: &big\n")
	for i := range n {
		fmt.Fprintf(&b, "        - 10.%d.%d.0/24\n", (i>>8)&255, i&255)
	}
	for j := range refs {
		fmt.Fprintf(&b, "  - {name: r%d, match: {servers: *big}}\n", j)
	}
	return []byte(b.String())
}

func TestParse_AliasBombFailsFastAndSmall(t *testing.T) {
	data := bomb(20000, 2000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Parse("bomb.yaml", data)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("an alias bomb parsed")
	}
	if !regexp.MustCompile(`^bomb\.yaml:\d+:\d+: aliases expand the file to more than \d+ values \(this \*big alone adds 20001\)`).MatchString(err.Error()) {
		t.Errorf("error = %q, want FILE:LINE:COL naming the alias", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d-byte file refused in %v, %d MB allocated", len(data), elapsed, alloc>>20)
	// Unbounded it took over 30 s and 1.4 GB; the parser's own node tree is what remains.
	if alloc > 256<<20 {
		t.Errorf("refusing the bomb allocated %d MB", alloc>>20)
	}
	if elapsed > 5*time.Second {
		t.Errorf("refusing the bomb took %v", elapsed)
	}
}

func TestParse_ModestAliasesStillWork(t *testing.T) {
	cfg, err := Parse("ok.yaml", bomb(100, 20))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 21 || len(cfg.Rules[20].Match.Servers) != 100 {
		t.Errorf("rules %d", len(cfg.Rules))
	}
	if r := cfg.Match(netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("10.0.99.7"), 80); r == nil || r.Name != "anchor" {
		t.Errorf("Match = %v", r)
	}
}

func TestParse_DeepNestingIsRefused(t *testing.T) {
	data := "rules: " + strings.Repeat("[", 400) + strings.Repeat("]", 400) + "\n"
	_, err := Parse("deep.yaml", []byte(data))
	if err == nil || !strings.Contains(err.Error(), "deep.yaml:1:") {
		t.Fatalf("400 levels of nesting: %v, want a positional error", err)
	}
}

func randPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(4) == 0 {
		var a [16]byte
		a[0], a[1], a[2] = 0x20, 0x01, byte(r.IntN(4))
		a[3] = byte(r.IntN(256))
		p, _ := netip.AddrFrom16(a).Prefix(16 + r.IntN(33))
		return p
	}
	a := netip.AddrFrom4([4]byte{198, 18 + byte(r.IntN(2)), byte(r.IntN(8)), byte(r.IntN(256))})
	p, _ := a.Prefix(12 + r.IntN(21))
	return p
}

func randAddr(r *rand.Rand) netip.Addr {
	p := randPrefix(r)
	b := p.Addr().AsSlice()
	b[len(b)-1] ^= byte(r.IntN(256))
	a, _ := netip.AddrFromSlice(b)
	return a
}

func randPorts(r *rand.Rand, n int) []PortRange {
	var out []PortRange
	for range n {
		lo := uint16(1 + r.IntN(2000))
		out = append(out, PortRange{lo, lo + uint16(r.IntN(50))})
	}
	return out
}

// The index must answer exactly what the lists say: every lookup is compared with a scan.
func TestSelector_IndexAgreesWithTheLists(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		s := Selector{}
		for range r.IntN(60) {
			s.Clients = append(s.Clients, randPrefix(r))
		}
		for range r.IntN(60) {
			s.Servers = append(s.Servers, randPrefix(r))
		}
		s.ServerPorts = randPorts(r, r.IntN(40))
		plain := s
		s.index()
		for range 300 {
			c, sv, port := randAddr(r), randAddr(r), uint16(r.IntN(2100))
			if got, want := s.matches(c, sv, port), plain.matches(c, sv, port); got != want {
				t.Fatalf("round %d: indexed %v, lists %v for %s -> %s:%d", round, got, want, c, sv, port)
			}
		}
	}
}

// covers is checked against its definition: every port and every prefix of the later rule is
// inside the earlier one's.
func TestSelector_CoversAgreesWithTheDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	portIn := func(ps []PortRange, p uint16) bool { return portsContain(ps, p) }
	for round := range 500 {
		a := Selector{Servers: nil, ServerPorts: randPorts(r, r.IntN(30))}
		for range r.IntN(40) {
			a.Servers = append(a.Servers, randPrefix(r))
		}
		b := Selector{ServerPorts: randPorts(r, 1+r.IntN(3))}
		for range 1 + r.IntN(3) {
			// Often a sub-prefix of one of a's, so that coverage happens.
			if len(a.Servers) > 0 && r.IntN(2) == 0 {
				pa := a.Servers[r.IntN(len(a.Servers))]
				p, _ := pa.Addr().Prefix(min(pa.Bits()+r.IntN(4), pa.Addr().BitLen()))
				b.Servers = append(b.Servers, p)
			} else {
				b.Servers = append(b.Servers, randPrefix(r))
			}
		}
		want := len(a.ServerPorts) == 0
		if !want {
			want = true
			for _, rb := range b.ServerPorts {
				for p := int(rb.Lo); p <= int(rb.Hi); p++ {
					want = want && portIn(a.ServerPorts, uint16(p))
				}
			}
		}
		if len(a.Servers) > 0 {
			for _, pb := range b.Servers {
				in := false
				for _, pa := range a.Servers {
					in = in || (pa.Addr().BitLen() == pb.Addr().BitLen() && pa.Bits() <= pb.Bits() && pa.Contains(pb.Addr()))
				}
				want = want && in
			}
		}
		for _, indexed := range []bool{false, true} {
			aa := a
			if indexed {
				aa.index()
			}
			if got := aa.covers(&b); got != want {
				t.Fatalf("round %d (indexed %v): covers = %v, want %v\na=%+v\nb=%+v", round, indexed, got, want, a, b)
			}
		}
	}
}

// Two rules of 20k prefixes each were 400M comparisons; now it is 20k lookups.
func TestWarnings_LargeListsAreNotQuadratic(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for j := range 2 {
		fmt.Fprintf(&b, "  - name: r%d\n    match:\n      servers:\n", j)
		for i := range 20000 {
			fmt.Fprintf(&b, "        - 10.%d.%d.0/24\n", (i>>8)&255, i&255)
		}
	}
	cfg, err := Parse("big.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w := cfg.Warnings()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Warnings took %v", d)
	}
	found := false
	for _, s := range w {
		found = found || strings.Contains(s.Msg, `rule "r1" can never match: rule "r0"`)
	}
	if !found {
		t.Errorf("the shadowed rule was not found: %v", w)
	}
}

func TestWarnings_ShadowCheckStopsAtItsBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	// Every rule has its own port, so none shadows another and every pair is compared.
	for j := range 7000 {
		fmt.Fprintf(&b, "  - {name: r%d, match: {server_ports: [%d]}}\n", j, 1+j)
	}
	cfg, err := Parse("many.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w := cfg.Warnings()
	t.Logf("7000 rules checked in %v", time.Since(start))
	if len(w) == 0 || !strings.Contains(w[len(w)-1].Msg, "were not checked for shadowing") {
		t.Errorf("no budget warning: %v", w)
	}
}

func TestMatch_ManyPrefixesCostNoAllocation(t *testing.T) {
	cfg, err := Parse("ok.yaml", bomb(20000, 0))
	if err != nil {
		t.Fatal(err)
	}
	miss, hit := netip.MustParseAddr("10.200.0.1"), netip.MustParseAddr("10.78.31.9")
	c := netip.MustParseAddr("198.18.0.1")
	if cfg.Match(c, miss, 80) != nil || cfg.Match(c, hit, 80) == nil {
		t.Fatal("wrong answers")
	}
	if n := testing.AllocsPerRun(100, func() { cfg.Match(c, miss, 80) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func BenchmarkMatch_20kPrefixes(b *testing.B) {
	cfg, err := Parse("ok.yaml", bomb(20000, 0))
	if err != nil {
		b.Fatal(err)
	}
	c, s := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("10.200.0.1")
	b.ReportAllocs()
	for b.Loop() {
		cfg.Match(c, s, 80)
	}
}
