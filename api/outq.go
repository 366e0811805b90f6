package api

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrQueueFull is the error of a send to a connection whose outgoing queue
// is full: its peer has stopped reading. The connection is closed.
var ErrQueueFull = errors.New("api: peer does not read: outgoing queue full")

// outItem is one queued message: its records, encoded, and duplicates of
// the descriptors it carries (which the queue owns and closes).
type outItem struct {
	rec  []byte   // the first (usually only) record
	more [][]byte // the records that continue it, for a long ShowReply
	fds  []int
	size int
	// release, when set, is called once the message left or was dropped
	// (a Show's slot of the Server's showGate).
	release func()
}

// done gives back what the item holds once it left or was dropped.
func (it *outItem) done() {
	closeFDs(it.fds)
	if it.release != nil {
		it.release()
	}
}

// maxPooledRecord bounds the record buffers a queue keeps for reuse.
const maxPooledRecord = 4 << 10

// outQueue is the bounded queue of messages to one peer, written by the
// connection's writer goroutine (run). Every record must leave within
// timeout; when one does not, or the socket fails, the queue stops, drops
// what it holds, and calls fail once.
type outQueue struct {
	c        *Conn
	timeout  time.Duration
	maxLen   int
	maxBytes int
	fail     func(err error) // called once, off the queue's lock, when a write fails

	kick    chan struct{} // poked after every push, for the writer
	space   chan struct{} // poked after every pop, for a waiting push
	stopped chan struct{} // closed when the queue stops
	done    chan struct{} // closed when the writer returns
	free    chan []byte   // small record buffers for reuse

	encMu sync.Mutex
	enc   encoder // guarded by encMu; kept here, as an encoder on the stack would escape

	mu     sync.Mutex
	items  []outItem // guarded by mu: items[head:] are queued
	head   int       // guarded by mu
	bytes  int       // guarded by mu: the size of the queued items
	err    error     // guarded by mu: why the queue stopped; nil while it takes messages
	sealed bool      // guarded by mu: takes no more messages; the writer ends once it drained them
}

func newOutQueue(c *Conn, timeout time.Duration, maxLen, maxBytes int, fail func(error)) *outQueue {
	return &outQueue{c: c, timeout: timeout, maxLen: maxLen, maxBytes: maxBytes, fail: fail,
		kick: make(chan struct{}, 1), space: make(chan struct{}, 1), stopped: make(chan struct{}),
		done: make(chan struct{}), free: make(chan []byte, 4)}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push encodes m, duplicates fds and queues them. With wait > 0 (a reply)
// it waits up to wait for room, which for it ends at three quarters of the
// queue; with wait 0 (a notice) a full queue fails the connection at once
// (ErrQueueFull), so that the caller never waits for the peer. With try (a
// notice another client's request causes, Conn.TrySend) room ends at half
// of the queue, push waits up to wait for it, and then returns
// ErrQueueFull with the connection left as it is.
func (q *outQueue) push(id uint32, m Message, fds []int, wait time.Duration, try bool) error {
	return q.pushRelease(id, m, fds, wait, try, nil)
}

// pushRelease is push with release called once the message left the
// queue (written or dropped), or at once when it is not queued.
func (q *outQueue) pushRelease(id uint32, m Message, fds []int, wait time.Duration, try bool, release func()) error {
	var buf []byte
	select {
	case buf = <-q.free:
	default:
	}
	q.encMu.Lock()
	it, err := encodeItem(&q.enc, buf, id, m, fds)
	q.encMu.Unlock()
	if err != nil {
		if release != nil {
			release()
		}
		return err
	}
	it.release = release
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.err != nil || q.sealed {
			err := q.err
			q.mu.Unlock()
			it.done()
			if err == nil {
				err = ErrClosed
			}
			return fmt.Errorf("api: send %v: %w", m.Type(), err)
		}
		n := len(q.items) - q.head
		maxLen, maxBytes := q.maxLen, q.maxBytes
		switch {
		case try:
			// Notices others' requests cause leave half of the queue
			// to the client's own replies and notices: a flood of them
			// waits, then is refused to the clients that cause it, and
			// never drops this one.
			maxLen -= q.maxLen / 2
			maxBytes -= q.maxBytes / 2
		case wait > 0:
			// A reply leaves a quarter of the queue to notices: a
			// client's own requests answered faster than it reads
			// (hundreds in flight) must not fill the queue so that a
			// notice then drops the client. Replies wait instead.
			maxLen -= q.maxLen / 4
			maxBytes -= q.maxBytes / 4
		}
		if (n == 0 && !try) || (n < maxLen && q.bytes+it.size <= maxBytes) {
			q.items = append(q.items, it)
			q.bytes += it.size
			q.mu.Unlock()
			poke(q.kick)
			if timer != nil {
				timer.Stop()
			}
			return nil
		}
		q.mu.Unlock()
		if try && wait <= 0 {
			it.done()
			return fmt.Errorf("api: send %v: %w (%d messages queued, the client kept)", m.Type(), ErrQueueFull, n)
		}
		if wait <= 0 {
			it.done()
			err := fmt.Errorf("api: send %v: %w (%d messages queued)", m.Type(), ErrQueueFull, n)
			q.failWith(err)
			return err
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-q.space:
		case <-q.stopped:
		case <-timer.C:
			it.done()
			if try {
				return fmt.Errorf("api: send %v: %w (waited %v for room, %d messages queued, the client kept)", m.Type(), ErrQueueFull, wait, n)
			}
			err := fmt.Errorf("api: send %v: %w (waited %v for room)", m.Type(), ErrQueueFull, wait)
			q.failWith(err)
			return err
		}
	}
}

