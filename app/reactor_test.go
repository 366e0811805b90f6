package app

import (
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

// The reactor reads nothing and hears every signal: the daemon's through
// its own eventfd, a cut-through peer's through the eventfd the peer was
// given, both in the app's epoll set. A peer that fills its eventfd to the
// limit and makes it blocking silences only itself: the daemon's signals
// neither block nor go unheard.
func TestReactorHostilePeer(t *testing.T) {
	seg, err := fifo.NewHeapSegment("test", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	q, err := fifo.NewEventQueue(seg, 16) // the daemon's end
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	dup, err := unix.FcntlInt(uintptr(q.WaitFD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		t.Fatal(err)
	}
	a := &App{done: make(chan struct{}), waiters: map[*waiter]struct{}{}, evq: q,
		wake: os.NewFile(uintptr(dup), "events"), reactorDone: make(chan struct{})}
	go a.reactor()
	t.Cleanup(func() {
		a.wake.Close()
		<-a.reactorDone
	})
	peer, err := fifo.PeerSignal(q.WaitFD())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peer)

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
	write := func(fd int, v uint64) error {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], v)
		_, err := unix.Write(fd, b[:])
		return err
	}
	daemonSignal := func() {
		t.Helper()
		fifotest.SendWithin(t, q, fifo.Event{Type: fifo.EventRx}, 2*time.Second)
		woken("a daemon signal")
	}

	daemonSignal()
	if err := write(peer, 1); err != nil {
		t.Fatal(err)
	}
	woken("the peer's signal")

	fifotest.PoisonEventfd(t, peer)
	woken("the peer's write")
	for range 3 {
		daemonSignal()
	}
}
