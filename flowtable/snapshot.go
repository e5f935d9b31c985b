package flowtable

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// Snapshot file format, version 2. All integers little-endian.
//
//	header  magic "SQSHFLOW" | version u32 | flags u32 (0) | written-at i64 (Unix ns)
//	record  tag u8 = 1 | fam u8 (bit 0: client IPv4, bit 1: server IPv4)
//	        | state u8 (State | first-FIN Dir << 4) | plan u8 (bit 0 absolute, bit 1 resolved)
//	        | exempt u8 | client addr [16] | client port u16 | server addr [16] | server port u16
//	        | offset c2s u32 | offset s2c u32 | client ISN u32 | server plan value u32
//	        | created i64 | last seen i64 (Unix seconds, wall clock) | generation u64
//	        | packets c2s, bytes c2s, packets s2c, bytes s2c u64
//	        | v2: assured u8 (0 or 1) | window c2s, window s2c: end, maxend, maxwin u32,
//	          scale u8, flags u8, pad u16 (0) each (tcpwindow.Side)
//	        | rule length u16 | rule bytes
//	end     tag u8 = 0 | record count u64 | CRC-32C u32 of every byte before it
//
// Version 1 (without the assured byte and the windows) is still read: its flows in a
// synchronised state are taken as assured (they were not evictable when written, and an idle
// long-lived connection must not expire at the unassured timeout on an upgrade), and their
// windows start unseen, to be learned from the next segments as on a pick-up.
//
// Times are wall-clock Unix seconds so that a flow's idle time carries across a restart.
// CRC-32C (Castagnoli, hardware-accelerated) guards against torn or bit-rotted files; the file
// is not an authentication boundary (it lives in the daemon's private state directory).
const (
	snapMagic   = "SQSHFLOW"
	snapVersion = 2
	headerLen   = 8 + 4 + 4 + 8
	recordLenV1 = 5 + 16 + 2 + 16 + 2 + 4*4 + 8*3 + 8*4 + 2 // without the rule bytes
	windowLen   = 1 + 2*16                                  // v2: assured, two tcpwindow.Sides
	recordLen   = recordLenV1 + windowLen
	maxRuleLen  = 1024
	tagRecord   = 1
	tagEnd      = 0

	planAbsolute = 1 << 0
	planResolved = 1 << 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot writes every live flow to path atomically: a temporary file in the same directory,
// fsync, rename over path, fsync of the directory. A crash leaves either the old file or the
// new one, never a mix. It does not stop the datapath; flows changing while it runs are
// written as they were when reached.
func (t *Table) Snapshot(path string) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := snapWriter{w: bufio.NewWriterSize(f, 256<<10)}
	var hdr [headerLen]byte
	copy(hdr[:], snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], snapVersion)
	binary.LittleEndian.PutUint64(hdr[16:], uint64(t.clock.Now()))
	w.write(hdr[:])
	t.Range(func(fl *Flow) bool {
		w.flow(fl)
		return w.err == nil
	})
	var end [1 + 8]byte
	end[0] = tagEnd
	binary.LittleEndian.PutUint64(end[1:], w.n)
	w.write(end[:])
	binary.LittleEndian.PutUint32(end[:4], w.crc)
	w.write(end[:4])
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err != nil {
		return fmt.Errorf("snapshot: write %s: %w", tmp, w.err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("snapshot: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("snapshot: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	// The rename is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshot: open directory: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("snapshot: fsync directory %s: %w", dir, err)
	}
	return nil
}

type snapWriter struct {
	w   *bufio.Writer
	crc uint32
	n   uint64
	err error
	buf [recordLen + maxRuleLen]byte
}

func (w *snapWriter) write(b []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc32.Update(w.crc, castagnoli, b)
	_, w.err = w.w.Write(b)
}

func (w *snapWriter) flow(f *Flow) {
	word := f.state.Load()
	b := w.buf[:0]
	c, s := f.Client(), f.Server()
	var fam, plan uint8
	if c.Addr().Is4() {
		fam |= 1
	}
	if s.Addr().Is4() {
		fam |= 2
	}
	offS2C := uint32(0)
	if f.bits&flAbsolute != 0 {
		plan |= planAbsolute
	}
	if word&stResolved != 0 {
		plan |= planResolved
		offS2C = f.off[ServerToClient].Load()
	}
	b = append(b, tagRecord, fam, uint8(word&(stMask|1<<stFinShift)), plan, uint8(f.exempt))
	ca, sa := c.Addr().As16(), s.Addr().As16()
	b = append(b, ca[:]...)
	b = binary.LittleEndian.AppendUint16(b, c.Port())
	b = append(b, sa[:]...)
	b = binary.LittleEndian.AppendUint16(b, s.Port())
	b = binary.LittleEndian.AppendUint32(b, f.off[ClientToServer].Load())
	b = binary.LittleEndian.AppendUint32(b, offS2C)
	b = binary.LittleEndian.AppendUint32(b, f.clientISN)
	b = binary.LittleEndian.AppendUint32(b, f.plan)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.created))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.lastSeen.Load()))
	b = binary.LittleEndian.AppendUint64(b, f.rule.gen)
	for d := range 2 {
		b = binary.LittleEndian.AppendUint64(b, f.cnt[d].packets.Load())
		b = binary.LittleEndian.AppendUint64(b, f.cnt[d].bytes.Load())
	}
	b = append(b, uint8(word&stAssured>>8))
	for d := range 2 {
		w := f.x.win.Load(d)
		b = binary.LittleEndian.AppendUint32(b, uint32(w.End))
		b = binary.LittleEndian.AppendUint32(b, uint32(w.MaxEnd))
		b = binary.LittleEndian.AppendUint32(b, uint32(w.MaxWin))
		b = append(b, w.Scale, w.Flags, 0, 0)
	}
	name := f.rule.name
	if len(name) > maxRuleLen {
		name = name[:maxRuleLen]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	w.write(b)
	w.n++
}

