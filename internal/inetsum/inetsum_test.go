package inetsum

import (
	"net/netip"
	"testing"
)

// RFC 1071 section 3's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
func TestSum_RFC1071Example(t *testing.T) {
	if got := Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("Sum = %#04x, want 0xddf2", got)
	}
	if got := Sum([]byte{0x01}, 0); got != 0x0100 {
		t.Fatalf("odd byte: %#04x, want 0x0100", got)
	}
}

func TestPseudo_IPv4(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.2.2")
	// c612 + 0102 + c612 + 0202 + 0006 + 0014
	if got, want := Pseudo(src, dst, 6, 20), uint32(0xc612+0x0102+0xc612+0x0202+6+20); got != want {
		t.Fatalf("Pseudo = %#x, want %#x", got, want)
	}
}
