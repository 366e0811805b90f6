package fifo_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// The stream baselines: the same job as BenchmarkFifoStream (64 KiB chunks
// from a producer's source to a consumer's 64 KiB destination, every byte
// copied in and read out, through about 4 MiB of buffering) on the same
// two CPUs (pinned), done the cheapest ways there are:
//
//   - CrossCoreCopy: a plain shared buffer, the data of a benchFifo-byte
//     fifo in a memfd segment (the same memory at the same offset as
//     FifoStream's, its header unused), cut into benchChunk slots, and two
//     counts alone on their cache lines in a memfd mapping: chunks
//     produced, stored by the producer after each copy in, and chunks
//     consumed, stored by the consumer after each copy out. Each side
//     waits while the other's count shows the ring full or empty. No byte
//     indices, no checks, no wrap: the floor for moving the bytes between
//     the two cores. FifoStream/CrossCoreCopy is the fifo's efficiency on
//     this machine. (One full/empty flag per slot instead of the two
//     counts was slower: 1.4-1.6x per chunk, paired medians of two
//     interleaved series on a loaded 2-vCPU VM.)
//   - ChanStream: a Go channel of byte slices, the idiomatic in-process
//     way: the producer copies into a free buffer (benchFifo/benchChunk of
//     them, taken from a channel of free buffers) and sends it; the
//     consumer copies it out and sends it back.
//   - SocketpairStream: a SOCK_STREAM unix socketpair, one write(2) per
//     chunk and read(2)s until the chunk is in: the kernel's copy in and
//     copy out, plus a system call or more per chunk on each side.
//
// All three report MB/s of payload delivered to the consumer.

func BenchmarkCrossCoreCopy(b *testing.B) { b.Run("64KiB", benchCrossCore) }

// crossCoreCounts are CrossCoreCopy's two counts, each alone on its cache
// line pair: chunks produced (written by the producer only) and chunks
// consumed (by the consumer only).
type crossCoreCounts struct {
	produced atomic.Uint64
	_        [2*fifo.CacheLine - 8]byte
	consumed atomic.Uint64
	_        [2*fifo.CacheLine - 8]byte
}

func benchCrossCore(b *testing.B) {
	const slots = benchFifo / benchChunk
	// The data of a fifo as benchFifoPair makes it: the same memory at the
	// same place in a memfd segment, used without the fifo's indices.
	prod, _ := benchFifoPair(b)
	buf := fifotest.Data(prod)
	counts := (*crossCoreCounts)(unsafe.Pointer(&memfdMapping(b, int(unsafe.Sizeof(crossCoreCounts{})))[0]))
	src := make([]byte, benchChunk)
	for i := range src {
		src[i] = byte(i)
	}
	dst := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	err := pinned(func() error {
		p := poller{every: pollSpin}
		for i := range uint64(b.N) {
			for i-counts.consumed.Load() >= slots {
				p.wait()
			}
			s := int(i % slots)
			copy(buf[s*benchChunk:(s+1)*benchChunk], src)
			counts.produced.Store(i + 1)
		}
		return nil
	}, func() error {
		p := poller{every: pollSpin}
		for i := range uint64(b.N) {
			for counts.produced.Load() <= i {
				p.wait()
			}
			s := int(i % slots)
			copy(dst, buf[s*benchChunk:(s+1)*benchChunk])
			counts.consumed.Store(i + 1)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if dst[benchChunk-1] != src[benchChunk-1] || dst[1] != src[1] {
		b.Fatal("the consumer's chunk differs from the producer's")
	}
}

// memfdMapping returns size bytes of a new memfd mapped shared, as a
// segment is, unmapped at the end of the benchmark.
func memfdMapping(b *testing.B, size int) []byte {
	b.Helper()
	fd, err := unix.MemfdCreate("xsessiond-bench", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		b.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func BenchmarkChanStream(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) {
		const slots = benchFifo / benchChunk
		full := make(chan []byte, slots)
		free := make(chan []byte, slots)
		for range slots {
			free <- make([]byte, benchChunk)
		}
		src := make([]byte, benchChunk)
		dst := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		err := pinned(func() error {
			for range b.N {
				buf := <-free
				copy(buf, src)
				full <- buf
			}
			return nil
		}, func() error {
			for range b.N {
				buf := <-full
				copy(dst, buf)
				free <- buf
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkSocketpairStream(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(sp[0])
		defer unix.Close(sp[1])
		// As much buffering as the fifo has, or what net.core.wmem_max
		// allows.
		if err := unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, unix.SO_SNDBUF, benchFifo); err != nil {
			b.Fatal(err)
		}
		src := make([]byte, benchChunk)
		dst := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		err = pinned(func() error {
			for range b.N {
				for done := 0; done < benchChunk; {
					n, err := unix.Write(sp[0], src[done:])
					if err != nil && !errors.Is(err, unix.EINTR) {
						return fmt.Errorf("write: %w", err)
					}
					done += max(n, 0)
				}
			}
			return nil
		}, func() error {
			for range b.N {
				for done := 0; done < benchChunk; {
					n, err := unix.Read(sp[1], dst[done:])
					if err != nil && !errors.Is(err, unix.EINTR) {
						return fmt.Errorf("read: %w", err)
					}
					if n == 0 && err == nil {
						return errors.New("read: end of stream")
					}
					done += max(n, 0)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	})
}
