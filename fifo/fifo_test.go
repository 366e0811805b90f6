package fifo_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func TestStreamWrapAndPartial(t *testing.T) {
	prod, cons := fifotest.Pair(t, 64)
	if got := prod.MaxEnqueue(); got != 64 {
		t.Fatalf("MaxEnqueue of empty fifo = %d, want 64", got)
	}
	buf := make([]byte, 100)
	if _, err := cons.Dequeue(buf); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("Dequeue on empty: %v, want ErrEmpty", err)
	}
	var want []byte
	var got []byte
	// Enough rounds of odd sizes to wrap the 32-bit index space's low bits
	// many times over.
	for i := range 2000 {
		in := seq(1+i%61, byte(i))
		n, err := prod.Enqueue(in)
		if err != nil && !errors.Is(err, fifo.ErrNoSpace) {
			t.Fatal(err)
		}
		want = append(want, in[:n]...)
		if used := cons.MaxDequeue(); used != len(want)-len(got) {
			t.Fatalf("MaxDequeue = %d, want %d", used, len(want)-len(got))
		}
		m, err := cons.Dequeue(buf[:1+i%47])
		if err != nil && !errors.Is(err, fifo.ErrEmpty) {
			t.Fatal(err)
		}
		got = append(got, buf[:m]...)
	}
	for {
		m, err := cons.Dequeue(buf)
		if errors.Is(err, fifo.ErrEmpty) {
			break
		}
		got = append(got, buf[:m]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("stream mismatch: %d bytes out, %d in", len(got), len(want))
	}
	// Full fifo refuses with ErrNoSpace.
	if n, err := prod.Enqueue(seq(64, 0)); n != 64 || err != nil {
		t.Fatalf("fill: %d, %v", n, err)
	}
	if n, err := prod.Enqueue([]byte{1}); n != 0 || !errors.Is(err, fifo.ErrNoSpace) {
		t.Fatalf("Enqueue on full: %d, %v; want 0, ErrNoSpace", n, err)
	}
}

func TestPeekDrop(t *testing.T) {
	prod, cons := fifotest.Pair(t, 128)
	prod.Enqueue(seq(100, 0))
	cons.Drop(90) // move the head near the end so the next data wraps
	prod.Enqueue(seq(100, 100))
	p := make([]byte, 30)
	n, err := cons.Peek(5, p)
	if err != nil || n != 30 || !bytes.Equal(p, seq(30, 95)) {
		t.Fatalf("Peek(5) = %d, %v, % x", n, err, p[:n])
	}
	if n, err := cons.Peek(105, p); n != 5 || err != nil {
		t.Fatalf("Peek at the end = %d, %v; want 5", n, err)
	}
	if _, err := cons.Peek(110, p); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("Peek past the end: %v", err)
	}
	if _, err := cons.Peek(-1, p); !errors.Is(err, fifo.ErrInvalidLength) {
		t.Fatalf("Peek(-1): %v", err)
	}
	if err := cons.Drop(111); !errors.Is(err, fifo.ErrInvalidLength) {
		t.Fatalf("Drop more than queued: %v", err)
	}
	if err := cons.Drop(-1); !errors.Is(err, fifo.ErrInvalidLength) {
		t.Fatalf("Drop(-1): %v", err)
	}
	if err := cons.Drop(110); err != nil || cons.MaxDequeue() != 0 {
		t.Fatalf("Drop all: %v, %d left", err, cons.MaxDequeue())
	}
}

func TestZeroCopy(t *testing.T) {
	prod, cons := fifotest.Pair(t, 256)
	prod.Enqueue(seq(200, 0))
	cons.Drop(200)
	a, b, err := prod.Reserve(100)
	if err != nil || len(a) != 56 || len(b) != 44 {
		t.Fatalf("Reserve(100) over the wrap = %d+%d, %v; want 56+44", len(a), len(b), err)
	}
	if cap(a) != len(a) || cap(b) != len(b) {
		t.Fatal("reserved slices not capped at their length")
	}
	copy(a, seq(56, 0))
	copy(b, seq(44, 56))
	if cons.MaxDequeue() != 0 {
		t.Fatal("reserved bytes visible before Commit")
	}
	if err := prod.Commit(100); err != nil {
		t.Fatal(err)
	}
	if err := prod.Commit(257); !errors.Is(err, fifo.ErrInvalidLength) {
		t.Fatalf("Commit past free: %v", err)
	}
	a, b, err = cons.PeekSlices()
	if err != nil || !bytes.Equal(append(append([]byte{}, a...), b...), seq(100, 0)) {
		t.Fatalf("PeekSlices = %d+%d, %v", len(a), len(b), err)
	}
	if err := cons.Release(60); err != nil {
		t.Fatal(err)
	}
	a, b, _ = cons.PeekSlices()
	if len(a)+len(b) != 40 || a[0] != 60 {
		t.Fatalf("after Release(60): %d+%d bytes, first %d", len(a), len(b), a[0])
	}
	if err := cons.Release(41); !errors.Is(err, fifo.ErrInvalidLength) {
		t.Fatalf("Release more than queued: %v", err)
	}
	cons.Release(40)
	if _, _, err := cons.PeekSlices(); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("PeekSlices on empty: %v", err)
	}
	// Reserve(0) is all the free space.
	a, b, _ = prod.Reserve(0)
	if len(a)+len(b) != 256 {
		t.Fatalf("Reserve(0) = %d bytes, want 256", len(a)+len(b))
	}
	prod.Commit(256)
	if _, _, err := prod.Reserve(1); !errors.Is(err, fifo.ErrNoSpace) {
		t.Fatalf("Reserve on full: %v", err)
	}
}

