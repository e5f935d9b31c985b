package verify

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/seqshiftd/seqshiftd/capture"
)

var (
	client4 = netip.MustParseAddrPort("198.18.0.2:40001")
	server4 = netip.MustParseAddrPort("198.19.0.2:502")
	router4 = netip.MustParseAddr("198.18.255.1")
	client6 = netip.MustParseAddrPort("[2001:2::2]:40001")
	server6 = netip.MustParseAddrPort("[2001:2:1::2]:502")
	router6 = netip.MustParseAddr("2001:2:ff::1")
)

// transfer is a connection with a handshake, eight 1000-byte segments from the client (the
// fourth lost between the captures when loss, so the server SACKs the rest and the client
// retransmits it), two 500-byte segments back, and the FIN exchange.
func transfer(v6, loss bool) *conv {
	c := &conv{client: client4, server: server4, cISN: 1000, sISN: 4_000_000_000, offC2S: 123456789, offS2C: 1<<32 - 987654}
	if v6 {
		c.client, c.server = client6, server6
	}
	ts := uint32(100)
	add := func(s spec) {
		ts++
		if s.tsval == 0 {
			s.tsval = ts
		}
		c.segs = append(c.segs, s)
	}
	add(spec{c2s: true, flags: fSYN})
	add(spec{flags: fSYN | fACK, ack: 1})
	add(spec{c2s: true, flags: fACK, seq: 1, ack: 1})
	end := uint32(1)
	for k := range 8 {
		s := spec{c2s: true, flags: fACK | fPSH, seq: 1 + uint32(k)*1000, ack: 1, n: 1000}
		if loss && k == 3 {
			s.only = 1
		}
		add(s)
		switch {
		case loss && k >= 4:
			add(spec{flags: fACK, seq: 1, ack: 3001, sack: [][2]uint32{{4001, 1 + uint32(k+1)*1000}}})
		case k%2 == 1:
			end = 1 + uint32(k+1)*1000
			add(spec{flags: fACK, seq: 1, ack: end})
		}
	}
	if loss {
		add(spec{c2s: true, flags: fACK, seq: 3001, ack: 1, n: 1000}) // the retransmission
		add(spec{flags: fACK, seq: 1, ack: 8001})
	}
	add(spec{flags: fACK | fPSH, seq: 1, ack: 8001, n: 500})
	add(spec{flags: fACK | fPSH, seq: 501, ack: 8001, n: 500})
	add(spec{c2s: true, flags: fACK, seq: 8001, ack: 1001})
	add(spec{c2s: true, flags: fACK | fFIN, seq: 8001, ack: 1001})
	add(spec{flags: fACK | fFIN, seq: 1001, ack: 8002})
	add(spec{c2s: true, flags: fACK, seq: 8002, ack: 1002})
	return c
}

// run writes both sides of c (after tamper, if any) and verifies them.
func run(t *testing.T, c *conv, o Options, tamper func(client, server []frame) ([]frame, []frame)) *Report {
	t.Helper()
	cf, sf := c.render(0), c.render(1)
	if tamper != nil {
		cf, sf = tamper(cf, sf)
	}
	return runFrames(t, cf, sf, o)
}

