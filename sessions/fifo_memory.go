package sessions

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// FifoMemory is the Memory of the daemon: memfd segments of package fifo.
// Each app gets a fifo.Manager with its event queue in its first segment;
// each cut-through session gets a segment of its own holding its two fifos.
//
// Events are written to an app's event queue as fifo.SessionEvent records.
type FifoMemory struct {
	NoDump    bool // keep segments out of the daemon's core dumps
	HugePages bool // ask for huge pages, falling back to normal pages
}

// FlagCutThrough is set in the Flags of the events of a cut-through session.
const FlagCutThrough = fifo.EventFlagCutThrough

var (
	_ Memory        = FifoMemory{}
	_ MemoryCharger = (*fifoApp)(nil)
)

// NewApp implements Memory.
func (m FifoMemory) NewApp(o AppMemoryOptions) (AppMemory, error) {
	// A bound past what an int64 holds (an app may ask for any uint64)
	// is no bound, not a negative one the manager refuses.
	mgr, err := fifo.NewManager(fifo.ManagerOptions{
		Name:               o.Name,
		SegmentSize:        int(o.SegmentSize),
		AddSegmentSize:     int(o.AddSegmentSize),
		MaxSegments:        o.MaxSegments,
		MaxFifoMemory:      int64(min(o.MaxFifoMemory, 1<<62)),
		MaxSegmentMemory:   int64(min(o.MaxSegmentMemory, 1<<62)),
		EventQueueCapacity: o.EventQueueSize,
		NewWaitSet:         o.NewWaitSet,
		NoDump:             m.NoDump,
		HugePages:          m.HugePages,
	})
	if err != nil {
		return nil, fmt.Errorf("segment manager: %w", err)
	}
	return &fifoApp{m: mgr}, nil
}

// fifoApp is an app's memory over a fifo.Manager.
type fifoApp struct {
	m *fifo.Manager

	// Events the app's queue had no room for, each as its records, in
	// order: written out ahead of any later event as the app makes room
	// (at each Notify, and from a timer, postponeRetry and later, while any
	// wait), so that a burst of accepts larger than the queue loses no
	// session. Advisory events (data and room notices, asynchronous
	// errors, which the fifos and the next call carry anyway) are not
	// postponed. At most maxPostponed wait; past that an event is lost,
	// counted in lost.
	mu        sync.Mutex
	postponed [][]fifo.Event
	retry     *time.Timer
	delay     time.Duration // of the next retry: postponeRetry, doubling while the app reads nothing, up to postponeRetryMax
	closed    bool
	lost      uint64
}

// maxPostponed bounds the events an app's memory holds for a queue that
// has no room (at most two 64-byte records each: 2 MiB): four per
// connection an app may have, so that only an app that stopped reading
// its queue reaches it.
const maxPostponed = 1 << 14

// postponeRetry is how soon postponed events are offered to the queue
// again while no other event comes; the delay doubles, up to
// postponeRetryMax, while the app makes no room.
const (
	postponeRetry    = time.Millisecond
	postponeRetryMax = 100 * time.Millisecond
)

// FifoManager returns the fifo.Manager behind an AppMemory made by FifoMemory.
func FifoManager(am AppMemory) (*fifo.Manager, bool) {
	fa, ok := am.(*fifoApp)
	if !ok {
		return nil, false
	}
	return fa.m, true
}

func (a *fifoApp) AllocPair(rxSize, txSize uint32) (FifoPair, Segment, error) {
	rx, tx, added, err := a.m.AllocPair(rxSize, txSize)
	if err != nil {
		if errors.Is(err, fifo.ErrTooManySegments) || errors.Is(err, fifo.ErrFifoMemoryLimit) || errors.Is(err, fifo.ErrSegmentFull) {
			return FifoPair{}, nil, fmt.Errorf("%w: %w", ErrNoMemory, err)
		}
		return FifoPair{}, nil, err
	}
	p := FifoPair{Rx: rx, Tx: tx, Segment: rx.Segment()}
	if added == nil {
		return p, nil, nil
	}
	return p, added, nil
}