func TestDgram(t *testing.T) {
	prod, cons := fifotest.Pair(t, 1024)
	h := fifo.DgramHeader{Family: 4, RemotePort: 53, LocalPort: 4000}
	copy(h.Remote[:], []byte{10, 0, 0, 1})
	copy(h.Local[:], []byte{10, 0, 0, 2})
	if err := prod.EnqueueDgram(&h, make([]byte, 1024-fifo.DgramHeaderSize+1)); !errors.Is(err, fifo.ErrTooLarge) {
		t.Fatalf("oversized datagram: %v, want ErrTooLarge", err)
	}
	n := 0
	for {
		err := prod.EnqueueDgram(&h, seq(100+n, byte(n)))
		if errors.Is(err, fifo.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	// 48+104, 48+104, 48+104, 48+104, 48+104, 48+112 = 920; a 7th needs 160.
	if n != 6 {
		t.Fatalf("%d datagrams fitted, want 6", n)
	}
	var g fifo.DgramHeader
	if _, err := cons.DequeueDgram(&g, make([]byte, 99)); !errors.Is(err, fifo.ErrShortBuffer) {
		t.Fatalf("short buffer: %v", err)
	}
	if g.Len != 100 {
		t.Fatalf("header not filled on ErrShortBuffer: Len %d", g.Len)
	}
	buf := make([]byte, 2000)
	for i := range n {
		m, err := cons.DequeueDgram(&g, buf)
		if err != nil || m != 100+i || !bytes.Equal(buf[:m], seq(100+i, byte(i))) {
			t.Fatalf("datagram %d: %d, %v", i, m, err)
		}
		g.Len = h.Len
		if g != h {
			t.Fatalf("header %+v, want %+v", g, h)
		}
	}
	if _, err := cons.DequeueDgram(&g, buf); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	// Zero-length datagrams are datagrams.
	if err := prod.EnqueueDgram(&h, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := cons.DequeueDgram(&g, nil); m != 0 || err != nil {
		t.Fatalf("empty datagram: %d, %v", m, err)
	}
}

func TestDgramBatchAndPeek(t *testing.T) {
	prod, cons := fifotest.Pair(t, 4096)
	hs := make([]fifo.DgramHeader, 40)
	ps := make([][]byte, 40)
	for i := range hs {
		hs[i].RemotePort = uint16(i)
		ps[i] = seq(i*3, byte(i))
	}
	n, err := prod.EnqueueDgrams(hs, ps)
	// Sum of records 48 + align8(3i) until 4096 is passed.
	want, used := 0, 0
	for i := range hs {
		r := fifo.DgramRecordSize(3 * i)
		if used+r > 4096 {
			break
		}
		used += r
		want++
	}
	if n != want || !errors.Is(err, fifo.ErrNoSpace) {
		t.Fatalf("EnqueueDgrams = %d, %v; want %d, ErrNoSpace", n, err, want)
	}
	if got := cons.MaxDequeue(); got != used {
		t.Fatalf("queued %d bytes, want %d", got, used)
	}
	var h fifo.DgramHeader
	a, b, err := cons.PeekDgram(&h)
	if err != nil || h.Len != 0 || len(a)+len(b) != 0 {
		t.Fatalf("PeekDgram of empty datagram: %d+%d, %v", len(a), len(b), err)
	}
	cons.DropDgram()
	a, b, err = cons.PeekDgram(&h)
	if err != nil || h.RemotePort != 1 || !bytes.Equal(append(a, b...), seq(3, 1)) {
		t.Fatalf("PeekDgram: %+v, %v", h, err)
	}
	if m, err := cons.DropDgram(); m != 3 || err != nil {
		t.Fatalf("DropDgram = %d, %v", m, err)
	}
	oh := make([]fifo.DgramHeader, 10)
	bufs := make([][]byte, 10)
	for i := range bufs {
		bufs[i] = make([]byte, 30)
	}
	// Datagram 2+i has 3(2+i) bytes; bufs hold 30, so the one with 33 stops the batch.
	m, err := cons.DequeueDgrams(oh, bufs)
	if m != 9 || !errors.Is(err, fifo.ErrShortBuffer) {
		t.Fatalf("DequeueDgrams = %d, %v; want 9, ErrShortBuffer", m, err)
	}
	for i := range m {
		if int(oh[i].Len) != 3*(2+i) || oh[i].RemotePort != uint16(2+i) || !bytes.Equal(bufs[i][:oh[i].Len], seq(3*(2+i), byte(2+i))) {
			t.Fatalf("batch datagram %d: %+v", i, oh[i])
		}
	}
	for i := range bufs {
		bufs[i] = make([]byte, 200)
	}
	for {
		m, err = cons.DequeueDgrams(oh, bufs)
		if errors.Is(err, fifo.ErrEmpty) {
			break
		}
		if err != nil || m == 0 {
			t.Fatalf("DequeueDgrams = %d, %v", m, err)
		}
	}
	if cons.MaxDequeue() != 0 {
		t.Fatal("datagrams left")
	}
}

func TestCorruptPeerIndices(t *testing.T) {
	prod, cons := fifotest.Pair(t, 256)
	prod.Enqueue(seq(100, 0))
	buf := make([]byte, 300)

	// A producer claiming more than the fifo holds.
	fifotest.SetTail(prod, 100+257)
	if _, err := cons.Dequeue(buf); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("tail past size: %v, want ErrCorrupt", err)
	}
	if _, err := cons.Peek(0, buf); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("Peek: %v", err)
	}
	if _, _, err := cons.PeekSlices(); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("PeekSlices: %v", err)
	}
	if cons.MaxDequeue() != 0 {
		t.Fatal("MaxDequeue of a corrupt fifo not 0")
	}
	// A tail behind the head.
	fifotest.SetTail(prod, ^uint32(0))
	if _, err := cons.Dequeue(buf); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("tail behind head: %v", err)
	}
	// Repaired: works again, nothing lost.
	fifotest.SetTail(prod, 100)
	if n, err := cons.Dequeue(buf[:10]); n != 10 || err != nil {
		t.Fatalf("after repair: %d, %v", n, err)
	}

	// A consumer head ahead of the tail: the producer refuses.
	fifotest.SetHead(cons, 101)
	if _, err := prod.Enqueue(seq(200, 0)); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("head past tail: %v", err)
	}
	if _, _, err := prod.Reserve(200); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("Reserve: %v", err)
	}
	if prod.MaxEnqueue() != 0 {
		t.Fatal("MaxEnqueue of a corrupt fifo not 0")
	}
	// The consumer's own head is private: the scribble did not move it.
	if n, _ := cons.Dequeue(buf); n != 90 || !bytes.Equal(buf[:90], seq(90, 10)) {
		t.Fatalf("consumer lost its place: %d bytes", n)
	}
}

