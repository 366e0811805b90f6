package fifo

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Manager defaults.
const (
	DefaultSegmentSize = 4 << 20
	DefaultMaxSegments = 64
)

// ManagerOptions configure a segment manager.
type ManagerOptions struct {
	Name string
	// SegmentSize is the size of the first segment; 0 means
	// DefaultSegmentSize.
	SegmentSize int
	// AddSegmentSize is the size of segments added later; 0 means
	// SegmentSize. A pair larger than that gets a segment of its own size.
	AddSegmentSize int
	// MaxSegments caps the number of segments; 0 means
	// DefaultMaxSegments.
	MaxSegments int
	// MaxFifoMemory caps the data bytes of all fifos allocated by
	// AllocPair, and those counted by Charge; 0 means no cap.
	MaxFifoMemory int64
	// MaxSegmentMemory caps the bytes of all the manager's segments, the
	// first included, and those counted by Charge: what the app maps and
	// can write to, whatever its fifos use of it. A segment added when it
	// would pass the cap is made smaller, down to what the pair needs;
	// below that AllocPair fails with ErrFifoMemoryLimit. 0 means no cap.
	MaxSegmentMemory int64
	// EventQueueCapacity, when positive, makes the manager create the
	// app's event queue in its first segment (recorded in that segment's
	// header) with room for that many events.
	EventQueueCapacity int
	// NewWaitSet, when set, creates the epoll set of the event queue (its
	// WaitFD) in place of epoll_create1 by the calling thread: the kernel
	// charges the watches of an epoll set to the user that created it
	// (fs.epoll.max_user_watches), so a daemon gives each app a set made
	// in the app's name, whose watches the app's user pays for.
	NewWaitSet        func() (int, error)
	NoDump, HugePages bool
}

// FifoRef names a fifo to an app: the index of its segment in the app's
// manager, the offset of its header in that segment, and its data size.
type FifoRef struct {
	Segment uint32
	Offset  uint32
	Size    uint32
}

// Manager is one app's segment manager: the segments shared with the app
// and the fifos of its sessions. The first segment is made by NewManager;
// AllocPair adds one when a pair fits in none of them, and reports it so
// the caller can pass its descriptor to the app. Segment indices are
// positions in Segments and never change.
//
// A Manager is safe for concurrent use. Close closes every segment and the
// event queue; no fifo of the manager may be in use then.
type Manager struct {
	opts ManagerOptions

	mu sync.Mutex // guards the fields below; taken before Segment.mu
	// segs are the segments, by index.
	segs     []*Segment
	fifoMem  int64 // data bytes allocated by AllocPair
	segMem   int64 // bytes of the segments, and those Charge counted
	evq      *EventQueue
	closed   bool
	segCount int // segments ever made (for names)
}

// NewManager creates a manager and its first segment (and event queue if
// asked for).
func NewManager(opts ManagerOptions) (*Manager, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.AddSegmentSize == 0 {
		opts.AddSegmentSize = opts.SegmentSize
	}
	if opts.MaxSegments == 0 {
		opts.MaxSegments = DefaultMaxSegments
	}
	if opts.SegmentSize < 0 || opts.AddSegmentSize < 0 || opts.MaxSegments < 0 || opts.MaxFifoMemory < 0 ||
		opts.MaxSegmentMemory < 0 || opts.EventQueueCapacity < 0 {
		return nil, fmt.Errorf("new manager %q: negative option: %w", opts.Name, ErrInvalidSize)
	}
	if c := opts.MaxSegmentMemory; c > 0 && int64(opts.SegmentSize) > c {
		return nil, fmt.Errorf("new manager %q: first segment of %d bytes over the segment memory cap %d: %w",
			opts.Name, opts.SegmentSize, c, ErrFifoMemoryLimit)
	}
	m := &Manager{opts: opts}
	s, err := m.newSegmentLocked(opts.SegmentSize)
	if err != nil {
		return nil, fmt.Errorf("new manager %q: %w", opts.Name, err)
	}
	if opts.EventQueueCapacity > 0 {
		q, err := newEventQueue(s, opts.EventQueueCapacity, opts.NewWaitSet)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("new manager %q: %w", opts.Name, err)
		}
		m.evq = q
	}
	return m, nil
}

// newSegmentLocked creates the next segment and appends it.
func (m *Manager) newSegmentLocked(size int) (*Segment, error) {
	s, err := CreateSegment(SegmentOptions{
		Name:      fmt.Sprintf("%s/%d", m.opts.Name, m.segCount),
		Size:      size,
		NoDump:    m.opts.NoDump,
		HugePages: m.opts.HugePages,
	})
	if err != nil {
		return nil, err
	}
	m.segCount++
	m.segMem += int64(s.Size())
	s.setIndex(uint32(len(m.segs)))
	m.segs = append(m.segs, s)
	return s, nil
}

// EventQueue returns the app's event queue, nil unless
// EventQueueCapacity was set.
func (m *Manager) EventQueue() *EventQueue { return m.evq }

