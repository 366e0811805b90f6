package fifo_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestHotPathAllocs asserts that no fifo data path allocates, on both a
// heap and a memfd segment.
func TestHotPathAllocs(t *testing.T) {
	for _, kind := range []string{"heap", "memfd"} {
		t.Run(kind, func(t *testing.T) {
			var seg *fifo.Segment
			if kind == "heap" {
				seg = fifotest.Segment(t, 1<<20)
			} else {
				seg = fifotest.MemfdSegment(t, 1<<20)
			}
			f, err := seg.AllocFifo(1 << 16)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := seg.FifoAt(f.Offset())
			q, err := fifo.NewEventQueue(seg, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			buf := make([]byte, 1000)
			hs := make([]fifo.DgramHeader, 8)
			ps := make([][]byte, 8)
			bufs := make([][]byte, 8)
			for i := range ps {
				ps[i] = buf[:100]
				bufs[i] = make([]byte, 100)
			}
			var h fifo.DgramHeader
			evs := make([]fifo.Event, 8)
			ev := fifo.Event{Type: fifo.EventRx}
			cases := []struct {
				name string
				fn   func()
			}{
				{"Enqueue/Dequeue", func() { f.Enqueue(buf); v.Dequeue(buf) }},
				{"Peek/Drop", func() { f.Enqueue(buf[:10]); v.Peek(3, buf); v.Drop(10) }},
				{"Reserve/Commit/PeekSlices/Release", func() {
					a, _, _ := f.Reserve(300)
					f.Commit(len(a))
					a, b, _ := v.PeekSlices()
					v.Release(len(a) + len(b))
				}},
				{"Empty/Full errors", func() { v.Dequeue(buf); v.Peek(0, buf); v.DequeueDgram(&h, buf) }},
				{"Max", func() { f.MaxEnqueue(); v.MaxDequeue() }},
				{"Dgram", func() { f.EnqueueDgram(&h, buf[:100]); v.DequeueDgram(&h, buf) }},
				{"DgramPeek", func() { f.EnqueueDgram(&h, buf[:100]); v.PeekDgram(&h); v.DropDgram() }},
				{"Dgrams", func() { f.EnqueueDgrams(hs, ps); v.DequeueDgrams(hs, bufs) }},
				{"Events", func() { f.SetEvent(); v.ClearEvent(); f.WantDeqNotify(fifo.DeqNotifyIfEmpty); v.DeqNotify(1) }},
				{"EventQueue", func() {
					q.Push(ev)
					q.PushBatch(evs)
					q.PopBatch(evs)
					q.PopBatch(evs)
					q.Arm()
				}},
			}
			if !raceEnabled {
				// Under the race detector, x/sys/unix annotates the
				// buffers of read(2) and write(2), which makes them
				// escape; the calls themselves allocate nothing.
				cases = append(cases, struct {
					name string
					fn   func()
				}{"EventQueue signal", func() { q.Push(ev); q.Signal(); q.PopBatch(evs); q.Arm() }})
			}
			for _, c := range cases {
				if a := testing.AllocsPerRun(200, c.fn); a != 0 {
					t.Errorf("%s: %.1f allocations per run", c.name, a)
				}
			}
		})
	}
}

// TestNoLeaks creates and closes many segments, managers and event queues
// and checks with leakcheck (sets of descriptors and goroutines, polled
// until they settle) that nothing is left behind.
func TestNoLeaks(t *testing.T) {
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	for i := range 200 {
		s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "leak", Size: 1 << 16, NoDump: i%2 == 0, HugePages: i%7 == 0})
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_DUPFD_CLOEXEC, 0)
		m, err := fifo.MapSegment(fd)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s.Close() // idempotent
	}
	for range 50 {
		m, err := fifo.NewManager(fifo.ManagerOptions{Name: "leak", SegmentSize: 64 << 10, EventQueueCapacity: 16})
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if _, _, _, err := m.AllocPair(8192, 8192); err != nil {
				t.Fatal(err)
			}
		}
		seg0 := m.Segments()[0]
		sfd, _ := unix.FcntlInt(uintptr(seg0.FD()), unix.F_DUPFD_CLOEXEC, 0)
		ms, err := fifo.MapSegment(sfd)
		if err != nil {
			t.Fatal(err)
		}
		efd, _ := unix.FcntlInt(uintptr(m.EventQueue().WaitFD()), unix.F_DUPFD_CLOEXEC, 0)
		aq, err := fifo.OpenEventQueue(ms, ms.EventQueueOffset(), efd)
		if err != nil {
			t.Fatal(err)
		}
		m.EventQueue().Send(fifo.Event{Type: fifo.EventRx})
		if err := aq.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		aq.Close()
		ms.Close()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	leaks.Check(t)
}
