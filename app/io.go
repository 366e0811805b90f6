package app

import (
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// datapathPoll is how often a writer waiting for room in a fifo drained
// by a datapath worker looks again: the worker writes the app's eventfd
// after a drain the writer asked to hear of (fifo.DeqNotifyAlways), and
// this covers a wake-up lost on the way.
const datapathPoll = 2 * time.Millisecond

// half is one direction of an object's data calls (reads or writes): the
// lock that serializes their looks at the fifos, and their deadline. Any
// number of goroutines may call at once: a call that must wait releases
// mu and sleeps on a waiter of its own (sleeper), woken when the app's
// events leave its fifo with data (a reader) or room (a writer), and none
// takes over another's state.
type half struct {
	mu      sync.Mutex
	dl      *deadline
	waiting int // guarded by mu: sleeping writers that asked the consumer for dequeue notifications

	smu sync.Mutex    // guards bc
	bc  chan struct{} // closed (and replaced) by poke: wakes every call sleeping now
}

func newHalf() half { return half{dl: newDeadline(), bc: make(chan struct{})} }

// sleeper is one call's wake-ups: its own waiter, armed with the app, and
// the half's broadcast channel as it was when the call armed.
type sleeper struct {
	w  *waiter
	bc chan struct{}
}

var waiterPool = sync.Pool{New: func() any { return newWaiter() }}

// arm prepares the calling goroutine's sleep for data in rx or room in tx
// (one of them, or neither: any event); call it before the last look at
// the fifo, then sleep or disarm.
func (h *half) arm(a *App, rx, tx *fifo.Fifo) sleeper {
	return h.armAs(a, rx, tx, false)
}

// armIdle is arm for a call that waits for nothing the app's event
// goroutine sees (waiter.idle).
func (h *half) armIdle(a *App) sleeper { return h.armAs(a, nil, nil, true) }

func (h *half) armAs(a *App, rx, tx *fifo.Fifo, idle bool) sleeper {
	w := waiterPool.Get().(*waiter)
	w.drain()
	w.rx, w.tx, w.idle = rx, tx, idle
	a.arm(w)
	h.smu.Lock()
	bc := h.bc
	h.smu.Unlock()
	return sleeper{w: w, bc: bc}
}

// disarm ends a sleeper that will not sleep.
func (h *half) disarm(a *App, s sleeper) {
	a.disarm(s.w)
	s.w.rx, s.w.tx, s.w.idle = nil, nil, false
	waiterPool.Put(s.w)
}

// poke wakes every call of this half sleeping now (a peer went away, a
// session was accepted).
func (h *half) poke() {
	h.smu.Lock()
	close(h.bc)
	h.bc = make(chan struct{})
	h.smu.Unlock()
}

// expired reports whether the deadline passed.
func (h *half) expired() bool { return isClosed(h.dl.wait()) }

// sleep waits, with h.mu released, for a wake-up from the app's event
// goroutine (the caller armed s before its last look), a poke, the deadline, the
// object's done channel, or the app stopping. poll > 0 also wakes it after
// poll. It returns nil after a wake-up, else why to stop.
func (h *half) sleep(a *App, done <-chan struct{}, poll time.Duration, s sleeper) error {
	dl := h.dl.wait()
	var tc <-chan time.Time
	var t *time.Timer
	if poll > 0 {
		t = time.NewTimer(poll)
		tc = t.C
	}
	h.mu.Unlock()
	var err error
	select {
	case <-s.w.ch:
	case <-s.bc:
	case <-tc:
	case <-dl:
		err = errTimeout
	case <-done:
		err = net.ErrClosed
	case <-a.done:
		err = a.Err()
		if isClosed(done) {
			err = net.ErrClosed // the owner closed first (check)
		}
	}
	if t != nil {
		t.Stop()
	}
	h.mu.Lock()
	h.disarm(a, s)
	return err
}

// check returns why a call must not go on: the object or the app closed,
// or the deadline passed.
func (h *half) check(a *App, done <-chan struct{}) error {
	// The owner's close first: the App's Close closes its objects before
	// it fails the App, and a call after it fails as after the object's
	// own Close (use of closed network connection), not at random with
	// the App's error.
	select {
	case <-done:
		return net.ErrClosed
	default:
	}
	select {
	case <-a.done:
		return a.Err()
	default:
	}
	if h.expired() {
		return errTimeout
	}
	return nil
}

// errPeerClosed is returned by writes to a session whose peer closed it.
// It wraps syscall.EPIPE, as a write to a kernel TCP socket whose peer is
// gone fails.
var errPeerClosed error = &Error{Msg: "app: the peer closed the session", Err: syscall.EPIPE}

// writeDgram queues one datagram on e's tx fifo, waiting for room while
// the fifo is full. w.mu is held.
func writeDgram(a *App, w *half, done <-chan struct{}, e *end, hdr *fifo.DgramHeader, b []byte) error {
	asked := false
	defer func() {
		if asked {
			w.doneWaiting(e)
		}
	}()
	for {
		if err := w.check(a, done); err != nil {
			return err
		}
		if err := enqueueDgram(e, hdr, b); err != fifo.ErrNoSpace {
			return err
		}
		// Full: ask the consumer to tell us when it dequeues, look once
		// more, then sleep.
		s := w.arm(a, nil, e.tx)
		if !asked {
			asked = true
			w.waiting++
		}
		e.tx.WantDeqNotify(fifo.DeqNotifyAlways)
		if e.tx.MaxEnqueue() >= fifo.DgramRecordSize(len(b)) || e.gone.Load() {
			w.disarm(a, s)
			continue
		}
		poll := time.Duration(0)
		if e.datapath {
			poll = datapathPoll
		}
		if err := w.sleep(a, done, poll, s); err != nil {
			return err
		}
	}
}

// enqueueDgram queues one datagram on e's tx fifo if it has room:
// fifo.ErrNoSpace if not (the caller does not wait), errPeerClosed for a
// peer gone, errMessageTooLong for one that never fits.
func enqueueDgram(e *end, hdr *fifo.DgramHeader, b []byte) error {
	if e.gone.Load() {
		return errPeerClosed
	}
	switch err := e.tx.EnqueueDgram(hdr, b); err {
	case nil:
		e.afterEnqueue()
		return nil
	case fifo.ErrTooLarge:
		return errMessageTooLong
	default:
		return err
	}
}

// doneWaiting ends a writer's wait for room in e's tx fifo: the last
// writer waiting turns the consumer's dequeue notifications off. w.mu is
// held. A writer woken after its owner released e (Close, a cut-through
// peer reaped) leaves the fifo alone: it may be unmapped.
func (w *half) doneWaiting(e *end) {
	w.waiting--
	if w.waiting == 0 && !e.closed {
		e.tx.WantDeqNotify(0)
	}
}
