package policy

import (
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	tupleC = netip.MustParseAddrPort("198.18.1.10:40000")
	tupleS = netip.MustParseAddrPort("198.18.2.10:502")
)

func mustSide(t testing.TB, text string) *Side {
	t.Helper()
	s, msg := parseSide(text)
	if msg != "" {
		t.Fatalf("parseSide(%q): %s", text, msg)
	}
	return s
}

func TestSide_ModesParseAndPlan(t *testing.T) {
	tests := []struct {
		text      string
		mode      Mode
		stateless bool
		abs       bool
		v         uint32 // checked unless the mode draws
		str       string
	}{
		{"keep", ModeKeep, true, false, 0, "keep"},
		{"fixed 0", ModeFixed, false, true, 0, "fixed 0"},
		{"fixed 1000", ModeFixed, false, true, 1000, "fixed 1000"},
		{"fixed 4294967295", ModeFixed, false, true, math.MaxUint32, "fixed 4294967295"},
		{"fixed 0xFFFFFFFF", ModeFixed, false, true, math.MaxUint32, "fixed 0xFFFFFFFF"},
		{"  fixed\t 7 ", ModeFixed, false, true, 7, "fixed 7"},
		{"sequential 100 10", ModeSequential, false, true, 100, "sequential 100 10"},
		{"range 5-5", ModeRange, false, true, 5, "range 5-5"},
		{"range 1-2147483647", ModeRange, false, true, 0, "range 1-2147483647"},
		{"random", ModeRandom, false, true, 0, "random"},
		{"offset +1000", ModeOffset, true, false, 1000, "offset +1000"},
		{"offset 1000", ModeOffset, true, false, 1000, "offset 1000"},
		{"offset -1000", ModeOffset, true, false, math.MaxUint32 - 999, "offset -1000"},
		{"offset -4294967295", ModeOffset, true, false, 1, "offset -4294967295"},
		{"keyed", ModeKeyed, true, false, 0, "keyed"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			s := mustSide(t, tt.text)
			if s.Mode() != tt.mode || s.Stateless() != tt.stateless || s.Keep() != (tt.mode == ModeKeep) || s.String() != tt.str {
				t.Errorf("mode %s stateless %t keep %t string %q", s.Mode(), s.Stateless(), s.Keep(), s)
			}
			abs, v := s.Plan(tupleC, tupleS)
			if abs != tt.abs {
				t.Errorf("Plan absolute = %t, want %t", abs, tt.abs)
			}
			switch tt.mode {
			case ModeRandom, ModeKeyed:
			case ModeRange:
				if v < s.a || v > s.b {
					t.Errorf("Plan = %d outside [%d, %d]", v, s.a, s.b)
				}
			default:
				if v != tt.v {
					t.Errorf("Plan = %d, want %d", v, tt.v)
				}
			}
		})
	}
}

func TestSide_NilIsKeep(t *testing.T) {
	var s *Side
	if abs, v := s.Plan(tupleC, tupleS); abs || v != 0 || !s.Keep() || !s.Stateless() || s.String() != "keep" {
		t.Errorf("nil side: %t %d %t %q", abs, v, s.Keep(), s)
	}
}

func TestSide_SequentialStepsAndWraps(t *testing.T) {
	s := mustSide(t, "sequential 4294967290 3")
	want := []uint32{4294967290, 4294967293, 0, 3, 6}
	for i, w := range want {
		if abs, v := s.Plan(tupleC, tupleS); !abs || v != w {
			t.Errorf("draw %d = (%t, %d), want %d", i, abs, v, w)
		}
	}
}

func TestSide_SequentialIsUniqueUnderConcurrency(t *testing.T) {
	s := mustSide(t, "sequential 0 1")
	const workers, each = 8, 1000
	got := make([][]uint32, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				_, v := s.Plan(tupleC, tupleS)
				got[w] = append(got[w], v)
			}
		}()
	}
	wg.Wait()
	seen := make(map[uint32]bool)
	for _, g := range got {
		for _, v := range g {
			if seen[v] || v >= workers*each {
				t.Fatalf("ISN %d handed out twice or out of sequence", v)
			}
			seen[v] = true
		}
	}
}

