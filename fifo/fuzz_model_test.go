package fifo_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// input reads fuzz bytes as small numbers; it returns zeros when empty.
type input struct{ b []byte }

func (in *input) more() bool { return len(in.b) > 0 }

func (in *input) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func (in *input) u16() int { return int(in.byte()) | int(in.byte())<<8 }

// FuzzFifoModel drives random operation sequences through two views of one
// fifo (producer and consumer, as two processes have) and compares every
// result with a plain in-memory model. The first byte picks the fifo size
// and stream or datagram mode.
func FuzzFifoModel(f *testing.F) {
	f.Add([]byte{0x00, 0, 10, 0, 1, 5, 0, 2, 1, 2, 3, 3, 4, 100, 0, 5})
	f.Add([]byte{0x13, 0, 200, 0, 4, 250, 0, 1, 100, 0, 5, 0, 0, 0, 60, 0, 5})
	f.Add([]byte{0x80, 0, 30, 0, 0, 7, 1, 3, 2, 200, 0, 4, 5, 3, 6})
	f.Add([]byte{0x92, 1, 4, 4, 0, 2, 100, 0, 0, 20, 0, 6, 5, 3, 3, 1, 50, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &input{b: data}
		cfg := in.byte()
		size := uint32(fifo.MinFifoSize) << (cfg & 7) // 64 B .. 8 KiB
		prod, cons := fifotest.Pair(t, size)
		if cfg&0x80 == 0 {
			modelStream(t, in, prod, cons, size)
		} else {
			modelDgram(t, in, prod, cons, size)
		}
	})
}

