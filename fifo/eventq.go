package fifo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// EventQueue is an app's event queue: a fifo of EventSize-byte records in a
// segment, plus the descriptors that wake its consumer.
//
// The producer (the daemon) writes an eventfd of its own, which it never
// shares (EventFD). The consumer gets an epoll set watching that eventfd
// (WaitFD), edge-triggered, and sleeps on it: in its own epoll set or the
// runtime poller, every write to the eventfd is an edge of the epoll set.
// Nobody reads the eventfd; its counter grows by one per signal and never
// nears its limit. Peers that may wake the consumer (the other end of a
// cut-through session) get an eventfd of their own in the same set
// (PeerSignal). So the consumer and its peers hold nothing the producer
// writes: the open file of a shared eventfd is shared too, and a holder
// could clear O_NONBLOCK on it and fill its counter, and the producer's
// next write would block (eventfd writes have no per-call non-blocking
// form).
//
// Signalling is batched: Push queues events without signalling, and Signal
// writes the eventfd only when the queue's event flag was clear (the
// consumer is not already signalled). The consumer clears the flag when it
// is about to sleep (Arm, Wait) and checks the queue again afterwards, so
// no event is left unseen.
//
// Producer calls (Push, PushBatch, Signal, Send) are serialized by a lock,
// so several goroutines of one process may produce; so are consumer calls
// (PopBatch, Arm, Wait). Close releases the descriptors (and, for a queue
// made by NewEventQueue, its fifo); the segment must still be open then.
type EventQueue struct {
	f   *Fifo
	seg *Segment
	efd int // the producer's eventfd; -1 at the consumer's end
	wfd int // the epoll set watching it
	// wait is a duplicate of wfd, watched by the runtime poller. Wait
	// makes it on first use: registered with the poller, the set makes an
	// event of every signal in this process's epoll set, which wakes a
	// thread of the producer's process (the daemon's, which never waits
	// on the queues it fills).
	wait  *os.File
	owned bool // made by NewEventQueue: Close frees the fifo

	pmu sync.Mutex // serializes producer calls
	cmu sync.Mutex // serializes consumer calls

	// One waiter at a time waits on the poller (the reader); the others
	// wait for its wait to end (woke is closed then) and look again.
	// Were they all to wait there, those behind the reader would wait
	// for the file's read lock, where neither their context nor a
	// deadline reaches them, and a reader that waits again at once (a
	// loop of short waits) takes the lock back before they run: they
	// starve.
	wmu     sync.Mutex    // guards reading and woke
	reading bool          // a waiter waits on the poller
	woke    chan struct{} // closed when the reader's read ends

	closeMu sync.Mutex // guards closed
	closed  bool
}

// NewEventQueue allocates an event queue with room for capacity events
// (rounded up to a power of two) in seg, and creates its eventfd and the
// epoll set watching it (close-on-exec, the eventfd non-blocking). The
// caller passes the set (WaitFD) to the app with the queue's offset
// (Offset). The first event queue of a segment is recorded in its header
// (Segment.EventQueueOffset).
func NewEventQueue(seg *Segment, capacity int) (*EventQueue, error) {
	return newEventQueue(seg, capacity, nil)
}