// Restore loads the flows of a file written by Snapshot, skipping those whose state's timeout
// has passed since they were last seen, and returns how many it added. The whole file is
// read and checked before any flow is added: errors about its contents (magic, version,
// checksum, truncation, impossible values) wrap ErrCorrupt; a missing file wraps
// fs.ErrNotExist. Flows already in the table are kept; flows that find the table full (after
// the usual eviction) are counted in Stats.Refused and skipped, which is not an error.
//
// The file is what the next run trusts for every offset, so before a byte is read it must be
// what Snapshot writes: opened without following a symbolic link and without blocking (a FIFO
// planted there would hang the start for ever), a regular file owned by this process's
// effective user, writable by nobody else, and no larger than the table's capacity allows
// (a huge file is refused, not read whole). Those refusals wrap ErrUntrusted.
func (t *Table) Restore(path string) (int, error) {
	f, err := openSnapshot(path, t.MaxFlows())
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	n, err := t.restore(f)
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", path, err)
	}
	return n, nil
}

// ErrUntrusted is wrapped by Restore's errors about a state file it will not read: a link, not
// a regular file, owned by another user, writable by others, or too large.
var ErrUntrusted = errors.New("state file not trusted")

// maxSnapshotSize is the largest file Snapshot can write for a table of maxFlows flows.
func maxSnapshotSize(maxFlows int) int64 {
	return headerLen + int64(maxFlows)*(recordLen+maxRuleLen) + 1 + 8 + 4
}

// openSnapshot opens path for Restore with the checks Restore describes, made on the opened
// descriptor so that nothing can be swapped in between the check and the read.
func openSnapshot(path string, maxFlows int) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link", ErrUntrusted, path)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	var why string
	switch euid := uint32(os.Geteuid()); {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		why = fmt.Sprintf("%s is not a regular file (type %#o)", path, st.Mode&unix.S_IFMT)
	case st.Uid != euid:
		why = fmt.Sprintf("%s is owned by uid %d, not by this process's uid %d", path, st.Uid, euid)
	case st.Mode&0o022 != 0:
		why = fmt.Sprintf("%s is writable by group or others (mode %04o)", path, st.Mode&0o7777)
	case st.Size > maxSnapshotSize(maxFlows):
		why = fmt.Sprintf("%s is %d bytes, more than a snapshot of flows.max %d flows can be (%d)", path, st.Size, maxFlows, maxSnapshotSize(maxFlows))
	}
	if why != "" {
		f.Close()
		return nil, fmt.Errorf("%w: %s", ErrUntrusted, why)
	}
	// Back to blocking reads: O_NONBLOCK was only there so that opening a FIFO could not hang.
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return f, nil
}

