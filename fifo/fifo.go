package fifo

import (
	"sync/atomic"

	"github.com/xsessiond/xsessiond/internal/shmsync"
)

// Fifo is a single-producer single-consumer byte queue in a segment. Its
// header (FifoHeaderSize bytes at Offset) holds the producer index (tail)
// and the consumer index (head), each on its own cache line, and the event
// flags; its data (Size bytes, a power of two) follows the header.
//
// Indices are free-running 32-bit counters: the byte at index i lives at
// data[i & (Size-1)], and tail - head (mod 2^32) is the number of bytes
// queued, never more than Size.
//
// A Fifo value is one process's view and keeps private state: the fifo's
// offset and size (never re-read from shared memory), the index it owns as
// producer and as consumer, and the last value it read of the other side's
// index. Producer calls (Enqueue, Reserve, Commit, EnqueueDgram(s),
// MaxEnqueue, SetEvent, WantDeqNotify) use the private tail and read the
// shared head; consumer calls (Dequeue, Peek, Drop, PeekSlices, Release,
// DequeueDgram(s), PeekDgram, DropDgram, MaxDequeue, ClearEvent, DeqNotify)
// use the private head and read the shared tail. Every index read from
// shared memory is checked (tail - head <= Size) before use and every
// datagram or event header is checked against what is queued; a check that
// fails returns ErrCorrupt and changes nothing. Nothing the peer writes can
// make a call read or write outside the fifo's data.
//
// One goroutine may make producer calls while another makes consumer calls
// on the same Fifo value; producer calls must not run concurrently with
// each other, nor consumer calls with each other. A view that only
// produces must not rely on MaxDequeue (its private head is not updated by
// the other process), and one that only consumes must not rely on
// MaxEnqueue.
type Fifo struct {
	seg  *Segment
	off  uint32
	size uint32
	mask uint32
	data []byte // the fifo's data, len(data) == size

	tail     *atomic.Uint32 // shared: producer index
	head     *atomic.Uint32 // shared: consumer index
	hasEvent *atomic.Uint32
	wantDeq  *atomic.Uint32
	hasDeq   *atomic.Uint32
	closeReq *atomic.Uint32
	taken    *atomic.Uint32
	gen      uint32 // the allocation's number: the owner's record, or the header's when the view was made

	_ [CacheLine]byte
	p endState // producer's private state: tail owned, head cached
	_ [CacheLine]byte
	c endState // consumer's private state: head owned, tail cached
	_ [CacheLine]byte
}

// endState is one side's private copy of the two indices.
type endState struct {
	tail, head uint32
}

// fifoGen numbers the fifos this process allocates (FifoOffGen).
var fifoGen atomic.Uint32

// nextFifoGen returns a new allocation number, never 0.
func nextFifoGen() uint32 {
	g := fifoGen.Add(1)
	if g == 0 {
		g = fifoGen.Add(1)
	}
	return g
}

// initFifoHeader writes a new fifo's header: both indices zero, no events,
// allocation number gen.
func initFifoHeader(hdr []byte, off, size, gen uint32) {
	clear(hdr[:FifoHeaderSize])
	u32At(hdr, FifoOffSize).Store(size)
	u32At(hdr, FifoOffSelf).Store(off)
	u32At(hdr, FifoOffGen).Store(gen)
	u32At(hdr, FifoOffMagic).Store(FifoMagic)
}

// newFifo makes a view of the fifo at off whose indices are head and tail
// (already validated) and whose allocation number is gen.
func newFifo(s *Segment, off, size, head, tail, gen uint32) *Fifo {
	hdr := s.mem[off : off+FifoHeaderSize]
	f := &Fifo{
		seg:      s,
		off:      off,
		size:     size,
		mask:     size - 1,
		data:     s.mem[off+FifoHeaderSize : off+FifoHeaderSize+size : off+FifoHeaderSize+size],
		tail:     u32At(hdr, FifoOffTail),
		head:     u32At(hdr, FifoOffHead),
		hasEvent: u32At(hdr, FifoOffHasEvent),
		wantDeq:  u32At(hdr, FifoOffWantDeqNtf),
		hasDeq:   u32At(hdr, FifoOffHasDeqNtf),
		closeReq: u32At(hdr, FifoOffClose),
		taken:    u32At(hdr, FifoOffTaken),
		gen:      gen,
	}
	f.p = endState{tail: tail, head: head}
	f.c = endState{tail: tail, head: head}
	return f
}

// Offset returns the offset of the fifo's header in its segment.
func (f *Fifo) Offset() uint32 { return f.off }

// Size returns the fifo's data size in bytes.
func (f *Fifo) Size() uint32 { return f.size }

// Segment returns the segment the fifo lives in.
func (f *Fifo) Segment() *Segment { return f.seg }

