package fifo_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// Benchmarks come in pairs: the fifo path and its baseline, run with the
// same unit of work, so one `go test -bench . ./fifo/` run gives the
// ratios. The stream baselines that do the same job on the same two CPUs
// (CrossCoreCopy, ChanStream, SocketpairStream) are in baseline_test.go;
// Memmove and CoreToCore here are context: what one core copies, and how
// fast lines move between the two.
//
// "64KiB" is the chunk each operation moves through a 4 MiB (benchFifo)
// fifo in a memfd segment. The producer and the consumer are two
// goroutines, each on a thread pinned to a CPU of its own (see pinned),
// each with its own view of the fifo as two processes have, each polling
// while the fifo is full or empty (see poller). MB/s counts payload bytes
// delivered to the consumer. The work per byte:
//
//   - Memmove (context): one copy, on one core, of a 64 KiB source
//     that stays in cache into successive 64 KiB slots of a 4 MiB buffer:
//     writing every byte once into memory the size of the fifo.
//   - FifoStream (the copy API): the producer Enqueues the source (one copy
//     into the fifo) and the consumer Dequeues into a 64 KiB destination (a
//     second copy, out of the fifo). One copy per core, the two cores
//     overlapping, and every cache line also moves from the producer's core
//     to the consumer's, so 1.0 of memmove is the ceiling, reached only
//     where lines cross cores about as fast as they are copied; the
//     ratio to hold is FifoStream/CrossCoreCopy.
//   - FifoZeroCopy (Reserve/Commit, PeekSlices/Release): the producer
//     reserves 64 KiB and copies the same source into it in place (the copy
//     Enqueue makes); the consumer reads every byte of the 64 KiB in place,
//     summing it as 64-bit words (a checksum: one load per 8 bytes, no
//     stores), then releases it. The producer does what the Stream producer
//     does and the consumer less than the Stream consumer (no second copy),
//     so it should be at least as fast as FifoStream; both are bound by the
//     producer's copy and by the lines crossing cores.
//
// CoreToCore is the baseline of the cores' distance: a two-core benchmark
// is only as fast as cache lines move between its two CPUs.
//
// Each side publishes its index once per call: once per chunk for
// FifoZeroCopy (it waits for a whole chunk of room or data), and for
// FifoStream once per Enqueue or Dequeue, which take what fits or what is
// there, in practice whole chunks since the other side publishes whole
// chunks. Neither re-reads the other side's index while its cached copy
// shows enough room or data (Reserve, Enqueue and Dequeue use the cache;
// PeekSlices reads the index every time).

const (
	benchChunk = 64 << 10
	benchFifo  = 4 << 20
)

// pinned runs producer and consumer in two goroutines, each locked to its
// own thread bound to its own CPU (the first two the process may run on),
// so the benchmark measures two cores passing data, not one core taking
// turns (which the scheduler otherwise often arranges and which makes the
// numbers swing by 5x between runs). XSESSIOND_BENCH_PIN=0, or fewer than
// two CPUs, leaves placement to the scheduler. It returns the first error,
// a failure to pin included.
func pinned(producer, consumer func() error) error {
	cpus, err := benchCPUs()
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	run := func(cpu int, fn func() error) {
		var pinErr error
		if cpu >= 0 {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			pinErr = pinThread(cpu)
		}
		// Run even when pinning failed: the other side needs this one to
		// finish, and the error is reported either way.
		errs <- errors.Join(pinErr, fn())
	}
	go run(cpus[0], producer)
	go run(cpus[1], consumer)
	return errors.Join(<-errs, <-errs)
}

// benchCPUs returns the CPUs pinned puts the producer and the consumer on,
// -1 for none.
func benchCPUs() ([2]int, error) {
	none := [2]int{-1, -1}
	if os.Getenv("XSESSIOND_BENCH_PIN") == "0" {
		return none, nil
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return none, fmt.Errorf("pin: %w", err)
	}
	cpus, k := none, 0
	for c := 0; c < 64*len(allowed) && k < 2; c++ {
		if allowed.IsSet(c) {
			cpus[k] = c
			k++
		}
	}
	if k < 2 {
		return none, nil
	}
	return cpus, nil
}

// pinThread binds the calling (locked) thread to cpu and checks it took.
func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	var got unix.CPUSet
	if err := unix.SchedGetaffinity(0, &got); err != nil {
		return fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	if got.Count() != 1 || !got.IsSet(cpu) {
		return fmt.Errorf("pin to cpu %d: thread runs on %d cpus", cpu, got.Count())
	}
	return nil
}

