package flowtable

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seqshiftd/seqshiftd/seqnum"
	"github.com/seqshiftd/seqshiftd/tcpwindow"
)

// The table's capacity, defined here and nowhere else: policy validates flows.max with
// CheckMaxFlows.
const (
	// DefaultMaxFlows is the capacity when Config.MaxFlows is zero: about 200 MiB when full.
	DefaultMaxFlows = 1 << 20
	// MaxMaxFlows is the largest capacity: about 200 GiB when full, beyond any gateway this
	// runs on, and small enough that the per-shard arithmetic stays far from overflow.
	MaxMaxFlows = 1 << 30
)

// CheckMaxFlows reports why n cannot be a table's capacity (Config.MaxFlows once the zero
// default is applied), nil if it can.
func CheckMaxFlows(n int64) error {
	if n < 1 || n > MaxMaxFlows {
		return fmt.Errorf("%d is out of range 1..%d", n, MaxMaxFlows)
	}
	return nil
}

// Config configures a Table.
type Config struct {
	// MaxFlows caps the number of live flows; 0 means DefaultMaxFlows, more than MaxMaxFlows
	// means MaxMaxFlows.
	MaxFlows int
	// Timeouts are the idle timeouts per state; zero fields take the defaults.
	Timeouts Timeouts
	// Shards is the number of lock shards, rounded up to a power of two; 0 picks one from
	// MaxFlows (about 4096 flows per shard, between 16 and 4096 shards).
	Shards int
	// Clock tells the time; nil means the wall clock at start-up advanced by the monotonic one.
	Clock Clock
	// OnRemove, if set, is called once for every flow the table removes by expiry, eviction
	// or replacement, never under a shard lock (it may call back into the table). It runs on
	// the goroutine that removed the flow: the expiry loop or a datapath goroutine in
	// Admit/Adopt, so it must be quick. The daemon keeps per-rule totals of retired flows.
	OnRemove func(f *Flow)
	// OnAdd, if set, is called once for every flow Admit or Adopt puts into the table, after it
	// is in place and never under a shard lock, on the datapath goroutine that added it: it must
	// be quick and must not block (`seqshiftd flows --watch` publishes from it). Flows restored
	// from a snapshot are not reported.
	OnAdd func(f *Flow)
}

// Table is the flow table. All methods are safe for concurrent use.
type Table struct {
	shards   []shard
	mask     uint64    // len(shards) - 1
	shift    uint      // log2(len(shards)): the hash bits above it pick a flow's home slot
	seed     [4]uint64 // secret, per table: see hash
	max      int64
	clock    Clock
	onRemove func(*Flow)
	onAdd    func(*Flow)
	timeouts atomic.Pointer[timeoutTable]

	_      [64]byte
	coarse atomic.Uint32 // Unix seconds; read by every Observe, written at most once a second
	_      [60]byte
	count  atomic.Int64 // live flows plus admissions in progress; bounded by max
	_      [56]byte

	expiryMu sync.Mutex // one expiry pass at a time; guards the cursor and the buffer
	cursor   struct{ shard, group int }
	victims  []*Flow
}

// shard is one lock domain: an open-addressing index of flow pointers and what goes with it.
type shard struct {
	// Read by every lookup without a lock. Slots are written under mu; a rehash builds a new
	// index and publishes it here, so a reader holding the old one sees it unchanged.
	idx atomic.Pointer[index]
	_   [56]byte

	mu    sync.Mutex
	live  int                  // flows in idx
	tombs int                  // deleted slots in idx
	queue []*Flow              // unassured flows in admission order (may hold stale entries)
	qhead int                  // queue[:qhead] already consumed
	rules map[ruleKey]*ruleRef // interned (rule, generation) pairs
	_     [64]byte

	// Per-state gauges and the unassured gauge (moved by Observe and Track on any core, once
	// per transition) and counters.
	states                                                          [NumStates]atomic.Int64
	unassured                                                       atomic.Int64
	created, adopted, replaced, restored, expired, evicted, refused atomic.Uint64
	_                                                               [64]byte // to 384 bytes
}

type ruleKey struct {
	name string
	gen  uint64
}

