package tcshift

import (
	"fmt"
	"reflect"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"github.com/seqshiftd/seqshiftd/counter"
)

// The Go mirrors of the C layouts are checked against the BTF of the compiled object (what
// the kernel and the programs use), field by field: same number of fields, same offsets, same
// sizes, and the same total size. A field added on one side only fails here.
func TestLayout_GoMirrorsMatchBTF(t *testing.T) {
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c      string
		goType any
	}{
		{"flow_key", FlowKey{}},
		{"flow_val", FlowValue{}},
		{"flow_window", Window{}},
		{"intercept_key", interceptKey{}},
		{"iface", bpfIface{}},
		{"tc_config", bpfTcConfig{}},
	} {
		t.Run(tc.c, func(t *testing.T) {
			var s *btf.Struct
			if err := spec.Types.TypeByName(tc.c, &s); err != nil {
				t.Fatalf("struct %s not in the object's BTF: %v", tc.c, err)
			}
			gt := reflect.TypeOf(tc.goType)
			var gf []reflect.StructField
			for i := range gt.NumField() {
				if f := gt.Field(i); f.Type.Size() != 0 { // structs.HostLayout markers
					gf = append(gf, f)
				}
			}
			if int(s.Size) != int(gt.Size()) {
				t.Errorf("size: C %d, Go %d", s.Size, gt.Size())
			}
			if len(s.Members) != len(gf) {
				t.Fatalf("fields: C has %d, Go %d", len(s.Members), len(gf))
			}
			for i, m := range s.Members {
				size, err := btf.Sizeof(m.Type)
				if err != nil {
					t.Fatal(err)
				}
				if int(m.Offset.Bytes()) != int(gf[i].Offset) || size != int(gf[i].Type.Size()) {
					t.Errorf("field %d: C %s at %d (%d bytes), Go %s at %d (%d bytes)",
						i, m.Name, m.Offset.Bytes(), size, gf[i].Name, gf[i].Offset, gf[i].Type.Size())
				}
			}
		})
	}
	if n := unsafe.Sizeof(FlowKey{}); n != 40 {
		t.Errorf("FlowKey is %d bytes, the map's key is 40", n)
	}
}

// TestLayout_CountersMatchEnum checks the Go counter table against enum stat in the object's
// BTF: the same entries, in the same order, named STAT_<NAME>[_<LABEL>][_<DIR>].
func TestLayout_CountersMatchEnum(t *testing.T) {
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName("stat", &e); err != nil {
		t.Fatalf("enum stat not in the object's BTF: %v", err)
	}
	var names []string
	for _, v := range e.Values {
		if v.Name == "NUM_STATS" {
			if v.Value != uint64(NumStats) {
				t.Errorf("NUM_STATS is %d in C, %d in Go", v.Value, NumStats)
			}
			continue
		}
		names = append(names, fmt.Sprintf("%s=%d", v.Name, v.Value))
	}
	var want []string
	fam := 0
	for i, c := range Counters {
		if c.Family == nil || c.Value == "" {
			t.Fatalf("counter %d has no family or value", i)
		}
		// A family's counters are consecutive, and the families come in Families' order.
		if c.Family != Families[fam] {
			fam++
			if fam >= len(Families) || c.Family != Families[fam] {
				t.Fatalf("counter %s is not with its family, or families are out of order", c.cName())
			}
		}
		want = append(want, fmt.Sprintf("%s=%d", c.cName(), i))
	}
	if fam != len(Families)-1 {
		t.Errorf("%d families have no counter", len(Families)-1-fam)
	}
	for _, f := range Families {
		if f.Help == "" || (f.Label != "reason" && f.Label != "direction") {
			t.Errorf("family %s: no help, or label %q", f.Name, f.Label)
		}
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("enum stat and Counters differ:\n C  %v\n Go %v", names, want)
	}
	if m := spec.Maps[bpfMapStats]; m.MaxEntries != uint32(NumStats) {
		t.Errorf("stats map has %d entries, want %d", m.MaxEntries, NumStats)
	}
	for r := range Reason(NumReasons) {
		if Counters[r].Family != FamilyToDaemon {
			t.Errorf("reason %d is counted in %s, not a to_daemon counter", r, Counters[r].cName())
		}
	}
}