func TestCorruptDgramHeader(t *testing.T) {
	prod, cons := fifotest.Pair(t, 256)
	var h fifo.DgramHeader
	prod.EnqueueDgram(&h, seq(20, 0))
	data := fifotest.Data(prod)
	buf := make([]byte, 1000)
	for _, bad := range []uint32{256, 209, 21 + 8, 1 << 31, ^uint32(0)} {
		data[0], data[1], data[2], data[3] = byte(bad), byte(bad>>8), byte(bad>>16), byte(bad>>24)
		if _, err := cons.DequeueDgram(&h, buf); !errors.Is(err, fifo.ErrCorrupt) {
			t.Errorf("Len %d: %v, want ErrCorrupt", bad, err)
		}
		if _, _, err := cons.PeekDgram(&h); !errors.Is(err, fifo.ErrCorrupt) {
			t.Errorf("PeekDgram Len %d: %v", bad, err)
		}
		if _, err := cons.DropDgram(); !errors.Is(err, fifo.ErrCorrupt) {
			t.Errorf("DropDgram Len %d: %v", bad, err)
		}
	}
	// A partial record (tail not on a record end), seen by a fresh view
	// (cons already saw the whole record published and keeps trusting
	// that).
	data[0], data[1], data[2], data[3] = 20, 0, 0, 0
	fifotest.SetTail(prod, 30)
	fresh := fifotest.View(t, prod)
	if _, err := fresh.DequeueDgram(&h, buf); !errors.Is(err, fifo.ErrCorrupt) {
		t.Errorf("partial header: %v", err)
	}
	fifotest.SetTail(prod, 60)
	if _, err := fresh.DequeueDgram(&h, buf); !errors.Is(err, fifo.ErrCorrupt) {
		t.Errorf("partial payload: %v", err)
	}
	fifotest.SetTail(prod, 72)
	if n, err := fresh.DequeueDgram(&h, buf); n != 20 || err != nil {
		t.Errorf("repaired: %d, %v", n, err)
	}
}

