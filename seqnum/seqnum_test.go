package seqnum

import (
	"math/rand/v2"
	"testing"
)

func TestValue_OrderWrapsAround(t *testing.T) {
	for _, tc := range []struct {
		name         string
		v, w         Value
		less, lessEq bool
	}{
		{"equal", 5, 5, false, true},
		{"plain before", 5, 6, true, true},
		{"plain after", 6, 5, false, false},
		{"max before zero", 0xffffffff, 0, true, true},
		{"zero after max", 0, 0xffffffff, false, false},
		{"just under half way ahead", 0, 1<<31 - 1, true, true},
		{"half way is undefined; reads as before", 0, 1 << 31, true, true},
		{"across the wrap", 0xfffffff0, 0x10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.v.LessThan(tc.w); got != tc.less {
				t.Errorf("%#x.LessThan(%#x) = %t, want %t", tc.v, tc.w, got, tc.less)
			}
			if got := tc.v.LessThanEq(tc.w); got != tc.lessEq {
				t.Errorf("%#x.LessThanEq(%#x) = %t, want %t", tc.v, tc.w, got, tc.lessEq)
			}
		})
	}
}

func TestValue_AddSubWrapAround(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		d    Delta
		want Value
	}{
		{0xffffffff, 1, 0},
		{0, Delta(0).Add(1).Neg(), 0xffffffff},
		{0xfffffff0, 0x20, 0x10},
		{0x10, 0xffffffe0, 0xfffffff0}, // -0x20
		{1000, 0, 1000},
	} {
		if got := tc.v.Add(tc.d); got != tc.want {
			t.Errorf("%#x.Add(%#x) = %#x, want %#x", tc.v, tc.d, got, tc.want)
		}
		if got := tc.want.Sub(tc.v); got != tc.d {
			t.Errorf("%#x.Sub(%#x) = %#x, want %#x", tc.want, tc.v, got, tc.d)
		}
	}
}

func TestDelta_SignedForDisplay(t *testing.T) {
	for _, tc := range []struct {
		d    Delta
		want int32
	}{{0, 0}, {1, 1}, {0xffffffff, -1}, {1 << 31, -1 << 31}, {1<<31 - 1, 1<<31 - 1}, {Delta(5).Neg(), -5}} {
		if got := tc.d.Signed(); got != tc.want {
			t.Errorf("Delta(%#x).Signed() = %d, want %d", uint32(tc.d), got, tc.want)
		}
	}
}

func TestValue_RangeAndWindowAcrossTheWrap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v, a, b Value
		inRange bool
	}{
		{"start is in", 10, 10, 20, true},
		{"end is out", 20, 10, 20, false},
		{"before is out", 9, 10, 20, false},
		{"wrapped range, high part", 0xfffffffe, 0xfffffff0, 0x10, true},
		{"wrapped range, low part", 0x5, 0xfffffff0, 0x10, true},
		{"wrapped range, end", 0x10, 0xfffffff0, 0x10, false},
		{"empty range", 7, 7, 7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.v.InRange(tc.a, tc.b); got != tc.inRange {
				t.Errorf("%#x.InRange(%#x, %#x) = %t, want %t", tc.v, tc.a, tc.b, got, tc.inRange)
			}
			if got := tc.v.InWindow(tc.a, Size(tc.b-tc.a)); got != tc.inRange {
				t.Errorf("%#x.InWindow(%#x, %d) = %t, want %t", tc.v, tc.a, tc.b-tc.a, got, tc.inRange)
			}
		})
	}
}

// TestProperties checks the algebra the datapath relies on for random values, including the
// ones near the wrap: a Delta and its negation cancel, Sub inverts Add, order is preserved by
// moving both ends by the same Delta, and InWindow agrees with order for windows below 2^31.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	edge := []uint32{0, 1, 1<<31 - 1, 1 << 31, 1<<31 + 1, 0xfffffffe, 0xffffffff}
	pick := func() uint32 {
		if rng.IntN(4) == 0 {
			return edge[rng.IntN(len(edge))] + uint32(rng.IntN(3)) - 1
		}
		return rng.Uint32()
	}
	for range 100000 {
		v, w, d := Value(pick()), Value(pick()), Delta(pick())
		if got := v.Add(d).Add(d.Neg()); got != v {
			t.Fatalf("%#x + %#x - %#x = %#x", v, d, d, got)
		}
		if got := w.Add(v.Sub(w)); got != v {
			t.Fatalf("%#x + (%#x - %#x) = %#x", w, v, w, got)
		}
		if v.Sub(w) != 1<<31 && v.LessThan(w) != v.Add(d).LessThan(w.Add(d)) {
			t.Fatalf("moving %#x and %#x by %#x changed their order", v, w, d)
		}
		if v != w && v.LessThan(w) == w.LessThan(v) && v.Sub(w) != 1<<31 {
			t.Fatalf("%#x and %#x are each before the other, or neither", v, w)
		}
		sz := Size(pick() >> 1)
		if got, want := v.InWindow(w, sz), w.LessThanEq(v) && v.LessThan(w.Add(Delta(sz))); sz != 0 && got != want {
			t.Fatalf("%#x.InWindow(%#x, %d) = %t, order says %t", v, w, sz, got, want)
		}
		if got, want := v.InWindow(w, sz), v.InRange(w, w.Add(Delta(sz))); got != want {
			t.Fatalf("%#x.InWindow(%#x, %d) = %t, InRange says %t", v, w, sz, got, want)
		}
	}
}