func runFrames(t *testing.T, cf, sf []frame, o Options) *Report {
	t.Helper()
	a := writeCapture(t, cf, capture.LinkEthernet, false, 0)
	b := writeCapture(t, sf, capture.LinkSLL2, true, 0)
	r, err := Readers(bytes.NewReader(a), bytes.NewReader(b), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// frameOf returns the 1-based frame number of conversation segment i in frames.
func frameOf(t *testing.T, frames []frame, i int) int {
	t.Helper()
	for k, f := range frames {
		if f.spec == i {
			return k + 1
		}
	}
	t.Fatalf("segment %d is not in the capture", i)
	return 0
}

func report(r *Report) string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

func only(t *testing.T, r *Report) Connection {
	t.Helper()
	if len(r.Connections) != 1 {
		t.Fatalf("%d connections, want 1:\n%s", len(r.Connections), report(r))
	}
	return r.Connections[0]
}

func TestVerify_ShiftedTransferMapsWithBothOffsets(t *testing.T) {
	for _, tt := range []struct {
		name     string
		v6, loss bool
	}{{"IPv4", false, false}, {"IPv6", true, false}, {"IPv4 loss with SACK", false, true}, {"IPv6 loss with SACK", true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			c := transfer(tt.v6, tt.loss)
			r := run(t, c, Options{}, nil)
			conn := only(t, r)
			if !r.OK || conn.Status != StatusOK || conn.FirstBreak != nil {
				t.Fatalf("not OK:\n%s", report(r))
			}
			if conn.Client != c.client.String() || conn.Server != c.server.String() {
				t.Errorf("client %s server %s", conn.Client, conn.Server)
			}
			cs, sc := conn.ClientToServer, conn.ServerToClient
			if cs.OffsetRaw != c.offC2S || sc.OffsetRaw != c.offS2C || cs.Offset != 123456789 || sc.Offset != -987654 {
				t.Errorf("offsets %d (%d) and %d (%d), want +123456789 and -987654", cs.Offset, cs.OffsetRaw, sc.Offset, sc.OffsetRaw)
			}
			if cs.OffsetFrom != "syn" || sc.OffsetFrom != "syn" {
				t.Errorf("offsets from %q and %q, want syn", cs.OffsetFrom, sc.OffsetFrom)
			}
			// The retransmission is one on the client's side, and arrives out of order on the
			// server's: both count it.
			want := 0
			if tt.loss {
				want = 1
			}
			if cs.OnlyInClient != want || cs.OnlyInServer != 0 || cs.RetransClient != want || cs.RetransServer != want {
				t.Errorf("client->server: only in client %d, only in server %d, retransmissions %d/%d; want %d, 0, %d/%d",
					cs.OnlyInClient, cs.OnlyInServer, cs.RetransClient, cs.RetransServer, want, want, want)
			}
			if cs.Paired != cs.SegmentsServer || sc.Paired != sc.SegmentsClient || sc.OnlyInClient+sc.OnlyInServer != 0 {
				t.Errorf("paired %d of %d and %d of %d", cs.Paired, cs.SegmentsServer, sc.Paired, sc.SegmentsClient)
			}
			if tt.loss && cs.FirstOnlyInClient == nil {
				t.Error("the lost segment is not shown")
			}
		})
	}
}

// Each tampering is reported at the segment tampered with, both sides' frames named.
func TestVerify_TamperingIsReportedAtTheRightSegment(t *testing.T) {
	c := transfer(false, true)
	// Conversation segments tampered with: a data segment, a SACK-carrying dup ack.
	var data, dupAck int
	for i, s := range c.segs {
		if s.c2s && s.n > 0 && s.seq == 5001 {
			data = i
		}
		if len(s.sack) > 0 && dupAck == 0 {
			dupAck = i
		}
	}
	for _, tt := range []struct {
		name   string
		spec   int
		dir    string
		what   string
		tamper func(f *frame)
	}{
		{"one seq changed", data, "client_to_server", "seq ", func(f *frame) { f.seq++ }},
		{"one SACK edge off", dupAck, "server_to_client", "SACK block 1 right edge", func(f *frame) { f.sack[1] -= 1 }},
		{"one ack changed", dupAck, "server_to_client", "ack ", func(f *frame) { f.ack += 1000 }},
		{"a checksum broken", data, "client_to_server", "TCP checksum invalid on the server side", func(f *frame) { f.badCsum = true }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cf, sf := c.render(0), c.render(1)
			k := frameOf(t, sf, tt.spec) - 1
			tt.tamper(&sf[k])
			r := runFrames(t, cf, sf, Options{})
			conn := only(t, r)
			br := conn.FirstBreak
			if r.OK || conn.Status != StatusBroken || br == nil {
				t.Fatalf("tampering not found:\n%s", report(r))
			}
			if br.Direction != tt.dir || !strings.Contains(br.What, tt.what) ||
				br.Client == nil || br.Client.Frame != frameOf(t, cf, tt.spec) || br.Server == nil || br.Server.Frame != k+1 {
				t.Errorf("break %+v, want %s %q at client frame %d, server frame %d:\n%s", br, tt.dir, tt.what, frameOf(t, cf, tt.spec), k+1, report(r))
			}
			if n := conn.ClientToServer.Broken + conn.ServerToClient.Broken; n != 1 {
				t.Errorf("%d broken segments, want 1", n)
			}
		})
	}
	t.Run("a segment missing on one side", func(t *testing.T) {
		cf, sf := c.render(0), c.render(1)
		first := -1
		for i, s := range c.segs {
			if s.c2s && s.n > 0 {
				first = i
				break
			}
		}
		k := frameOf(t, sf, first) - 1
		sf = append(sf[:k:k], sf[k+1:]...)
		r := runFrames(t, cf, sf, Options{})
		cs := only(t, r).ClientToServer
		if !r.OK || cs.OnlyInClient != 2 || cs.FirstOnlyInClient == nil || cs.FirstOnlyInClient.Frame != frameOf(t, cf, first) {
			t.Fatalf("missing segment at client frame %d not reported first (a drop, not a break):\n%s", frameOf(t, cf, first), report(r))
		}
		r = runFrames(t, cf, sf, Options{Strict: true})
		br := only(t, r).FirstBreak
		if r.OK || br == nil || br.Client == nil || br.Client.Frame != frameOf(t, cf, first) || br.Server != nil {
			t.Fatalf("strict: break %+v:\n%s", br, report(r))
		}
	})
}

