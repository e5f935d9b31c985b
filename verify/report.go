package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/seqshiftd/seqshiftd/rewrite"
)

// Options tune a verification.
type Options struct {
	// Strict fails a connection that has segments only one capture holds, even when every
	// segment both hold maps: for captures that must be complete (a lab without loss).
	Strict bool
}

// Report is the outcome of a verification. Its JSON field names are stable: scripts read them.
type Report struct {
	Client      FileSummary  `json:"client_capture"`
	Server      FileSummary  `json:"server_capture"`
	Connections []Connection `json:"connections"`
	// OK is true when every connection found in both captures maps (the exit status 0).
	OK bool `json:"ok"`
}

// Connection statuses.
const (
	StatusOK         = "ok"         // every segment both captures hold maps with one offset per direction
	StatusBroken     = "broken"     // at least one does not: see FirstBreak
	StatusUnverified = "unverified" // in both captures, but no segment could be paired to derive an offset
	StatusOneSided   = "one_sided"  // in one capture only (not steered through the gateway, or outside the other capture's time)
)

// Connection is one TCP connection's verdict.
type Connection struct {
	Client string `json:"client"` // address:port of the end that sent the SYN (else the higher port)
	Server string `json:"server"`
	Status string `json:"status"`
	// In says which captures hold the connection: "both", "client_capture", "server_capture".
	In             string     `json:"in"`
	ClientToServer Direction  `json:"client_to_server"`
	ServerToClient Direction  `json:"server_to_client"`
	ICMP           ICMPCounts `json:"icmp"`
	FirstBreak     *Break     `json:"first_break,omitempty"`
}

// Direction is what verify found for one direction of a connection.
type Direction struct {
	// Offset is how far the receiver's numbers are from the sender's (signed: receiver's view
	// minus sender's); OffsetRaw is the same modulo 2^32, as `seqshiftd flows --json` shows it
	// (offset_c2s, offset_s2c).
	Offset      int32  `json:"offset"`
	OffsetRaw   uint32 `json:"offset_raw"`
	OffsetKnown bool   `json:"offset_known"`
	// OffsetFrom says how the offset was found: "syn" (both captures hold the SYN), "segments"
	// (the connection started before a capture: the commonest difference of the first paired
	// segments), "acks" (from the other direction's acknowledgments), "" (not found).
	OffsetFrom     string `json:"offset_from"`
	SegmentsClient int    `json:"segments_client_capture"`
	SegmentsServer int    `json:"segments_server_capture"`
	Paired         int    `json:"paired"`            // segment pairs checked
	GSOPaired      int    `json:"gso_super_packets"` // super-packets paired with their segments by byte range
	OnlyInClient   int    `json:"only_in_client_capture"`
	OnlyInServer   int    `json:"only_in_server_capture"`
	RetransClient  int    `json:"retransmissions_client_capture"`
	RetransServer  int    `json:"retransmissions_server_capture"`
	Broken         int    `json:"broken"`
	// Checksums of paired segments that were partial (captured on the sending host before the
	// NIC completed them: not an error) or cut by the snap length (not checkable).
	ChecksumsPartial   int      `json:"checksums_partial"`
	ChecksumsUnchecked int      `json:"checksums_unchecked"`
	FirstOnlyInClient  *Segment `json:"first_only_in_client_capture,omitempty"`
	FirstOnlyInServer  *Segment `json:"first_only_in_server_capture,omitempty"`
}

// ICMPCounts counts the ICMP errors quoting the connection.
type ICMPCounts struct {
	Paired     int `json:"paired"`       // in both captures, quotes checked against each other
	OneSidedOK int `json:"one_sided_ok"` // in one capture, quoting a segment of that side in that side's numbering
	Unverified int `json:"unverified"`   // quoting nothing either capture holds
	Broken     int `json:"broken"`       // a quote that does not map
}