// New returns an empty table.
func New(cfg Config) *Table {
	limit := cfg.MaxFlows
	if limit <= 0 {
		limit = DefaultMaxFlows
	}
	limit = min(limit, MaxMaxFlows)
	n := cfg.Shards
	if n <= 0 {
		n = min(max(limit/4096, 16), 4096)
	}
	n = 1 << bits.Len(uint(n-1))
	t := &Table{
		shards:   make([]shard, n),
		mask:     uint64(n - 1),
		shift:    uint(bits.TrailingZeros(uint(n))),
		max:      int64(limit),
		clock:    cfg.Clock,
		onRemove: cfg.OnRemove,
		onAdd:    cfg.OnAdd,
	}
	if t.clock == nil {
		t.clock = monotonicClock{start: time.Now()}
	}
	seed := maphash.MakeSeed()
	for i := range t.seed {
		t.seed[i] = maphash.Comparable(seed, i)
	}
	for i := range t.shards {
		t.shards[i].idx.Store(newIndex(minGroups))
		t.shards[i].rules = make(map[ruleKey]*ruleRef)
	}
	t.SetTimeouts(cfg.Timeouts)
	t.tick()
	return t
}

// SetTimeouts replaces the per-state timeouts (zero fields: defaults). Live flows are judged
// by the new values from the next expiry slice on.
func (t *Table) SetTimeouts(to Timeouts) {
	v := timeoutTable{state: to.table(), unassured: to.Unassured}
	if v.unassured <= 0 {
		v.unassured = DefaultTimeouts().Unassured
	}
	t.timeouts.Store(&v)
}

// Timeouts returns the timeouts in force, defaults filled in.
func (t *Table) Timeouts() Timeouts {
	v := t.timeouts.Load()
	s := v.state
	return Timeouts{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], v.unassured}
}

// timeoutTable is the timeouts in force, indexed by state, defaults filled in.
type timeoutTable struct {
	state     [NumStates]time.Duration
	unassured time.Duration
}

// of returns the idle timeout of a flow whose state word is w: its state's, and no more than
// the unassured timeout until the flow is assured.
func (tt *timeoutTable) of(w uint32) time.Duration {
	d := tt.state[w&stMask&7]
	if w&stAssured == 0 {
		d = min(d, tt.unassured)
	}
	return d
}

// MaxFlows returns the table's capacity.
func (t *Table) MaxFlows() int { return int(t.max) }

// hash is the table's keyed hash of a key: the sum of its endpoints' hashes, so that a lookup
// can hash a segment's tuple without first ordering its endpoints. Each endpoint goes through
// wyhash's multiply-fold mixing (the Go runtime's map hash where AES is missing) with secret
// per-table seeds drawn from hash/maphash, so nobody can aim a flood of tuples at one shard or
// one probe sequence; the port has its own multiply so that ports chosen by a sender do not
// fall into chosen shards. It works in registers: maphash.Comparable on the 40-byte key
// measured 15-25 ns here (it re-reads the key from memory just after it was written); this
// costs about 4 ns.
func (t *Table) hash(k *Key) uint64 {
	a, b := k.lower(), k.higher()
	return t.hashEndpoint(a.hi, a.lo, portVer(a.port, a.v4)) + t.hashEndpoint(b.hi, b.lo, portVer(b.port, b.v4))
}

