package fifo_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
)

func openPeerQueue(t *testing.T, q *fifo.EventQueue, seg *fifo.Segment) *fifo.EventQueue {
	t.Helper()
	m := mapPeer(t, seg)
	efd := dup(t, q.WaitFD())
	pq, err := fifo.OpenEventQueue(m, m.EventQueueOffset(), efd)
	if err != nil {
		unix.Close(efd)
		t.Fatal(err)
	}
	t.Cleanup(func() { pq.Close() })
	return pq
}

// newQueuePair makes a 16-entry event queue (the daemon's end, closed at
// the test's end) and the app's end of it, mapped as another process
// would.
func newQueuePair(t *testing.T) (q, app *fifo.EventQueue) {
	t.Helper()
	seg := fifotest.MemfdSegment(t, 1<<16)
	q, err := fifo.NewEventQueue(seg, 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, openPeerQueue(t, q, seg)
}

func TestEventQueueBatchedSignal(t *testing.T) {
	seg := fifotest.MemfdSegment(t, 1<<16)
	q, err := fifo.NewEventQueue(seg, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Capacity() != 128 || seg.EventQueueOffset() != q.Offset() {
		t.Fatalf("capacity %d, offset %d/%d", q.Capacity(), q.Offset(), seg.EventQueueOffset())
	}
	app := openPeerQueue(t, q, seg)

	ev := fifo.Event{Type: fifo.EventRx, Handle: 7, Arg32: 3, Args: [6]uint64{1, 2, 3, 4, 5, 6}}
	for i := range 3 {
		ev.Handle = uint64(i)
		if err := q.Push(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Signal(); err != nil {
		t.Fatal(err)
	}
	q.Push(ev)
	q.Signal()
	q.Signal()
	// One eventfd write for the whole batch: the consumer was signalled.
	if c := fifotest.EventfdCount(t, q.EventFD()); c != 1 {
		t.Fatalf("eventfd counter %d after a batch, want 1", c)
	}
	evs := make([]fifo.Event, 10)
	n, err := app.PopBatch(evs)
	if err != nil || n != 4 {
		t.Fatalf("PopBatch = %d, %v", n, err)
	}
	for i := range 3 {
		want := ev
		want.Handle = uint64(i)
		if evs[i] != want {
			t.Fatalf("event %d = %+v, want %+v", i, evs[i], want)
		}
	}
	if _, err := app.PopBatch(evs); !errors.Is(err, fifo.ErrEmpty) {
		t.Fatalf("PopBatch on empty: %v", err)
	}
	// Still signalled (not re-armed): no write.
	q.Send(ev)
	if c := fifotest.EventfdCount(t, q.EventFD()); c != 0 {
		t.Fatalf("signalled twice without re-arming: %d", c)
	}
	// Arm sees the queued event and says not to sleep.
	if !app.Arm() {
		t.Fatal("Arm with an event queued")
	}
	app.PopBatch(evs)
	if app.Arm() {
		t.Fatal("Arm on an empty queue")
	}
	q.Send(ev)
	if c := fifotest.EventfdCount(t, q.EventFD()); c != 1 {
		t.Fatalf("no signal after re-arming: %d", c)
	}
	app.PopBatch(evs)

	// Capacity: all-or-nothing Push, partial PushBatch.
	many := make([]fifo.Event, 129)
	if err := q.Push(many...); !errors.Is(err, fifo.ErrTooLarge) {
		t.Fatalf("Push over capacity: %v", err)
	}
	if n, err := q.PushBatch(many[:100]); n != 100 || err != nil {
		t.Fatal(n, err)
	}
	if err := q.Push(many[:29]...); !errors.Is(err, fifo.ErrNoSpace) {
		t.Fatalf("Push that does not fit: %v", err)
	}
	if n, err := q.PushBatch(many); n != 28 || !errors.Is(err, fifo.ErrNoSpace) {
		t.Fatalf("PushBatch = %d, %v; want 28, ErrNoSpace", n, err)
	}
}

func TestEventQueueWait(t *testing.T) {
	q, app := newQueuePair(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := app.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an empty queue: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Wait(context.Background()) }()
	q.Send(fifo.Event{Type: fifo.EventConnected, Handle: 1})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs := make([]fifo.Event, 4)
	if n, _ := app.PopBatch(evs); n != 1 || evs[0].Type != fifo.EventConnected {
		t.Fatalf("popped %d: %+v", n, evs[0])
	}
	// A cancelled context ends Wait.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- app.Wait(ctx2) }()
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: %v", err)
	}
	// The next Wait is not disturbed by the earlier cancellation.
	go func() { done <- app.Wait(context.Background()) }()
	q.Send(fifo.Event{Type: fifo.EventRx})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Close ends a waiter.
	app.PopBatch(evs)
	go func() { done <- app.Wait(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	app.Close()
	if err := <-done; !errors.Is(err, fifo.ErrClosed) {
		t.Fatalf("Wait across Close: %v", err)
	}
}

// TestEventQueueConcurrentWait: two goroutines wait on one queue, as two
// listeners of one app do. One of them loops on short waits of an empty
// queue; the other's waits must still end with their own context (and
// with events when some are queued), not behind the first one's reads of
// the eventfd. With one P, the looping waiter used to take the file's
// read lock back before the other ran, which then waited for seconds.
func TestEventQueueConcurrentWait(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	q, app := newQueuePair(t)
	defer app.Close()

	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for ctx.Err() == nil {
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Millisecond)
			_ = app.Wait(wctx)
			wcancel()
		}
	}()
	defer func() { cancel(); <-loopDone }()
	time.Sleep(20 * time.Millisecond) // the loop is under way

	// The second waiter's own timeout ends each of its waits. The bound is
	// a hundred times the timeout: only a waiter kept from its context
	// misses it.
	const timeout = 20 * time.Millisecond
	for i := range 10 {
		wctx, wcancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		err := app.Wait(wctx)
		took := time.Since(start)
		wcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait %d on an empty queue: %v", i, err)
		}
		if took > 100*timeout {
			t.Fatalf("wait %d with a %v timeout took %v", i, timeout, took)
		}
	}
	// And an event wakes it while the loop goes on.
	done := make(chan error, 1)
	go func() {
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		done <- app.Wait(wctx)
	}()
	time.Sleep(20 * time.Millisecond)
	if err := q.Send(fifo.Event{Type: fifo.EventRx, Handle: 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait for an event: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("an event queued 2 s ago has not ended a wait")
	}
}

func TestEventQueueUntrusted(t *testing.T) {
	seg := fifotest.MemfdSegment(t, 1<<16)
	q, err := fifo.NewEventQueue(seg, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	m := mapPeer(t, seg)
	// Not an epoll set: a pipe, or the producer's eventfd itself.
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := fifo.OpenEventQueue(m, q.Offset(), p[0]); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("pipe as epoll set: %v", err)
	}
	pfd := dup(t, q.EventFD())
	defer unix.Close(pfd)
	if _, err := fifo.OpenEventQueue(m, q.Offset(), pfd); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("eventfd as epoll set: %v", err)
	}
	efd := dup(t, q.WaitFD())
	defer unix.Close(efd)
	if _, err := fifo.OpenEventQueue(m, 0, efd); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("offset 0: %v", err)
	}
	if _, err := fifo.OpenEventQueue(m, q.Offset()+64, efd); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("bad offset: %v", err)
	}
	// Indices not on record boundaries.
	q.Push(fifo.Event{})
	fifotest.SetTail(q.Fifo(), 65)
	if _, err := fifo.OpenEventQueue(m, q.Offset(), efd); !errors.Is(err, fifo.ErrBadFifo) {
		t.Fatalf("misaligned tail: %v", err)
	}
	// The app scribbling the head: the daemon's Push reports corruption.
	fifotest.SetTail(q.Fifo(), 64)
	fifotest.SetHead(q.Fifo(), 4096)
	if err := q.Push(make([]fifo.Event, 16)...); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("Push with a bad head: %v", err)
	}
	if _, err := q.PushBatch(make([]fifo.Event, 16)); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("PushBatch with a bad head: %v", err)
	}
}