// prodFree returns the free space as the producer sees it. It reads the
// shared head only when the cached one shows less than want free. ok is
// false when the shared head is inconsistent with the private tail.
func (f *Fifo) prodFree(want uint32) (free uint32, ok bool) {
	free = f.size - (f.p.tail - f.p.head)
	if free >= want {
		return free, true
	}
	h := f.head.Load() // acquire: the consumer is done with bytes before h
	used := f.p.tail - h
	if used > f.size {
		return 0, false
	}
	f.p.head = h
	return f.size - used, true
}

// consUsed returns the queued bytes as the consumer sees them. It reads the
// shared tail only when the cached one shows less than want queued. ok is
// false when the shared tail is inconsistent with the private head.
func (f *Fifo) consUsed(want uint32) (used uint32, ok bool) {
	used = f.c.tail - f.c.head
	if used >= want {
		return used, true
	}
	t := f.tail.Load() // acquire: bytes before t are written
	used = t - f.c.head
	if used > f.size {
		return 0, false
	}
	f.c.tail = t
	return used, true
}

// publishTail makes the bytes before the private tail visible (release).
func (f *Fifo) publishTail(t uint32) {
	f.p.tail = t
	shmsync.Store32(f.tail, t)
}

// publishHead hands the bytes before the private head back (release).
func (f *Fifo) publishHead(h uint32) {
	f.c.head = h
	shmsync.Store32(f.head, h)
}

// clampLen turns a length argument into a want value no larger than the
// fifo.
func (f *Fifo) clampLen(n int) uint32 {
	if n >= int(f.size) {
		return f.size
	}
	return uint32(n)
}

// write copies p (len(p) <= Size) into the data at index pos, wrapping.
func (f *Fifo) write(pos uint32, p []byte) {
	off := pos & f.mask
	n := copy(f.data[off:], p)
	if n < len(p) {
		copy(f.data, p[n:])
	}
}

// read copies len(p) <= Size bytes at index pos out of the data, wrapping.
//
// A plain copy, left to the hardware prefetchers. Loading each line of a
// 4 KiB block before copying it (so the copy reads local lines) made
// BenchmarkFifoStream slower on a 2-vCPU VM whose cores are ~1 us of line
// round trip apart: in five interleaved A/B series of 20-30 runs the
// median time per chunk was 1.08-1.5x that of the plain copy, probably as
// it waits for all of a block's lines before copying any of them, where
// the plain copy overlaps the transfers with the copying.
func (f *Fifo) read(pos uint32, p []byte) {
	off := pos & f.mask
	n := copy(p, f.data[off:])
	if n < len(p) {
		copy(p[n:], f.data)
	}
}

// slices returns the n <= Size bytes at index pos as at most two slices of
// the data, each capped at its length.
func (f *Fifo) slices(pos, n uint32) (a, b []byte) {
	off := pos & f.mask
	first := f.size - off
	if n <= first {
		return f.data[off : off+n : off+n], nil
	}
	return f.data[off:f.size:f.size], f.data[0 : n-first : n-first]
}

// MaxEnqueue returns the free bytes (producer's view), 0 if the fifo is
// corrupt.
func (f *Fifo) MaxEnqueue() int {
	free, ok := f.prodFree(f.size + 1)
	if !ok {
		return 0
	}
	return int(free)
}

// Queued reports whether bytes are queued, as a third party sees the fifo:
// it reads the shared indices only, never either side's private state, so
// any goroutine may call it (a waker deciding whom to wake).
func (f *Fifo) Queued() bool { return f.tail.Load() != f.head.Load() }

// QueuedBytes returns the bytes queued as a third party sees the fifo
// (shared indices only; any goroutine may call it, the producer among
// them, whose own view knows nothing of what the consumer took), 0 when
// the indices are inconsistent.
func (f *Fifo) QueuedBytes() int {
	h := f.head.Load()
	used := f.tail.Load() - h
	if used > f.size {
		return 0
	}
	return int(used)
}

// SharedHead returns the head index the consumer published, as a third
// party sees it (any goroutine may call it): it moves as the consumer
// takes bytes, so a waiter can tell a consumer that drains from one that
// is stuck.
func (f *Fifo) SharedHead() uint32 { return f.head.Load() }

// HasRoom reports whether the fifo has free space, as a third party sees
// it (shared indices only; any goroutine may call it).
func (f *Fifo) HasRoom() bool { return f.tail.Load()-f.head.Load() < f.size }

// Pending reports whether the consumer has something to do (consumer's
// view): bytes queued, or indices a misbehaving producer broke, on which
// the next read fails with ErrCorrupt (and the caller ends what the fifo
// carries) rather than waiting for bytes that will never be whole.
func (f *Fifo) Pending() bool {
	used, ok := f.consUsed(1)
	return !ok || used > 0
}

