package tcshift

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/seqshiftd/seqshiftd/seqnum"
)

// benchEnv is env with the flow and intercept entries on the loopback (ifindex 1):
// Program.Benchmark runs without a context, so the skb's device is the namespace's lo.
func benchEnv(b *testing.B, s seg, mode Mode) *env {
	e := newEnv(b)
	lo := 1
	for _, p := range serverPrefixes {
		if err := e.dp.objs.Intercept.Put(interceptKeyOf(lo, p), uint32(1)); err != nil {
			b.Fatal(err)
		}
	}
	v := FlowValue{Ifindex: uint32(lo), Mode: mode, SeqDelta: [2]seqnum.Delta{0x10000123, 77}, AckDelta: [2]seqnum.Delta{0xfffff000, 99}}
	if err := e.dp.Put(keyOf(HookIngress, s), v); err != nil {
		b.Fatal(err)
	}
	return e
}

func benchProgram(b *testing.B, prog *ebpf.Program, frame []byte, wantRet uint32) {
	b.ReportAllocs()
	b.ResetTimer() // not the namespace and the loading
	ret, total, err := prog.Benchmark(frame, b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	if ret != wantRet {
		b.Fatalf("program returned %d, want %d", ret, wantRet)
	}
	// The kernel times the runs itself and reports the mean of one run (without the syscall
	// that ns/op includes).
	b.ReportMetric(float64(total.Nanoseconds()), "ns/pkt")
}

// BenchmarkClientIngress_DataSegment: a data segment with timestamps, shifted.
func BenchmarkClientIngress_DataSegment(b *testing.B) {
	s := seg{seq: 1000, ack: 5000, flags: flagACK | flagPSH, opts: optTimestamps(1, 2), payload: bytes.Repeat([]byte{1}, 1400)}
	e := benchEnv(b, s, ModeKernel)
	benchProgram(b, e.dp.objs.ClientIngress, e.frame(HookIngress, s.pkt()), actOK)
}

// BenchmarkClientIngress_SACK: a pure ACK with timestamps and three SACK blocks, shifted.
func BenchmarkClientIngress_SACK(b *testing.B) {
	s := seg{seq: 1000, ack: 5000, flags: flagACK, opts: cat(optTimestamps(1, 2), []byte{1, 1}, optSACK(6000, 7000, 8000, 9000, 10000, 11000))}
	e := benchEnv(b, s, ModeKernel)
	benchProgram(b, e.dp.objs.ClientIngress, e.frame(HookIngress, s.pkt()), actOK)
}

// BenchmarkClientIngress_NotIntercepted: the cost on traffic that is not ours.
func BenchmarkClientIngress_NotIntercepted(b *testing.B) {
	s := seg{src: client4, dst: outside4, seq: 1000, ack: 5000, flags: flagACK, opts: optTimestamps(1, 2), payload: bytes.Repeat([]byte{1}, 1400)}
	e := benchEnv(b, seg{}, ModeKernel)
	benchProgram(b, e.dp.objs.ClientIngress, e.frame(HookIngress, s.pkt()), actOK)
}

// BenchmarkClientIngress_ToDaemon: a segment of a daemon-mode flow, redirected.
func BenchmarkClientIngress_ToDaemon(b *testing.B) {
	s := seg{seq: 1000, ack: 5000, flags: flagACK, opts: optTimestamps(1, 2), payload: bytes.Repeat([]byte{1}, 1400)}
	e := benchEnv(b, s, ModeDaemon)
	benchProgram(b, e.dp.objs.ClientIngress, e.frame(HookIngress, s.pkt()), actRedirect)
}

// TestPrograms_Size logs what the verifier and the JIT made of each program (for the README),
// and holds the verifier's work well under its limit of 1M instructions.
func TestPrograms_Size(t *testing.T) {
	e := newEnv(t)
	for name, p := range map[string]*ebpf.Program{"client_ingress": e.dp.objs.ClientIngress, "client_egress": e.dp.objs.ClientEgress, "tap_ingress": e.dp.objs.TapIngress} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, _ := info.Instructions()
		jited, _ := info.JitedSize()
		verified, _ := info.VerifiedInstructions()
		t.Logf("%s: %d instructions, %d bytes JITed, %d instructions verified", name, len(insns), jited, verified)
		if verified > 200_000 {
			t.Errorf("%s: the verifier processed %d instructions; it refuses at 1M", name, verified)
		}
	}
}
