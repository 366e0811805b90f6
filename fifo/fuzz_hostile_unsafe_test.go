package fifo

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// guardedFifo is a fifo whose data ends exactly where an inaccessible
// (PROT_NONE) page begins, with another such page below the page holding
// its header; the bytes of that page before the header are filled with a
// canary that is checked after every operation. Any read or write past
// the data faults, any write before the header is caught by the canary.
type guardedFifo struct {
	f      *Fifo
	res    unsafe.Pointer
	resLen uintptr
	mem    []byte // the accessible pages
	off    uint32 // header offset in mem
}

const canary = 0xa5

// guarded caches one mapping per fifo size: fuzzing runs many inputs per
// process, one at a time, and mapping costs more than the rest of a run.
var guarded = map[uint32]*guardedFifo{}

func newGuardedFifo(t testing.TB, size uint32) *guardedFifo {
	g := guarded[size]
	if g == nil {
		page := uintptr(unix.Getpagesize())
		n := (uintptr(FifoHeaderSize) + uintptr(size) + page - 1) &^ (page - 1)
		resLen := n + 2*page
		res, err := unix.MmapPtr(-1, 0, nil, resLen, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		lo := unsafe.Add(res, page)
		if _, err := unix.MmapPtr(-1, 0, lo, n, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED); err != nil {
			t.Fatal(err)
		}
		mem := unsafe.Slice((*byte)(lo), n)
		g = &guardedFifo{res: res, resLen: resLen, mem: mem, off: uint32(n) - size - FifoHeaderSize}
		guarded[size] = g
	}
	for i := range g.mem {
		g.mem[i] = canary
	}
	seg := &Segment{name: "guarded", fd: -1, mem: g.mem, owner: true}
	gen := nextFifoGen()
	initFifoHeader(g.mem[g.off:], g.off, size, gen)
	g.f = newFifo(seg, g.off, size, 0, 0, gen)
	return g
}

// within reports whether b lies inside the fifo's data.
func (g *guardedFifo) within(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	lo := uintptr(unsafe.Pointer(&g.mem[g.off+FifoHeaderSize]))
	hi := uintptr(unsafe.Pointer(unsafe.SliceData(g.mem))) + uintptr(len(g.mem))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p >= lo && p+uintptr(len(b)) <= hi
}

func (g *guardedFifo) check(t *testing.T, step int) {
	t.Helper()
	for i, c := range g.mem[:g.off] {
		if c != canary {
			t.Fatalf("step %d: byte %d before the fifo header was written", step, i)
		}
	}
	f := g.f
	if f.p.tail-f.p.head > f.size || f.c.tail-f.c.head > f.size {
		t.Fatalf("step %d: private indices out of range: prod %d/%d cons %d/%d", step, f.p.head, f.p.tail, f.c.head, f.c.tail)
	}
}

var fuzzErrs = []error{nil, ErrCorrupt, ErrNoSpace, ErrEmpty, ErrShortBuffer, ErrTooLarge, ErrInvalidLength}

func knownErr(err error) bool {
	for _, e := range fuzzErrs {
		if err == e {
			return true
		}
	}
	return false
}

type fin struct{ b []byte }

func (in *fin) more() bool { return len(in.b) > 0 }
func (in *fin) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}
func (in *fin) u16() int { return int(in.byte()) | int(in.byte())<<8 }
func (in *fin) u32() uint32 {
	return uint32(in.byte()) | uint32(in.byte())<<8 | uint32(in.byte())<<16 | uint32(in.byte())<<24
}

// FuzzHostilePeer lets the input play a peer that writes anything into the
// fifo header (indices, flags, size and magic words) and the data
// (datagram headers), interleaved with every call of the trusted view. The
// trusted view must return only its sentinel errors, keep its private
// indices in range, return slices inside the fifo's data, and never touch
// memory outside the fifo (guard pages fault, a canary catches writes).
func FuzzHostilePeer(f *testing.F) {
	f.Add([]byte{2, 0, 0xff, 0xff, 0xff, 0xff, 5, 100, 0, 11, 0, 4})
	f.Add([]byte{1, 4, 50, 0, 2, 0, 0, 0, 0x10, 9, 200, 0})
	f.Add([]byte{3, 10, 100, 0, 0, 0x40, 0, 0, 0, 3, 0xff, 0xff, 0, 0, 0, 0, 11, 255, 255})
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0x80, 12, 1, 0xf0, 0xff, 0xff, 0x7f, 13, 14})
	f.Fuzz(hostile)
}

