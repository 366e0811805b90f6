package frame

import (
	"math/rand/v2"
	"testing"
)

// sumBytewise is the textbook one's complement sum, two bytes at a time: the
// reference Sum is checked against and the baseline of BenchmarkChecksum.
func sumBytewise(b []byte, acc uint32) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return acc
}

func TestChecksumKnown(t *testing.T) {
	// RFC 1071 section 3 example: the sum of these words is 0xddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Sum(b, 0)); got != 0xddf2 {
		t.Fatalf("Fold(Sum) = %#04x, want 0xddf2", got)
	}
	if got := Checksum(b); got != ^uint16(0xddf2) {
		t.Fatalf("Checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	if got := Checksum(nil); got != 0xffff {
		t.Fatalf("Checksum(nil) = %#04x, want 0xffff", got)
	}
}

func TestSumMatchesBytewise(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	all := make([]byte, 4096)
	for i := range all {
		all[i] = 0xff
	}
	for _, src := range [][]byte{buf, all} {
		for n := 0; n <= 300; n++ {
			for _, off := range []int{0, 1, 2, 3, 7} {
				b := src[off : off+n]
				if got, want := Fold(Sum(b, 0)), uint16(sumBytewise(b, 0)); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
					t.Fatalf("len %d off %d: Fold(Sum) = %#04x, bytewise %#04x", n, off, got, want)
				}
			}
		}
		for i := 0; i < 200; i++ {
			n := r.IntN(4000)
			off := r.IntN(len(src) - n)
			b := src[off : off+n]
			acc := r.Uint32() & 0xffff
			if got, want := Fold(Sum(b, acc)), uint16(sumBytewise(b, acc)); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
				t.Fatalf("len %d acc %#x: Fold(Sum) = %#04x, bytewise %#04x", n, acc, got, want)
			}
		}
	}
}

func TestSumChains(t *testing.T) {
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	whole := Fold(Sum(b, 0))
	for cut := 0; cut <= len(b); cut += 2 {
		if got := Fold(Sum(b[cut:], Sum(b[:cut], 0))); got != whole {
			t.Fatalf("cut %d: chained %#04x, whole %#04x", cut, got, whole)
		}
	}
}

// TestIPv4SumsMatchBytewise: the one-pass sums of a 20-byte header agree
// with the reference for random headers, all-ones and all-zero ones, and
// headers whose checksum field is set to verify.
func TestIPv4SumsMatchBytewise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	same := func(got, want uint16) bool {
		return got == want || (got == 0xffff && want == 0) || (got == 0 && want == 0xffff)
	}
	for i := 0; i < 20000; i++ {
		h := make([]byte, 24) // longer than the header: only h[:20] counts
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		switch i % 4 {
		case 1:
			for j := range h {
				h[j] = 0xff
			}
		case 2:
			clear(h)
		case 3: // a verifying checksum
			h[10], h[11] = 0, 0
			c := ^uint16(sumBytewise(h[:20], 0))
			h[10], h[11] = byte(c>>8), byte(c)
		}
		hdr, addrs := ipv4Sums(h)
		if want := uint16(sumBytewise(h[:20], 0)); !same(hdr, want) {
			t.Fatalf("%x: header sum %#04x, bytewise %#04x", h[:20], hdr, want)
		}
		if want := uint16(sumBytewise(h[12:20], 0)); !same(addrs, want) {
			t.Fatalf("%x: address sum %#04x, bytewise %#04x", h[:20], addrs, want)
		}
		if i%4 == 3 && hdr != 0xffff {
			t.Fatalf("%x: verifying header sums to %#04x", h[:20], hdr)
		}
	}
}