// encodeItem encodes m into buf as one record or, for a long ShowReply,
// several, and duplicates fds so that the caller keeps its own.
func encodeItem(e *encoder, buf []byte, id uint32, m Message, fds []int) (outItem, error) {
	var it outItem
	if sr, ok := m.(*ShowReply); ok && len(sr.JSON) > maxShowChunk {
		doc := sr.JSON
		if len(doc) > MaxReassembled {
			return it, fmt.Errorf("api: send %v: %w: %d bytes, limit %d", TypeShowReply, ErrTooLarge, len(doc), MaxReassembled)
		}
		for off := 0; off < len(doc); off += maxShowChunk {
			end := min(off+maxShowChunk, len(doc))
			var flags Flags
			if end < len(doc) {
				flags = FlagMore
			}
			b, err := e.record(nil, id, flags, &ShowReply{JSON: doc[off:end]})
			if err != nil {
				return it, fmt.Errorf("api: send %v: %w", TypeShowReply, err)
			}
			if it.rec == nil {
				it.rec = b
			} else {
				it.more = append(it.more, b)
			}
			it.size += len(b)
		}
	} else {
		b, err := e.record(buf[:0], id, 0, m)
		if err != nil {
			return it, fmt.Errorf("api: send %v: %w", m.Type(), err)
		}
		it.rec, it.size = b, len(b)
	}
	if len(fds) > 0 {
		it.fds = make([]int, 0, len(fds))
		for _, fd := range fds {
			nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				closeFDs(it.fds)
				return outItem{}, fmt.Errorf("api: send %v: dup descriptor %d: %w", m.Type(), fd, err)
			}
			it.fds = append(it.fds, nfd)
		}
	}
	return it, nil
}

// run is the writer: it writes queued messages until the queue stops, or
// is sealed and empty.
func (q *outQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		if q.err != nil {
			q.mu.Unlock()
			return
		}
		if q.head == len(q.items) {
			sealed := q.sealed
			q.mu.Unlock()
			if sealed {
				return
			}
			select {
			case <-q.kick:
			case <-q.stopped:
			}
			continue
		}
		it := q.popLocked()
		q.mu.Unlock()
		poke(q.space)
		err := q.c.writeItem(it, q.timeout)
		it.done()
		if cap(it.rec) <= maxPooledRecord {
			select {
			case q.free <- it.rec[:0]:
			default:
			}
		}
		if err != nil {
			q.failWith(err)
		}
	}
}

// popLocked takes the first queued item. The items left move to the
// front once the taken ones are half of the slice: a queue that never
// empties (a client that keeps a few replies unread while it reads on)
// would otherwise grow its slice by every message it ever carried. q.mu is
// held and the queue is not empty.
func (q *outQueue) popLocked() outItem {
	it := q.items[q.head]
	q.items[q.head] = outItem{}
	q.head++
	q.bytes -= it.size
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 32 && q.head >= len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return it
}

// failWith stops the queue with err and calls fail, once.
func (q *outQueue) failWith(err error) {
	if q.stop(err) && q.fail != nil {
		q.fail(err)
	}
}

// stop stops the queue with err and drops what it holds; it reports
// whether this call stopped it.
func (q *outQueue) stop(err error) bool {
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		return false
	}
	q.err = err
	close(q.stopped)
	items := q.items[q.head:]
	q.items, q.head, q.bytes = nil, 0, 0
	q.mu.Unlock()
	for i := range items {
		items[i].done()
	}
	return true
}

// drain takes no more messages and waits up to d for the writer to send
// what is queued. It reports whether everything left.
func (q *outQueue) drain(d time.Duration) bool {
	q.mu.Lock()
	q.sealed = true
	q.mu.Unlock()
	poke(q.kick)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.done:
		return true
	case <-t.C:
		return false
	}
}

// continuedTimeouts bounds the time a message of several records (a long
// ShowReply) may take to leave, in send timeouts from its first record: a
// client that reads each record just within the send timeout would
// otherwise hold the message, and the Show slot it holds (showGate), for
// as many send timeouts as it has records (256 for a document of
// MaxReassembled).
const continuedTimeouts = 2

// writeItem writes the records of one queued message, each within
// timeout, and all of them within continuedTimeouts times timeout.
func (c *Conn) writeItem(it outItem, timeout time.Duration) error {
	c.wsem <- struct{}{}
	defer func() { <-c.wsem }()
	c.woob = appendRights(c.woob[:0], it.fds)
	now := time.Now()
	end := now.Add(continuedTimeouts * timeout)
	if timeout > 0 {
		c.uc.SetWriteDeadline(now.Add(timeout))
	}
	if err := c.writeLocked(it.rec, c.woob); err != nil {
		return err
	}
	for _, rec := range it.more {
		if timeout > 0 {
			dl := time.Now().Add(timeout)
			if dl.After(end) {
				dl = end
			}
			c.uc.SetWriteDeadline(dl)
		}
		if err := c.writeLocked(rec, nil); err != nil {
			return err
		}
	}
	return nil
}