// Break is the first segment (or ICMP error) that does not map, as each capture holds it.
type Break struct {
	Direction string   `json:"direction"` // "client_to_server" or "server_to_client"
	What      string   `json:"what"`
	Client    *Segment `json:"client_capture,omitempty"`
	Server    *Segment `json:"server_capture,omitempty"`
}

// Segment shows one captured segment or ICMP error.
type Segment struct {
	Frame    int         `json:"frame"`
	Time     time.Time   `json:"time"`
	Src      string      `json:"src"`
	Dst      string      `json:"dst"`
	Flags    string      `json:"flags"`
	Seq      uint32      `json:"seq"`
	Ack      uint32      `json:"ack"`
	Len      int         `json:"len"`
	SACK     [][2]uint32 `json:"sack,omitempty"`
	Checksum string      `json:"checksum"`
	// ICMP is set for an ICMP error: "type T code C from ADDR"; Seq and Ack are then the
	// quoted segment's.
	ICMP string `json:"icmp,omitempty"`
}

// pairedConn is a connection being verified: its records in each capture and what was found.
type pairedConn struct {
	a, b   *connRecs // client capture, server capture
	dirs   [2]*direction
	delta  [2]uint32 // per seq space: server capture's numbers minus client capture's
	known  [2]bool
	from   [2]string
	stats  [2]dirStats
	icmp   ICMPCounts
	brk    *Break
	brkAt  int64
	client int // direction index of client-to-server
}

type dirStats struct {
	Paired, GSOPaired, Broken            int
	ChecksumsPartial, ChecksumsUnchecked int
	OnlyIn                               [2]int
	firstOnly                            [2]int32
}

// Compare verifies the captures a (taken on the client's side of the gateway) and b (the
// server's).
func compare(a, b *captureRecs, o Options) *Report {
	r := &Report{Client: a.Summary, Server: b.Summary, OK: true, Connections: []Connection{}}
	seen := map[*connRecs]bool{}
	for _, ca := range a.order {
		var cb *connRecs
		if gens := b.conns[ca.key]; ca.gen < len(gens) {
			cb = gens[ca.gen]
			seen[cb] = true
		}
		r.add(ca, cb, o)
	}
	for _, cb := range b.order {
		if !seen[cb] {
			r.add(nil, cb, o)
		}
	}
	return r
}

func (r *Report) add(ca, cb *connRecs, o Options) {
	if ca == nil || cb == nil {
		c := ca
		in := "client_capture"
		if c == nil {
			c, in = cb, "server_capture"
		}
		pc := &pairedConn{a: c, b: c}
		pc.client = clientDir(c, c)
		conn := Connection{Status: StatusOneSided, In: in}
		pc.fill(&conn)
		// A connection only one side holds has nothing to pair: its counts are that side's.
		for _, d := range []*Direction{&conn.ClientToServer, &conn.ServerToClient} {
			if in == "client_capture" {
				d.SegmentsServer, d.RetransServer = 0, 0
			} else {
				d.SegmentsClient, d.RetransClient = 0, 0
			}
		}
		r.Connections = append(r.Connections, conn)
		return
	}
	pc := &pairedConn{a: ca, b: cb}
	pc.stats[0].firstOnly, pc.stats[1].firstOnly = [2]int32{-1, -1}, [2]int32{-1, -1}
	pc.client = clientDir(ca, cb)
	pc.pair()
	conn := Connection{Status: StatusOK, In: "both"}
	pc.fill(&conn)
	oneSided := 0
	for d := range 2 {
		dr := pc.dirs[d]
		if !pc.known[d] && len(dr.a.segs) > 0 && len(dr.b.segs) > 0 {
			conn.Status = StatusUnverified
		}
		oneSided += pc.stats[d].OnlyIn[0] + pc.stats[d].OnlyIn[1]
	}
	switch {
	case pc.brk != nil:
		conn.Status = StatusBroken
	case o.Strict && oneSided > 0:
		conn.Status = StatusBroken
		conn.FirstBreak = pc.firstOneSided()
	}
	if conn.Status != StatusOK {
		r.OK = false
	}
	r.Connections = append(r.Connections, conn)
}

