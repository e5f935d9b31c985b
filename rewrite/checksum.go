package rewrite

import "math/bits"

// Incremental checksum update, RFC 1624 equation 3: HC' = ~(~HC + ~m + m'), one's complement
// sums throughout. The changes of all the fields a rewrite touches are summed first and applied
// to the checksum once.
//
// The one's complement sum of 16-bit words is taken modulo 0xffff, and 2^16 ≡ 2^32 ≡ 1 modulo
// 0xffff, so a 32-bit field can be added whole (~m + m' as two 32-bit values) and the 64-bit
// total folded at the end: no carry is lost and no per-word loop is needed. These helpers are
// plain functions of integers so that they inline and the sums stay in registers.

// change32 is the one's complement change when a 32-bit field goes from old to new, for a field
// at an even offset from the start of the checksummed data.
func change32(old, new uint32) uint64 { return uint64(^old) + uint64(new) }

// change16 is change32 for a 16-bit field.
func change16(old, new uint16) uint64 { return uint64(^old) + uint64(new) }

// oddToEven converts the summed changes of fields at odd offsets, whose bytes straddle two
// 16-bit words, into a change of even-aligned words: the same sum byte-swapped (RFC 1071
// section 2(B), byte order independence).
func oddToEven(odd uint64) uint64 { return uint64(bits.ReverseBytes16(fold(odd))) }

// fold reduces a 64-bit one's complement sum to 16 bits with end-around carries, the way
// Linux's csum_fold does: adding a value to itself rotated by half its width leaves in the top
// half the sum of both halves plus the carry out of the bottom half. The result is 0 only when
// s is 0; a non-zero sum folds to 1..0xffff, which is what makes update invertible.
func fold(s uint64) uint16 {
	w := uint32((s + bits.RotateLeft64(s, 32)) >> 32)
	return uint16((w + bits.RotateLeft32(w, 16)) >> 16)
}

// update returns checksum field value cs adjusted by the summed change.
//
// For any cs other than 0xffff, updating by a change and then by its inverse gives cs back
// exactly: ~cs is then non-zero, so each step's sum folds into 1..0xffff, where every residue
// modulo 0xffff has a single representative. A field holding 0xffff (another spelling of zero,
// which no sender computes: ~sum is 0xffff only for an all-zero sum, and the TCP pseudo-header
// is never all zero) comes back as 0x0000, which verifies the same.
func update(cs uint16, change uint64) uint16 { return ^fold(uint64(^cs) + change) }
