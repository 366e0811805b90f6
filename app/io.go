package app

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// datapathPoll is how often a writer waiting for room in a fifo drained
// by a datapath worker looks again, in case the worker does not send
// dequeue notifications.
const datapathPoll = 2 * time.Millisecond

// half is one direction of an object's data calls (reads or writes): the
// lock that serializes them, their deadline, and the waiter they sleep on.
type half struct {
	mu    sync.Mutex
	dl    *deadline
	w     *waiter
	timer *time.Timer // guarded by mu: the datapath poll timer
}

func newHalf() half { return half{dl: newDeadline(), w: newWaiter()} }

// expired reports whether the deadline passed.
func (h *half) expired() bool { return isClosed(h.dl.wait()) }

// sleep waits, with h.mu released, for a wake-up from the app's event
// goroutine (the caller armed h.w before its last look), the deadline, the
// object's done channel, or the app stopping. poll > 0 also wakes it after
// poll. It returns nil after a wake-up, else why to stop.
func (h *half) sleep(a *App, done <-chan struct{}, poll time.Duration) error {
	dl := h.dl.wait()
	var tc <-chan time.Time
	if poll > 0 {
		if h.timer == nil {
			h.timer = time.NewTimer(poll)
		} else {
			h.timer.Reset(poll)
		}
		tc = h.timer.C
	}
	h.mu.Unlock()
	var err error
	select {
	case <-h.w.ch:
	case <-tc:
	case <-dl:
		err = errTimeout
	case <-done:
		err = net.ErrClosed
	case <-a.done:
		err = a.Err()
	}
	h.mu.Lock()
	a.disarm(h.w)
	return err
}

// check returns why a call must not go on: the object or the app closed,
// or the deadline passed.
func (h *half) check(a *App, done <-chan struct{}) error {
	select {
	case <-done:
		return net.ErrClosed
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
var errPeerClosed = errors.New("app: the peer closed the session")

// writeDgram queues one datagram on e's tx fifo, waiting for room while
// the fifo is full. w.mu is held.
func writeDgram(a *App, w *half, done <-chan struct{}, e *end, hdr *fifo.DgramHeader, b []byte) error {
	asked := false
	defer func() {
		if asked {
			e.tx.WantDeqNotify(0)
		}
	}()
	for {
		if err := w.check(a, done); err != nil {
			return err
		}
		if e.gone.Load() {
			return errPeerClosed
		}
		err := e.tx.EnqueueDgram(hdr, b)
		switch err {
		case nil:
			e.afterEnqueue()
			return nil
		case fifo.ErrTooLarge:
			return ErrMessageTooLong
		case fifo.ErrNoSpace:
		default:
			return err
		}
		// Full: ask the consumer to tell us when it dequeues, look once
		// more, then sleep.
		a.arm(w.w)
		e.tx.WantDeqNotify(fifo.DeqNotifyAlways)
		asked = true
		if e.tx.MaxEnqueue() >= fifo.DgramRecordSize(len(b)) || e.gone.Load() {
			a.disarm(w.w)
			continue
		}
		poll := time.Duration(0)
		if e.datapath {
			poll = datapathPoll
		}
		if err := w.sleep(a, done, poll); err != nil {
			return err
		}
	}
}