// clientDir returns the direction whose sender is the client: the one a SYN went, else the one
// from the higher port (the ephemeral one, as a rule).
func clientDir(ca, cb *connRecs) int {
	for _, c := range [2]*connRecs{ca, cb} {
		for d := range 2 {
			if c.dirs[d].opener {
				return d
			}
		}
	}
	if ca.key.a.Port() > ca.key.b.Port() {
		return 0
	}
	return 1
}

// fill writes what was found into c.
func (pc *pairedConn) fill(c *Connection) {
	cd := pc.client
	c.Client, c.Server = pc.a.key.end(cd).String(), pc.a.key.end(1-cd).String()
	for i, d := range [2]int{cd, 1 - cd} {
		out := &c.ClientToServer
		if i == 1 {
			out = &c.ServerToClient
		}
		st := &pc.stats[d]
		raw := pc.delta[d]
		if i == 1 {
			raw = -raw // the client's view minus the server's
		}
		*out = Direction{
			Offset: int32(raw), OffsetRaw: raw, OffsetKnown: pc.known[d], OffsetFrom: pc.from[d],
			SegmentsClient: len(pc.a.dirs[d].segs), SegmentsServer: len(pc.b.dirs[d].segs),
			Paired: st.Paired, GSOPaired: st.GSOPaired, Broken: st.Broken,
			OnlyInClient: st.OnlyIn[0], OnlyInServer: st.OnlyIn[1],
			RetransClient: pc.a.dirs[d].retrans, RetransServer: pc.b.dirs[d].retrans,
			ChecksumsPartial: st.ChecksumsPartial, ChecksumsUnchecked: st.ChecksumsUnchecked,
		}
		if pc.dirs[d] != nil {
			if j := st.firstOnly[0]; j >= 0 {
				out.FirstOnlyInClient = pc.segment(pc.a, d, j)
			}
			if j := st.firstOnly[1]; j >= 0 {
				out.FirstOnlyInServer = pc.segment(pc.b, d, j)
			}
		}
	}
	c.ICMP = pc.icmp
	c.FirstBreak = pc.brk
}

func (pc *pairedConn) dirName(d int) string {
	if d == pc.client {
		return "client_to_server"
	}
	return "server_to_client"
}

// firstOneSided is the break Strict reports: the earliest segment only one capture holds.
func (pc *pairedConn) firstOneSided() *Break {
	var best *Break
	var at int64
	for d := range 2 {
		for side, c := range [2]*connRecs{pc.a, pc.b} {
			j := pc.stats[d].firstOnly[side]
			if j < 0 {
				continue
			}
			s := c.dirs[d].segs[j]
			if best == nil || s.time < at {
				best, at = &Break{Direction: pc.dirName(d)}, s.time
				if side == 0 {
					best.What, best.Client = "segment only in the client capture", pc.segment(c, d, j)
				} else {
					best.What, best.Server = "segment only in the server capture", pc.segment(c, d, j)
				}
			}
		}
	}
	return best
}

// breakAt records a broken pair of direction d if it is the earliest so far.
func (pc *pairedConn) breakAt(d int, ai, bj int32, what string) {
	at := pc.a.dirs[d].segs[ai].time
	if pc.brk != nil && at >= pc.brkAt {
		return
	}
	pc.brk, pc.brkAt = &Break{
		Direction: pc.dirName(d), What: what,
		Client: pc.segment(pc.a, d, ai), Server: pc.segment(pc.b, d, bj),
	}, at
}

func (pc *pairedConn) icmpBreak(a, b *icmpRec, what string) {
	q := a
	if q == nil {
		q = b
	}
	if pc.brk != nil && q.time >= pc.brkAt {
		return
	}
	pc.brk, pc.brkAt = &Break{Direction: pc.dirName(q.dir), What: what}, q.time
	if a != nil {
		pc.brk.Client = pc.icmpSegment(a)
	}
	if b != nil {
		pc.brk.Server = pc.icmpSegment(b)
	}
}