// poller is how a side waits for the other: the caller retries its fifo
// call, which re-reads the other side's index, and every every-th failed
// try also yields the processor (runtime.Gosched), so the benchmark still
// makes progress when both sides share one CPU or the other side's thread
// is not running.
//
// The stream benchmarks poll (every = pollSpin, some microseconds of
// retries, longer than a chunk takes). A side on a core of its own polls,
// and polling costs the other side nothing, whereas runtime.Gosched on a
// locked thread hands the P to another thread and back through the kernel
// (futex wakes and sleeps, context switches, the woken thread sometimes on
// the other side's CPU): yielding on every failed try ran at hundreds of
// thousands of context switches per second, mostly on behalf of whichever
// side had less to do, and slowed the busy side down.
//
// The datagram benchmark yields on every failed try (every = 1): with
// 112-byte records, a consumer polling an index the producer stores once
// per record pulls that cache line across on every record, and lets no
// batch build up; yielding does, as a consumer woken by an event does.
type poller struct{ misses, every uint }

// pollSpin is the stream benchmarks' failed tries between yields.
const pollSpin = 1 << 10

func (p *poller) wait() {
	p.misses++
	if p.misses%p.every == 0 {
		runtime.Gosched()
	}
}

// benchFifoPair returns a benchFifo-byte fifo in a new memfd segment as two
// views: prod for the producer (the owner's) and cons for the consumer
// (attached as another process would).
func benchFifoPair(b *testing.B) (prod, cons *fifo.Fifo) {
	seg := fifotest.MemfdSegment(b, 2*benchFifo)
	f, err := seg.AllocFifo(benchFifo)
	if err != nil {
		b.Fatal(err)
	}
	return f, fifotest.View(b, f)
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

// BenchmarkCoreToCore is the baseline under the two-core benchmarks: two
// pinned goroutines (as pinned places them) pass a counter back and forth
// through two cache lines, each side waiting for the other's store. ns/op
// is one round trip, two cache-line transfers between the cores. A fifo
// moves every line of its data across once, so when this is several times
// its usual value (the cores, or the virtual CPUs under them, are far
// apart or shared), FifoStream and FifoZeroCopy drop by as much while
// Memmove does not.
func BenchmarkCoreToCore(b *testing.B) {
	b.Run("line", func(b *testing.B) {
		var ping, pong paddedCounter
		b.ReportAllocs()
		b.ResetTimer()
		err := pinned(func() error {
			for i := range uint64(b.N) {
				for pong.n.Load() != i {
				}
				ping.n.Store(i + 1)
			}
			return nil
		}, func() error {
			for i := range uint64(b.N) {
				pong.n.Store(i)
				for ping.n.Load() != i+1 {
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	})
}

// paddedCounter is a counter alone on its cache line (and the next: the
// line pair some prefetchers fetch together).
type paddedCounter struct {
	_ [2 * fifo.CacheLine]byte
	n atomic.Uint64
	_ [2 * fifo.CacheLine]byte
}

func BenchmarkFifoStream(b *testing.B) { b.Run("64KiB", benchStream) }

func benchStream(b *testing.B) {
	prod, cons := benchFifoPair(b)
	src := make([]byte, benchChunk)
	dst := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	err := pinned(func() error {
		p := poller{every: pollSpin}
		return streamIn(prod, b.N, src, &p)
	}, func() error {
		p := poller{every: pollSpin}
		return streamOut(cons, b.N, dst, &p)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// streamIn is FifoStream's producer: n chunks of src Enqueued into prod.
func streamIn(prod *fifo.Fifo, n int, src []byte, p *poller) error {
	return streamChunks(n, src, p, prod.Enqueue, fifo.ErrNoSpace)
}

// streamOut is FifoStream's consumer: n chunks Dequeued from cons into dst.
func streamOut(cons *fifo.Fifo, n int, dst []byte, p *poller) error {
	return streamChunks(n, dst, p, cons.Dequeue, fifo.ErrEmpty)
}

// streamChunks moves n chunks of buf through call (Enqueue or Dequeue),
// each call taking what it can of the rest of the chunk, polling with p
// while a call moves nothing; wait is the error of a call that had to
// wait (full or empty).
func streamChunks(n int, buf []byte, p *poller, call func([]byte) (int, error), wait error) error {
	for range n {
		for done := 0; done < benchChunk; {
			k, err := call(buf[done:])
			if err != nil && !errors.Is(err, wait) {
				return err
			}
			if k == 0 {
				p.wait()
			}
			done += k
		}
	}
	return nil
}

func BenchmarkFifoZeroCopy(b *testing.B) { b.Run("64KiB", benchZeroCopy) }

func benchZeroCopy(b *testing.B) {
	prod, cons := benchFifoPair(b)
	src := make([]byte, benchChunk)
	for i := range src {
		src[i] = byte(i)
	}
	var want uint64 // the checksum of one chunk
	for i := 0; i < benchChunk; i += 8 {
		want += binary.LittleEndian.Uint64(src[i:])
	}
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	err := pinned(func() error {
		p := poller{every: pollSpin}
		for range b.N {
			var x, y []byte
			for {
				var err error
				x, y, err = prod.Reserve(benchChunk)
				if err == nil && len(x)+len(y) == benchChunk {
					break
				}
				if err != nil && !errors.Is(err, fifo.ErrNoSpace) {
					return err
				}
				p.wait()
			}
			n := copy(x, src)
			copy(y, src[n:])
			if err := prod.Commit(benchChunk); err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		p := poller{every: pollSpin}
		var sum uint64
		for range b.N {
			var x, y []byte
			for {
				var err error
				x, y, err = cons.PeekSlices()
				if err == nil && len(x)+len(y) >= benchChunk {
					break
				}
				if err != nil && !errors.Is(err, fifo.ErrEmpty) {
					return err
				}
				p.wait()
			}
			// PeekSlices shows everything queued; read the first chunk.
			if len(x) >= benchChunk {
				x, y = x[:benchChunk], nil
			} else {
				y = y[:benchChunk-len(x)]
			}
			sum += sum64(x) + sum64(y)
			if err := cons.Release(benchChunk); err != nil {
				return err
			}
		}
		if sum != uint64(b.N)*want {
			return fmt.Errorf("checksum of %d chunks = %#x, want %#x", b.N, sum, uint64(b.N)*want)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// sum64 adds up p as little-endian 64-bit words, one cache line per step
// into four independent sums, so the loads and not a chain of adds set the
// pace. len(p) is a multiple of 8 here.
func sum64(p []byte) uint64 {
	const line = fifo.CacheLine
	var s0, s1, s2, s3 uint64
	i := 0
	for ; i+line <= len(p); i += line {
		q := p[i : i+line : i+line]
		s0 += binary.LittleEndian.Uint64(q[0:8]) + binary.LittleEndian.Uint64(q[32:40])
		s1 += binary.LittleEndian.Uint64(q[8:16]) + binary.LittleEndian.Uint64(q[40:48])
		s2 += binary.LittleEndian.Uint64(q[16:24]) + binary.LittleEndian.Uint64(q[48:56])
		s3 += binary.LittleEndian.Uint64(q[24:32]) + binary.LittleEndian.Uint64(q[56:64])
	}
	for ; i+8 <= len(p); i += 8 {
		s0 += binary.LittleEndian.Uint64(p[i : i+8])
	}
	return s0 + s1 + s2 + s3
}

// The datagram pair: 64-byte payloads, one datagram per call on both
// sides. The fifo moves whole records (48-byte header + 64-byte payload)
// through a 4 MiB fifo, polling like the stream benchmarks; the baseline
// writes and reads 64-byte messages on a SOCK_SEQPACKET unix socketpair
// (blocking calls). Both report msgs/s; MB/s counts payload bytes.

const dgramPayload = 64

func BenchmarkFifoDgram(b *testing.B) { b.Run("64B", benchDgram) }

func benchDgram(b *testing.B) {
	prod, cons := benchFifoPair(b)
	payload := make([]byte, dgramPayload)
	buf := make([]byte, 2048)
	b.SetBytes(dgramPayload)
	b.ReportAllocs()
	b.ResetTimer()
	err := pinned(func() error {
		var h fifo.DgramHeader
		h.Family = 4
		p := poller{every: 1}
		for range b.N {
			for {
				err := prod.EnqueueDgram(&h, payload)
				if err == nil {
					break
				}
				if !errors.Is(err, fifo.ErrNoSpace) {
					return err
				}
				p.wait()
			}
		}
		return nil
	}, func() error {
		var h fifo.DgramHeader
		p := poller{every: 1}
		for got := 0; got < b.N; {
			_, err := cons.DequeueDgram(&h, buf)
			if errors.Is(err, fifo.ErrEmpty) {
				p.wait()
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