// newEventQueue is NewEventQueue with the epoll set made by newSet (nil:
// epoll_create1), which returns a close-on-exec epoll descriptor the queue
// then owns (ManagerOptions.NewWaitSet).
func newEventQueue(seg *Segment, capacity int, newSet func() (int, error)) (*EventQueue, error) {
	if capacity <= 0 || capacity > MaxFifoSize/EventSize {
		return nil, fmt.Errorf("new event queue: capacity %d: %w", capacity, ErrInvalidSize)
	}
	size := uint32(MinFifoSize)
	for size < uint32(capacity*EventSize) {
		size <<= 1
	}
	f, err := seg.AllocFifo(size)
	if err != nil {
		return nil, fmt.Errorf("new event queue: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		seg.FreeFifo(f)
		return nil, fmt.Errorf("new event queue: eventfd: %w", err)
	}
	if newSet == nil {
		newSet = func() (int, error) { return unix.EpollCreate1(unix.EPOLL_CLOEXEC) }
	}
	wfd, err := newSet()
	if err == nil {
		err = watch(wfd, efd)
	}
	if err != nil {
		if wfd >= 0 {
			unix.Close(wfd)
		}
		unix.Close(efd)
		seg.FreeFifo(f)
		return nil, fmt.Errorf("new event queue: epoll set: %w", err)
	}
	q := &EventQueue{f: f, seg: seg, efd: efd, wfd: wfd, owned: true}
	if seg.EventQueueOffset() == 0 {
		seg.setEventQueue(f.off)
	}
	return q, nil
}

// watch adds eventfd efd to epoll set wfd, edge-triggered: each write to
// efd is an event of the set.
func watch(wfd, efd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}
	return unix.EpollCtl(wfd, unix.EPOLL_CTL_ADD, efd, &ev)
}

// PeerSignal makes an eventfd (non-blocking, close-on-exec) that wakes
// the consumer waiting on waitFD (a queue's WaitFD, or a duplicate of it)
// when written: for a peer of the consumer, which gets it instead of
// anything the producer writes. The caller owns it; the consumer stops
// hearing it once every descriptor of it is closed.
func PeerSignal(waitFD int) (int, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("peer signal: eventfd: %w", err)
	}
	if err := watch(waitFD, efd); err != nil {
		unix.Close(efd)
		return -1, fmt.Errorf("peer signal: %w", err)
	}
	return efd, nil
}

// OpenEventQueue attaches to the event queue at offset in seg, with the
// epoll set that wakes its consumer (the producer's WaitFD). The fifo is
// validated as by FifoAt, its indices must be whole records apart from
// its start, and waitFD must be an epoll set; it is made non-blocking. On
// success the queue owns waitFD (Close closes it); on error the caller
// still does.
func OpenEventQueue(seg *Segment, offset uint32, waitFD int) (*EventQueue, error) {
	if offset == 0 {
		return nil, fmt.Errorf("open event queue: no offset: %w", ErrBadFifo)
	}
	f, err := seg.FifoAt(offset)
	if err != nil {
		return nil, fmt.Errorf("open event queue: %w", err)
	}
	if f.c.head%EventSize != 0 || f.p.tail%EventSize != 0 {
		return nil, fmt.Errorf("open event queue: indices %d/%d not on records: %w", f.c.head, f.p.tail, ErrBadFifo)
	}
	if link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(waitFD)); err != nil || link != "anon_inode:[eventpoll]" {
		return nil, fmt.Errorf("open event queue: fd %d is not an epoll set (%q, %v): %w", waitFD, link, err, ErrBadFifo)
	}
	if err := unix.SetNonblock(waitFD, true); err != nil {
		return nil, fmt.Errorf("open event queue: %w", err)
	}
	return &EventQueue{f: f, seg: seg, efd: -1, wfd: waitFD}, nil
}