func TestEventFlag(t *testing.T) {
	prod, cons := fifotest.Pair(t, 64)
	if !prod.SetEvent() {
		t.Fatal("first SetEvent should ask for a signal")
	}
	if prod.SetEvent() {
		t.Fatal("SetEvent on a signalled consumer should not ask for a signal")
	}
	if !cons.HasEvent() {
		t.Fatal("consumer does not see the event")
	}
	cons.ClearEvent()
	if !prod.SetEvent() {
		t.Fatal("SetEvent after ClearEvent should ask for a signal")
	}
}

func TestDeqNotify(t *testing.T) {
	prod, cons := fifotest.Pair(t, 64)
	buf := make([]byte, 64)
	prod.Enqueue(buf)
	n, _ := cons.Dequeue(buf[:10])
	if cons.DeqNotify(n) {
		t.Fatal("notification without a request")
	}

	prod.WantDeqNotify(fifo.DeqNotifyAlways)
	n, _ = cons.Dequeue(buf[:10])
	for range 2 { // not once: every time
		if !cons.DeqNotify(n) {
			t.Fatal("DeqNotifyAlways should fire on every dequeue")
		}
	}
	if cons.DeqNotify(0) {
		t.Fatal("fired for a dequeue of nothing")
	}

	// IfFull: fires once when a dequeue takes the fifo out of full.
	prod.WantDeqNotify(fifo.DeqNotifyIfFull)
	prod.Enqueue(buf[:20]) // full again
	n, _ = cons.Dequeue(buf[:5])
	if !cons.DeqNotify(n) {
		t.Fatal("IfFull did not fire when leaving full")
	}
	prod.Enqueue(buf[:5])
	n, _ = cons.Dequeue(buf[:5])
	if cons.DeqNotify(n) {
		t.Fatal("IfFull fired twice without re-arming")
	}
	prod.WantDeqNotify(fifo.DeqNotifyIfFull) // re-arm
	n, _ = cons.Dequeue(buf[:5])
	if cons.DeqNotify(n) {
		t.Fatal("IfFull fired for a fifo that was not full")
	}

	// IfEmpty: fires once when a dequeue leaves the fifo empty.
	prod.WantDeqNotify(fifo.DeqNotifyIfEmpty)
	n, _ = cons.Dequeue(buf[:10])
	if cons.DeqNotify(n) {
		t.Fatal("IfEmpty fired with data left")
	}
	n, _ = cons.Dequeue(buf)
	if cons.MaxDequeue() != 0 || !cons.DeqNotify(n) {
		t.Fatal("IfEmpty did not fire on empty")
	}
	if cons.DeqNotify(n) {
		t.Fatal("IfEmpty fired twice")
	}
	prod.WantDeqNotify(0)
	if cons.DeqNotify(n) {
		t.Fatal("fired after the request was cancelled")
	}
}