// Charge implements MemoryCharger.
func (a *fifoApp) Charge(bytes uint64) error {
	if err := a.m.Charge(int64(min(bytes, 1<<62))); err != nil {
		return fmt.Errorf("%w: %w", ErrNoMemory, err)
	}
	return nil
}

// Uncharge implements MemoryCharger.
func (a *fifoApp) Uncharge(bytes uint64) { a.m.Uncharge(int64(min(bytes, 1<<62))) }

func (a *fifoApp) FreePair(p FifoPair) {
	a.m.FreePair(p.Rx, p.Tx)
}

func (a *fifoApp) Segments() []Segment {
	segs := a.m.Segments()
	out := make([]Segment, len(segs))
	for i, s := range segs {
		out[i] = s
	}
	return out
}

func (a *fifoApp) EventSegment() Segment {
	if q := a.m.EventQueue(); q != nil {
		return q.Fifo().Segment()
	}
	return nil
}

func (a *fifoApp) Notify(ev Event) error {
	q := a.m.EventQueue()
	if q == nil {
		return nil
	}
	sev := sessionEvent(a.m, ev)
	se := sev.Encode()
	recs := []fifo.Event{se}
	if (ev.Kind == EventAccepted || ev.Kind == EventConnected) && !ev.CutThrough && ev.Local.Addr().IsValid() && !ev.Local.Addr().IsUnspecified() {
		la := fifo.SessionEvent{Type: fifo.EventLocalAddr, Handle: uint64(ev.Handle), Transport: uint8(ev.Transport),
			Local: netip.AddrPortFrom(ev.Local.Addr().Unmap(), ev.Local.Port())}
		recs = []fifo.Event{la.Encode(), se}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.flushLocked(q)
	if len(a.postponed) == 0 {
		err := q.Send(recs...)
		if len(recs) == 2 && errors.Is(err, fifo.ErrNoSpace) {
			// Room for one only: the event alone (the app then names
			// the listener's address).
			err = q.Send(se)
		}
		if !errors.Is(err, fifo.ErrNoSpace) {
			return err
		}
	}
	switch ev.Kind {
	case fifo.EventRx, fifo.EventTx, fifo.EventError:
		return fifo.ErrNoSpace // advisory: the fifos and the next call tell the app
	}
	if len(a.postponed) >= maxPostponed {
		a.lost++
		return fifo.ErrNoSpace
	}
	a.postponed = append(a.postponed, recs)
	a.delay = postponeRetry
	if a.retry == nil {
		a.retry = time.AfterFunc(a.delay, a.retryPostponed)
	} else {
		a.retry.Reset(a.delay)
	}
	return nil
}

// flushLocked writes out postponed events, in order, while the queue has
// room, signals the app when it wrote any, and reports whether it did.
// a.mu is held.
func (a *fifoApp) flushLocked(q *fifo.EventQueue) bool {
	n := 0
	for n < len(a.postponed) && q.Push(a.postponed[n]...) == nil {
		n++
	}
	if n == 0 {
		return false
	}
	a.postponed = slices.Delete(a.postponed, 0, n)
	_ = q.Signal()
	return true
}

// retryPostponed offers the postponed events to the queue again, and
// comes back while some still wait.
func (a *fifoApp) retryPostponed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if q := a.m.EventQueue(); q != nil && a.flushLocked(q) {
		a.delay = postponeRetry
	} else {
		a.delay = min(2*a.delay, postponeRetryMax)
	}
	if len(a.postponed) > 0 {
		a.retry.Reset(a.delay)
	}
}

// Postponed returns the events waiting for room in the app's queue and
// those lost because too many waited.
func (a *fifoApp) Postponed() (waiting int, lost uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.postponed), a.lost
}

