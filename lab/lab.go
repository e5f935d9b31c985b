// Package lab is `seqshiftd lab`: it builds a client—gateway—server namespace topology, runs the
// real daemon in the gateway on the embedded example policy (default.yaml), makes a few real TCP
// connections through it and prints, per connection, what each end put on the wire and what the
// other end saw, and whether every segment mapped, as `seqshiftd verify` judges the two captures.
//
// The lab must never touch the root namespace: everything it creates lives in namespaces it
// names itself and removes at the end (unless asked to keep them).
package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/seqshiftd/seqshiftd/control"
	"github.com/seqshiftd/seqshiftd/netlab"
	"github.com/seqshiftd/seqshiftd/verify"
)

//go:embed default.yaml
var defaultPolicy string

// Options configure one lab run.
type Options struct {
	Binary string    // the seqshiftd executable to run in the gateway
	Keep   bool      // leave the namespaces and the daemon running
	Out    io.Writer // the report
}

// connection is one demonstration connection and the rule it exercises.
type connection struct {
	rule    string
	network string // tcp4 or tcp6
	port    uint16
	note    string
}

// connections exercise every rule of default.yaml; the second 5001 connection shows the
// `sequential` counter moving on.
var connections = []connection{
	{"legacy-plc", "tcp4", 502, "client_isn fixed 1000: the server always sees ISN 1000"},
	{"reproducible", "tcp4", 5001, "client_isn sequential 100000 1000, server_isn fixed 7000000"},
	{"reproducible", "tcp4", 5001, "the next connection gets 101000"},
	{"signed-bug", "tcp6", 5002, "both ISNs drawn in 1-2147483647: never negative as int32"},
	{"weak-isn-host", "tcp4", 5003, "both ISNs strong random, as pf's modulate state"},
	{"gateway-pair", "tcp6", 5004, "keyed: offsets any gateway with the same key derives"},
	{"(none)", "tcp4", 8080, "no rule matches: forwarded untouched"},
}

const (
	upload   = 1 << 20   // bytes the client sends
	download = 256 << 10 // bytes the server sends back
)

// Run builds the lab, runs the connections, prints the report and tears the lab down.
func Run(ctx context.Context, o Options) error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root: it creates network namespaces, veth links and a TUN device")
	}
	// Namespaces are named sslab-PID-..., so that a later run can tell and remove what a killed
	// run left behind.
	if gone, err := netlab.RemoveStale(namePrefix); err == nil && len(gone) > 0 {
		fmt.Fprintf(o.Out, "removed namespaces left by an earlier, killed lab: %v\n", gone)
	}
	name := namePrefix + "-" + strconv.Itoa(os.Getpid())
	l, err := netlab.New(netlab.Options{Name: name})
	if err != nil {
		return fmt.Errorf("build namespaces: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			_ = l.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "seqshiftd-lab-")
	if err != nil {
		return err
	}
	defer func() {
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}()
	cfgPath, err := writeConfig(l, dir)
	if err != nil {
		return err
	}
	d, err := startDaemon(ctx, l, o.Binary, cfgPath, dir, o.Keep)
	if err != nil {
		return err
	}
	defer func() {
		if !keep {
			d.stop()
		}
	}()
	fmt.Fprintf(o.Out, "seqshiftd lab: client %s %s — gateway %s (seqshiftd, %s) — server %s %s\n",
		l.ClientAddr4, l.ClientAddr6, l.Gateway.Name, datapathOf(filepath.Join(dir, "control.sock"), l), l.ServerAddr4, l.ServerAddr6)
	fmt.Fprintf(o.Out, "policy: %s   daemon log: %s\n\n", cfgPath, d.logPath)

	results, err := runConnections(ctx, l)
	if err != nil {
		return fmt.Errorf("%w (daemon log: %s)", err, d.logPath)
	}
	failed := report(o.Out, results)
	if err := showFlows(o.Out, filepath.Join(dir, "control.sock")); err != nil {
		fmt.Fprintf(o.Out, "flows: %v\n", err)
	}
	if o.Keep {
		keep = true
		printKeep(o.Out, l, d, cfgPath, dir, o.Binary)
	}
	if failed > 0 {
		return fmt.Errorf("%d connection(s) did not behave as the policy says", failed)
	}
	return nil
}

const (
	tunName    = "seqlab0"
	namePrefix = "sslab"
)

func writeConfig(l *netlab.Lab, dir string) (string, error) {
	tmpl, err := template.New("default.yaml").Option("missingkey=error").Parse(defaultPolicy)
	if err != nil {
		return "", fmt.Errorf("embedded policy: %w", err)
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"Tun":                tunName,
		"GatewayClientIface": l.GatewayClientIface,
		"GatewayServerIface": l.GatewayServerIface,
		"ServerPrefix4":      l.ServerPrefix4,
		"ServerPrefix6":      l.ServerPrefix6,
		"ClientPrefix4":      l.ClientPrefix4,
		"ClientPrefix6":      l.ClientPrefix6,
		"Dir":                dir,
	})
	if err != nil {
		return "", fmt.Errorf("embedded policy: %w", err)
	}
	path := filepath.Join(dir, "seqshiftd.yaml")
	return path, os.WriteFile(path, b.Bytes(), 0o600)
}

