package app

import (
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
)

// deadline is a settable deadline: wait returns a channel that is closed
// once the deadline passed. Setting a new deadline affects callers already
// waiting.
type deadline struct {
	mu     sync.Mutex    // guards timer and passed
	timer  *time.Timer   // fires at the deadline
	passed chan struct{} // closed when the deadline passed
}

func newDeadline() *deadline { return &deadline{passed: make(chan struct{})} }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	passed := isClosed(d.passed)
	if t.IsZero() {
		if passed {
			d.passed = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if passed {
			d.passed = make(chan struct{})
		}
		c := d.passed
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !passed {
		close(d.passed)
	}
}

// stop releases the deadline's timer (on Close), so that a long deadline
// does not keep the object alive.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

// waiter is one blocked call's wake-up channel; the App's event goroutine
// sends to every armed waiter whose call may go on (due) after each
// wake-up of the app's eventfd. An app with a thousand connections has a
// thousand readers asleep: waking each on every event of any of them would
// cost a thousand goroutine wake-ups per packet.
type waiter struct {
	ch chan struct{}
	rx *fifo.Fifo // the call waits for data in rx; nil: not for that
	tx *fifo.Fifo // the call waits for room in tx; nil: not for that
	// idle: the call waits for nothing the event goroutine sees (a read
	// of a session whose rx fifo its peer broke): only a poke, its
	// deadline or a close wake it.
	idle bool
}

// due reports whether the call may go on: data to read, room to write, or
// (waiting for neither) anything at all. It runs on the event goroutine,
// so it looks at the fifo's shared indices only (Queued, HasRoom), not
// through the calls' private views. Peer closes, errors and
// deadlines wake a call by other means (half.poke, its channels).
//
// A reader found with nothing queued gets its rx event flag cleared and
// one more look, as it does itself before it sleeps. The flag can be set
// with nothing new to read: a producer descheduled between publishing
// its data and SetEvent, while the reader took that data without
// sleeping, sets it late and signals. That wake-up finds nothing due,
// and the flag, left set, would tell the producer's next SetEvent that
// the reader was signalled already: the reader, asleep, would never hear
// of the next data.
func (w *waiter) due() bool {
	switch {
	case w.idle:
		return false
	case w.rx != nil:
		if w.rx.Queued() {
			return true
		}
		if !w.rx.HasEvent() {
			return false
		}
		w.rx.ClearEvent()
		return w.rx.Queued()
	case w.tx != nil:
		return w.tx.HasRoom()
	}
	return true
}

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

// poke wakes w without blocking.
func (w *waiter) poke() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// drain forgets a pending wake-up.
func (w *waiter) drain() {
	select {
	case <-w.ch:
	default:
	}
}

// one is an eventfd increment of 1: a native-endian uint64.
var one [8]byte

func init() { binary.NativeEndian.PutUint64(one[:], 1) }

// signal adds one to an eventfd (a worker's kick eventfd or a peer app's
// eventfd). A full counter (EAGAIN) means the reader is signalled already.
func signal(fd int) {
	if fd < 0 {
		return
	}
	for {
		_, err := unix.Write(fd, one[:])
		if err != unix.EINTR {
			return
		}
	}
}
