package app

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
)

// A cut-through peer holds the app's eventfd and may write anything to
// it. One write of the largest count an eventfd takes (2^64-2) must not
// silence it: every later write would fail with EAGAIN and make no edge,
// so the reactor must reset the counter on the wake-up that write made,
// and the next signal must still wake a blocked call.
func TestReactorSurvivesSaturatedEventfd(t *testing.T) {
	seg, err := fifo.NewHeapSegment("test", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	q, err := fifo.NewEventQueue(seg, 16)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.FcntlInt(uintptr(q.EventFD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := &App{done: make(chan struct{}), waiters: map[*waiter]struct{}{}, evq: q,
		wake: os.NewFile(uintptr(dup), "events"), reactorDone: make(chan struct{})}
	go a.reactor()
	t.Cleanup(func() {
		a.wake.Close()
		<-a.reactorDone
		q.Close()
	})

	w := newWaiter() // waits for nothing in particular: any wake-up is due
	a.arm(w)
	defer a.disarm(w)
	woken := func(what string) {
		t.Helper()
		select {
		case <-w.ch:
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: the blocked call was not woken", what)
		}
	}

	var most [8]byte
	binary.NativeEndian.PutUint64(most[:], 1<<64-2)
	if _, err := unix.Write(q.EventFD(), most[:]); err != nil {
		t.Fatalf("the peer's write: %v", err)
	}
	woken("the peer's write")
	for i := range 3 {
		// As the daemon and honest peers signal: add one, EAGAIN meaning
		// signalled already.
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, err := unix.Write(q.EventFD(), one[:])
			if err == nil {
				break
			}
			if err != unix.EAGAIN || time.Now().After(deadline) {
				t.Fatalf("signal %d after the peer's write: %v (the counter was never reset)", i, err)
			}
			time.Sleep(time.Millisecond)
		}
		woken("a signal after the peer's write")
	}
}