// waitFile returns the queue's poller file, making it on first use;
// ErrClosed once the queue is closed.
func (q *EventQueue) waitFile() (*os.File, error) {
	q.closeMu.Lock()
	defer q.closeMu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	if q.wait == nil {
		dup, err := unix.FcntlInt(uintptr(q.wfd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("dup epoll set: %w", err)
		}
		if err := unix.SetNonblock(dup, true); err != nil {
			unix.Close(dup)
			return nil, fmt.Errorf("epoll set: %w", err)
		}
		q.wait = os.NewFile(uintptr(dup), "events")
	}
	return q.wait, nil
}

// EventFD returns the producer's eventfd, which Signal writes; -1 at the
// consumer's end. It stays owned by the queue and is never to be shared.
func (q *EventQueue) EventFD() int { return q.efd }

// WaitFD returns the epoll set that wakes the consumer: each signal is an
// edge of it (EPOLLIN). It is the descriptor to pass to the consumer. It
// stays owned by the queue.
func (q *EventQueue) WaitFD() int { return q.wfd }

// Offset returns the offset of the queue's fifo in its segment.
func (q *EventQueue) Offset() uint32 { return q.f.off }

// Capacity returns how many events the queue holds.
func (q *EventQueue) Capacity() int { return int(q.f.size / EventSize) }

// Fifo returns the queue's underlying fifo.
func (q *EventQueue) Fifo() *Fifo { return q.f }

// Push queues all of evs, or none: ErrNoSpace when they do not all fit now,
// ErrTooLarge when they never can. It does not signal; call Signal once
// after a batch of pushes.
func (q *EventQueue) Push(evs ...Event) error {
	q.pmu.Lock()
	defer q.pmu.Unlock()
	if len(evs) == 0 {
		return nil
	}
	if len(evs) > int(q.f.size/EventSize) {
		return ErrTooLarge
	}
	need := uint32(len(evs)) * EventSize
	free, ok := q.f.prodFree(need)
	if !ok {
		return ErrCorrupt
	}
	if free < need {
		return ErrNoSpace
	}
	q.putLocked(evs)
	return nil
}

// PushBatch queues as many of evs as fit and returns how many. The error is
// ErrNoSpace when not all fitted.
func (q *EventQueue) PushBatch(evs []Event) (int, error) {
	q.pmu.Lock()
	defer q.pmu.Unlock()
	if len(evs) == 0 {
		return 0, nil
	}
	want := q.f.clampLen(len(evs) * EventSize)
	free, ok := q.f.prodFree(want)
	if !ok {
		return 0, ErrCorrupt
	}
	n := min(len(evs), int(free/EventSize))
	q.putLocked(evs[:n])
	if n < len(evs) {
		return n, ErrNoSpace
	}
	return n, nil
}

// putLocked writes evs (known to fit) and publishes them. Records never
// wrap: the size is a multiple of EventSize and so is the tail.
func (q *EventQueue) putLocked(evs []Event) {
	f := q.f
	t := f.p.tail
	for i := range evs {
		off := t & f.mask
		evs[i].encode(f.data[off : off+EventSize])
		t += EventSize
	}
	f.publishTail(t)
}

// Signal wakes the consumer if it needs it: it writes the eventfd only when
// the queue's event flag was clear.
func (q *EventQueue) Signal() error {
	q.pmu.Lock()
	defer q.pmu.Unlock()
	if !q.f.SetEvent() {
		return nil
	}
	return signalFD(q.efd)
}

// Send is Push followed by Signal.
func (q *EventQueue) Send(evs ...Event) error {
	if err := q.Push(evs...); err != nil {
		return err
	}
	return q.Signal()
}

// signalFD adds one to an eventfd's counter.
func signalFD(fd int) error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("signal eventfd: %w", err)
	}
	return nil
}

// PopBatch removes up to len(evs) events into evs and returns how many. It
// returns ErrEmpty when none is queued.
func (q *EventQueue) PopBatch(evs []Event) (int, error) {
	q.cmu.Lock()
	defer q.cmu.Unlock()
	if len(evs) == 0 {
		return 0, nil
	}
	f := q.f
	used, ok := f.consUsed(f.clampLen(len(evs) * EventSize))
	if !ok {
		return 0, ErrCorrupt
	}
	n := min(len(evs), int(used/EventSize))
	if n == 0 {
		return 0, ErrEmpty
	}
	h := f.c.head
	for i := range n {
		off := h & f.mask
		evs[i].decode(f.data[off : off+EventSize])
		h += EventSize
	}
	f.publishHead(h)
	return n, nil
}

