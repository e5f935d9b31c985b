package netns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqshiftd/seqshiftd/netlab"
)

// The tests here put seqshiftd on a gateway that is not clean: a stateful forward policy, the
// usual hardening line against invalid packets, masquerade toward the servers. They show what
// the kernel datapath is for: the gateway's conntrack, NAT and firewall see each intercepted
// packet once, in one sequence space, with its real interfaces.

// requireTool skips the test when a command it needs is not installed.
func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (tools/install-deps installs it): skipped", name)
	}
}

// datapath is the datapath the suite runs (the -datapath flag).
func datapath() string { return *datapathFlag }

// natRuleset is a typical Debian NAT gateway's nftables ruleset for the lab: forward policy
// drop, established and related accepted, invalid dropped and counted, new connections only
// from the client side to the server side, masquerade out of the server side.
func natRuleset(l *netlab.Lab) string {
	return fmt.Sprintf(`
table inet ssdfw {
	counter invalid { }
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state invalid counter name invalid drop
		ct state established,related accept
		iifname "%[1]s" oifname "%[2]s" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "%[2]s" masquerade
	}
}
`, l.GatewayClientIface, l.GatewayServerIface)
}

// nft loads a ruleset into the gateway namespace and registers its removal.
func (e *env) nft(t testing.TB, ruleset string) {
	t.Helper()
	requireTool(t, "nft")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := e.lab.Gateway.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	for _, m := range regexp.MustCompile(`table (\w+) (\w+)`).FindAllStringSubmatch(ruleset, -1) {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = e.lab.Gateway.Run(ctx, "nft", "delete", "table", m[1], m[2])
		})
	}
}

// invalidDrops reads the ruleset's counter of packets dropped as ct state invalid.
func (e *env) invalidDrops(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.lab.Gateway.Run(ctx, "nft", "list", "counter", "inet", "ssdfw", "invalid")
	if err != nil {
		t.Fatalf("nft list counter: %v: %s", err, out)
	}
	m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// conntrackEntries returns the gateway's conntrack lines for TCP connections from client.
func (e *env) conntrackEntries(t testing.TB, client netip.AddrPort) []string {
	t.Helper()
	requireTool(t, "conntrack")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fam := "ipv4"
	if client.Addr().Is6() {
		fam = "ipv6"
	}
	out, _ := e.lab.Gateway.Run(ctx, "conntrack", "-L", "-f", fam, "-p", "tcp", "--sport", strconv.Itoa(int(client.Port())))
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "tcp") && strings.Contains(l, "src="+client.Addr().String()+" ") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestNATGateway_FirewallConntrackAndMasqueradeSeeOnePass(t *testing.T) {
	if datapath() == "tun" {
		t.Skip("datapath tun: intercepted packets are forwarded twice, once in each sequence space, " +
			"so `ct state invalid drop` drops them and masquerade is decided on the pass toward the TUN " +
			"(README, Datapaths); the kernel datapath is what fixes this")
	}
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: behind-nat
    match: {server_ports: [7001]}
    client_isn: random
    server_isn: fixed 123456789`})
	e.nft(t, natRuleset(e.lab))
	e.start()
	fams(t, func(t *testing.T, v6 bool) {
		cs := e.capture(t)
		srv := e.listen(t, v6, 7001, nil)
		p := e.connect(t, srv, nil)
		masq := e.lab.GatewayServerAddr4
		if v6 {
			masq = e.lab.GatewayServerAddr6
		}
		seen := netip.MustParseAddrPort(p.s.RemoteAddr().String())
		if seen.Addr() != masq {
			t.Errorf("the server saw the client as %s, want the gateway's masqueraded address %s", seen, masq)
		}
		// The server's wire carries the masqueraded source; find the SYN by the port the NAT kept
		// or chose, from the server's own view of the connection.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		syn, err := cs.server.Wait(ctx, func(s netlab.Segment) bool {
			return s.Src == seen && s.Flags&(netlab.SYN|netlab.ACK) == netlab.SYN
		})
		if err != nil {
			t.Fatalf("server never saw the SYN from %s: %v", seen, err)
		}
		synack, err := cs.client.Wait(ctx, func(s netlab.Segment) bool {
			return s.Dst == p.client && s.Has(netlab.SYN|netlab.ACK)
		})
		if err != nil {
			t.Fatalf("client never saw the SYN-ACK: %v", err)
		}
		if synack.Seq != 123456789 {
			t.Errorf("client saw the server's ISN as %d, want 123456789 (server_isn fixed)", synack.Seq)
		}
		clientSYN, _ := cs.client.Wait(ctx, func(s netlab.Segment) bool {
			return s.Src == p.client && s.Flags&(netlab.SYN|netlab.ACK) == netlab.SYN
		})
		if syn.Seq == clientSYN.Seq {
			t.Errorf("client_isn random: the server saw the client's real ISN %d", syn.Seq)
		}
		if err := stream(p, streamOpts{C2S: 4 << 20, S2C: 4 << 20}); err != nil {
			t.Fatal(err)
		}
		if got := e.conntrackEntries(t, p.client); len(got) != 1 {
			t.Errorf("conntrack has %d entries for the connection, want 1:\n%s", len(got), strings.Join(got, "\n"))
		} else if !strings.Contains(got[0], "ESTABLISHED") || !strings.Contains(got[0], "ASSURED") {
			t.Errorf("conntrack entry is not ESTABLISHED and ASSURED: %s", got[0])
		}
		p.Close()
	})
	if n := e.invalidDrops(t); n != 0 {
		t.Errorf("nftables dropped %d packets as ct state invalid, want 0", n)
	}
	// Every byte above crossed the firewall; the flows were shifted.
	fl := e.flows(t)
	if len(fl) == 0 {
		t.Fatal("no flows listed")
	}
	for _, f := range fl {
		if f.Rule != "behind-nat" || f.OffsetS2C == 0 {
			t.Errorf("flow %s->%s: rule %q, offset s2c %d; want behind-nat with a shift", f.Client, f.Server, f.Rule, f.OffsetS2C)
		}
	}
}

func TestTTL_TheServerSeesTheHopLimitOfKernelForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: shifted
    match: {server_ports: [7002]}
    client_isn: random
    server_isn: random`})
	type ttls struct{ toServer, toClient uint8 }
	measure := func(v6 bool) ttls {
		srv := e.listen(t, v6, 7002, nil)
		cs := e.capture(t)
		p := e.connect(t, srv, nil)
		h := cs.handshake(t, p.client)
		if err := stream(p, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
			t.Fatal(err)
		}
		p.Close()
		srv.ln.Close()
		return ttls{h.ServerSYN.TTL, h.ClientSYNACK.TTL}
	}
	// Plain kernel forwarding first (no daemon yet), then the same through seqshiftd.
	plain := [2]ttls{measure(false), measure(true)}
	e.start()
	for i, v6 := range []bool{false, true} {
		got := measure(v6)
		want := plain[i]
		if datapath() == "tun" {
			// Forwarded twice, into the TUN and out of it (README, visible side effects).
			want = ttls{want.toServer - 1, want.toClient - 1}
		}
		if got != want {
			t.Errorf("IPv6 %t, datapath %s: the server saw TTL %d and the client %d; want %d and %d (kernel forwarding: %d and %d)",
				v6, datapath(), got.toServer, got.toClient, want.toServer, want.toClient, plain[i].toServer, plain[i].toClient)
		}
	}
}

