package counter

import (
	"reflect"
	"sync"
	"testing"
)

var (
	testOne = &Desc{Name: "one_total", Help: "A single counter.", Status: "one"}
	testDir = &Desc{Name: "dir_total", Help: "By direction.", Labels: []string{"direction"},
		Values: Each("c2s", "s2c"), Status: "dir_%s"}
	testSum = &Desc{Name: "sum_total", Help: "Summed in status.", Labels: []string{"reason"},
		Values: Each("a", "b", "c"), Status: "sum"}
	testHidden = &Desc{Name: "hidden_total", Help: "Not in status.", Labels: []string{"op", "dir"},
		Values: [][]string{{"read", "in"}, {"write", "out"}}}
	testTable = NewTable(testOne, testDir, testSum, testHidden)
)

type testSet struct{ blocks []*Block }

func (s testSet) Descs() []*Desc     { return testTable.Descs() }
func (s testSet) Values() [][]uint64 { return testTable.Sum(s.blocks) }

func TestTable_SumsBlocksPerFamily(t *testing.T) {
	a, b := testTable.NewBlock(), testTable.NewBlock()
	a.Inc(testOne, 0)
	b.Add(testOne, 0, 4)
	a.Inc(testDir, 1)
	b.Inc(testSum, 2)
	b.Add(testHidden, 1, 7)
	got := testSet{[]*Block{a, b}}.Values()
	want := [][]uint64{{5}, {0, 1}, {0, 0, 1}, {0, 7}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Values() = %v, want %v", got, want)
	}
	if a.Load(testDir, 1) != 1 || a.Load(testDir, 0) != 0 {
		t.Errorf("Load reads the wrong slot")
	}
}

func TestAddStatus_KeysPerCounterOrSummed(t *testing.T) {
	b := testTable.NewBlock()
	b.Add(testOne, 0, 2)
	b.Add(testDir, 0, 3)
	b.Add(testSum, 0, 1)
	b.Add(testSum, 2, 10)
	b.Add(testHidden, 0, 99)
	m := map[string]uint64{"other": 1}
	AddStatus(m, testSet{[]*Block{b}})
	want := map[string]uint64{"other": 1, "one": 2, "dir_c2s": 3, "dir_s2c": 0, "sum": 11}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("status %v, want %v", m, want)
	}
}

func TestNewTable_RefusesWhatCannotBeShown(t *testing.T) {
	for name, d := range map[string]*Desc{
		"bad name":             {Name: "has-dash", Help: "x"},
		"no help":              {Name: "x_total"},
		"values without label": {Name: "x_total", Help: "x", Values: Each("a")},
		"label without values": {Name: "x_total", Help: "x", Labels: []string{"l"}},
		"values of wrong arity": {Name: "x_total", Help: "x", Labels: []string{"l", "m"},
			Values: Each("a")},
		"already in a table": testOne,
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("NewTable accepted %+v", d)
				}
			}()
			NewTable(d)
		})
	}
	t.Run("duplicate name", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Errorf("NewTable accepted a duplicate name")
			}
		}()
		NewTable(&Desc{Name: "d_total", Help: "x"}, &Desc{Name: "d_total", Help: "x"})
	})
}

func TestBlock_IncrementDoesNotAllocate(t *testing.T) {
	b := testTable.NewBlock()
	if n := testing.AllocsPerRun(1000, func() { b.Inc(testSum, 1); b.Add(testDir, 1, 3) }); n != 0 {
		t.Errorf("%v allocations per increment", n)
	}
}

func TestBlock_ConcurrentReadWhileWriting(t *testing.T) {
	b := testTable.NewBlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 10000 {
			b.Inc(testOne, 0)
		}
	}()
	var last uint64
	for range 100 {
		v := testTable.Sum([]*Block{b})[0][0]
		if v < last {
			t.Fatalf("counter went back from %d to %d", last, v)
		}
		last = v
	}
	wg.Wait()
	if v := testTable.Sum([]*Block{b})[0][0]; v != 10000 {
		t.Errorf("sum %d, want 10000", v)
	}
}

func BenchmarkBlockInc(b *testing.B) {
	blk := testTable.NewBlock()
	b.ReportAllocs()
	for b.Loop() {
		blk.Inc(testSum, 1)
	}
}
