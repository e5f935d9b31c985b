package flowtable

import (
	"context"
	"time"
)

const (
	// sweepPeriod is how long RunExpiry takes to look at every slot once; an idle flow goes
	// at most about this long after its timeout.
	sweepPeriod = 10 * time.Second
	// sliceGroups bounds the index groups (of seven slots) examined per shard-lock hold, so
	// an expiry slice delays an Admit in that shard by microseconds, and never a Lookup
	// (which takes no lock).
	sliceGroups = 32
	sliceSlots  = sliceGroups * groupSlots
)

// RunExpiry removes idle flows in the background until ctx is done. Every interval (1s if not
// positive) it advances the coarse clock and examines the share of the table that makes one
// full sweep per sweepPeriod (10s), a shard lock at a time and at most sliceSlots slots per
// lock hold. Removed flows go to OnRemove after the lock is released.
func (t *Table) RunExpiry(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		budget := int(int64(t.slots()) * int64(interval) / int64(sweepPeriod))
		t.expire(max(budget, sliceSlots))
	}
}

// slots returns the total number of index slots.
func (t *Table) slots() int {
	n := 0
	for i := range t.shards {
		n += t.shards[i].idx.Load().slots()
	}
	return n
}

// expireAll runs one full sweep from the start of the table.
func (t *Table) expireAll() int {
	t.expiryMu.Lock()
	t.cursor.shard, t.cursor.group = 0, 0
	t.expiryMu.Unlock()
	return t.expire(t.slots())
}

// expire examines about budget slots from the cursor, removes the flows idle for longer than
// their state's timeout, and returns how many it removed.
func (t *Table) expire(budget int) int {
	t.expiryMu.Lock()
	defer t.expiryMu.Unlock()
	now := t.tick()
	to := t.timeouts.Load()
	removed := 0
	for visited := 0; budget > 0 && visited <= len(t.shards); {
		s := &t.shards[t.cursor.shard]
		s.mu.Lock()
		ix := s.idx.Load()
		start := min(t.cursor.group, len(ix.groups))
		end := min(start+sliceGroups, start+(budget+groupSlots-1)/groupSlots, len(ix.groups))
		for g := start; g < end; g++ {
			for i := range ix.groups[g].slots {
				f := ix.groups[g].slots[i].Load()
				if f == nil {
					continue
				}
				w := f.state.Load()
				idle := now - int64(f.lastSeen.Load())*int64(time.Second)
				if idle > int64(to.of(w)) && f.kill(1<<(w&stMask), w&stAssured == 0) {
					s.erase(ix, pos(uint64(g)<<3|uint64(i)), t)
					t.victims = append(t.victims, f)
				}
			}
		}
		budget -= max(end-start, 1) * groupSlots
		t.cursor.group = end
		if end >= len(ix.groups) {
			s.maintain(t.shift)
			t.cursor.shard, t.cursor.group = (t.cursor.shard+1)&int(t.mask), 0
			visited++
		}
		s.expired.Add(uint64(len(t.victims)))
		s.mu.Unlock()
		for i, f := range t.victims {
			t.removed(f)
			t.victims[i] = nil
		}
		removed += len(t.victims)
		t.victims = t.victims[:0]
	}
	return removed
}

// maintain shrinks an index that expiry left mostly empty or full of tombstones, and drops
// stale entries from the embryonic queue. Caller holds mu.
func (s *shard) maintain(shift uint) {
	ix := s.idx.Load()
	if n := ix.slots(); len(ix.groups) > minGroups && (s.live*8 < n || s.tombs*4 > n) {
		s.rehash(s.live, shift)
	}
	s.tidyQueue()
}