// MaxDequeue returns the queued bytes (consumer's view), 0 if the fifo is
// corrupt.
func (f *Fifo) MaxDequeue() int {
	used, ok := f.consUsed(f.size + 1)
	if !ok {
		return 0
	}
	return int(used)
}

// Enqueue copies as much of p as fits and returns how much that was. It
// returns ErrNoSpace when p is not empty and nothing fits.
func (f *Fifo) Enqueue(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	free, ok := f.prodFree(f.clampLen(len(p)))
	if !ok {
		return 0, ErrCorrupt
	}
	if free == 0 {
		return 0, ErrNoSpace
	}
	n := min(f.clampLen(len(p)), free)
	t := f.p.tail
	f.write(t, p[:n])
	f.publishTail(t + n)
	return int(n), nil
}

// Dequeue copies up to len(p) queued bytes into p, removes them, and
// returns how many. It returns ErrEmpty when p is not empty and nothing is
// queued.
func (f *Fifo) Dequeue(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	used, ok := f.consUsed(f.clampLen(len(p)))
	if !ok {
		return 0, ErrCorrupt
	}
	if used == 0 {
		return 0, ErrEmpty
	}
	n := min(f.clampLen(len(p)), used)
	h := f.c.head
	f.read(h, p[:n])
	f.publishHead(h + n)
	return int(n), nil
}

// Peek copies up to len(p) bytes queued at off bytes past the head into p
// without removing anything. It returns ErrEmpty when p is not empty and
// nothing is queued at off.
func (f *Fifo) Peek(off int, p []byte) (int, error) {
	if off < 0 {
		return 0, ErrInvalidLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int(f.size) {
		if _, ok := f.consUsed(0); !ok {
			return 0, ErrCorrupt
		}
		return 0, ErrEmpty
	}
	used, ok := f.consUsed(f.clampLen(off + min(len(p), int(f.size))))
	if !ok {
		return 0, ErrCorrupt
	}
	o := uint32(off)
	if o >= used {
		return 0, ErrEmpty
	}
	n := min(f.clampLen(len(p)), used-o)
	f.read(f.c.head+o, p[:n])
	return int(n), nil
}

// Drop removes n queued bytes. It returns ErrInvalidLength when fewer than
// n are queued.
func (f *Fifo) Drop(n int) error {
	if n < 0 || n > int(f.size) {
		return ErrInvalidLength
	}
	used, ok := f.consUsed(uint32(n))
	if !ok {
		return ErrCorrupt
	}
	if uint32(n) > used {
		return ErrInvalidLength
	}
	f.publishHead(f.c.head + uint32(n))
	return nil
}

// Reserve returns up to n bytes of free space (all of it when n <= 0) as at
// most two slices, the second one used when the region wraps, for the
// producer to fill in place; Commit makes them visible. It returns
// ErrNoSpace when nothing is free. Nothing is queued until Commit, and
// Reserve holds nothing: calling it again returns the same space.
func (f *Fifo) Reserve(n int) (a, b []byte, err error) {
	want := f.size
	if n > 0 {
		want = f.clampLen(n)
	}
	free, ok := f.prodFree(want)
	if !ok {
		return nil, nil, ErrCorrupt
	}
	if free == 0 {
		return nil, nil, ErrNoSpace
	}
	a, b = f.slices(f.p.tail, min(want, free))
	return a, b, nil
}

// Commit queues the next n bytes of free space, as filled after Reserve.
// It returns ErrInvalidLength when fewer than n bytes are free.
//
// Each Commit stores the shared tail, whose cache line a polling consumer
// keeps reading, so commit in large batches: in BenchmarkFifoZeroCopy,
// committing every 4 KiB instead of once per 64 KiB chunk halved the
// throughput (every 16 KiB: a few percent). The same holds for Release
// and the head.
func (f *Fifo) Commit(n int) error {
	if n < 0 || n > int(f.size) {
		return ErrInvalidLength
	}
	free, ok := f.prodFree(uint32(n))
	if !ok {
		return ErrCorrupt
	}
	if uint32(n) > free {
		return ErrInvalidLength
	}
	f.publishTail(f.p.tail + uint32(n))
	return nil
}

// PeekSlices returns everything queued as at most two slices of the fifo's
// data, the second one used when the region wraps, for the consumer to read
// in place; Release removes what it used. It returns ErrEmpty when nothing
// is queued. The bytes are shared memory: a misbehaving peer can change
// them while they are read.
func (f *Fifo) PeekSlices() (a, b []byte, err error) {
	used, ok := f.consUsed(f.size + 1)
	if !ok {
		return nil, nil, ErrCorrupt
	}
	if used == 0 {
		return nil, nil, ErrEmpty
	}
	a, b = f.slices(f.c.head, used)
	return a, b, nil
}

// Release removes n queued bytes after PeekSlices, like Drop.
func (f *Fifo) Release(n int) error { return f.Drop(n) }