// anonOpen counts this process's open descriptors of anonymous inodes of
// kind ("eventfd", "eventpoll").
func anonOpen(t *testing.T, kind string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:["+kind+"]" {
			n++
		}
	}
	return n
}

// A queue registers its epoll set with the runtime poller only once Wait
// needs it: the daemon fills queues it never waits on, and a registration
// there would make an event in the daemon of every signal to an app.
func TestEventQueuePollerOnlyForWait(t *testing.T) {
	counts := func() [2]int { return [2]int{anonOpen(t, "eventfd"), anonOpen(t, "eventpoll")} }
	before := counts()
	delta := func() [2]int { c := counts(); return [2]int{c[0] - before[0], c[1] - before[1]} }
	seg := fifotest.MemfdSegment(t, 1<<16)
	q, err := fifo.NewEventQueue(seg, 16)
	if err != nil {
		t.Fatal(err)
	}
	if d := delta(); d != [2]int{1, 1} {
		t.Fatalf("a new queue holds %d eventfd and %d epoll descriptors, want 1 and 1 (none for the poller before Wait)", d[0], d[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := q.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an empty queue: %v", err)
	}
	if d := delta(); d != [2]int{1, 2} {
		t.Fatalf("after Wait the queue holds %d eventfd and %d epoll descriptors, want 1 and 2", d[0], d[1])
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if d := delta(); d != [2]int{0, 0} {
		t.Fatalf("Close left %d eventfd and %d epoll descriptors open", d[0], d[1])
	}
	if err := q.Wait(context.Background()); !errors.Is(err, fifo.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
}

// The consumer and a peer of it hold nothing the producer writes: one
// filling the eventfd a peer was given and clearing O_NONBLOCK on it
// neither blocks the producer's Signal nor keeps it from waking the
// consumer, which never reads anything to be woken again.
func TestEventQueueHostilePeer(t *testing.T) {
	seg := fifotest.MemfdSegment(t, 1<<16)
	q, err := fifo.NewEventQueue(seg, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	app := openPeerQueue(t, q, seg)
	peer, err := fifo.PeerSignal(app.WaitFD())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peer)
	// The peer's eventfd wakes the consumer.
	done := make(chan error, 1)
	go func() { done <- app.Wait(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	q.Push(fifo.Event{Type: fifo.EventRx})
	if _, err := unix.Write(peer, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	waitErr := func(what string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: Wait did not return", what)
		}
	}
	waitErr("the peer's signal")
	evs := make([]fifo.Event, 4)
	app.PopBatch(evs)
	fifotest.PoisonEventfd(t, peer)
	for range 3 {
		go func() { done <- app.Wait(context.Background()) }()
		time.Sleep(10 * time.Millisecond)
		fifotest.SendWithin(t, q, fifo.Event{Type: fifo.EventRx}, 2*time.Second)
		waitErr("a signal after the peer's attack")
		app.PopBatch(evs)
	}
}