func (t *Table) restore(in io.Reader) (int, error) {
	r := snapReader{r: bufio.NewReaderSize(in, 64<<10), t: t, names: make(map[string]string)}
	pend, err := r.readAll()
	if err != nil {
		return 0, err
	}
	t.shards[0].refused.Add(r.dropped)
	now := t.tick()
	to := t.timeouts.Load()
	n := 0
	for _, p := range pend {
		fl := p.f
		if seen := int64(fl.lastSeen.Load()) * int64(time.Second); seen > now {
			fl.lastSeen.Store(unixSeconds(now)) // the clock went back across the restart
		} else if now-seen > int64(to.of(fl.state.Load())) {
			continue
		}
		if _, existed, err := t.place(fl, p.rule, p.gen, placeRestore); err == nil && !existed {
			n++
		}
	}
	return n, nil
}

type pending struct {
	f    *Flow
	rule string
	gen  uint64
}

type snapReader struct {
	r       *bufio.Reader
	version uint32
	crc     uint32
	t       *Table
	names   map[string]string // rule names, shared by their flows
	dropped uint64            // valid records beyond the table's capacity, not kept
	buf     [recordLen + maxRuleLen]byte
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// read fills b, folding it into the checksum. A short file is corrupt (truncated).
func (r *snapReader) read(b []byte) error {
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corrupt("truncated")
		}
		return err
	}
	r.crc = crc32.Update(r.crc, castagnoli, b)
	return nil
}

func (r *snapReader) readAll() ([]pending, error) {
	hdr := r.buf[:headerLen]
	if err := r.read(hdr); err != nil {
		return nil, err
	}
	if string(hdr[:8]) != snapMagic {
		return nil, corrupt("not a seqshiftd flow snapshot (bad magic)")
	}
	r.version = binary.LittleEndian.Uint32(hdr[8:])
	if r.version != 1 && r.version != snapVersion {
		return nil, corrupt("unsupported version %d (want 1 or %d)", r.version, snapVersion)
	}
	if fl := binary.LittleEndian.Uint32(hdr[12:]); fl != 0 {
		return nil, corrupt("unknown flags %#x", fl)
	}
	var out []pending
	var n uint64
	for {
		tag := r.buf[:1]
		if err := r.read(tag); err != nil {
			return nil, err
		}
		if tag[0] == tagEnd {
			break
		}
		if tag[0] != tagRecord {
			return nil, corrupt("record %d: bad tag %#x", n, tag[0])
		}
		p, err := r.record()
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", n, err)
		}
		n++
		// Records beyond the table's capacity are checked but not kept: they could not be
		// placed anyway, and memory stays bounded by flows.max whatever the file holds.
		if len(out) < r.t.MaxFlows() {
			out = append(out, p)
		} else {
			r.dropped++
		}
	}
	var end [8]byte
	if err := r.read(end[:]); err != nil {
		return nil, err
	}
	count := binary.LittleEndian.Uint64(end[:])
	want := r.crc
	if err := r.read(end[:4]); err != nil {
		return nil, err
	}
	if got := binary.LittleEndian.Uint32(end[:4]); got != want {
		return nil, corrupt("checksum mismatch (file %#08x, computed %#08x)", got, want)
	}
	if count != n {
		return nil, corrupt("%d records, trailer says %d", n, count)
	}
	if _, err := r.r.ReadByte(); err == nil {
		return nil, corrupt("data after the checksum")
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	return out, nil
}

