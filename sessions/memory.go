package sessions

import (
	"github.com/xsessiond/xsessiond/fifo"
)

// Segment is a shared memory segment as the session layer sees it (a
// *fifo.Segment with FifoMemory). FD is the file descriptor the daemon
// passes to apps, or -1 for memory that cannot be shared (heap segments).
type Segment interface {
	Name() string
	Size() int
	FD() int
}

// FifoPair is one end's pair of fifos of a session: the app reads Rx and
// writes Tx; the datapath writes Rx and reads Tx. Segment is the segment
// they live in.
type FifoPair struct {
	Rx, Tx  *fifo.Fifo
	Segment Segment
}

// AppMemoryOptions shape an app's shared memory.
type AppMemoryOptions struct {
	Name           string // for naming segments
	SegmentSize    uint64 // size of the first segment
	AddSegmentSize uint64 // size of segments added later; 0 means SegmentSize
	MaxSegments    int    // 0: no limit beyond MaxFifoMemory
	MaxFifoMemory  uint64 // 0: no limit
	// MaxSegmentMemory bounds the bytes of the app's segments, the first
	// included, and of its cut-through sessions' fifos: what it maps and
	// can write to (fifo.ManagerOptions.MaxSegmentMemory). 0: no limit.
	MaxSegmentMemory uint64
	EventQueueSize   int // entries of the app's event queue
	// NewWaitSet creates the epoll set the app waits on (nil: the
	// daemon's own; fifo.ManagerOptions.NewWaitSet).
	NewWaitSet func() (int, error)
}

// AppMemory is the shared memory of one app: its segment manager (which
// allocates the fifos of the app's sessions) and its event queue. The
// session layer calls it under its control-plane lock, from one goroutine at
// a time.
type AppMemory interface {
	// AllocPair allocates a session's fifos. added is a segment the
	// manager had to add for them, or nil.
	AllocPair(rxSize, txSize uint32) (p FifoPair, added Segment, err error)
	// FreePair frees fifos returned by AllocPair.
	FreePair(p FifoPair)
	// Segments returns the app's segments, the first one first.
	Segments() []Segment
	// EventSegment is the segment holding the event queue.
	EventSegment() Segment
	// Notify queues an event for the app and signals it.
	Notify(ev Event) error
	// Close frees all the app's memory.
	Close() error
}

// MemoryCharger is an AppMemory that also bounds memory it did not
// allocate: the fifos of the cut-through sessions its app opens, each in
// a segment of its own, count against its fifo memory bound
// (AppMemoryOptions.MaxFifoMemory) while the session lasts. The session
// layer charges an app's memory, when it is one, before it makes such a
// session, and uncharges it when the session closes.
type MemoryCharger interface {
	// Charge counts bytes against the bound, or fails with an error
	// wrapping ErrNoMemory when they do not fit, counting nothing.
	Charge(bytes uint64) error
	// Uncharge gives back bytes Charge counted.
	Uncharge(bytes uint64)
}

// CutThrough is the memory of one cut-through session: one segment shared
// by the two apps, with one fifo per direction.
type CutThrough interface {
	// Client is the connecting app's end, Server the listening app's. The
	// client's Tx is the server's Rx and the other way round.
	Client() FifoPair
	Server() FifoPair
	Segment() Segment
	Close() error
}

// Memory makes shared memory for apps and cut-through sessions. FifoMemory
// is the implementation over memfd segments; sessionstest has one over
// heap segments.
type Memory interface {
	NewApp(o AppMemoryOptions) (AppMemory, error)
	// NewCutThrough makes a segment holding a client-to-server fifo of
	// c2s bytes and a server-to-client fifo of s2c bytes.
	NewCutThrough(name string, c2s, s2c uint32) (CutThrough, error)
}