func TestVerify_ConnectionStartedBeforeTheCapture(t *testing.T) {
	c := transfer(true, false)
	r := run(t, c, Options{}, func(cf, sf []frame) ([]frame, []frame) {
		return cf[5:], sf[5:] // no handshake, no first segments
	})
	conn := only(t, r)
	cs, sc := conn.ClientToServer, conn.ServerToClient
	if !r.OK || cs.OffsetFrom != "segments" || cs.OffsetRaw != c.offC2S || sc.OffsetRaw != c.offS2C {
		t.Fatalf("offsets %+d from %q and %+d from %q:\n%s", cs.Offset, cs.OffsetFrom, sc.Offset, sc.OffsetFrom, report(r))
	}
}

func TestVerify_GSOSuperPacketPairsWithItsSegments(t *testing.T) {
	// The client's stack hands its capture one 3000-byte super-packet; the server's capture
	// holds the three segments it was cut into, with the same timestamps.
	c := &conv{client: client4, server: server4, cISN: 1000, sISN: 2000, offC2S: 5000, offS2C: 7000}
	c.segs = []spec{
		{c2s: true, flags: fSYN, tsval: 1},
		{flags: fSYN | fACK, ack: 1, tsval: 2},
		{c2s: true, flags: fACK, seq: 1, ack: 1, tsval: 3},
		{c2s: true, flags: fACK, seq: 1, ack: 1, n: 1000, tsval: 4, gsoGroupOf: 3},
		{c2s: true, flags: fACK, seq: 1001, ack: 1, n: 1000, tsval: 4},
		{c2s: true, flags: fACK, seq: 2001, ack: 1, n: 1000, tsval: 4},
		{flags: fACK, seq: 1, ack: 3001, tsval: 5},
	}
	r := run(t, c, Options{Strict: true}, nil)
	cs := only(t, r).ClientToServer
	if !r.OK || cs.GSOPaired != 1 || cs.Paired != 5 || cs.OnlyInClient+cs.OnlyInServer != 0 {
		t.Fatalf("GSO super-packet: %d paired by range, %d pairs, one-sided %d/%d:\n%s", cs.GSOPaired, cs.Paired, cs.OnlyInClient, cs.OnlyInServer, report(r))
	}
	// A piece lost on the way: the rest still pair, and the super-packet counts as one-sided.
	r = run(t, c, Options{}, func(cf, sf []frame) ([]frame, []frame) {
		return cf, append(sf[:4:4], sf[5:]...)
	})
	cs = only(t, r).ClientToServer
	if !r.OK || cs.GSOPaired != 1 || cs.OnlyInClient != 1 || cs.FirstOnlyInClient == nil || cs.FirstOnlyInClient.Frame != 4 {
		t.Fatalf("GSO super-packet with a piece lost: %d by range, one-sided %d:\n%s", cs.GSOPaired, cs.OnlyInClient, report(r))
	}
	// A piece whose ack is wrong is a break at that piece.
	r = run(t, c, Options{}, func(cf, sf []frame) ([]frame, []frame) {
		sf[4].ack++
		return cf, sf
	})
	if br := only(t, r).FirstBreak; r.OK || br == nil || br.Server.Frame != 5 || br.Client.Frame != 4 || !strings.Contains(br.What, "ack") {
		t.Fatalf("wrong ack in a GSO piece: %+v\n%s", br, report(r))
	}
}

