package policy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dchest/siphash"
)

// Mode is an ISN mode, the first word of a client_isn or server_isn value.
type Mode uint8

// ISN modes. ModeKeep is the zero value: a side nobody configured is left alone.
const (
	ModeKeep       Mode = iota // keep
	ModeFixed                  // fixed N
	ModeSequential             // sequential START STEP
	ModeRange                  // range LO-HI
	ModeRandom                 // random
	ModeOffset                 // offset ±N
	ModeKeyed                  // keyed
)

var modeNames = [...]string{"keep", "fixed", "sequential", "range", "random", "offset", "keyed"}

// String returns the mode's keyword as written in the file.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "unknown"
}

// Side is how one side's initial sequence number is presented to the other end: the client
// side (client_isn: what the server sees) or the server side (server_isn: what the client
// sees). A nil *Side behaves as keep. A Side is safe for concurrent use.
type Side struct {
	mode Mode
	a, b uint32         // fixed: a; sequential: a=START b=STEP; range: [a, b]; offset: a (mod 2^32)
	seq  *atomic.Uint32 // sequential: next ISN; shared with the previous policy by Inherit
	key  *isnKey        // keyed: the configuration's key, filled in by LoadKey
	text string         // as written, whitespace normalised
}

// isnKey is the 128-bit SipHash key shared by every keyed Side of one Config.
type isnKey struct {
	k atomic.Pointer[[2]uint64] // nil until LoadKey
}

// Mode returns the side's ISN mode.
func (s *Side) Mode() Mode {
	if s == nil {
		return ModeKeep
	}
	return s.mode
}

// Keep reports a side that is not rewritten.
func (s *Side) Keep() bool { return s.Mode() == ModeKeep }

// Stateless reports a mode whose offset does not depend on the ISN the host chose (keep,
// offset, keyed): a flow under such a rule on both sides can be picked up mid-stream.
func (s *Side) Stateless() bool {
	switch s.Mode() {
	case ModeKeep, ModeOffset, ModeKeyed:
		return true
	}
	return false
}

// String returns the mode as written in the file, e.g. "fixed 1000".
func (s *Side) String() string {
	if s == nil || s.text == "" {
		return "keep"
	}
	return s.text
}

// Plan decides this side's shift for a new connection in which this side is self and the
// other end is peer. With absolute set, the side's ISN must appear on the wire as v (the
// offset is v minus the ISN the host chose); otherwise v is the offset itself. keep plans
// (false, 0); offset ±N plans (false, N mod 2^32); keyed plans (false, SipHash(key, self,
// peer)), never 0; fixed, sequential, range and random plan absolute values. A sequential
// side advances its counter on every call, so call it once per new connection. Plan never
// allocates.
func (s *Side) Plan(self, peer netip.AddrPort) (absolute bool, v uint32) {
	switch s.Mode() {
	case ModeFixed:
		return true, s.a
	case ModeSequential:
		return true, s.seq.Add(s.b) - s.b
	case ModeRange:
		return true, uniform(s.a, s.b)
	case ModeRandom:
		return true, random32()
	case ModeOffset:
		return false, s.a
	case ModeKeyed:
		return false, s.key.offset(self, peer)
	}
	return false, 0
}

// offset is the keyed shift for (self, peer). Both addresses are hashed in their 16-byte
// form (IPv4 as ::ffff:a.b.c.d) so that the result does not depend on how the caller spelled
// them. Before LoadKey it is 0, which leaves the side unshifted rather than shifting it by a
// value anyone could compute from an all-zero key.
func (k *isnKey) offset(self, peer netip.AddrPort) uint32 {
	if k == nil {
		return 0
	}
	key := k.k.Load()
	if key == nil {
		return 0
	}
	var buf [36]byte
	a := self.Addr().Unmap().As16()
	copy(buf[0:16], a[:])
	binary.BigEndian.PutUint16(buf[16:18], self.Port())
	a = peer.Addr().Unmap().As16()
	copy(buf[18:34], a[:])
	binary.BigEndian.PutUint16(buf[34:36], peer.Port())
	h := siphash.Hash(key[0], key[1], buf[:])
	v := uint32(h) ^ uint32(h>>32)
	if v == 0 {
		// A zero shift would make the flow indistinguishable from keep; the bias this adds
		// (one value in 2^32 counted twice) is immaterial.
		v = 1
	}
	return v
}

// entropy is a buffer of crypto/rand output owned by one goroutine between Get and Put, so
// that random and range draws cost a pool round trip instead of a getrandom call each, and
// never allocate. Bytes handed out are zeroed, so no value is ever served twice.
type entropy struct {
	buf [512]byte
	off int
}

var entropyPool = sync.Pool{New: func() any { return &entropy{off: len(entropy{}.buf)} }}