func TestSide_RangeStaysInBoundsAndIsUniform(t *testing.T) {
	for _, spec := range []string{"range 1-2147483647", "range 4294967290-4294967295", "range 0-4294967295", "range 0-2", "range 1000-1000"} {
		s := mustSide(t, spec)
		for range 20000 {
			abs, v := s.Plan(tupleC, tupleS)
			if !abs || v < s.a || v > s.b {
				t.Fatalf("%s drew (%t, %d)", spec, abs, v)
			}
		}
	}
	// Each of 6 values should come up about 1/6 of the time: a chi-square test with 5 degrees
	// of freedom; 25 is beyond the 0.9999 quantile (about 25.7 is 0.0001), so a false failure
	// is about one run in ten thousand.
	s := mustSide(t, "range 10-15")
	const n = 60000
	var counts [6]int
	for range n {
		_, v := s.Plan(tupleC, tupleS)
		counts[v-10]++
	}
	chi := 0.0
	for _, c := range counts {
		d := float64(c) - n/6.0
		chi += d * d / (n / 6.0)
	}
	if chi > 25 {
		t.Errorf("range 10-15 counts %v: chi-square %.1f, not uniform", counts, chi)
	}
}

func TestSide_RangeHitsBothEnds(t *testing.T) {
	s := mustSide(t, "range 4294967294-4294967295")
	var lo, hi bool
	for range 1000 {
		_, v := s.Plan(tupleC, tupleS)
		lo, hi = lo || v == 4294967294, hi || v == 4294967295
	}
	if !lo || !hi {
		t.Errorf("over 1000 draws: low end %t, high end %t", lo, hi)
	}
}

func TestSide_RandomDoesNotRepeat(t *testing.T) {
	s := mustSide(t, "random")
	seen := map[uint32]int{}
	for range 10000 {
		_, v := s.Plan(tupleC, tupleS)
		seen[v]++
	}
	// 10000 draws out of 2^32: a repeat has probability about 1.2%; two are near impossible.
	if dup := 10000 - len(seen); dup > 1 {
		t.Errorf("%d repeated values in 10000 random draws", dup)
	}
	var bits [32]int
	for v := range seen {
		for b := range 32 {
			bits[b] += int(v >> b & 1)
		}
	}
	for b, n := range bits {
		if n < len(seen)*4/10 || n > len(seen)*6/10 {
			t.Errorf("bit %d set in %d of %d values", b, n, len(seen))
		}
	}
}