func (pc *pairedConn) segment(c *connRecs, d int, i int32) *Segment {
	dr := &c.dirs[d]
	s := &dr.segs[i]
	v := &Segment{
		Frame: int(s.frame), Time: time.Unix(0, s.time).UTC(),
		Src: c.key.end(d).String(), Dst: c.key.end(1 - d).String(),
		Flags: flagString(s.id.flags), Seq: s.seq, Ack: s.ack, Len: int(s.id.plen),
		Checksum: s.csum.String(),
	}
	e := dr.sack[s.sackAt : s.sackAt+uint32(s.nsack)]
	for k := 0; k+1 < len(e); k += 2 {
		v.SACK = append(v.SACK, [2]uint32{e[k], e[k+1]})
	}
	return v
}

func (pc *pairedConn) icmpSegment(q *icmpRec) *Segment {
	return &Segment{
		Frame: int(q.frame), Time: time.Unix(0, q.time).UTC(),
		Src: pc.a.key.end(q.dir).String(), Dst: pc.a.key.end(1 - q.dir).String(),
		Flags: flagString(q.quoteFlags), Seq: q.seq, Ack: q.ack, Checksum: q.csum.String(),
		ICMP: fmt.Sprintf("type %d code %d from %s", q.typ, q.code, q.from),
	}
}

