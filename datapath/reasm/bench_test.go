package reasm

import (
	"testing"
)

// Frame layout of the benchmark: fragments of a 9,000-byte UDP datagram
// over a 1,500-byte MTU, each in its own 2,048-byte frame after 14 bytes of
// Ethernet and 20 of IPv4 header, as an AF_XDP umem holds them.
const (
	benchDatagram = 9000
	benchPiece    = 1480
	benchFrame    = 2048
	benchDataOff  = 14 + 20
)

// benchFrames returns the fragments' data, each slice inside its own
// frame.
func benchFrames() [][]byte {
	d := pattern(benchDatagram, 11)
	var fs [][]byte
	for off := 0; off < benchDatagram; off += benchPiece {
		end := min(off+benchPiece, benchDatagram)
		frame := make([]byte, benchFrame)
		n := copy(frame[benchDataOff:], d[off:end])
		fs = append(fs, frame[benchDataOff:benchDataOff+n])
	}
	return fs
}

func BenchmarkReassembly9000(b *testing.B) {
	r := New(Config{})
	fs := benchFrames()
	k := key4
	b.SetBytes(benchDatagram)
	b.ReportAllocs()
	for b.Loop() {
		k.ID = (k.ID + 1) & 0xffff
		for i, f := range fs {
			if _, res := r.Add(&k, i*benchPiece, i < len(fs)-1, f, maxEnd4, 0); res != Pending && res != Done {
				b.Fatal(res)
			}
		}
		r.Release()
	}
}

func BenchmarkCopy9000(b *testing.B) {
	b.Run("gather", func(b *testing.B) {
		fs := benchFrames()
		buf := make([]byte, BufferSize)
		b.SetBytes(benchDatagram)
		for b.Loop() {
			for i, f := range fs {
				copy(buf[i*benchPiece:], f)
			}
		}
	})
	b.Run("flat", func(b *testing.B) {
		src := pattern(benchDatagram, 11)
		dst := make([]byte, BufferSize)
		b.SetBytes(benchDatagram)
		for b.Loop() {
			copy(dst, src)
		}
	})
}
