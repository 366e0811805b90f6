package fifo_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// Benchmarks come in pairs: the fifo path and its baseline, run with the
// same unit of work, so one `go test -bench . ./fifo/` run gives the
// ratios.
//
// "64KiB" is the chunk each operation moves: one Enqueue (or one
// Reserve+Commit) of 64 KiB on the producer side, matched by dequeues of up
// to 64 KiB on the consumer side, through a 256 KiB fifo in a memfd
// segment, with the producer and the consumer in two goroutines (two cores
// on the test machine). MB/s counts payload bytes delivered to the
// consumer.
//
// The memmove baseline copies the same 64 KiB chunk from one buffer into
// successive 64 KiB slots of a 256 KiB buffer, on one core: one copy per
// byte with the fifo's working set. The copy API makes two copies per byte
// (in and out), one on each core, so 1.0 is its ceiling when both cores
// overlap perfectly and moving cache lines between cores were free; the
// zero-copy API makes one copy (the producer fills the reservation) and the
// consumer reads one word of every 64-byte line in place (enough to pull
// every line across cores), so it can approach memmove.

const (
	benchChunk = 64 << 10
	benchFifo  = 4 << 20
)

// pinned runs producer and consumer in two goroutines, each locked to its
// own thread bound to its own CPU, so the benchmark measures two cores
// passing data (not one core taking turns, which the scheduler otherwise
// often arranges and which makes the numbers swing by 5x between runs).
// XSESSIOND_BENCH_PIN=0 leaves placement to the scheduler. It returns the
// first error.
func pinned(producer, consumer func() error) error {
	pin := os.Getenv("XSESSIOND_BENCH_PIN") != "0" && runtime.NumCPU() >= 2
	errs := make(chan error, 2)
	run := func(cpu int, fn func() error) {
		if pin {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			var set unix.CPUSet
			set.Set(cpu)
			unix.SchedSetaffinity(0, &set)
		}
		errs <- fn()
	}
	go run(0, producer)
	go run(1, consumer)
	return errors.Join(<-errs, <-errs)
}

// backoff lets the other side run before the caller polls the fifo again.
func backoff() { runtime.Gosched() }

func benchFifoPair(b *testing.B) *fifo.Fifo {
	seg := fifotest.MemfdSegment(b, 2*benchFifo)
	f, err := seg.AllocFifo(benchFifo)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

func BenchmarkMemmove(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) {
		src := make([]byte, benchChunk)
		dst := make([]byte, benchFifo)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		off := 0
		for b.Loop() {
			copy(dst[off:off+benchChunk], src)
			off = (off + benchChunk) % benchFifo
		}
	})
}

func BenchmarkFifoStream(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) {
		f := benchFifoPair(b)
		src := make([]byte, benchChunk)
		dst := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		err := pinned(func() error {
			for range b.N {
				for f.MaxEnqueue() < benchChunk {
					backoff()
				}
				if n, err := f.Enqueue(src); n != benchChunk {
					return fmt.Errorf("Enqueue = %d, %v", n, err)
				}
			}
			return nil
		}, func() error {
			for range b.N {
				for f.MaxDequeue() < benchChunk {
					backoff()
				}
				if n, err := f.Dequeue(dst); n != benchChunk {
					return fmt.Errorf("Dequeue = %d, %v", n, err)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkFifoZeroCopy(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) {
		f := benchFifoPair(b)
		src := make([]byte, benchChunk)
		var sink uint64
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		err := pinned(func() error {
			for range b.N {
				for f.MaxEnqueue() < benchChunk {
					backoff()
				}
				x, y, err := f.Reserve(benchChunk)
				if err != nil {
					return err
				}
				n := copy(x, src)
				n += copy(y, src[n:])
				if err := f.Commit(n); err != nil || n != benchChunk {
					return fmt.Errorf("Commit(%d): %v", n, err)
				}
			}
			return nil
		}, func() error {
			for range b.N {
				for f.MaxDequeue() < benchChunk {
					backoff()
				}
				x, y, err := f.PeekSlices()
				if err != nil {
					return err
				}
				// Read the first 64 KiB in place (PeekSlices may show more).
				if len(x) > benchChunk {
					x, y = x[:benchChunk], nil
				} else if len(x)+len(y) > benchChunk {
					y = y[:benchChunk-len(x)]
				}
				sink += touchLines(x) + touchLines(y)
				if err := f.Release(benchChunk); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		_ = sink
	})
}

// touchLines reads one byte of every 64-byte line of p.
func touchLines(p []byte) uint64 {
	var s uint64
	for i := 0; i < len(p); i += 64 {
		s += uint64(p[i])
	}
	return s
}

// The datagram pair: 64-byte payloads, one datagram per call on both
// sides. The fifo moves whole records (48-byte header + 64-byte payload)
// through a 256 KiB fifo; the baseline writes and reads 64-byte messages
// on a SOCK_SEQPACKET unix socketpair. Both report msgs/s; MB/s counts
// payload bytes.

const dgramPayload = 64

func BenchmarkFifoDgram(b *testing.B) {
	b.Run("64B", func(b *testing.B) {
		f := benchFifoPair(b)
		payload := make([]byte, dgramPayload)
		buf := make([]byte, 2048)
		b.SetBytes(dgramPayload)
		b.ReportAllocs()
		b.ResetTimer()
		err := pinned(func() error {
			var h fifo.DgramHeader
			h.Family = 4
			for range b.N {
				for {
					err := f.EnqueueDgram(&h, payload)
					if err == nil {
						break
					}
					if !errors.Is(err, fifo.ErrNoSpace) {
						return err
					}
					backoff()
				}
			}
			return nil
		}, func() error {
			var h fifo.DgramHeader
			for got := 0; got < b.N; {
				_, err := f.DequeueDgram(&h, buf)
				if errors.Is(err, fifo.ErrEmpty) {
					backoff()
					continue
				}
				if err != nil {
					return err
				}
				got++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

func BenchmarkSocketpairDgram(b *testing.B) {
	b.Run("64B", func(b *testing.B) {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(sp[0])
		defer unix.Close(sp[1])
		payload := make([]byte, dgramPayload)
		buf := make([]byte, 2048)
		b.SetBytes(dgramPayload)
		b.ReportAllocs()
		b.ResetTimer()
		err = pinned(func() error {
			for range b.N {
				if _, err := unix.Write(sp[0], payload); err != nil {
					return err
				}
			}
			return nil
		}, func() error {
			for range b.N {
				if n, err := unix.Read(sp[1], buf); err != nil || n != dgramPayload {
					return fmt.Errorf("read %d: %v", n, err)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