// keyedConfig is a config with one keyed rule whose key is in file.
func keyedConfig(t *testing.T, file string) *Config {
	t.Helper()
	cfg, err := Parse("c.yaml", []byte("isn_key_file: "+file+"\nrules:\n  - {name: k, client_isn: keyed, server_isn: keyed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.LoadKey(false); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func writeKey(t *testing.T, dir, name string, key string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSide_KeyedIsSharedAcrossGatewaysAndDiffersAcrossTuplesAndKeys(t *testing.T) {
	dir := t.TempDir()
	k1 := writeKey(t, dir, "k1", strings.Repeat("a", 32))
	k1hex := writeKey(t, dir, "k1hex", strings.Repeat("61", 32)+"\n") // the same key, as hex
	k2 := writeKey(t, dir, "k2", strings.Repeat("b", 32))
	gw1, gw2, other := keyedConfig(t, k1), keyedConfig(t, k1hex), keyedConfig(t, k2)
	plan := func(c *Config, self, peer string) uint32 {
		abs, v := c.Rules[0].Client.Plan(netip.MustParseAddrPort(self), netip.MustParseAddrPort(peer))
		if abs {
			t.Fatalf("keyed planned an absolute ISN")
		}
		if v == 0 {
			t.Fatalf("keyed planned a zero offset")
		}
		return v
	}
	c, s := "198.18.1.10:40000", "198.18.2.10:502"
	base := plan(gw1, c, s)
	if got := plan(gw2, c, s); got != base {
		t.Errorf("same key, same tuple, second gateway: %#x != %#x", got, base)
	}
	if got := plan(gw1, c, s); got != base {
		t.Errorf("not deterministic: %#x != %#x", got, base)
	}
	if got := plan(gw1, "[::ffff:198.18.1.10]:40000", "[::ffff:198.18.2.10]:502"); got != base {
		t.Errorf("IPv4-mapped spelling of the same tuple: %#x != %#x", got, base)
	}
	if got := plan(other, c, s); got == base {
		t.Errorf("different keys gave the same offset %#x", got)
	}
	// The client and server sides of one connection must differ (self and peer swap), and any
	// change of address or port must change the offset.
	for _, tp := range [][2]string{
		{s, c},
		{"198.18.1.10:40001", s},
		{"198.18.1.11:40000", s},
		{c, "198.18.2.10:503"},
		{c, "198.18.2.11:502"},
		{"[2001:2::10]:40000", "[2001:2::20]:502"},
	} {
		if got := plan(gw1, tp[0], tp[1]); got == base {
			t.Errorf("tuple %s -> %s gave the same offset as %s -> %s", tp[0], tp[1], c, s)
		}
	}
	// Many tuples: no zero, and essentially no collisions.
	seen := map[uint32]bool{}
	for port := 1024; port < 1024+5000; port++ {
		self := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.10"), uint16(port))
		_, v := gw1.Rules[0].Server.Plan(self, tupleS)
		if v == 0 {
			t.Fatal("zero offset")
		}
		seen[v] = true
	}
	if len(seen) < 4998 {
		t.Errorf("only %d distinct offsets over 5000 tuples", len(seen))
	}
}

func TestSide_KeyedBeforeLoadKeyDoesNotShift(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte("rules:\n  - {name: k, client_isn: keyed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if abs, v := cfg.Rules[0].Client.Plan(tupleC, tupleS); abs || v != 0 {
		t.Errorf("keyed without a key planned (%t, %d)", abs, v)
	}
}

func TestSide_PlanDoesNotAllocate(t *testing.T) {
	dir := t.TempDir()
	cfg := keyedConfig(t, writeKey(t, dir, "k", strings.Repeat("z", 32)))
	sides := map[string]*Side{"keyed": cfg.Rules[0].Client}
	for _, spec := range []string{"keep", "fixed 1", "sequential 1 2", "range 1-1000", "range 0-4294967295", "random", "offset -5"} {
		sides[spec] = mustSide(t, spec)
	}
	for name, s := range sides {
		if n := testing.AllocsPerRun(1000, func() { s.Plan(tupleC, tupleS) }); n != 0 {
			t.Errorf("%s: %v allocations per Plan", name, n)
		}
	}
}

func TestUniform_Edges(t *testing.T) {
	for range 1000 {
		if v := uniform(7, 7); v != 7 {
			t.Fatalf("uniform(7, 7) = %d", v)
		}
		if v := uniform(math.MaxUint32-1, math.MaxUint32); v < math.MaxUint32-1 {
			t.Fatalf("uniform(max-1, max) = %d", v)
		}
	}
}

func BenchmarkPlan(b *testing.B) {
	for _, spec := range []string{"fixed 1", "sequential 1 2", "range 1-2147483647", "random", "offset -5"} {
		s, _ := parseSide(spec)
		b.Run(spec, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s.Plan(tupleC, tupleS)
				}
			})
		})
	}
	k := &isnKey{}
	k.set([]byte(strings.Repeat("k", 32)))
	s := &Side{mode: ModeKeyed, key: k}
	b.Run("keyed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Plan(tupleC, tupleS)
		}
	})
}
