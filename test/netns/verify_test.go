package netns_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/capture"
	"github.com/seqshiftd/seqshiftd/netlab"
	"github.com/seqshiftd/seqshiftd/verify"
)

// verify writes both ends' captures of the test so far as pcap files and runs `seqshiftd
// verify`'s code on them: every connection both wires carried must map, segment by segment,
// with one offset per direction (seq, ack, SACK edges, ICMP quotes). The files are kept, and
// named in the log, when the test fails. Tests that check more (offsets against `flows`) use the
// report it returns.
func (cs *captures) verify(t testing.TB) *verify.Report {
	t.Helper()
	cs.settle()
	dir, err := os.MkdirTemp("", "seqshiftd-verify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	paths := [2]string{filepath.Join(dir, "client.pcap"), filepath.Join(dir, "server.pcap")}
	for i, c := range []*netlab.Capture{cs.client, cs.server} {
		f, err := os.Create(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		err = c.WritePcap(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := verify.Files(paths[0], paths[1], verify.Options{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	var text strings.Builder
	_ = r.WriteText(&text)
	if !r.OK {
		t.Errorf("seqshiftd verify %s %s: the two wires do not map:\n%s", paths[0], paths[1], text.String())
	} else {
		t.Logf("seqshiftd verify: all map:\n%s", text.String())
	}
	return r
}

// settle waits until neither capture has recorded anything for 150 ms (at most 3 s): the last
// FINs and ACKs are on the wire when the sockets close, not yet read by the captures.
func (cs *captures) settle() {
	last, quiet := -1, time.Now()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		n := len(cs.client.Segments()) + len(cs.server.Segments())
		if n != last {
			last, quiet = n, time.Now()
		} else if time.Since(quiet) > 150*time.Millisecond {
			return
		}
	}
}

// connectionOf returns the report's connection of client.
func connectionOf(t testing.TB, r *verify.Report, client netip.AddrPort) verify.Connection {
	t.Helper()
	for _, c := range r.Connections {
		if c.Client == client.String() {
			return c
		}
	}
	t.Fatalf("verify found no connection of %s", client)
	return verify.Connection{}
}

// verifyOffsets checks that verify measured on the wires the offsets `seqshiftd flows` shows.
func verifyOffsets(t testing.TB, r *verify.Report, f flowInfo) {
	t.Helper()
	c := connectionOf(t, r, f.Client)
	if c.ClientToServer.OffsetRaw != f.OffsetC2S || c.ServerToClient.OffsetRaw != f.OffsetS2C {
		t.Errorf("verify measured offsets %+d/%+d on the wires, flows shows %d/%d",
			c.ClientToServer.Offset, c.ServerToClient.Offset, f.OffsetC2S, f.OffsetS2C)
	}
}

// Without seqshiftd the gateway is a plain kernel router: verify must find offset 0 both ways.
func TestVerify_KernelForwardingMapsWithOffsetZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true})
	fams(t, func(t *testing.T, v6 bool) {
		cs := e.capture(t)
		srv := e.listen(t, v6, 8080, nil)
		p := e.connect(t, srv, nil)
		if err := stream(p, streamOpts{C2S: 1 << 20, S2C: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		p.Close()
		c := connectionOf(t, cs.verify(t), p.client)
		if c.Status != verify.StatusOK || c.ClientToServer.Offset != 0 || c.ServerToClient.Offset != 0 || c.ClientToServer.Paired == 0 {
			t.Errorf("kernel forwarding: %+v", c)
		}
	})
}

// tcpdump writes real capture files (libpcap's pcap, full snap length, partial checksums of
// the sending hosts) through seqshiftd for each ISN mode; the CLI must prove them, and find a
// sequence number changed in the file at the frame it was changed in.
func TestVerify_CLIProvesTcpdumpCapturesForEveryISNMode(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump is not installed: skipped")
	}
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: fixed
    match: {server_ports: [7101]}
    client_isn: fixed 1000
    server_isn: fixed 4294967000
  - name: random
    match: {server_ports: [7102]}
    client_isn: random
    server_isn: random
  - name: keyed
    match: {server_ports: [7103]}
    client_isn: keyed
    server_isn: keyed`})
	e.start()
	dir := t.TempDir()
	cpath, spath := filepath.Join(dir, "client.pcap"), filepath.Join(dir, "server.pcap")
	stopC := tcpdump(t, e.lab.Client, e.lab.ClientIface, cpath)
	stopS := tcpdump(t, e.lab.Server, e.lab.ServerIface, spath)
	var flows []flowInfo
	for _, port := range []uint16{7101, 7102, 7103} {
		for _, v6 := range []bool{false, true} {
			srv := e.listen(t, v6, port, nil)
			p := e.connect(t, srv, nil)
			if err := stream(p, streamOpts{C2S: 1 << 20, S2C: 512 << 10}); err != nil {
				t.Fatal(err)
			}
			f, ok := findFlow(e.flows(t), p.client)
			if !ok {
				t.Fatalf("flow of %s not listed", p.client)
			}
			flows = append(flows, f)
			p.Close()
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopC()
	stopS()

	out, code := runVerify(t, cpath, spath, "--json")
	var r verify.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json: %v:\n%s", err, out)
	}
	text, _ := runVerify(t, cpath, spath)
	if code != 0 || !r.OK {
		t.Fatalf("seqshiftd verify exits %d on tcpdump's captures:\n%s", code, text)
	}
	t.Logf("seqshiftd verify on tcpdump captures:\n%s", text)
	for _, f := range flows {
		verifyOffsets(t, &r, f)
	}

	// Change one data segment's seq in the server's file, where tcpdump wrote it.
	frame, err := changeSeq(spath, flows[0].Client)
	if err != nil {
		t.Fatal(err)
	}
	out, code = runVerify(t, cpath, spath, "--json")
	r = verify.Report{}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json: %v:\n%s", err, out)
	}
	c := connectionOf(t, &r, flows[0].Client)
	if code != 1 || c.Status != verify.StatusBroken || c.FirstBreak == nil || c.FirstBreak.Server == nil || c.FirstBreak.Server.Frame != frame {
		text, _ := runVerify(t, cpath, spath)
		t.Fatalf("seq changed in server frame %d: exit %d, break %+v:\n%s", frame, code, c.FirstBreak, text)
	}
}

// tcpdump captures iface of n into path until the returned function is called.
func tcpdump(t *testing.T, n *netlab.NS, iface, path string) (stop func()) {
	t.Helper()
	cmd := n.Command(context.Background(), "tcpdump", "-i", iface, "-s", "0", "-U", "-w", path, "tcp or icmp or icmp6")
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	// tcpdump says "listening on" once its capture is open; what it says is kept for a failure.
	ready, said := make(chan struct{}), make(chan string, 1)
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
		said <- all.String()
	}()
	done := make(chan struct{})
	var output string
	go func() { output = <-said; _ = cmd.Wait(); close(done) }()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("tcpdump exited before it started capturing: %s", output)
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("tcpdump did not start capturing within 5 s")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// runVerify runs `seqshiftd verify` and returns its standard output and exit code.
func runVerify(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *binPath, append([]string{"verify"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String() + errOut.String(), ee.ExitCode()
	}
	t.Fatalf("seqshiftd verify: %v: %s", err, errOut.String())
	return "", -1
}

// changeSeq adds one to the seq of the tenth data segment client sent in the capture at path
// and returns its frame number. The TCP checksum is left as it was: a partial one (what tcpdump
// sees on the sending host) does not cover the seq, and verify must find the seq anyway.
func changeSeq(path string, client netip.AddrPort) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	r, err := capture.NewReader(bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	// Frames are views of the reader's buffer; find the frame, then patch the file bytes at the
	// same position (records follow the 24-byte header, each with a 16-byte record header).
	off, seen := 24, 0
	var f capture.Frame
	for r.Next(&f) == nil {
		start := off + 16
		off = start + len(f.Data)
		ip, linkLen, ok := f.IP()
		if !ok || ip[0]>>4 != 4 || len(ip) < 40 || ip[9] != 6 {
			continue
		}
		ihl := int(ip[0]&0xf) * 4
		tcp := ip[ihl:]
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), uint16(tcp[0])<<8|uint16(tcp[1]))
		if src != client || int(ip[2])<<8|int(ip[3]) <= ihl+int(tcp[12]>>4)*4 {
			continue
		}
		if seen++; seen < 10 {
			continue
		}
		b[start+linkLen+ihl+7]++
		return f.Number, os.WriteFile(path, b, 0o644)
	}
	return 0, errors.New("no tenth IPv4 data segment from " + client.String())
}