func hostile(t *testing.T, data []byte) {
	{
		in := &fin{b: data}
		size := uint32(MinFifoSize) << (in.byte() % 9) // 64 B .. 16 KiB: with 4 KiB pages, both alignments of the data
		g := newGuardedFifo(t, size)
		fi := g.f
		hdr := g.mem[g.off : g.off+FifoHeaderSize]
		buf := make([]byte, 2*size+64)
		var h DgramHeader
		hs := make([]DgramHeader, 4)
		bufs := make([][]byte, 4)
		ps := make([][]byte, 4)
		for step := 0; in.more(); step++ {
			op := in.byte() % 20
			n := in.u16() % int(2*size+64)
			var err error
			switch op {
			case 0: // peer: tail
				binary.NativeEndian.PutUint32(hdr[FifoOffTail:], in.u32())
			case 1: // peer: head
				binary.NativeEndian.PutUint32(hdr[FifoOffHead:], in.u32())
			case 2: // peer: tail near the trusted head, to get past the first check
				binary.NativeEndian.PutUint32(hdr[FifoOffTail:], fi.c.head+uint32(n))
			case 3: // peer: a datagram header at the trusted head
				var hb [DgramHeaderSize]byte
				binary.NativeEndian.PutUint32(hb[:], in.u32())
				fi.write(fi.c.head, hb[:])
			case 4: // peer: any header word (size, magic, flags)
				w := int(in.byte()) % (FifoHeaderSize / 4)
				binary.NativeEndian.PutUint32(hdr[4*w:], in.u32())
			case 5:
				_, err = fi.Enqueue(buf[:n])
			case 6:
				var k int
				k, err = fi.Dequeue(buf[:n])
				if k > n {
					t.Fatalf("Dequeue(%d) = %d", n, k)
				}
			case 7:
				var k int
				k, err = fi.Peek(in.u16()%int(2*size), buf[:n])
				if k > n {
					t.Fatalf("Peek = %d of %d", k, n)
				}
			case 8:
				err = fi.Drop(n)
			case 9:
				var a, b []byte
				a, b, err = fi.Reserve(n)
				if !g.within(a) || !g.within(b) || len(a)+len(b) > int(size) {
					t.Fatal("Reserve returned memory outside the fifo")
				}
				for i := range a {
					a[i] = 1
				}
				for i := range b {
					b[i] = 2
				}
				if e := fi.Commit(in.u16() % int(2*size)); !knownErr(e) {
					t.Fatalf("Commit: %v", e)
				}
			case 10:
				var a, b []byte
				a, b, err = fi.PeekSlices()
				if !g.within(a) || !g.within(b) || len(a)+len(b) > int(size) {
					t.Fatal("PeekSlices returned memory outside the fifo")
				}
				sum := 0
				for _, c := range a {
					sum += int(c)
				}
				for _, c := range b {
					sum += int(c)
				}
				_ = sum
				if e := fi.Release(n); !knownErr(e) {
					t.Fatalf("Release: %v", e)
				}
			case 11:
				h.Family = 4
				err = fi.EnqueueDgram(&h, buf[:n%int(size+8)])
			case 12:
				var k int
				k, err = fi.DequeueDgram(&h, buf[:n])
				if k > n || (err == nil && k != int(h.Len)) {
					t.Fatalf("DequeueDgram = %d into %d (Len %d)", k, n, h.Len)
				}
			case 13:
				var a, b []byte
				a, b, err = fi.PeekDgram(&h)
				if !g.within(a) || !g.within(b) || len(a)+len(b) > int(size) {
					t.Fatal("PeekDgram returned memory outside the fifo")
				}
				if err == nil && len(a)+len(b) != int(h.Len) {
					t.Fatalf("PeekDgram: %d bytes for Len %d", len(a)+len(b), h.Len)
				}
			case 14:
				_, err = fi.DropDgram()
			case 15:
				for i := range ps {
					ps[i] = buf[:in.u16()%int(size)]
				}
				var k int
				k, err = fi.EnqueueDgrams(hs, ps)
				if k > len(hs) {
					t.Fatal("EnqueueDgrams over count")
				}
			case 16:
				for i := range bufs {
					bufs[i] = buf[:in.u16()%int(size)]
				}
				var k int
				k, err = fi.DequeueDgrams(hs, bufs)
				for i := range k {
					if int(hs[i].Len) > len(bufs[i]) {
						t.Fatal("DequeueDgrams: Len past the buffer")
					}
				}
			case 17:
				if fi.MaxEnqueue() > int(size) || fi.MaxDequeue() > int(size) {
					t.Fatal("counts past the size")
				}
			case 18: // peer: flags
				binary.NativeEndian.PutUint32(hdr[FifoOffHasEvent:], in.u32())
				binary.NativeEndian.PutUint32(hdr[FifoOffWantDeqNtf:], in.u32())
				binary.NativeEndian.PutUint32(hdr[FifoOffHasDeqNtf:], in.u32())
			case 19:
				fi.SetEvent()
				fi.ClearEvent()
				fi.DeqNotify(n)
				fi.WantDeqNotify(DeqNotify(in.u32()))
			}
			if !knownErr(err) {
				t.Fatalf("step %d op %d: unexpected error %v", step, op, err)
			}
			g.check(t, step)
		}
		// The trusted side never re-reads its size or offset.
		if fi.size != size || fi.off != g.off || len(fi.data) != int(size) {
			t.Fatal("trusted size or offset changed")
		}
	}
}

// TestGuardedFifoFaults shows the guard works: touching the byte after the
// data, through memory the fifo does not own, is outside every slice the
// fifo hands out (the fault itself cannot be caught, so this checks the
// layout instead).
func TestGuardedFifoLayout(t *testing.T) {
	for _, size := range []uint32{64, 4096, 1 << 14} {
		g := newGuardedFifo(t, size)
		end := uintptr(unsafe.Pointer(unsafe.SliceData(g.f.data))) + uintptr(size)
		guard := uintptr(g.res) + g.resLen - uintptr(unix.Getpagesize())
		if end != guard {
			t.Fatalf("size %d: data ends at %#x, guard page at %#x", size, end, guard)
		}
		if g.off+FifoHeaderSize+size != uint32(len(g.mem)) {
			t.Fatalf("size %d: fifo not at the end of the pages", size)
		}
	}
}