func (a *fifoApp) Close() error {
	a.mu.Lock()
	a.closed = true
	a.postponed = nil
	if a.retry != nil {
		a.retry.Stop()
	}
	a.mu.Unlock()
	return a.m.Close()
}

// sessionEvent is ev as the app reads it from its event queue.
func sessionEvent(m *fifo.Manager, ev Event) fifo.SessionEvent {
	se := fifo.SessionEvent{Type: ev.Kind, CutThrough: ev.CutThrough, Handle: uint64(ev.Handle), Transport: uint8(ev.Transport)}
	switch ev.Kind {
	case EventAccepted:
		se.Listener = uint64(ev.Listener)
	case EventConnected:
		se.Opaque = ev.Opaque
	case EventConnectFailed:
		se.Opaque = ev.Opaque
		se.Code = uint64(CodeOf(ev.Err))
	case EventReset, EventResetAhead:
		if ev.Err != nil {
			se.Code = uint64(CodeOf(ev.Err))
		}
	case EventSegmentAdded:
		if s, ok := ev.Segment.(*fifo.Segment); ok {
			se.Segment = s.Index()
		}
	}
	if rx, tx := ev.Pair.Rx, ev.Pair.Tx; (ev.Kind == EventAccepted || ev.Kind == EventConnected) && rx != nil && tx != nil {
		if ev.CutThrough {
			se.Rx, se.Tx = fifo.FifoRef{Offset: rx.Offset()}, fifo.FifoRef{Offset: tx.Offset()}
		} else {
			se.Rx, se.Tx = m.Ref(rx), m.Ref(tx)
		}
	}
	peer := ev.Remote
	if ev.Kind == EventAccepted && !peer.IsValid() {
		peer = ev.Local // a cut-through accept knows only the address the client dialled
	}
	if peer.IsValid() {
		se.Peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		se.LocalPort = ev.Local.Port()
	}
	return se
}

// ctSegmentSize is the size of a cut-through segment for fifos of a and b
// data bytes: the segment header, two fifo headers and data, and a page of
// slack for the allocator's alignment.
func ctSegmentSize(a, b uint32) int {
	return fifo.SegmentHeaderSize + 2*fifo.FifoHeaderSize + int(a) + int(b) + 4096
}

// NewCutThrough implements Memory.
func (m FifoMemory) NewCutThrough(name string, c2s, s2c uint32) (CutThrough, error) {
	seg, err := fifo.CreateSegment(fifo.SegmentOptions{Name: name, Size: ctSegmentSize(c2s, s2c), NoDump: m.NoDump, HugePages: m.HugePages})
	if err != nil {
		return nil, fmt.Errorf("cut-through segment: %w", err)
	}
	return newFifoCT(seg, c2s, s2c)
}

func newFifoCT(seg *fifo.Segment, c2s, s2c uint32) (*fifoCT, error) {
	a, err := seg.AllocFifo(c2s)
	if err != nil {
		seg.Close()
		return nil, fmt.Errorf("cut-through fifo: %w", err)
	}
	b, err := seg.AllocFifo(s2c)
	if err != nil {
		seg.Close()
		return nil, fmt.Errorf("cut-through fifo: %w", err)
	}
	return &fifoCT{seg: seg, c2s: a, s2c: b}, nil
}

// fifoCT is a cut-through session's segment and fifos.
type fifoCT struct {
	seg      *fifo.Segment
	c2s, s2c *fifo.Fifo
}

func (c *fifoCT) Client() FifoPair {
	return FifoPair{Rx: c.s2c, Tx: c.c2s, Segment: c.seg}
}

func (c *fifoCT) Server() FifoPair {
	return FifoPair{Rx: c.c2s, Tx: c.s2c, Segment: c.seg}
}

func (c *fifoCT) Segment() Segment { return c.seg }

func (c *fifoCT) Close() error { return c.seg.Close() }