func TestFlowKey_RoundTrip(t *testing.T) {
	for _, tc := range []struct{ c, s string }{
		{"198.18.0.2:40000", "198.19.0.2:443"},
		{"[2001:2::2]:1", "[2001:2:0:1::2]:65535"},
		{"[::ffff:198.18.0.2]:5", "[::ffff:198.19.0.2]:6"}, // IPv6 packets from mapped addresses: family 6
	} {
		c, s := mustAddrPort(tc.c), mustAddrPort(tc.s)
		k := KeyOf(c, s)
		gc, gs := k.Endpoints()
		if gc != c || gs != s {
			t.Errorf("KeyOf(%v, %v).Endpoints() = %v, %v", c, s, gc, gs)
		}
	}
	k := KeyOf(mustAddrPort("198.18.0.2:258"), mustAddrPort("198.19.0.2:443"))
	if k.Family != 4 || k.ClientPort != [2]byte{1, 2} || k.Client[10] != 0xff || k.Client[11] != 0xff {
		t.Errorf("IPv4 key %+v: want family 4, ::ffff: form, ports big-endian", k)
	}
	if n := testing.AllocsPerRun(100, func() { k = KeyOf(mustAddrPort("198.18.0.2:1"), mustAddrPort("198.19.0.2:2")) }); n != 0 {
		t.Errorf("KeyOf allocates %v times", n)
	}
}

func TestReadMeta(t *testing.T) {
	f := make([]byte, 60)
	f[0], f[1], f[2], f[3], f[4], f[5] = 0x5e, byte(HookEgress)|byte(ReasonICMP)<<2, 0, 0, 1, 2
	if m, ok := ReadMeta(f); !ok || m != (Meta{HookEgress, ReasonICMP, 258}) {
		t.Fatalf("ReadMeta = %+v, %t", m, ok)
	}
	for name, edit := range map[string]func([]byte){
		"bad magic": func(b []byte) { b[0] = 0x02 },
		"hook 0":    func(b []byte) { b[1] = byte(ReasonICMP) << 2 },
		"hook 3":    func(b []byte) { b[1] = 3 },
		"reason":    func(b []byte) { b[1] = 1 | byte(NumReasons)<<2 },
		"short":     func(b []byte) {},
	} {
		b := append([]byte(nil), f...)
		edit(b)
		if name == "short" {
			b = b[:13]
		}
		if _, ok := ReadMeta(b); ok {
			t.Errorf("%s: ReadMeta accepted % x", name, b[:min(len(b), 6)])
		}
	}
	if n := testing.AllocsPerRun(100, func() { ReadMeta(f) }); n != 0 {
		t.Errorf("ReadMeta allocates %v times", n)
	}
}

func TestSupported_OnThisKernel(t *testing.T) {
	needRoot(t)
	if err := Supported(); err != nil {
		t.Fatalf("Supported: %v (the other tests load the programs on this kernel)", err)
	}
}

// TestCounterSet_ShowsEveryCounter: the families as the counter package sees them hold every
// counter once, with the value Stats reads.
func TestCounterSet_ShowsEveryCounter(t *testing.T) {
	e := newEnv(t)
	in := e.frame(HookIngress, seg{seq: 1, ack: 2, flags: flagACK}.pkt())
	e.run(t, e.prog(HookIngress), in, e.x, testMark) // passed/mark
	e.run(t, e.prog(HookIngress), in, e.x, 0)        // to_daemon/no_flow
	status := map[string]uint64{}
	counter.AddStatus(status, e.dp)
	if status["kernel_passed_mark"] != 1 || status["kernel_to_daemon_no_flow"] != 1 || len(status) != int(NumStats) {
		t.Fatalf("status keys: %v", status)
	}
	n := 0
	for i, d := range e.dp.Descs() {
		n += d.Len()
		if len(e.dp.Values()[i]) != d.Len() {
			t.Fatalf("%s: %d values for %d counters", d.Name, len(e.dp.Values()[i]), d.Len())
		}
	}
	if n != int(NumStats) {
		t.Fatalf("the families hold %d counters, want %d", n, NumStats)
	}
}