// AllocPair allocates an rx and a tx fifo for a session, in the same
// segment: the first one that holds both, or a new segment of
// AddSegmentSize (or larger, for a large pair), which is then returned as
// added. It fails with ErrTooManySegments or ErrFifoMemoryLimit at the
// manager's caps and ErrInvalidSize for bad sizes.
func (m *Manager) AllocPair(rxSize, txSize uint32) (rx, tx *Fifo, added *Segment, err error) {
	for _, sz := range [2]uint32{rxSize, txSize} {
		if sz < MinFifoSize || sz > MaxFifoSize || sz&(sz-1) != 0 {
			return nil, nil, nil, fmt.Errorf("alloc pair: fifo size %d: %w", sz, ErrInvalidSize)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, nil, fmt.Errorf("alloc pair: %w", ErrClosed)
	}
	data := int64(rxSize) + int64(txSize)
	if m.opts.MaxFifoMemory > 0 && m.fifoMem+data > m.opts.MaxFifoMemory {
		return nil, nil, nil, fmt.Errorf("alloc pair of %d+%d bytes for %q (%d of %d in use): %w",
			rxSize, txSize, m.opts.Name, m.fifoMem, m.opts.MaxFifoMemory, ErrFifoMemoryLimit)
	}
	for _, s := range m.segs {
		if rx, tx, ok := allocPairIn(s, rxSize, txSize); ok {
			m.fifoMem += data
			return rx, tx, nil, nil
		}
	}
	if len(m.segs) >= m.opts.MaxSegments {
		return nil, nil, nil, fmt.Errorf("alloc pair for %q: %d segments: %w", m.opts.Name, len(m.segs), ErrTooManySegments)
	}
	need := SegmentHeaderSize + 2*FifoHeaderSize + int(data)
	size := max(m.opts.AddSegmentSize, need)
	if c := m.opts.MaxSegmentMemory; c > 0 {
		// Whole pages, huge ones where asked: the segment's size is
		// rounded up to them.
		align := int64(unix.Getpagesize())
		if m.opts.HugePages {
			align = int64(hugePageSize())
		}
		room := (c - m.segMem) / align * align
		if room < int64(need) {
			return nil, nil, nil, fmt.Errorf("alloc pair of %d+%d bytes for %q: a segment for it would pass the segment memory cap (%d of %d in use): %w",
				rxSize, txSize, m.opts.Name, m.segMem, c, ErrFifoMemoryLimit)
		}
		size = int(min(int64(size), room))
	}
	s, err := m.newSegmentLocked(size)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("alloc pair for %q: add segment: %w", m.opts.Name, err)
	}
	rx, tx, ok := allocPairIn(s, rxSize, txSize)
	if !ok {
		// Cannot happen: the segment was sized for the pair. Keep the
		// segment (the caller still has to hand it over) and report.
		return nil, nil, s, fmt.Errorf("alloc pair for %q in a new segment: %w", m.opts.Name, ErrSegmentFull)
	}
	m.fifoMem += data
	return rx, tx, s, nil
}

// allocPairIn allocates both fifos in s, or neither.
func allocPairIn(s *Segment, rxSize, txSize uint32) (rx, tx *Fifo, ok bool) {
	rx, err := s.AllocFifo(rxSize)
	if err != nil {
		return nil, nil, false
	}
	tx, err = s.AllocFifo(txSize)
	if err != nil {
		s.FreeFifo(rx)
		return nil, nil, false
	}
	return rx, tx, true
}

// Ref names f to the app.
func (m *Manager) Ref(f *Fifo) FifoRef {
	return FifoRef{Segment: f.seg.Index(), Offset: f.off, Size: f.size}
}

// FreePair frees fifos returned by AllocPair (either may be nil). They must
// be out of use.
func (m *Manager) FreePair(rx, tx *Fifo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range [2]*Fifo{rx, tx} {
		if f == nil {
			continue
		}
		if err := f.seg.FreeFifo(f); err == nil {
			m.fifoMem -= int64(f.size)
		}
	}
}

// Charge counts n data bytes of fifos the manager did not allocate (a
// cut-through session's, in a segment of their own) against MaxFifoMemory
// and MaxSegmentMemory, as AllocPair counts its own; Uncharge gives them back. It fails with
// ErrFifoMemoryLimit, counting nothing, when they do not fit.
func (m *Manager) Charge(n int64) error {
	if n < 0 {
		return fmt.Errorf("charge %d bytes: %w", n, ErrInvalidSize)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("charge: %w", ErrClosed)
	}
	if m.opts.MaxFifoMemory > 0 && m.fifoMem+n > m.opts.MaxFifoMemory {
		return fmt.Errorf("charge %d bytes to %q (%d of %d in use): %w",
			n, m.opts.Name, m.fifoMem, m.opts.MaxFifoMemory, ErrFifoMemoryLimit)
	}
	if m.opts.MaxSegmentMemory > 0 && m.segMem+n > m.opts.MaxSegmentMemory {
		return fmt.Errorf("charge %d bytes to %q (segments: %d of %d in use): %w",
			n, m.opts.Name, m.segMem, m.opts.MaxSegmentMemory, ErrFifoMemoryLimit)
	}
	m.fifoMem += n
	m.segMem += n
	return nil
}

// Uncharge gives back n bytes Charge counted.
func (m *Manager) Uncharge(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n = max(n, 0)
	m.fifoMem -= min(n, m.fifoMem)
	m.segMem -= min(n, m.segMem)
}

// FifoMemory returns the data bytes of the fifos allocated by AllocPair
// and those counted by Charge.
func (m *Manager) FifoMemory() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fifoMem
}

// Segments returns the manager's segments, by index.
func (m *Manager) Segments() []*Segment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Segment(nil), m.segs...)
}

// Segment returns the segment with index i, nil if there is none.
func (m *Manager) Segment(i uint32) *Segment {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(i) >= len(m.segs) {
		return nil
	}
	return m.segs[i]
}

// Close closes the event queue and every segment.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.evq != nil {
		errs = append(errs, m.evq.Close())
	}
	for _, s := range m.segs {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