// flagString renders TCP flags the way tcpdump does.
func flagString(f uint8) string {
	var b strings.Builder
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{rewrite.FlagSYN, 'S'}, {rewrite.FlagFIN, 'F'}, {rewrite.FlagPSH, 'P'}, {rewrite.FlagRST, 'R'}, {0x20, 'U'}, {0x40, 'E'}, {0x80, 'W'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	if f&rewrite.FlagACK != 0 {
		b.WriteByte('.')
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, f := range []struct {
		side string
		s    FileSummary
	}{{"client", r.Client}, {"server", r.Server}} {
		name := f.side + " capture"
		if f.s.Path != "" {
			name += " " + f.s.Path
		}
		fmt.Fprintf(&b, "%s: %s, %d frames, %d TCP segments, %d ICMP errors quoting TCP, %d truncated by the snap length, %d undecodable\n",
			name, f.s.Format, f.s.Frames, f.s.TCPSegments, f.s.ICMPErrors, f.s.Truncated, f.s.Undecodable)
		if f.s.ReadError != "" {
			fmt.Fprintf(&b, "    WARNING: reading stopped early, the rest of the file is not verified: %s\n", f.s.ReadError)
		}
		if f.s.FirstUndecodable != "" {
			fmt.Fprintf(&b, "    first undecodable: %s\n", f.s.FirstUndecodable)
		}
	}
	counts := map[string]int{}
	for i, c := range r.Connections {
		counts[c.Status]++
		fmt.Fprintf(&b, "\n[%d] %s -> %s  %s", i+1, c.Client, c.Server, strings.ToUpper(c.Status))
		if c.Status == StatusOneSided {
			fmt.Fprintf(&b, " (only in the %s)\n", strings.ReplaceAll(c.In, "_", " "))
			continue
		}
		b.WriteByte('\n')
		for _, d := range []struct {
			name string
			d    *Direction
		}{{"client->server", &c.ClientToServer}, {"server->client", &c.ServerToClient}} {
			writeDirection(&b, d.name, d.d)
		}
		if n := c.ICMP; n != (ICMPCounts{}) {
			fmt.Fprintf(&b, "    ICMP errors: %d paired, %d on one side quoting that side's segment, %d unverified, %d broken\n",
				n.Paired, n.OneSidedOK, n.Unverified, n.Broken)
		}
		if br := c.FirstBreak; br != nil {
			fmt.Fprintf(&b, "    FIRST BREAK (%s): %s\n", strings.ReplaceAll(br.Direction, "_", " "), br.What)
			writeSegment(&b, "client capture", br.Client)
			writeSegment(&b, "server capture", br.Server)
		}
	}
	both := len(r.Connections) - counts[StatusOneSided]
	fmt.Fprintf(&b, "\n%d connections in both captures: %d map, %d broken, %d unverified; %d in one capture only. ",
		both, counts[StatusOK], counts[StatusBroken], counts[StatusUnverified], counts[StatusOneSided])
	if r.OK {
		b.WriteString("All map.\n")
	} else {
		b.WriteString("NOT ALL MAP.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeDirection(b *strings.Builder, name string, d *Direction) {
	if !d.OffsetKnown {
		fmt.Fprintf(b, "    %s  offset unknown (segments %d in the client capture, %d in the server capture)\n", name, d.SegmentsClient, d.SegmentsServer)
		return
	}
	from := map[string]string{"syn": "from the SYN", "segments": "from the first segments: no SYN in both captures", "acks": "from the other direction's acks"}[d.OffsetFrom]
	fmt.Fprintf(b, "    %s  offset %+d (%s)  paired %d", name, d.Offset, from, d.Paired)
	if d.GSOPaired > 0 {
		fmt.Fprintf(b, " (%d GSO super-packets by byte range)", d.GSOPaired)
	}
	fmt.Fprintf(b, ", broken %d, only in client capture %d, only in server capture %d, retransmissions %d/%d (client/server capture)\n",
		d.Broken, d.OnlyInClient, d.OnlyInServer, d.RetransClient, d.RetransServer)
	if d.ChecksumsPartial+d.ChecksumsUnchecked > 0 {
		fmt.Fprintf(b, "        checksums: %d partial (captured on the sending host: not an error), %d not checkable (cut by the snap length)\n",
			d.ChecksumsPartial, d.ChecksumsUnchecked)
	}
	if d.FirstOnlyInClient != nil {
		writeSegment(b, "first only in client capture", d.FirstOnlyInClient)
	}
	if d.FirstOnlyInServer != nil {
		writeSegment(b, "first only in server capture", d.FirstOnlyInServer)
	}
}

func writeSegment(b *strings.Builder, label string, s *Segment) {
	if s == nil {
		fmt.Fprintf(b, "        %-28s (not in this capture)\n", label+":")
		return
	}
	fmt.Fprintf(b, "        %-28s frame %d %s ", label+":", s.Frame, s.Time.Format("15:04:05.000000000"))
	if s.ICMP != "" {
		fmt.Fprintf(b, "ICMP %s quoting ", s.ICMP)
	}
	fmt.Fprintf(b, "%s > %s [%s] seq %d", s.Src, s.Dst, s.Flags, s.Seq)
	if strings.Contains(s.Flags, ".") {
		fmt.Fprintf(b, " ack %d", s.Ack)
	}
	fmt.Fprintf(b, " len %d", s.Len)
	for _, e := range s.SACK {
		fmt.Fprintf(b, " sack %d-%d", e[0], e[1])
	}
	fmt.Fprintf(b, " checksum %s\n", s.Checksum)
}

// Files verifies the capture at clientPath, taken on the client's side of the gateway, against
// the one at serverPath, taken on the server's side. Both are read at once.
func Files(clientPath, serverPath string, o Options) (*Report, error) {
	type result struct {
		c   *captureRecs
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := readFile(serverPath)
		ch <- result{c, err}
	}()
	a, errA := readFile(clientPath)
	rb := <-ch
	if errA != nil {
		return nil, errA
	}
	if rb.err != nil {
		return nil, rb.err
	}
	return compare(a, rb.c, o), nil
}

// Readers is Files for captures read from streams (the integration tests' in-memory pcaps).
func Readers(client, server io.Reader, o Options) (*Report, error) {
	a, err := readCapture(client)
	if err != nil {
		return nil, fmt.Errorf("client capture: %w", err)
	}
	b, err := readCapture(server)
	if err != nil {
		return nil, fmt.Errorf("server capture: %w", err)
	}
	return compare(a, b, o), nil
}