func (t *Table) hashEndpoint(hi, lo, pv uint64) uint64 {
	return mix(hi^t.seed[0], lo^t.seed[1]) + mix(pv^t.seed[2], t.seed[3])
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (t *Table) shardOf(h uint64) *shard { return &t.shards[h&t.mask] }

// tick reads the clock, advances the coarse clock Observe uses, and returns the time.
func (t *Table) tick() int64 {
	now := t.clock.Now()
	if sec := unixSeconds(now); t.coarse.Load() != sec {
		t.coarse.Store(sec)
	}
	return now
}

func unixSeconds(ns int64) uint32 {
	return uint32(min(max(ns/int64(time.Second), 0), 1<<32-1))
}

// Lookup finds the flow a segment from src to dst belongs to and the direction it travels.
// It takes no lock and does not allocate.
func (t *Table) Lookup(src, dst netip.AddrPort) (f *Flow, dir Dir, ok bool) {
	var p probe
	spv, dpv := p.fill(src, dst)
	h := t.hashEndpoint(p.s0, p.s1, spv) + t.hashEndpoint(p.d0, p.d1, dpv)
	f, rev := t.shardOf(h).idx.Load().find(&p, h, t.shift)
	if f == nil {
		return nil, 0, false
	}
	// src is the client when it sits where the client sits in the key.
	if rev != (f.bits&flClientHigher != 0) {
		dir = ServerToClient
	}
	return f, dir, true
}

// Admit creates the flow of a new connection at its SYN, in StateSynSent. An entry already on
// the tuple is replaced (and handed to OnRemove): the datapath calls Admit only for a new
// connection, having told a retransmitted SYN from port reuse. When the table is full, an
// embryonic flow, else a time_wait or close flow, is evicted to make room; if there is none,
// Admit returns ErrFull (unwrapped).
func (t *Table) Admit(client, server netip.AddrPort, in Init) (*Flow, error) {
	f := t.newFlow(client, server, in, StateSynSent, t.tick())
	got, _, err := t.place(f, in.Rule, in.Generation, placeAdmit)
	if err == nil && t.onAdd != nil {
		t.onAdd(got)
	}
	return got, err
}

// Restart replaces old, a live flow whose client sent a SYN that passed as SYNOnLive and
// whose server answered it with a SYN-ACK (Track returned Restart), by a new flow for the new
// connection, in StateSynSent. The client's side of its window starts from that SYN (its
// window and options were not kept, so it is liberal); the datapath then tracks the SYN-ACK
// on the new flow. in.ClientISN is set from the SYN. Errors as Admit; on ErrFull old stays.
func (t *Table) Restart(old *Flow, in Init) (*Flow, error) {
	end := seqnum.Value(old.x.synEnd.Load())
	in.ClientISN = uint32(end.Add(seqnum.Delta(1).Neg()))
	f := t.newFlow(old.Client(), old.Server(), in, StateSynSent, t.tick())
	f.x.win.Store(int(ClientToServer), tcpwindow.Side{End: end, MaxEnd: end, MaxWin: 1, Flags: tcpwindow.FlagSeen | tcpwindow.FlagMaxEnd | tcpwindow.FlagLiberal})
	f.account(ClientToServer, 0)
	got, _, err := t.place(f, in.Rule, in.Generation, placeAdmit)
	return got, err
}

// Adopt picks up a connection mid-stream, in StateEstablished, its offsets known at once:
// in.ClientOffset for the client, in.Server.Value for the server (Absolute is ignored). The
// flow is unassured until each side has had something acknowledged by the other (Track learns
// both sides from their segments). If the tuple already has a flow, Adopt returns it
// unchanged. ErrFull as for Admit.
func (t *Table) Adopt(client, server netip.AddrPort, in Init) (*Flow, error) {
	in.Server.Absolute = false
	f := t.newFlow(client, server, in, StateEstablished, t.tick())
	got, existed, err := t.place(f, in.Rule, in.Generation, placeAdopt)
	if err == nil && !existed && t.onAdd != nil {
		t.onAdd(got)
	}
	return got, err
}

func (t *Table) newFlow(client, server netip.AddrPort, in Init, st State, now int64) *Flow {
	k, rev := MakeKey(client, server)
	sec := unixSeconds(now)
	f := allocFlow(t)
	f.key, f.hash, f.created, f.clientISN, f.plan, f.exempt = k, t.hash(&k), sec, in.ClientISN, in.Server.Value, in.Exempt
	if rev {
		f.bits |= flClientHigher
	}
	word := uint32(st)
	if in.Server.Absolute {
		f.bits |= flAbsolute
	} else {
		f.off[ServerToClient].Store(in.Server.Value)
		word |= stClaimed | stResolved
	}
	f.off[ClientToServer].Store(uint32(in.ClientOffset))
	f.state.Store(word)
	f.lastSeen.Store(sec)
	return f
}

type placeMode uint8

const (
	placeAdmit   placeMode = iota // replace an existing entry
	placeAdopt                    // keep an existing entry and return it
	placeRestore                  // keep an existing entry
)

// maxEvictions bounds how often one placement evicts and retries when other goroutines take
// the room it made.
const maxEvictions = 4

// place puts a new flow into its shard. It returns the flow now on the tuple and whether it
// was already there.
func (t *Table) place(f *Flow, rule string, gen uint64, mode placeMode) (*Flow, bool, error) {
	s := t.shardOf(f.hash)
	for evictions := 0; ; evictions++ {
		s.mu.Lock()
		ix := s.idx.Load()
		old, at, free := ix.locate(&f.key, f.hash, t.shift)
		if old != nil && mode != placeAdmit {
			s.mu.Unlock()
			return old, true, nil
		}
		if old == nil && !t.reserve() {
			s.mu.Unlock()
			if evictions < maxEvictions && t.evictOne(f.hash) {
				continue
			}
			s.refused.Add(1)
			return nil, false, ErrFull
		}
		f.rule = s.intern(rule, gen)
		// Counted before the flow is published: once in the index, a datapath goroutine may
		// move it (and the gauges) at once.
		w := f.state.Load()
		s.states[w&stMask].Add(1)
		if w&stAssured == 0 {
			s.unassured.Add(1)
		}
		if old != nil {
			ix.replace(at, f)
			old.kill(anyState, false)
			s.replaced.Add(1)
		} else {
			s.insert(ix, f, free, t.shift)
		}
		if w&stAssured == 0 {
			s.enqueue(f)
		}
		switch mode {
		case placeAdmit:
			s.created.Add(1)
		case placeAdopt:
			s.adopted.Add(1)
		case placeRestore:
			s.restored.Add(1)
		}
		s.mu.Unlock()
		if old != nil {
			t.removed(old)
		}
		return f, false, nil
	}
}

// reserve claims room for one more flow.
func (t *Table) reserve() bool {
	for {
		c := t.count.Load()
		if c >= t.max {
			return false
		}
		if t.count.CompareAndSwap(c, c+1) {
			return true
		}
	}
}

func (t *Table) removed(f *Flow) {
	if t.onRemove != nil {
		t.onRemove(f)
	}
}

// evictOne removes one flow to make room, as conntrack's early drop: the oldest unassured
// flow (embryonic, or one side never acknowledged: a blind sender's junk) of the first shard
// that has one, starting at the shard of the flow being admitted so that evictions spread like
// the hash; failing that, the least recently seen time_wait or close flow, likewise. Assured
// flows that may still carry data (established, fin_wait, close_wait, last_ack) are never
// evicted. Reports whether it removed one.
func (t *Table) evictOne(h uint64) bool {
	for pass := range 2 {
		for i := range t.shards {
			s := &t.shards[(h+uint64(i))&t.mask]
			if pass == 0 && s.unassured.Load() <= 0 || pass == 1 && s.count(evictClosedSet) <= 0 {
				continue
			}
			s.mu.Lock()
			var f *Flow
			if pass == 0 {
				f = s.popUnassured()
			} else {
				f = s.oldest(evictClosedSet)
			}
			if f != nil {
				s.remove(f, t)
				s.evicted.Add(1)
			}
			s.mu.Unlock()
			if f != nil {
				t.removed(f)
				return true
			}
		}
	}
	return false
}

// count returns the shard's live flows in the states of set (racy, for skipping shards).
func (s *shard) count(set stateSet) int64 {
	var n int64
	for st := range NumStates {
		if set.has(st) {
			n += s.states[st].Load()
		}
	}
	return n
}

// insert stores f, known to be absent, at free (from locate) or, if that would take the index
// past seven eighths full, in a rehashed index. Caller holds mu and has reserved room.
func (s *shard) insert(ix *index, f *Flow, free pos, shift uint) {
	switch {
	case ix.isDeleted(free):
		s.tombs--
	case ix.full(s.live + s.tombs + 1):
		ix = s.rehash(s.live+1, shift)
		free = ix.firstFree(f.hash, shift)
	}
	ix.put(free, f)
	s.live++
}

// rehash builds a new index for need flows, at most half full and without tombstones, and
// publishes it. Readers still probing the old one see it unchanged. Caller holds mu.
func (s *shard) rehash(need int, shift uint) *index {
	old := s.idx.Load()
	ix := newIndex(groupsFor(need))
	for g := range old.groups {
		for i := range old.groups[g].slots {
			if f := old.groups[g].slots[i].Load(); f != nil {
				ix.put(ix.firstFree(f.hash, shift), f)
			}
		}
	}
	s.idx.Store(ix)
	s.tombs = 0
	return ix
}

// remove takes f, already killed, out of the index. Caller holds mu.
func (s *shard) remove(f *Flow, t *Table) {
	ix := s.idx.Load()
	if p := ix.locateFlow(f, t.shift); p != noPos {
		s.erase(ix, p, t)
	}
}

// erase empties slot p of the current index. Caller holds mu.
func (s *shard) erase(ix *index, p pos, t *Table) {
	if ix.erase(p) {
		s.tombs++
	}
	s.live--
	t.count.Add(-1)
}

// intern returns the shared ruleRef for (name, gen). Caller holds mu.
func (s *shard) intern(name string, gen uint64) *ruleRef {
	k := ruleKey{name, gen}
	if r := s.rules[k]; r != nil {
		return r
	}
	if len(s.rules) >= 256 {
		clear(s.rules) // old generations; their flows keep their pointers
	}
	r := &ruleRef{name: name, gen: gen}
	s.rules[k] = r
	return r
}

// enqueue records an unassured flow for early drop. Caller holds mu.
func (s *shard) enqueue(f *Flow) {
	s.queue = append(s.queue, f)
	s.tidyQueue()
}

// tidyQueue drops consumed and stale entries once they make up most of the queue, which keeps
// its length within about twice the shard's unassured flows at amortised O(1) per flow.
func (s *shard) tidyQueue() {
	n := len(s.queue) - s.qhead
	stale := n > 64 && int64(n) > 2*s.unassured.Load()
	consumed := s.qhead > 64 && s.qhead > n
	if !stale && !consumed {
		return
	}
	keep := s.queue[:0]
	for _, f := range s.queue[s.qhead:] {
		if st := f.state.Load(); st&(stDead|stAssured) == 0 {
			keep = append(keep, f)
		}
	}
	clear(s.queue[len(keep):])
	if cap(s.queue) > 1024 && cap(s.queue) > 4*len(keep) {
		keep = append(make([]*Flow, 0, 2*len(keep)), keep...)
	}
	s.queue, s.qhead = keep, 0
}

// popUnassured removes the oldest flow still unassured from the queue and kills it. Caller
// holds mu.
func (s *shard) popUnassured() *Flow {
	for s.qhead < len(s.queue) {
		f := s.queue[s.qhead]
		s.queue[s.qhead] = nil
		s.qhead++
		if f.kill(anyState, true) {
			return f
		}
	}
	s.queue, s.qhead = s.queue[:0], 0
	return nil
}

// oldest finds the least recently seen flow in set, scanning the shard, and kills it. Caller
// holds mu.
func (s *shard) oldest(set stateSet) *Flow {
	ix := s.idx.Load()
	for range 2 { // a second try if the chosen one left set meanwhile
		var best *Flow
		var bestSeen uint32
		for g := range ix.groups {
			for i := range ix.groups[g].slots {
				f := ix.groups[g].slots[i].Load()
				if f == nil || !set.has(f.State()) {
					continue
				}
				if seen := f.lastSeen.Load(); best == nil || seen < bestSeen {
					best, bestSeen = f, seen
				}
			}
		}
		if best == nil {
			return nil
		}
		if best.kill(set, false) {
			return best
		}
	}
	return nil
}

// Range calls fn for every live flow until fn returns false. It takes no lock at all (it
// reads the lock-free indexes), so fn may call back into the table; flows added or removed
// while Range runs may or may not be seen, and none is seen twice.
func (t *Table) Range(fn func(*Flow) bool) {
	for i := range t.shards {
		ix := t.shards[i].idx.Load()
		for g := range ix.groups {
			for j := range ix.groups[g].slots {
				f := ix.groups[g].slots[j].Load()
				if f == nil || f.removed() {
					continue
				}
				if !fn(f) {
					return
				}
			}
		}
	}
}

// Capacity returns how many flows the table holds at most: Config.MaxFlows, or DefaultMaxFlows
// when that was 0. The table owns this number; metrics and status ask it rather than the file.
func (t *Table) Capacity() int { return int(t.max) }

// Stats returns a summary of the table.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		s := &t.shards[i]
		for j := range st.ByState {
			st.ByState[j] += int(s.states[j].Load())
		}
		st.Created += s.created.Load()
		st.Adopted += s.adopted.Load()
		st.Replaced += s.replaced.Load()
		st.Restored += s.restored.Load()
		st.Expired += s.expired.Load()
		st.Evicted += s.evicted.Load()
		st.Refused += s.refused.Load()
		st.Unassured += int(s.unassured.Load())
	}
	st.Unassured = max(st.Unassured, 0)
	for j, n := range st.ByState {
		st.ByState[j] = max(n, 0) // a transition's two gauge moves may straddle the read
		st.Active += st.ByState[j]
	}
	return st
}
