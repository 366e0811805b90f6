package sessions

import (
	"net/netip"

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
	EventQueueSize int    // entries of the app's event queue
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

// EventKind says what an Event is about: the event types of package fifo,
// whose numbers the app reads from its event queue.
type EventKind = fifo.EventType

// Event kinds the session layer sends.
const (
	EventAccepted      = fifo.EventAccepted      // a session on one of the app's listeners
	EventConnected     = fifo.EventConnected     // the app's connect succeeded
	EventConnectFailed = fifo.EventConnectFailed // the app's connect failed
	EventDisconnected  = fifo.EventDisconnected  // the session was closed by the peer or the daemon
	EventSegmentAdded  = fifo.EventSegmentAdded  // the app's segment manager added a segment
)

// Event is a notification for one app.
type Event struct {
	Kind       EventKind
	App        AppID
	Handle     Handle // the session (the listener for nothing)
	Listener   Handle // accepted: the listener it came in on
	Opaque     uint32 // connected, connect failed: the app's connect context
	Transport  Transport
	Local      netip.AddrPort
	Remote     netip.AddrPort
	CutThrough bool
	Pair       FifoPair // accepted, connected: the app's fifos (Pair.Segment is the segment they live in)
	Segment    Segment  // segment added: the new segment
	Err        error    // connect failed: why
}

// Notifier observes every event delivered to apps, after it was queued in
// the app's event queue. The daemon uses it to pass the file descriptors of
// new segments over the control socket. Notify is called without the
// session layer's lock held, possibly from several goroutines.
type Notifier interface {
	Notify(ev Event)
}

// OpenRequest asks the datapath to open a session to a remote endpoint.
type OpenRequest struct {
	HalfOpen Handle   // the half-open entry's handle
	App      AppID    // the connecting app
	Remote   Endpoint // destination, IfIndex and FIB from the app's namespace
	Opaque   uint32
}

// Datapath is what the session layer needs of the datapath; the daemon
// fills it in. Calls are made with the session layer's control-plane lock
// held: implementations must not block and must not call back into the
// Layer.
type Datapath interface {
	// Open starts opening a session and returns the local address and
	// port chosen for it (a route's source address, an ephemeral port).
	Open(req OpenRequest) (local netip.AddrPort, err error)
	// Listen is told of a new global listener before it is published; an
	// error refuses the bind.
	Listen(l Listener) error
	// Unlisten is told of a removed global listener.
	Unlisten(l Listener)
	// Close is told that an established or half-open session was closed
	// by its app.
	Close(h Handle, t FiveTuple)
}

// WorkerDatapath is a Datapath whose worker goroutines read and write app
// fifos (the daemon's AF_XDP engine). When Config.Datapath implements it:
//
//   - the worker owning a global UDP listener's fifo pair is the one
//     ListenerWorker returns (called under the control-plane lock, before
//     Listen; it must not block or call back into the Layer);
//   - fifo memory is freed only once every shard has drained its mailbox
//     past the change that released it: the fifo pairs of closed sessions
//     and unbound listeners, and an app's whole memory at detach. A worker
//     that was delivering into a fifo when the control plane dropped it
//     thus finishes its batch before the memory goes away.
//
// Without it, listeners' workers are spread by handle index and memory is
// freed at once (no worker touches fifos then).
type WorkerDatapath interface {
	Datapath
	ListenerWorker(l Listener) uint32
}
