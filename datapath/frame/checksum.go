package frame

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds the one's complement sum of b, read as big-endian 16-bit words (a
// trailing odd byte is padded with a zero byte), to acc and returns the new
// accumulator. The result is not folded: pass it to Fold, or to Sum again for
// data that follows b at an even offset. acc must be below 1<<31 so sums
// chain without overflow; every value Sum returns is.
//
// It reads eight bytes at a time and folds the carries at the end: the one's
// complement sum does not depend on the byte order of the words as long as
// the result is swapped back, so the words are loaded in the machine's
// cheapest order.
func Sum(b []byte, acc uint32) uint32 {
	var s, c uint64
	// One carry chain, long runs of it: the compiler keeps the carry in
	// the flags within a run and saves it between runs.
	for len(b) >= 128 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[32:40]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[40:48]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[48:56]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[56:64]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[64:72]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[72:80]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[80:88]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[88:96]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[96:104]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[104:112]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[112:120]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[120:128]), c)
		b = b[128:]
	}
	if len(b) >= 64 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[32:40]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[40:48]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[48:56]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[56:64]), c)
		b = b[64:]
	}
	if len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint32(b[0:4])), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint16(b[0:2])), c)
		b = b[2:]
	}
	if len(b) == 1 {
		// In the little-endian view the byte at an even offset is the low
		// byte of its word; after the final swap it is the high byte.
		s, c = bits.Add64(s, uint64(b[0]), c)
	}
	s, c = bits.Add64(s, 0, c)
	s += c // cannot overflow: when c is 1, s is 0
	return acc + uint32(fold64(s))
}

// fold64 folds a one's complement sum of little-endian 64-bit loads into
// 16 bits, in big-endian word order.
func fold64(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return bits.ReverseBytes16(uint16(s))
}

// ipv4Sums returns the folded sums of the 20-byte IPv4 header h[:20]
// (0xffff when its checksum verifies) and of its two addresses h[12:20]
// (for the pseudo-header), reading each byte once.
func ipv4Sums(h []byte) (hdr, addrs uint16) {
	_ = h[19]
	a := binary.LittleEndian.Uint64(h[0:8])
	b := uint64(binary.LittleEndian.Uint32(h[8:12]))
	d := binary.LittleEndian.Uint64(h[12:20])
	s, c1 := bits.Add64(a, b, 0)
	s, c2 := bits.Add64(s, d, 0)
	s, c3 := bits.Add64(s, c1+c2, 0) // end-around carries
	s += c3                          // cannot overflow: when c3 is 1, s is at most 1
	return fold64(s), fold64(d)
}

// Fold folds an accumulator from Sum (or any 32-bit sum of 16-bit words) into
// 16 bits with end-around carries. It does not complement.
func Fold(acc uint32) uint16 {
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// Checksum returns the Internet checksum (RFC 1071) of b: the complement of
// the folded one's complement sum.
func Checksum(b []byte) uint16 { return ^Fold(Sum(b, 0)) }

// pseudoSum returns the sum of an IPv4 or IPv6 pseudo-header without its
// length field: both addresses and the protocol. src and dst are 4 or 16
// bytes long.
func pseudoSum(src, dst []byte, proto uint8) uint32 {
	return Sum(dst, Sum(src, uint32(proto)))
}
