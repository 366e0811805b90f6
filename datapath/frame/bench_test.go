package frame

import (
	"fmt"
	"testing"
)

// BenchmarkDecodeUDP decodes (with both checksums) an IPv4/UDP frame of the
// given payload size; BenchmarkMemmove beside it copies a frame of the same
// length, the floor any per-packet work is measured against.
func BenchmarkDecodeUDP(b *testing.B) {
	for _, n := range []int{64, 1472} {
		f := pkt{payload: make([]byte, n), sport: 1, dport: 2}.build(b)
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			var p Packet
			b.SetBytes(int64(len(f)))
			for b.Loop() {
				if Decode(f, &p) != OK {
					b.Fatal("decode failed")
				}
			}
		})
	}
}

func BenchmarkMemmove(b *testing.B) {
	for _, n := range []int{64, 1472} {
		src := make([]byte, EthHeaderLen+IPv4HeaderLen+UDPHeaderLen+n)
		dst := make([]byte, len(src))
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

var sinkSum uint32

// BenchmarkChecksum compares Sum (8 bytes at a time) with the textbook
// two-bytes-at-a-time loop.
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{64, 1472} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkSum += Sum(buf, 0)
			}
		})
		b.Run(fmt.Sprintf("bytewise/%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sinkSum += sumBytewise(buf, 0)
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{64, 1472} {
		payload := make([]byte, n)
		dst := make([]byte, 2048)
		for _, sc := range []struct {
			name string
			spec Spec
		}{buildSpecs[0], buildSpecs[3]} { // plain IPv4 and IPv6
			var tpl Template
			if err := tpl.Prepare(sc.spec); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%dB/%s", n, sc.name), func(b *testing.B) {
				b.SetBytes(int64(tpl.HeaderLen() + n))
				for b.Loop() {
					tpl.Build(dst, payload)
				}
			})
			b.Run(fmt.Sprintf("%dB/%s/inplace", n, sc.name), func(b *testing.B) {
				b.SetBytes(int64(tpl.HeaderLen() + n))
				for b.Loop() {
					tpl.BuildInPlace(dst, n)
				}
			})
		}
	}
}
