package app

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// TestSleepFlagSkipsKick: an end whose worker's sleep flag is clear sets
// the tx fifo's event flag and writes nothing to the worker's eventfd (an
// awake worker looks at the flag by itself); with the flag set, or with no
// sleep flags page, it writes the eventfd once per SetEvent that returned
// true. A one-shot dequeue notification follows the same rule; one the
// worker cannot see in the fifo (DeqNotifyAlways) always writes.
func TestSleepFlagSkipsKick(t *testing.T) {
	seg, err := fifo.NewHeapSegment("test", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	tx, err := seg.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	rx, err := seg.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(kick) })
	var asleep atomic.Uint32
	e := &end{h: 7, rx: rx, tx: tx, signalFD: kick, sleeping: &asleep, datapath: true}

	send := func() {
		t.Helper()
		tx.ClearEvent() // the worker took the last event
		if _, err := tx.Enqueue([]byte("x")); err != nil {
			t.Fatal(err)
		}
		e.afterEnqueue()
		if !tx.HasEvent() {
			t.Fatal("the tx fifo's event flag is not set after a write")
		}
	}
	send()
	if n := fifotest.EventfdCount(t, kick); n != 0 {
		t.Fatalf("worker awake: %d kicks, want 0", n)
	}
	asleep.Store(1)
	send()
	if n := fifotest.EventfdCount(t, kick); n != 1 {
		t.Fatalf("worker asleep: %d kicks, want 1", n)
	}
	e.sleeping = nil // no page: every SetEvent that returns true kicks
	send()
	send()
	if n := fifotest.EventfdCount(t, kick); n != 2 {
		t.Fatalf("no sleep flags page: %d kicks, want 2", n)
	}

	// Room made in rx: the worker (its producer) asked to be told when
	// the fifo leaves full.
	e.sleeping = &asleep
	fill := func(w fifo.DeqNotify) {
		t.Helper()
		for rx.MaxEnqueue() > 0 {
			if _, err := rx.Enqueue(make([]byte, rx.MaxEnqueue())); err != nil {
				t.Fatal(err)
			}
		}
		rx.WantDeqNotify(w)
		n, err := rx.Dequeue(make([]byte, 100))
		if err != nil || n != 100 {
			t.Fatalf("dequeue: %d, %v", n, err)
		}
		e.afterDequeue(n)
	}
	asleep.Store(0)
	fill(fifo.DeqNotifyIfFull)
	if !rx.DeqNotified() {
		t.Fatal("the one-shot dequeue notification left no flag")
	}
	if n := fifotest.EventfdCount(t, kick); n != 0 {
		t.Fatalf("room made, worker awake: %d kicks, want 0", n)
	}
	asleep.Store(1)
	fill(fifo.DeqNotifyIfFull)
	if n := fifotest.EventfdCount(t, kick); n != 1 {
		t.Fatalf("room made, worker asleep: %d kicks, want 1", n)
	}
	asleep.Store(0)
	fill(fifo.DeqNotifyAlways)
	if n := fifotest.EventfdCount(t, kick); n != 1 {
		t.Fatalf("DeqNotifyAlways, worker awake: %d kicks, want 1", n)
	}
}