func random32() uint32 {
	e := entropyPool.Get().(*entropy)
	if e.off+4 > len(e.buf) {
		// crypto/rand.Read never fails (since Go 1.24 it aborts the program instead).
		_, _ = rand.Read(e.buf[:])
		e.off = 0
	}
	v := binary.LittleEndian.Uint32(e.buf[e.off:])
	clear(e.buf[e.off : e.off+4])
	e.off += 4
	entropyPool.Put(e)
	return v
}

// uniform returns a value uniform in [lo, hi] by Lemire's multiply-and-reject method: no
// modulo bias, and almost never more than one draw.
func uniform(lo, hi uint32) uint32 {
	n := uint64(hi-lo) + 1
	if n > math.MaxUint32 {
		return random32()
	}
	m := uint64(random32()) * n
	if uint32(m) < uint32(n) {
		thresh := uint32(-uint32(n)) % uint32(n) // 2^32 mod n
		for uint32(m) < thresh {
			m = uint64(random32()) * n
		}
	}
	return lo + uint32(m>>32)
}

// parseSide reads an ISN mode string; the message is empty on success.
func parseSide(text string) (*Side, string) {
	f := strings.Fields(text)
	s := &Side{text: strings.Join(f, " ")}
	if len(f) == 0 {
		return nil, "empty ISN mode; " + modeHelp
	}
	want := func(n int, form string) string {
		if len(f) != n {
			return fmt.Sprintf("%q: want %q", s.text, form)
		}
		return ""
	}
	var msg string
	switch f[0] {
	case "keep":
		s.mode, msg = ModeKeep, want(1, "keep")
	case "random":
		s.mode, msg = ModeRandom, want(1, "random")
	case "keyed":
		s.mode, msg = ModeKeyed, want(1, "keyed")
	case "fixed":
		s.mode = ModeFixed
		if msg = want(2, "fixed N"); msg == "" {
			s.a, msg = parseISN(f[1])
		}
	case "sequential":
		s.mode = ModeSequential
		if msg = want(3, "sequential START STEP"); msg == "" {
			if s.a, msg = parseISN(f[1]); msg == "" {
				s.b, msg = parseISN(f[2])
			}
			if msg == "" && s.b == 0 {
				msg = fmt.Sprintf("%q: step 0 gives every connection the same ISN; write fixed %s", s.text, f[1])
			}
			s.seq = new(atomic.Uint32)
			s.seq.Store(s.a)
		}
	case "range":
		s.mode = ModeRange
		if msg = want(2, "range LO-HI"); msg == "" {
			lo, hi, ok := strings.Cut(f[1], "-")
			if !ok {
				msg = fmt.Sprintf("%q: want range LO-HI, e.g. range 1-2147483647", s.text)
				break
			}
			if s.a, msg = parseISN(lo); msg == "" {
				s.b, msg = parseISN(hi)
			}
			if msg == "" && s.a > s.b {
				msg = fmt.Sprintf("%q: the low end %d is above the high end %d", s.text, s.a, s.b)
			}
		}
	case "offset":
		s.mode = ModeOffset
		if msg = want(2, "offset ±N"); msg == "" {
			num, neg := f[1], false
			switch {
			case strings.HasPrefix(num, "+"):
				num = num[1:]
			case strings.HasPrefix(num, "-"):
				num, neg = num[1:], true
			}
			if s.a, msg = parseISN(num); msg == "" {
				if s.a == 0 {
					msg = fmt.Sprintf("%q shifts nothing; write keep", s.text)
				}
				if neg {
					s.a = -s.a
				}
			}
		}
	default:
		msg = fmt.Sprintf("unknown ISN mode %q; %s", f[0], modeHelp)
	}
	if msg != "" {
		return nil, msg
	}
	return s, ""
}

const modeHelp = "want keep, fixed N, sequential START STEP, range LO-HI, random, offset ±N or keyed"

// parseISN reads a 32-bit sequence number: decimal, or hexadecimal with 0x.
func parseISN(s string) (uint32, string) {
	base, digits := 10, s
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		base, digits = 16, s[2:]
	}
	if digits == "" || digits[0] == '+' || digits[0] == '-' {
		return 0, fmt.Sprintf("%q is not a number 0..4294967295", s)
	}
	v, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Sprintf("%s is out of range 0..4294967295", s)
		}
		return 0, fmt.Sprintf("%q is not a number 0..4294967295", s)
	}
	return uint32(v), ""
}

// sameSequence reports two sequential sides with the same START and STEP, whose counter a
// reload may carry over.
func sameSequence(a, b *Side) bool {
	return a != nil && b != nil && a.mode == ModeSequential && b.mode == ModeSequential && a.a == b.a && a.b == b.b
}