func TestVerify_TruncatedCaptureVerifiesWhatIsThereAndSaysWhatWasNot(t *testing.T) {
	c := transfer(false, true)
	cf, sf := c.render(0), c.render(1)
	a := writeCapture(t, cf, capture.LinkSLL, false, 96)
	b := writeCapture(t, sf, capture.LinkEthernet, true, 0)
	r, err := Readers(bytes.NewReader(a), bytes.NewReader(b), Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn := only(t, r)
	cs := conn.ClientToServer
	if !r.OK || r.Client.Truncated == 0 || cs.ChecksumsUnchecked == 0 || cs.OnlyInClient != 1 {
		t.Fatalf("truncated %d, unchecked %d:\n%s", r.Client.Truncated, cs.ChecksumsUnchecked, report(r))
	}
	// The seq of a cut segment is still checked.
	k := frameOf(t, sf, 5) - 1
	sf[k].seq += 7
	b = writeCapture(t, sf, capture.LinkEthernet, true, 0)
	r, _ = Readers(bytes.NewReader(a), bytes.NewReader(b), Options{})
	if br := only(t, r).FirstBreak; r.OK || br == nil || br.Server.Frame != k+1 {
		t.Fatalf("seq change in a truncated capture not found:\n%s", report(r))
	}
}

func TestVerify_KernelForwardingHasOffsetZero(t *testing.T) {
	c := transfer(false, false)
	c.offC2S, c.offS2C = 0, 0
	r := run(t, c, Options{Strict: true}, nil)
	conn := only(t, r)
	if !r.OK || conn.ClientToServer.Offset != 0 || conn.ServerToClient.Offset != 0 {
		t.Fatalf("not OK with offset 0:\n%s", report(r))
	}
}

func TestVerify_ICMPErrorQuotesAreChecked(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		router := router4
		if v6 {
			router = router6
		}
		// A router between the gateway and the server finds the client's segment too big: its
		// error is seen only on the client side, and must quote the client's numbering.
		base := transfer(v6, false)
		quote := func(only int) *conv {
			c := *base
			c.segs = append([]spec(nil), base.segs...)
			for i, s := range c.segs {
				if s.c2s && s.seq == 2001 && s.n > 0 {
					q := s
					q.icmpQuote, q.icmpFrom, q.only = true, router, only
					q.c2s = true
					c.segs = append(c.segs[:i+1:i+1], append([]spec{q}, c.segs[i+1:]...)...)
					return &c
				}
			}
			t.Fatal("no segment to quote")
			return nil
		}
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			r := run(t, quote(1), Options{}, nil)
			if conn := only(t, r); !r.OK || conn.ICMP.OneSidedOK != 1 {
				t.Fatalf("one-sided error: %+v\n%s", conn.ICMP, report(r))
			}
			r = run(t, quote(0), Options{}, nil)
			if conn := only(t, r); !r.OK || conn.ICMP.Paired != 1 {
				t.Fatalf("paired error: %+v\n%s", conn.ICMP, report(r))
			}
			r = run(t, quote(0), Options{}, func(cf, sf []frame) ([]frame, []frame) {
				for k := range sf {
					if sf[k].icmp != nil {
						q := *sf[k].icmp
						q.seq++
						sf[k].icmp = &q
					}
				}
				return cf, sf
			})
			if conn := only(t, r); r.OK || conn.ICMP.Broken != 1 || conn.FirstBreak == nil || conn.FirstBreak.Server == nil ||
				!strings.HasPrefix(conn.FirstBreak.What, "ICMP quoted seq") {
				t.Fatalf("paired error with a wrong quoted seq: %+v\n%s", conn.ICMP, report(r))
			}
			// Untranslated: the client receives the server's numbering in the quote.
			c := quote(1)
			r = run(t, c, Options{}, func(cf, sf []frame) ([]frame, []frame) {
				for k := range cf {
					if cf[k].icmp != nil {
						q := *cf[k].icmp
						q.seq += c.offC2S
						cf[k].icmp = &q
					}
				}
				return cf, sf
			})
			conn := only(t, r)
			if r.OK || conn.ICMP.Broken != 1 || conn.FirstBreak == nil || !strings.Contains(conn.FirstBreak.What, "quoted seq") {
				t.Fatalf("untranslated quote not found: %+v\n%s", conn.ICMP, report(r))
			}
			// The seq translated, the ack not.
			r = run(t, c, Options{}, func(cf, sf []frame) ([]frame, []frame) {
				for k := range cf {
					if cf[k].icmp != nil {
						q := *cf[k].icmp
						q.ack -= c.offS2C
						cf[k].icmp = &q
					}
				}
				return cf, sf
			})
			conn = only(t, r)
			if r.OK || conn.ICMP.Broken != 1 || conn.FirstBreak == nil || !strings.Contains(conn.FirstBreak.What, "quoted ack") {
				t.Fatalf("untranslated quoted ack not found: %+v\n%s", conn.ICMP, report(r))
			}
		})
	}
}

