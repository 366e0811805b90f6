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
	recs [][]byte
	fds  []int
	size int
}

// outQueue is the bounded queue of messages to one peer, written by a
// writer goroutine that runs while the queue is not empty. Every record
// must leave within timeout; when one does not, or the socket fails, the
// queue stops, drops what it holds, and calls fail once.
type outQueue struct {
	c        *Conn
	timeout  time.Duration
	maxLen   int
	maxBytes int
	fail     func(err error) // called once, off the queue's lock, when a write fails

	space   chan struct{} // poked after every dequeue, for a waiting push
	stopped chan struct{} // closed when the queue stops

	mu      sync.Mutex
	items   []outItem      // guarded by mu
	bytes   int            // guarded by mu: the size of items
	running bool           // guarded by mu: a writer goroutine runs
	err     error          // guarded by mu: why the queue stopped; nil while it takes messages
	sealed  bool           // guarded by mu: takes no more messages, but drains
	idle    chan struct{}  // guarded by mu: closed when the running writer ends
	wg      sync.WaitGroup // the writer goroutine
}

func newOutQueue(c *Conn, timeout time.Duration, maxLen, maxBytes int, fail func(error)) *outQueue {
	return &outQueue{c: c, timeout: timeout, maxLen: maxLen, maxBytes: maxBytes, fail: fail,
		space: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// push encodes m, duplicates fds and queues them. With wait > 0 it waits
// up to wait for room; with wait 0 a full queue fails the connection at
// once (ErrQueueFull), so that the caller never waits for the peer.
func (q *outQueue) push(id uint32, m Message, fds []int, wait time.Duration) error {
	it, err := encodeItem(id, m, fds)
	if err != nil {
		return err
	}
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.err != nil || q.sealed {
			err := q.err
			q.mu.Unlock()
			closeFDs(it.fds)
			if err == nil {
				err = ErrClosed
			}
			return fmt.Errorf("api: send %v: %w", m.Type(), err)
		}
		if len(q.items) == 0 || (len(q.items) < q.maxLen && q.bytes+it.size <= q.maxBytes) {
			q.items = append(q.items, it)
			q.bytes += it.size
			if !q.running {
				q.running = true
				q.idle = make(chan struct{})
				q.wg.Add(1)
				go q.run(q.idle)
			}
			q.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return nil
		}
		q.mu.Unlock()
		if wait <= 0 {
			closeFDs(it.fds)
			err := fmt.Errorf("api: send %v: %w (%d messages queued)", m.Type(), ErrQueueFull, q.maxLen)
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
			closeFDs(it.fds)
			err := fmt.Errorf("api: send %v: %w (waited %v for room)", m.Type(), ErrQueueFull, wait)
			q.failWith(err)
			return err
		}
	}
}

// encodeItem encodes m as one record or, for a long ShowReply, several,
// and duplicates fds so that the caller keeps its own.
func encodeItem(id uint32, m Message, fds []int) (outItem, error) {
	var it outItem
	var e encoder
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
			it.recs = append(it.recs, b)
			it.size += len(b)
		}
	} else {
		b, err := e.record(nil, id, 0, m)
		if err != nil {
			return it, fmt.Errorf("api: send %v: %w", m.Type(), err)
		}
		it.recs = [][]byte{b}
		it.size = len(b)
	}
	for _, fd := range fds {
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFDs(it.fds)
			return outItem{}, fmt.Errorf("api: send %v: dup descriptor %d: %w", m.Type(), fd, err)
		}
		it.fds = append(it.fds, nfd)
	}
	return it, nil
}

// run writes queued messages until the queue is empty or stops.
func (q *outQueue) run(idle chan struct{}) {
	defer q.wg.Done()
	defer close(idle)
	for {
		q.mu.Lock()
		if len(q.items) == 0 || q.err != nil {
			q.running = false
			q.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items[0] = outItem{}
		q.items = q.items[1:]
		if len(q.items) == 0 {
			q.items = q.items[:0:0] // let the backing array go
		}
		q.bytes -= it.size
		q.mu.Unlock()
		select {
		case q.space <- struct{}{}:
		default:
		}
		err := q.c.writeItem(it, q.timeout)
		closeFDs(it.fds)
		if err != nil {
			q.failWith(err)
		}
	}
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
	items := q.items
	q.items, q.bytes = nil, 0
	q.mu.Unlock()
	for _, it := range items {
		closeFDs(it.fds)
	}
	return true
}

// drain takes no more messages and waits up to d for the writer to send
// what is queued. It reports whether everything left.
func (q *outQueue) drain(d time.Duration) bool {
	q.mu.Lock()
	q.sealed = true
	idle, running := q.idle, q.running
	q.mu.Unlock()
	if !running {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// writeItem writes the records of one queued message, each within
// timeout.
func (c *Conn) writeItem(it outItem, timeout time.Duration) error {
	c.wsem <- struct{}{}
	defer func() { <-c.wsem }()
	c.woob = appendRights(c.woob[:0], it.fds)
	oob := c.woob
	for _, rec := range it.recs {
		if timeout > 0 {
			c.uc.SetWriteDeadline(time.Now().Add(timeout))
		}
		if err := c.writeLocked(rec, oob); err != nil {
			return err
		}
		oob = nil
	}
	return nil
}