// Arm prepares the consumer to sleep: it clears the event flag and reports
// whether events are queued (then do not sleep). A consumer that waits in
// its own epoll set registers WaitFD there edge-triggered and calls Arm
// before each epoll_wait; there is nothing to read or reset.
func (q *EventQueue) Arm() bool {
	q.cmu.Lock()
	defer q.cmu.Unlock()
	q.f.ClearEvent()
	return q.f.MaxDequeue() >= EventSize
}

// queued reports whether events are queued.
func (q *EventQueue) queued() bool {
	q.cmu.Lock()
	defer q.cmu.Unlock()
	return q.f.MaxDequeue() >= EventSize
}

// Wait returns once events are queued (at once if some already are), or
// with ctx's error when ctx ends first, or ErrClosed when the queue is
// closed. It blocks a goroutine, not a thread (the epoll set is watched by
// the runtime poller). Goroutines may wait at once: one of them waits on
// the poller and wakes the others when its wait ends, so each returns
// when events are queued or its own ctx ends.
func (q *EventQueue) Wait(ctx context.Context) error {
	for {
		if q.isClosed() {
			return ErrClosed
		}
		if q.Arm() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		q.wmu.Lock()
		if q.reading {
			woke := q.woke
			q.wmu.Unlock()
			select {
			case <-woke:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		q.reading = true
		woke := make(chan struct{})
		q.woke = woke
		q.wmu.Unlock()
		err := q.read(ctx)
		q.wmu.Lock()
		q.reading = false
		close(woke)
		q.wmu.Unlock()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if cerr := ctx.Err(); cerr != nil {
					return cerr
				}
				continue // a stale cancellation of an earlier reader
			}
			return q.waitErr(err)
		}
	}
}

// read waits for the next edge of the epoll set, until ctx ends; it
// returns at once if events were queued since Arm. The caller is the only
// reader.
func (q *EventQueue) read(ctx context.Context) error {
	w, err := q.waitFile()
	if err != nil {
		return err
	}
	dl, _ := ctx.Deadline()
	if err := w.SetReadDeadline(dl); err != nil {
		return err
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { w.SetReadDeadline(time.Now()) })
		defer stop()
	}
	rc, err := w.SyscallConn()
	if err != nil {
		return err
	}
	// The poller forgets the edges that came before the wait begins, so
	// its first call looks at the queue again, after that point: an
	// event queued since Arm is seen there, one queued later makes an
	// edge the wait keeps.
	first := true
	return rc.Read(func(uintptr) bool {
		if first {
			first = false
			return q.queued()
		}
		return true
	})
}

// isClosed reports whether Close was called.
func (q *EventQueue) isClosed() bool {
	q.closeMu.Lock()
	defer q.closeMu.Unlock()
	return q.closed
}

func (q *EventQueue) waitErr(err error) error {
	// A wait through the raw connection of a file Close closed ends with
	// the poller's own error, not os.ErrClosed.
	if errors.Is(err, os.ErrClosed) || errors.Is(err, ErrClosed) || q.isClosed() {
		return ErrClosed
	}
	return fmt.Errorf("wait for events: %w", err)
}

// Close closes the queue's descriptors and, for a queue made by
// NewEventQueue, frees its fifo.
func (q *EventQueue) Close() error {
	q.closeMu.Lock()
	defer q.closeMu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	var errs []error
	if q.wait != nil {
		if err := q.wait.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close event queue: %w", err))
		}
	}
	if q.efd >= 0 {
		if err := unix.Close(q.efd); err != nil {
			errs = append(errs, fmt.Errorf("close event queue: eventfd: %w", err))
		}
	}
	if err := unix.Close(q.wfd); err != nil {
		errs = append(errs, fmt.Errorf("close event queue: epoll set: %w", err))
	}
	if q.owned {
		q.pmu.Lock()
		q.cmu.Lock()
		if err := q.seg.FreeFifo(q.f); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, fmt.Errorf("close event queue: %w", err))
		}
		q.cmu.Unlock()
		q.pmu.Unlock()
	}
	return errors.Join(errs...)
}