func TestVerify_EveryLinkTypeAndFormat(t *testing.T) {
	c := transfer(true, true)
	cf, sf := c.render(0), c.render(1)
	for _, link := range []capture.LinkType{capture.LinkEthernet, capture.LinkSLL, capture.LinkSLL2, capture.LinkRaw} {
		for _, ng := range []bool{false, true} {
			a := writeCapture(t, cf, link, ng, 0)
			b := writeCapture(t, sf, link, !ng, 0)
			r, err := Readers(bytes.NewReader(a), bytes.NewReader(b), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if conn := only(t, r); !r.OK || conn.ClientToServer.Paired == 0 {
				t.Errorf("link type %d, pcapng %v: not OK:\n%s", link, ng, report(r))
			}
		}
	}
}

func TestVerify_ReusedTupleIsTwoConnections(t *testing.T) {
	a, b := transfer(false, false), transfer(false, false)
	// The same ISN on the server's side both times, as client_isn fixed gives.
	b.cISN, b.offC2S = 77777, a.cISN+a.offC2S-77777
	cf, sf := a.render(0), a.render(1)
	later := func(fs []frame) []frame {
		for k := range fs {
			fs[k].t = fs[k].t.Add(10e9)
		}
		return fs
	}
	cf = append(cf, later(b.render(0))...)
	sf = append(sf, later(b.render(1))...)
	r := runFrames(t, cf, sf, Options{})
	if len(r.Connections) != 2 || !r.OK || r.Connections[1].ClientToServer.OffsetRaw != b.offC2S {
		t.Fatalf("want two connections, the second with offset %+d:\n%s", int32(b.offC2S), report(r))
	}
}

func TestVerify_ConnectionInOneCaptureOnlyDoesNotFail(t *testing.T) {
	c := transfer(false, false)
	other := transfer(false, false)
	other.client = netip.MustParseAddrPort("198.18.0.9:22")
	cf := append(c.render(0), other.render(0)...)
	r := runFrames(t, cf, c.render(1), Options{})
	if len(r.Connections) != 2 || !r.OK || r.Connections[1].Status != StatusOneSided || r.Connections[1].In != "client_capture" {
		t.Fatalf("one-sided connection:\n%s", report(r))
	}
}

// Scripts read the JSON: its field names are a contract.
func TestReport_JSONFieldNamesAreStable(t *testing.T) {
	r := run(t, transfer(false, true), Options{}, nil)
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"client_capture", "server_capture", "connections", "ok"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q", k)
		}
	}
	conn := m["connections"].([]any)[0].(map[string]any)
	for _, k := range []string{"client", "server", "status", "in", "client_to_server", "server_to_client", "icmp"} {
		if _, ok := conn[k]; !ok {
			t.Errorf("connection has no %q", k)
		}
	}
	d := conn["client_to_server"].(map[string]any)
	for _, k := range []string{"offset", "offset_raw", "offset_known", "offset_from", "paired", "gso_super_packets",
		"only_in_client_capture", "only_in_server_capture", "retransmissions_client_capture",
		"retransmissions_server_capture", "broken", "checksums_partial", "checksums_unchecked", "first_only_in_client_capture"} {
		if _, ok := d[k]; !ok {
			t.Errorf("direction has no %q", k)
		}
	}
}

// IPv6 without timestamps: pure ACKs look all alike (no IPv4 ID either). A lost one must be a
// drop, not a break of the next one.
func TestVerify_LostAckAmongEqualsIsADropNotABreak(t *testing.T) {
	c := &conv{client: client6, server: server6, cISN: 10, sISN: 20, offC2S: 1 << 31, offS2C: 3}
	c.segs = []spec{{c2s: true, flags: fSYN}, {flags: fSYN | fACK, ack: 1}, {c2s: true, flags: fACK, seq: 1, ack: 1}}
	for k := range 40 {
		c.segs = append(c.segs, spec{c2s: true, flags: fACK, seq: 1 + uint32(k)*100, ack: 1, n: 100})
		// The server acknowledges each segment; the tenth ACK is lost before the client's side.
		ack := spec{flags: fACK, seq: 1, ack: 1 + uint32(k+1)*100}
		if k == 9 {
			ack.only = 2
		}
		c.segs = append(c.segs, ack)
	}
	for i := range c.segs {
		c.segs[i].noTS = true
	}
	r := run(t, c, Options{}, nil)
	sc := only(t, r).ServerToClient
	if !r.OK || sc.OnlyInServer != 1 || sc.Broken != 0 || sc.FirstOnlyInServer == nil || sc.FirstOnlyInServer.Ack != c.cISN+c.offC2S+1001 {
		t.Fatalf("lost ACK among equals: %+v\n%s", sc, report(r))
	}
}