// TestKernel_CrashLosesNoConnection: with the kernel datapath no crash loses a connection whose
// handshake was forwarded, whatever its ISN mode, even with no snapshot at all: the map entry
// is written before the SYN and the SYN-ACK leave, the programs and the map outlive the
// process (established flows keep being shifted while it is gone), and the next daemon carries
// the flows over from the previous instance's map.
func TestKernel_CrashLosesNoConnection(t *testing.T) {
	if datapath() != "kernel" {
		t.Skip("datapath tun: a crash loses what the last snapshot does not hold (README, failure modes)")
	}
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: stateful
    match: {server_ports: [7003]}
    client_isn: random
    server_isn: random`})
	d := e.start()
	fams(t, func(t *testing.T, v6 bool) {
		srv := e.listen(t, v6, 7003, nil)
		p := e.connect(t, srv, nil)
		done := startStream(p, streamOpts{C2S: 4 << 20, S2C: 4 << 20, Rate: 2 << 20, Timeout: 45 * time.Second})
		time.Sleep(300 * time.Millisecond)
		before, ok := findFlow(e.flows(t), p.client)
		if !ok || before.ShiftedIn != "kernel" {
			t.Fatalf("flow before the crash: %+v (found %t), want it shifted in the kernel", before, ok)
		}
		if err := d.signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.exited
		os.Remove(e.dir + "/flows.state")
		time.Sleep(300 * time.Millisecond) // the established flow goes on in the kernel meanwhile
		d = e.start()
		if err := <-done; err != nil {
			t.Fatalf("transfer across a SIGKILL without a snapshot: %v", err)
		}
		after, ok := findFlow(e.flows(t), p.client)
		if !ok || after.OffsetC2S != before.OffsetC2S || after.OffsetS2C != before.OffsetS2C {
			t.Errorf("flow after the crash: %+v (found %t), before: %+v", after, ok, before)
		}
		if st, _ := e.status(t); st.Counters["flows_recovered"] < 1 {
			t.Errorf("flows_recovered = %d, want the flow carried over from the kernel map", st.Counters["flows_recovered"])
		}
	})
}

// TestFINAndRST_EndFlowsInFlows: with the kernel datapath the established data never reaches
// the daemon, but every FIN and RST does, so `flows` still follows a connection to its end; the
// flow leaves the kernel's hands (shifted_in daemon) as soon as it starts closing.
func TestFINAndRST_EndFlowsInFlows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, netlab.Options{}, config{Offload: true, Rules: `
  - name: ending
    match: {server_ports: [7005]}
    client_isn: random
    server_isn: random`})
	e.start()
	srv := e.listen(t, false, 7005, nil)
	state := func(p *pair) (flowInfo, bool) { return findFlow(e.flows(t), p.client) }

	fin := e.connect(t, srv, nil)
	if err := stream(fin, streamOpts{C2S: 256 << 10, S2C: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	if f, ok := state(fin); !ok || f.State != "established" || (datapath() == "kernel" && f.ShiftedIn != "kernel") {
		t.Fatalf("before the close: %+v (found %t)", f, ok)
	}
	fin.c.Close()
	fin.s.Close()
	if !waitFor(5*time.Second, func() bool { f, ok := state(fin); return ok && f.State == "time_wait" }) {
		f, _ := state(fin)
		t.Errorf("after both FINs and their ACKs: %+v, want time_wait", f)
	}
	if f, _ := state(fin); datapath() == "kernel" && f.ShiftedIn != "daemon" {
		t.Errorf("a closing flow is shifted in %q, want the daemon to see its last segments", f.ShiftedIn)
	}

	rst := e.connect(t, srv, nil)
	if err := stream(rst, streamOpts{C2S: 64 << 10, S2C: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	rst.c.(*net.TCPConn).SetLinger(0) // close with an RST
	rst.c.Close()
	if !waitFor(5*time.Second, func() bool { f, ok := state(rst); return ok && f.State == "close" }) {
		f, _ := state(rst)
		t.Errorf("after the client's RST: %+v, want close", f)
	}
}
