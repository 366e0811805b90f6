package fifo_test

import (
	"errors"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
)

func TestManagerAddsSegments(t *testing.T) {
	m, err := fifo.NewManager(fifo.ManagerOptions{
		Name: "app", SegmentSize: 64 << 10, AddSegmentSize: 128 << 10, MaxSegments: 3,
		EventQueueCapacity: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	segs := m.Segments()
	if len(segs) != 1 || segs[0].Index() != 0 {
		t.Fatalf("first segment: %d segments", len(segs))
	}
	q := m.EventQueue()
	if q == nil || q.Offset() != segs[0].EventQueueOffset() || q.Capacity() != 64 {
		t.Fatal("event queue not recorded in the first segment")
	}
	type pair struct{ rx, tx *fifo.Fifo }
	var pairs []pair
	var added []*fifo.Segment
	for {
		rx, tx, a, err := m.AllocPair(8192, 8192)
		if errors.Is(err, fifo.ErrTooManySegments) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if a != nil {
			added = append(added, a)
			if rx.Segment() != a || tx.Segment() != a {
				t.Fatal("pair not in the added segment")
			}
		}
		if rx.Segment() != tx.Segment() {
			t.Fatal("pair split over two segments")
		}
		pairs = append(pairs, pair{rx, tx})
	}
	if len(added) != 2 || added[0].Index() != 1 || added[1].Index() != 2 || added[1].Size() != 128<<10 {
		t.Fatalf("added %d segments", len(added))
	}
	if got := len(m.Segments()); got != 3 {
		t.Fatalf("%d segments, want 3", got)
	}
	for _, p := range pairs {
		r := m.Ref(p.rx)
		if m.Segment(r.Segment) != p.rx.Segment() || r.Offset != p.rx.Offset() || r.Size != 8192 {
			t.Fatalf("Ref %+v", r)
		}
		if got := fifo.RefFromArg(fifo.RefArg(r)); got.Segment != r.Segment || got.Offset != r.Offset {
			t.Fatalf("RefArg round trip %+v -> %+v", r, got)
		}
	}
	if m.FifoMemory() != int64(len(pairs))*16384 {
		t.Fatalf("fifo memory %d", m.FifoMemory())
	}
	// Freed memory is reused without adding segments.
	m.FreePair(pairs[0].rx, pairs[0].tx)
	m.FreePair(nil, nil)
	if _, _, a, err := m.AllocPair(8192, 8192); err != nil || a != nil {
		t.Fatalf("realloc after free: added %v, %v", a, err)
	}
}

func TestManagerCaps(t *testing.T) {
	m, err := fifo.NewManager(fifo.ManagerOptions{Name: "capped", SegmentSize: 64 << 10, MaxFifoMemory: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n := 0
	for {
		_, _, _, err := m.AllocPair(16384, 16384)
		if errors.Is(err, fifo.ErrFifoMemoryLimit) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d pairs of 32 KiB under a 100 KiB cap", n)
	}
	if _, _, _, err := m.AllocPair(100, 64); !errors.Is(err, fifo.ErrInvalidSize) {
		t.Fatalf("bad size: %v", err)
	}
	// A pair larger than the add-segment size gets a segment of its own.
	big, err := fifo.NewManager(fifo.ManagerOptions{Name: "big", SegmentSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	_, _, a, err := big.AllocPair(1<<20, 1<<20)
	if err != nil || a == nil || a.Size() < 2<<20 {
		t.Fatalf("large pair: %v, %v", a, err)
	}
	big.Close()
	if _, _, _, err := big.AllocPair(64, 64); !errors.Is(err, fifo.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Charge counts memory allocated elsewhere against MaxFifoMemory with the
// pairs, all or nothing; Uncharge gives it back.
func TestManagerCharge(t *testing.T) {
	m, err := fifo.NewManager(fifo.ManagerOptions{Name: "charged", SegmentSize: 64 << 10, MaxFifoMemory: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Charge(64 << 10); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := m.AllocPair(32768, 32768); !errors.Is(err, fifo.ErrFifoMemoryLimit) {
		t.Fatalf("pair over the cap with the charge: %v", err)
	}
	if err := m.Charge(64 << 10); !errors.Is(err, fifo.ErrFifoMemoryLimit) || m.FifoMemory() != 64<<10 {
		t.Fatalf("charge over the cap: %v, %d counted", err, m.FifoMemory())
	}
	m.Uncharge(64 << 10)
	if _, _, _, err := m.AllocPair(32768, 32768); err != nil || m.FifoMemory() != 64<<10 {
		t.Fatalf("pair after the uncharge: %v, %d counted", err, m.FifoMemory())
	}
}

// TestManagerSegmentMemory: the segments a manager makes, and what Charge
// counts, stay within MaxSegmentMemory whatever AddSegmentSize asks: an
// added segment shrinks to the room left, and a pair that no longer fits
// fails with ErrFifoMemoryLimit.
func TestManagerSegmentMemory(t *testing.T) {
	const limit = 256 << 10
	if _, err := fifo.NewManager(fifo.ManagerOptions{Name: "big-first", SegmentSize: 1 << 20, MaxSegmentMemory: limit}); !errors.Is(err, fifo.ErrFifoMemoryLimit) {
		t.Fatalf("first segment over the cap: %v", err)
	}
	m, err := fifo.NewManager(fifo.ManagerOptions{Name: "bounded", SegmentSize: 64 << 10, AddSegmentSize: 1 << 30, MaxSegmentMemory: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	total := func() (n int) {
		for _, s := range m.Segments() {
			n += s.Size()
		}
		return n
	}
	pairs := 0
	for {
		_, _, _, err := m.AllocPair(16<<10, 16<<10)
		if err != nil {
			if !errors.Is(err, fifo.ErrFifoMemoryLimit) {
				t.Fatalf("pair %d: %v, want ErrFifoMemoryLimit", pairs, err)
			}
			break
		}
		pairs++
		if pairs > 64 {
			t.Fatal("no bound on the pairs")
		}
	}
	if n := total(); n > limit || len(m.Segments()) < 2 {
		t.Fatalf("%d segments of %d bytes in all for a cap of %d", len(m.Segments()), n, limit)
	}
	if pairs < 5 {
		t.Fatalf("only %d pairs of 32 KiB in a cap of 256 KiB", pairs)
	}
	if err := m.Charge(limit); !errors.Is(err, fifo.ErrFifoMemoryLimit) {
		t.Fatalf("charge past the segment cap: %v", err)
	}
}