// daemon is the seqshiftd process running in the gateway namespace.
type daemon struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func startDaemon(ctx context.Context, l *netlab.Lab, bin, cfg, dir string, keep bool) (*daemon, error) {
	logPath := filepath.Join(dir, "seqshiftd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Not tied to ctx: with --keep the daemon outlives this process, and it must get SIGTERM
	// (to write its snapshot and remove its steering) rather than SIGKILL.
	cmd := l.Gateway.Command(context.Background(), bin, "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !keep {
		// If the lab is killed outright, the daemon still gets its SIGTERM, removes its steering
		// and exits, so the next run can remove the namespaces.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start seqshiftd: %w", err)
	}
	logf.Close()
	d := &daemon{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()

	sock := filepath.Join(dir, "control.sock")
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := control.Dial(sock, time.Second); err == nil {
			st, err := c.Status()
			c.Close()
			if err == nil && st.Steering {
				return d, nil
			}
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("seqshiftd exited during start-up; its log:\n%s", tail(logPath))
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("seqshiftd did not report steering installed within 15s; its log:\n%s", tail(logPath))
		}
	}
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// view is one connection's handshake and first data as seen on one end's wire.
type view struct {
	synSeq, synAckSeq, synAckAck uint32
	c2sSeq, c2sAck               uint32 // first client data segment
	s2cSeq, s2cAck               uint32 // first server data segment
	seen                         int    // segments of the connection captured
}

// result is one connection's outcome.
type result struct {
	connection
	client, server         netip.AddrPort // as the client dialled
	clientView, serverView view
	upOK, downOK           bool
	up, down               int64
	err                    error
	verified               *verify.Connection // what `seqshiftd verify` found on the two captures; nil: not found
}

func runConnections(ctx context.Context, l *netlab.Lab) ([]result, error) {
	ccap, err := l.Client.Capture(l.ClientIface)
	if err != nil {
		return nil, fmt.Errorf("capture on the client: %w", err)
	}
	defer ccap.Close()
	scap, err := l.Server.Capture(l.ServerIface)
	if err != nil {
		return nil, fmt.Errorf("capture on the server: %w", err)
	}
	defer scap.Close()

	results := make([]result, 0, len(connections))
	for i, c := range connections {
		r := result{connection: c}
		r.err = r.transfer(ctx, l, uint64(i))
		results = append(results, r)
	}
	time.Sleep(200 * time.Millisecond) // let the captures drain the last FINs
	cseg, sseg := ccap.Segments(), scap.Segments()
	// Whether every segment mapped is judged by `seqshiftd verify`'s code, on the same two
	// captures written as pcap: the lab proves what an operator's own captures would.
	var cpcap, spcap bytes.Buffer
	if err := errors.Join(ccap.WritePcap(&cpcap), scap.WritePcap(&spcap)); err != nil {
		return nil, err
	}
	rep, err := verify.Readers(&cpcap, &spcap, verify.Options{})
	if err != nil {
		return nil, fmt.Errorf("verify the captures: %w", err)
	}
	for i := range results {
		r := &results[i]
		r.clientView = viewOf(cseg, r.client, r.server)
		r.serverView = viewOf(sseg, r.client, r.server)
		for k := range rep.Connections {
			if rep.Connections[k].Client == r.client.String() {
				r.verified = &rep.Connections[k]
			}
		}
	}
	return results, nil
}

// transfer runs r's connection: the client uploads, the server checks and sends back its own
// data; both sides hash what they received. It fills in r's addresses, byte counts and hash
// comparisons as far as it gets.
func (r *result) transfer(ctx context.Context, l *netlab.Lab, seed uint64) error {
	srvAddr := l.ServerAddr4
	if r.network == "tcp6" {
		srvAddr = l.ServerAddr6
	}
	r.server = netip.AddrPortFrom(srvAddr, r.port)
	ln, err := l.Server.Listen(r.network, r.server.String())
	if err != nil {
		return fmt.Errorf("listen %s: %w", r.server, err)
	}
	defer ln.Close()
	upData, downData := payload(seed, upload), payload(seed+1000, download)

	type srvResult struct {
		n   int64
		sum [sha256.Size]byte
		err error
	}
	srvDone := make(chan srvResult, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			srvDone <- srvResult{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, conn)
		if err == nil {
			_, err = conn.Write(downData)
		}
		srvDone <- srvResult{n: n, sum: [sha256.Size]byte(h.Sum(nil)), err: err}
	}()

	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := l.Client.Dial(dctx, r.network, r.server.String())
	if err != nil {
		return fmt.Errorf("connect %s: %w", r.server, err)
	}
	defer conn.Close()
	r.client = netip.MustParseAddrPort(conn.LocalAddr().String())
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(upData); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	h := sha256.New()
	if r.down, err = io.Copy(h, conn); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	sr := <-srvDone
	r.up = sr.n
	if sr.err != nil {
		return fmt.Errorf("server: %w", sr.err)
	}
	r.upOK = sr.sum == sha256.Sum256(upData)
	r.downOK = [sha256.Size]byte(h.Sum(nil)) == sha256.Sum256(downData)
	return nil
}

func payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

// viewOf extracts a connection's handshake and first data segments from one end's capture.
func viewOf(segs []netlab.Segment, client, server netip.AddrPort) view {
	var v view
	var gotSyn, gotSynAck, gotC2S, gotS2C bool
	for _, s := range segs {
		c2s := s.Src == client && s.Dst == server
		s2c := s.Src == server && s.Dst == client
		if !c2s && !s2c {
			continue
		}
		v.seen++
		syn, ack := s.Flags&0x02 != 0, s.Flags&0x10 != 0
		switch {
		case c2s && syn && !ack && !gotSyn:
			v.synSeq, gotSyn = s.Seq, true
		case s2c && syn && ack && !gotSynAck:
			v.synAckSeq, v.synAckAck, gotSynAck = s.Seq, s.Ack, true
		case c2s && s.PayloadLen > 0 && !gotC2S:
			v.c2sSeq, v.c2sAck, gotC2S = s.Seq, s.Ack, true
		case s2c && s.PayloadLen > 0 && !gotS2C:
			v.s2cSeq, v.s2cAck, gotS2C = s.Seq, s.Ack, true
		}
	}
	return v
}

// report prints the side-by-side table and returns how many connections failed.
func report(w io.Writer, results []result) int {
	failed := 0
	for i, r := range results {
		fmt.Fprintf(w, "[%d] rule %-14s %s %s -> %s\n    %s\n", i+1, r.rule, r.network, r.client, r.server, r.note)
		if r.err != nil {
			failed++
			fmt.Fprintf(w, "    FAILED: %v\n\n", r.err)
			continue
		}
		cv, sv := r.clientView, r.serverView
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\t\tclient's wire\t\tserver's wire\t\n")
		// c2s: the client sent it and the server saw it; the shift is what seqshiftd added on
		// the way, with the same sign as `seqshiftd flows` shows.
		row := func(what string, c2s bool, c, s uint32) {
			arrow, mark := "->", ""
			d := s - c
			if !c2s {
				arrow, d = "<-", c-s
			}
			if d != 0 {
				mark = fmt.Sprintf("shifted %+d", int32(d))
			}
			fmt.Fprintf(tw, "\t%s\t%d\t%s\t%d\t  %s\n", what, c, arrow, s, mark)
		}
		row("client ISN (SYN seq)", true, cv.synSeq, sv.synSeq)
		row("server ISN (SYN-ACK seq)", false, cv.synAckSeq, sv.synAckSeq)
		row("SYN-ACK ack", false, cv.synAckAck, sv.synAckAck)
		row("first upload seq", true, cv.c2sSeq, sv.c2sSeq)
		row("first upload ack", true, cv.c2sAck, sv.c2sAck)
		row("first download seq", false, cv.s2cSeq, sv.s2cSeq)
		row("first download ack", false, cv.s2cAck, sv.s2cAck)
		_ = tw.Flush()
		line, mapped := verifyLine(r.verified)
		fmt.Fprintf(w, "    %s\n", line)
		ok := r.upOK && r.downOK && cv.seen > 0 && sv.seen > 0 && mapped &&
			// Each end must see its own ISN acknowledged: the handshake is consistent.
			cv.synAckAck == cv.synSeq+1 && sv.synAckAck == sv.synSeq+1
		status := "sha256 match both ways, handshake consistent on both ends"
		if !ok {
			failed++
			status = fmt.Sprintf("MISMATCH (upload sha256 ok %t, download sha256 ok %t, segments captured %d/%d)",
				r.upOK, r.downOK, cv.seen, sv.seen)
		}
		fmt.Fprintf(w, "    bytes client->server %d, server->client %d: %s\n\n", r.up, r.down, status)
	}
	return failed
}

// verifyLine summarises verify's verdict on one connection and reports whether it mapped.
func verifyLine(c *verify.Connection) (string, bool) {
	switch {
	case c == nil:
		return "verify: the connection is not in the captures", false
	case c.Status == verify.StatusOK:
		cs, sc := c.ClientToServer, c.ServerToClient
		return fmt.Sprintf("verify: every segment maps: %d client->server at %+d, %d server->client at %+d (%d/%d only on one side)",
			cs.Paired, cs.Offset, sc.Paired, sc.Offset, cs.OnlyInClient+cs.OnlyInServer, sc.OnlyInClient+sc.OnlyInServer), true
	case c.FirstBreak != nil:
		return fmt.Sprintf("verify: %s; first break (%s): %s", strings.ToUpper(c.Status), c.FirstBreak.Direction, c.FirstBreak.What), false
	}
	return "verify: " + strings.ToUpper(c.Status), false
}

func showFlows(w io.Writer, sock string) error {
	c, err := control.Dial(sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(w, "seqshiftd flows (the daemon's view of the same connections):")
	return control.WriteFlowsTable(w, c.Flows)
}

// datapathOf says which datapath the lab's daemon runs, as its status tells.
func datapathOf(sock string, l *netlab.Lab) string {
	c, err := control.Dial(sock, 5*time.Second)
	if err != nil {
		return "datapath unknown: " + err.Error()
	}
	defer c.Close()
	st, err := c.Status()
	switch {
	case err != nil:
		return "datapath unknown: " + err.Error()
	case st.Datapath == "kernel":
		return fmt.Sprintf("datapath kernel: tc programs on %s and %s, TAP %s", l.GatewayClientIface, l.GatewayServerIface, tunName)
	case st.DatapathDetail != "":
		return fmt.Sprintf("datapath %s on TUN %s, because %s", st.Datapath, tunName, st.DatapathDetail)
	}
	return fmt.Sprintf("datapath %s on TUN %s", st.Datapath, tunName)
}

func printKeep(w io.Writer, l *netlab.Lab, d *daemon, cfg, dir, bin string) {
	ns := func(n *netlab.NS) string { return "ip netns exec " + n.Name }
	fmt.Fprintf(w, `
The lab is still up (--keep). seqshiftd runs as pid %d in namespace %s.
  %s %s status -c %s
  %s %s flows -c %s
  %s ip rule; %s ip route show table all | grep -v local   # the TUN datapath's steering
  %s tc filter show dev %s ingress                         # the kernel datapath's programs
  %s nc -l -p 502 &          # a server
  %s nc %s 502              # a client; watch with tcpdump -ni %s on both sides
Tear it all down:
  kill %d; sleep 1; ip netns del %s; ip netns del %s; ip netns del %s; rm -rf %s
`, d.cmd.Process.Pid, l.Gateway.Name,
		ns(l.Gateway), bin, cfg,
		ns(l.Gateway), bin, cfg,
		ns(l.Gateway), ns(l.Gateway),
		ns(l.Gateway), l.GatewayClientIface,
		ns(l.Server),
		ns(l.Client), l.ServerAddr4, l.ClientIface,
		d.cmd.Process.Pid, l.Client.Name, l.Gateway.Name, l.Server.Name, dir)
}