// record parses one record (after its tag) into a flow not yet in the table.
func (r *snapReader) record() (pending, error) {
	n := recordLenV1 - 1
	if r.version >= 2 {
		n += windowLen
	}
	b := r.buf[:n]
	if err := r.read(b); err != nil {
		return pending{}, err
	}
	fam, word, plan, exempt := b[0], uint32(b[1]), b[2], Exempt(b[3])
	switch {
	case fam > 3:
		return pending{}, corrupt("bad address family bits %#x", fam)
	case State(word&stMask) >= NumStates || word&^(stMask|1<<stFinShift) != 0:
		return pending{}, corrupt("bad state %#x", word)
	case plan > planAbsolute|planResolved || plan == 0:
		// A plan that is not absolute is resolved from the start.
		return pending{}, corrupt("bad server plan %#x", plan)
	case exempt >= NumExempt:
		return pending{}, corrupt("bad exempt reason %d", exempt)
	}
	client, err := addrPort(b[4:20], b[20:22], fam&1 != 0)
	if err != nil {
		return pending{}, err
	}
	server, err := addrPort(b[22:38], b[38:40], fam&2 != 0)
	if err != nil {
		return pending{}, err
	}
	le := binary.LittleEndian
	v := b[40:]
	offC2S, offS2C, isn, planValue := le.Uint32(v), le.Uint32(v[4:]), le.Uint32(v[8:]), le.Uint32(v[12:])
	created, seen, gen := le.Uint64(v[16:]), le.Uint64(v[24:]), le.Uint64(v[32:])
	if created > 1<<32-1 || seen > 1<<32-1 {
		return pending{}, corrupt("time out of range")
	}
	var cnt [4]uint64
	for i := range cnt {
		cnt[i] = le.Uint64(v[40+8*i:])
	}
	v = v[72:]
	assured := State(word&stMask) != StateSynSent && State(word&stMask) != StateSynRecv
	var win [2]tcpwindow.Side
	if r.version >= 2 {
		if v[0] > 1 {
			return pending{}, corrupt("bad assured byte %d", v[0])
		}
		assured = v[0] == 1
		for d := range win {
			w := v[1+16*d:]
			win[d] = tcpwindow.Side{
				End: seqnum.Value(le.Uint32(w)), MaxEnd: seqnum.Value(le.Uint32(w[4:])), MaxWin: seqnum.Size(le.Uint32(w[8:])),
				Scale: w[12], Flags: w[13],
			}
			if w[12] > 14 || w[14] != 0 || w[15] != 0 {
				return pending{}, corrupt("bad window record %x", w[:16])
			}
		}
		v = v[windowLen:]
	}
	n = int(le.Uint16(v))
	if n > maxRuleLen {
		return pending{}, corrupt("rule name of %d bytes", n)
	}
	name := r.buf[recordLen : recordLen+n]
	if err := r.read(name); err != nil {
		return pending{}, err
	}
	rule, ok := r.names[string(name)]
	if !ok {
		rule = string(name)
		r.names[rule] = rule
	}

	k, rev := MakeKey(client, server)
	f := allocFlow(r.t)
	f.key, f.hash, f.created, f.clientISN, f.plan, f.exempt = k, r.t.hash(&k), uint32(created), isn, planValue, exempt
	if assured {
		word |= stAssured
	}
	for d := range win {
		// The edges are as old as the snapshot, and the connection went on meanwhile (a
		// crash costs up to snapshot_interval plus the downtime): judged strictly, its next
		// segments would all be "ahead" and dropped. Restored sides are judged as a pick-up's
		// are, taking a plausible segment beyond them as the new edge (tcpwindow.FlagLiberal).
		if win[d].Seen() {
			win[d].Flags |= tcpwindow.FlagLiberal
		}
		f.x.win.Store(d, win[d])
	}
	if rev {
		f.bits |= flClientHigher
	}
	if plan&planAbsolute != 0 {
		f.bits |= flAbsolute
	}
	if plan&planResolved != 0 {
		word |= stClaimed | stResolved
		f.off[ServerToClient].Store(offS2C)
	}
	f.off[ClientToServer].Store(offC2S)
	f.state.Store(word)
	f.lastSeen.Store(uint32(seen))
	f.cnt[0].packets.Store(cnt[0])
	f.cnt[0].bytes.Store(cnt[1])
	f.cnt[1].packets.Store(cnt[2])
	f.cnt[1].bytes.Store(cnt[3])
	return pending{f: f, rule: rule, gen: gen}, nil
}

// addrPort decodes an endpoint; an IPv4 one must be in IPv4-mapped form.
func addrPort(a16, port []byte, v4 bool) (netip.AddrPort, error) {
	a := netip.AddrFrom16([16]byte(a16))
	if v4 {
		if !a.Is4In6() {
			return netip.AddrPort{}, corrupt("IPv4 endpoint %s not in mapped form", a)
		}
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, binary.LittleEndian.Uint16(port)), nil
}