// TestConcurrentHeap streams through a heap-backed fifo between two
// goroutines, so the race detector (which does not see memfd mappings)
// checks that the index protocol orders the data accesses.
func TestConcurrentHeap(t *testing.T) {
	prod, cons := fifotest.Pair(t, 4096)
	const total = 4 << 20
	done := make(chan error, 1)
	go func() {
		var b [1000]byte
		next := byte(0)
		for sent := 0; sent < total; {
			n := min(1+sent%997, total-sent)
			for i := range n {
				b[i] = next + byte(i)
			}
			k, err := prod.Enqueue(b[:n])
			if err != nil && !errors.Is(err, fifo.ErrNoSpace) {
				done <- err
				return
			}
			next += byte(k)
			sent += k
			if k == 0 {
				runtime.Gosched()
			}
		}
		done <- nil
	}()
	buf := make([]byte, 1500)
	want := byte(0)
	for got := 0; got < total; {
		n, err := cons.Dequeue(buf[:1+got%1499])
		if err != nil && !errors.Is(err, fifo.ErrEmpty) {
			t.Fatal(err)
		}
		for _, c := range buf[:n] {
			if c != want {
				t.Fatalf("byte %d: %d, want %d", got, c, want)
			}
			want++
			got++
		}
		if n == 0 {
			runtime.Gosched()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestQueuedBytesFromProducer: the producer's view counts what is queued
// from the shared indices, so what the consumer took through its own view
// is gone from the count (the producer's copy of the consumer's private
// state never moves). A daemon's worker, the producer of an app's rx
// fifo, decides with it whether to signal the app at once.
func TestQueuedBytesFromProducer(t *testing.T) {
	prod, cons := fifotest.Pair(t, 256)
	if n := prod.QueuedBytes(); n != 0 {
		t.Fatalf("empty: %d", n)
	}
	for round := range 5 { // past the first wrap of the indices
		if _, err := prod.Enqueue(seq(200, byte(round))); err != nil {
			t.Fatal(err)
		}
		if a, b := prod.QueuedBytes(), cons.QueuedBytes(); a != 200 || b != 200 {
			t.Fatalf("round %d: queued %d (producer), %d (consumer), want 200", round, a, b)
		}
		if _, err := cons.Dequeue(make([]byte, 150)); err != nil {
			t.Fatal(err)
		}
		if n := prod.QueuedBytes(); n != 50 {
			t.Fatalf("round %d: after the consumer took 150: %d, want 50", round, n)
		}
		if _, err := cons.Dequeue(make([]byte, 50)); err != nil {
			t.Fatal(err)
		}
		if n := prod.QueuedBytes(); n != 0 {
			t.Fatalf("round %d: drained: %d", round, n)
		}
	}
	// A peer that breaks the indices gets 0, not a wrapped count.
	fifotest.SetTail(prod, fifotest.Head(prod)+1000)
	if n := prod.QueuedBytes(); n != 0 {
		t.Fatalf("inconsistent indices: %d, want 0", n)
	}
}

// TestRequestClose: the producer's close mark is seen by the consumer's
// view; a mark through a view kept past the fifo's free does not mark the
// fifo allocated next at the same place, nor does a value a hostile
// producer makes up.
func TestRequestClose(t *testing.T) {
	seg := fifotest.Segment(t, 1<<16)
	f, err := seg.AllocFifo(1024)
	if err != nil {
		t.Fatal(err)
	}
	prod, cons := fifotest.View(t, f), fifotest.View(t, f)
	if cons.CloseRequested() {
		t.Fatal("a new fifo is marked closed")
	}
	prod.RequestClose()
	if !cons.CloseRequested() || !f.CloseRequested() {
		t.Fatal("the mark was not seen")
	}

	if !f.Allocated() || !prod.Allocated() {
		t.Fatal("an allocated fifo's views say it is not allocated")
	}
	if err := seg.FreeFifo(f); err != nil {
		t.Fatal(err)
	}
	if f.Allocated() || prod.Allocated() {
		t.Fatal("a freed fifo's views say it is allocated")
	}
	g, err := seg.AllocFifo(1024)
	if err != nil {
		t.Fatal(err)
	}
	if g.Offset() != f.Offset() {
		t.Fatalf("the next fifo is at %d, not %d: the test needs the same place", g.Offset(), f.Offset())
	}
	if g.CloseRequested() {
		t.Fatal("a reallocated fifo is marked closed")
	}
	prod.RequestClose() // the stale view
	if g.CloseRequested() {
		t.Fatal("a stale view's mark closed the next allocation")
	}
	for _, v := range []uint32{1, ^uint32(0), binary.NativeEndian.Uint32(fifotest.Header(g)[fifo.FifoOffGen:]) + 1} {
		binary.NativeEndian.PutUint32(fifotest.Header(g)[fifo.FifoOffClose:], v)
		if g.CloseRequested() {
			t.Fatalf("a made-up mark %#x counted", v)
		}
	}
	fifotest.View(t, g).RequestClose()
	if !g.CloseRequested() {
		t.Fatal("the new allocation's own mark was not seen")
	}
	// The owner's records, not the shared header, say which allocation
	// is live: a header rewritten to the old number changes nothing.
	binary.NativeEndian.PutUint32(fifotest.Header(g)[fifo.FifoOffGen:], binary.NativeEndian.Uint32(fifotest.Header(g)[fifo.FifoOffGen:])-1)
	if !g.Allocated() || prod.Allocated() || !fifotest.View(t, g).Allocated() {
		t.Fatal("a rewritten allocation number changed what the owner's views say")
	}
	if err := seg.FreeFifo(prod); err == nil {
		t.Fatal("a stale view freed the fifo allocated after it")
	}
}