func modelStream(t *testing.T, in *input, prod, cons *fifo.Fifo, size uint32) {
	var model []byte // queued bytes
	var next byte    // next byte value the producer writes
	gen := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = next
			next++
		}
		return b
	}
	for in.more() {
		op := in.byte() % 8
		n := in.u16() % int(2*size+2)
		free := int(size) - len(model)
		switch op {
		case 0: // Enqueue
			p := gen(n)
			k, err := prod.Enqueue(p)
			want := min(n, free)
			if k != want || (want == 0 && n > 0) != errors.Is(err, fifo.ErrNoSpace) {
				t.Fatalf("Enqueue(%d) = %d, %v; want %d (free %d)", n, k, err, want, free)
			}
			next -= byte(n - k)
			model = append(model, p[:k]...)
		case 1: // Dequeue
			p := make([]byte, n)
			k, err := cons.Dequeue(p)
			want := min(n, len(model))
			if k != want || (want == 0 && n > 0) != errors.Is(err, fifo.ErrEmpty) || !bytes.Equal(p[:k], model[:k]) {
				t.Fatalf("Dequeue(%d) = %d, %v; want %d", n, k, err, want)
			}
			model = model[k:]
		case 2: // Peek
			off := in.u16() % int(2*size+1)
			p := make([]byte, n)
			k, err := cons.Peek(off, p)
			want := 0
			if off < len(model) {
				want = min(n, len(model)-off)
			}
			if k != want || (want == 0 && n > 0) != errors.Is(err, fifo.ErrEmpty) || (k > 0 && !bytes.Equal(p[:k], model[off:off+k])) {
				t.Fatalf("Peek(%d, %d) = %d, %v; want %d", off, n, k, err, want)
			}
		case 3: // Drop
			err := cons.Drop(n)
			if n > len(model) {
				if !errors.Is(err, fifo.ErrInvalidLength) {
					t.Fatalf("Drop(%d) of %d: %v", n, len(model), err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				model = model[n:]
			}
		case 4: // Reserve, fill part, Commit
			a, b, err := prod.Reserve(n)
			want := free
			if n > 0 {
				want = min(n, free)
			}
			if len(a)+len(b) != want || (want == 0) != errors.Is(err, fifo.ErrNoSpace) {
				t.Fatalf("Reserve(%d) = %d+%d, %v; want %d", n, len(a), len(b), err, want)
			}
			k := 0
			if want > 0 {
				k = in.u16() % (want + 1)
			}
			p := gen(k)
			c := copy(a, p)
			copy(b, p[c:])
			if err := prod.Commit(k); err != nil {
				t.Fatalf("Commit(%d): %v", k, err)
			}
			model = append(model, p...)
		case 5: // PeekSlices, Release part
			a, b, err := cons.PeekSlices()
			got := append(append([]byte{}, a...), b...)
			if !bytes.Equal(got, model) || (len(model) == 0) != errors.Is(err, fifo.ErrEmpty) {
				t.Fatalf("PeekSlices = %d bytes, %v; want %d", len(got), err, len(model))
			}
			k := n % (len(model) + 1)
			if err := cons.Release(k); err != nil {
				t.Fatal(err)
			}
			model = model[k:]
		case 6: // Commit past the free space
			if err := prod.Commit(free + 1 + n%4); !errors.Is(err, fifo.ErrInvalidLength) {
				t.Fatalf("Commit past free: %v", err)
			}
		case 7: // counts
			if prod.MaxEnqueue() != free || cons.MaxDequeue() != len(model) {
				t.Fatalf("MaxEnqueue %d MaxDequeue %d; want %d, %d", prod.MaxEnqueue(), cons.MaxDequeue(), free, len(model))
			}
		}
	}
}

type mdgram struct {
	h fifo.DgramHeader
	p []byte
}

func modelDgram(t *testing.T, in *input, prod, cons *fifo.Fifo, size uint32) {
	var model []mdgram
	used := 0
	var seqn byte
	mk := func(n int) mdgram {
		d := mdgram{h: fifo.DgramHeader{Len: uint32(n), Family: seqn, RemotePort: uint16(seqn) * 3, LocalPort: 7}, p: make([]byte, n)}
		d.h.Remote[15] = seqn
		for i := range d.p {
			d.p[i] = seqn + byte(i)
		}
		seqn++
		return d
	}
	check := func(what string, h *fifo.DgramHeader, p []byte) {
		t.Helper()
		d := model[0]
		if *h != d.h || !bytes.Equal(p, d.p) {
			t.Fatalf("%s: %+v (%d bytes), want %+v", what, *h, len(p), d.h)
		}
		model = model[1:]
		used -= fifo.DgramRecordSize(len(d.p))
	}
	for in.more() {
		op := in.byte() % 6
		n := in.u16() % int(size+8)
		switch op {
		case 0: // EnqueueDgram
			d := mk(n)
			rec := fifo.DgramRecordSize(n)
			err := prod.EnqueueDgram(&d.h, d.p)
			switch {
			case rec > int(size):
				if !errors.Is(err, fifo.ErrTooLarge) {
					t.Fatalf("EnqueueDgram(%d) in %d: %v", n, size, err)
				}
			case used+rec > int(size):
				if !errors.Is(err, fifo.ErrNoSpace) {
					t.Fatalf("EnqueueDgram(%d) with %d used: %v", n, used, err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				model = append(model, d)
				used += rec
			}
		case 1: // EnqueueDgrams
			k := 1 + int(in.byte()%8)
			hs := make([]fifo.DgramHeader, k)
			ps := make([][]byte, k)
			ds := make([]mdgram, k)
			for i := range k {
				ds[i] = mk(in.u16() % int(size))
				hs[i], ps[i] = ds[i].h, ds[i].p
			}
			got, err := prod.EnqueueDgrams(hs, ps)
			want, u := 0, used
			var werr error
			for i := range k {
				rec := fifo.DgramRecordSize(len(ps[i]))
				if rec > int(size) {
					werr = fifo.ErrTooLarge
					break
				}
				if u+rec > int(size) {
					werr = fifo.ErrNoSpace
					break
				}
				u += rec
				want++
			}
			if got != want || !errors.Is(err, werr) || (werr == nil && err != nil) {
				t.Fatalf("EnqueueDgrams = %d, %v; want %d, %v", got, err, want, werr)
			}
			model = append(model, ds[:got]...)
			used = u
		case 2: // DequeueDgram
			var h fifo.DgramHeader
			buf := make([]byte, n)
			k, err := cons.DequeueDgram(&h, buf)
			switch {
			case len(model) == 0:
				if !errors.Is(err, fifo.ErrEmpty) {
					t.Fatalf("DequeueDgram on empty: %v", err)
				}
			case len(model[0].p) > n:
				if !errors.Is(err, fifo.ErrShortBuffer) || h != model[0].h {
					t.Fatalf("DequeueDgram short: %v", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				check("DequeueDgram", &h, buf[:k])
			}
		case 3: // DequeueDgrams
			k := 1 + int(in.byte()%8)
			hs := make([]fifo.DgramHeader, k)
			bufs := make([][]byte, k)
			for i := range bufs {
				bufs[i] = make([]byte, in.u16()%int(size))
			}
			got, err := cons.DequeueDgrams(hs, bufs)
			want := 0
			var werr error
			for want < k && want < len(model) {
				if len(model[want].p) > len(bufs[want]) {
					werr = fifo.ErrShortBuffer
					break
				}
				want++
			}
			if len(model) == 0 {
				werr = fifo.ErrEmpty
			}
			if got != want || !errors.Is(err, werr) || (werr == nil && err != nil) {
				t.Fatalf("DequeueDgrams = %d, %v; want %d, %v", got, err, want, werr)
			}
			for i := range got {
				check("DequeueDgrams", &hs[i], bufs[i][:hs[i].Len])
			}
		case 4: // PeekDgram, DropDgram
			var h fifo.DgramHeader
			a, b, err := cons.PeekDgram(&h)
			if len(model) == 0 {
				if !errors.Is(err, fifo.ErrEmpty) {
					t.Fatalf("PeekDgram on empty: %v", err)
				}
				if _, err := cons.DropDgram(); !errors.Is(err, fifo.ErrEmpty) {
					t.Fatalf("DropDgram on empty: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			k, err := cons.DropDgram()
			if err != nil || k != int(h.Len) {
				t.Fatalf("DropDgram = %d, %v", k, err)
			}
			check("PeekDgram", &h, append(append([]byte{}, a...), b...))
		case 5:
			if prod.MaxEnqueue() != int(size)-used || cons.MaxDequeue() != used {
				t.Fatalf("counts %d/%d, want %d used", prod.MaxEnqueue(), cons.MaxDequeue(), used)
			}
		}
	}
}
