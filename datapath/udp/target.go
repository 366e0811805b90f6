package udp

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/xsessiond/xsessiond/datapath/frame"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// Kind says what a Target is.
type Kind uint8

// Target kinds.
const (
	KindListener  Kind = iota + 1 // a global listener in datagram mode
	KindConnected                 // a connected session (Dial)
)

func (k Kind) String() string {
	switch k {
	case KindListener:
		return "listener"
	case KindConnected:
		return "connected"
	}
	return "kind(?)"
}

// ErrNoFifos is returned by NewTarget for a pair without fifos.
var ErrNoFifos = errors.New("udp: fifo pair has no fifos")

// KernelSocket returns the socket t sends its kernel path's datagrams
// through: Res, else Borrowed (nil: none).
func (t *Target) KernelSocket() *Reservation {
	if t.Res != nil {
		return t.Res
	}
	return t.Borrowed.Load()
}

// Target is the datapath's state of one UDP fifo pair: where received
// datagrams go (Rx), where datagrams to send come from (Tx), whom to
// signal, and counters. See the package doc for who may call what.
type Target struct {
	Kind   Kind
	Handle flow.Handle
	App    sessions.AppID
	Worker uint32 // the worker that drains Tx

	// Local is the bound (listener) or chosen (connected) local endpoint;
	// its address is unspecified for a wildcard listener, its port 0 for
	// a proxy's every-port listener. Remote is the connected peer.
	Local, Remote netip.AddrPort
	Family        uint8
	// LocalGen is the generation of the namespace's addresses in which a
	// worker last found Local's address one of them (the workers' only).
	LocalGen atomic.Uint64

	Rx, Tx *fifo.Fifo
	Events *fifo.EventQueue // the app's event queue; nil: no signalling

	// Res is the kernel socket holding the port (nil: none), opened: the
	// kernel path for datagrams larger than a frame, both ways. Set
	// before the Target is published.
	Res *Reservation
	// Borrowed is the kernel socket a listener without one of its own
	// (Res nil) sends its kernel path's datagrams through: the wildcard
	// listener's of the same port, beside which its specific address
	// was let bind, then its own when that one goes. Set by the Engine,
	// read by the Tx owner (KernelSocket).
	Borrowed atomic.Pointer[Reservation]
	// HostReach: the app's datagrams to an address of this host go
	// through the kernel path to the host's sockets (its process runs in
	// the interface's network namespace). Set before the Target is
	// published.
	HostReach bool

	mu   sync.Mutex // serializes Rx producers; guards dead
	dead bool

	closed atomic.Bool // mirror of dead for lock-free readers (the Tx owner)

	// Tx-side state, owner worker only.
	More bool // Tx had more than one drain's budget queued
	// KernelWait: Tx's next datagram waits for room in Res's send
	// buffer (counted once, when it first waited).
	KernelWait bool

	Delivered   atomic.Uint64 // datagrams queued in Rx
	RxBytes     atomic.Uint64 // payload bytes queued in Rx
	DropFull    atomic.Uint64 // Rx had no room
	DropTooBig  atomic.Uint64 // the datagram can never fit Rx
	DropCorrupt atomic.Uint64 // Rx's indices are corrupt (the app wrote them)
	Sent        atomic.Uint64 // datagrams from Tx put on the wire
	TxBytes     atomic.Uint64
	TxDrops     atomic.Uint64 // datagrams from Tx dropped (no neighbour, no route, bad header, too long)
	TxCorrupt   atomic.Uint64 // Tx reads that found corrupt indices or headers
	Signals     atomic.Uint64 // EventRx records pushed
}

// NewTarget makes the Target of a fifo pair.
// mem is the app's memory (for its event queue); nil leaves the app
// unsignalled.
func NewTarget(kind Kind, h flow.Handle, app sessions.AppID, worker uint32, pair sessions.FifoPair, mem sessions.AppMemory) (*Target, error) {
	rx, tx := pair.Rx, pair.Tx
	if rx == nil || tx == nil {
		return nil, ErrNoFifos
	}
	t := &Target{Kind: kind, Handle: h, App: app, Worker: worker, Rx: rx, Tx: tx}
	if mem != nil {
		if m, ok := sessions.FifoManager(mem); ok {
			t.Events = m.EventQueue()
		}
	}
	return t, nil
}

// Lock takes the Rx producer lock and reports whether the Target is alive;
// the caller unlocks either way.
func (t *Target) Lock() bool {
	t.mu.Lock()
	return !t.dead
}

// Unlock releases the Rx producer lock.
func (t *Target) Unlock() { t.mu.Unlock() }

// Kill marks the Target dead: once it returns, no worker queues into Rx or
// reads Tx again. Safe to call more than once.
func (t *Target) Kill() {
	t.mu.Lock()
	t.dead = true
	t.closed.Store(true)
	t.mu.Unlock()
}

// Dead reports whether Kill was called.
func (t *Target) Dead() bool { return t.closed.Load() }

// Run counts what DeliverBatch did with a run of datagrams.
type Run struct {
	Delivered, Bytes      uint64 // datagrams queued in Rx, and their payload bytes
	Full, TooBig, Corrupt uint64 // datagrams dropped: no room, can never fit, corrupt indices
}

// What DeliverBatchMarks did with one datagram.
const (
	Queued         uint8 = iota // queued in Rx
	DroppedFull                 // Rx had no room
	DroppedTooBig               // it can never fit Rx
	DroppedCorrupt              // Rx's indices are corrupt
)

// DeliverBatch queues datagrams hs[i] (filled by HeaderOf) with payloads[i]
// in Rx, in order, publishing them together; a datagram that does not fit
// is dropped and the ones after it are still tried, as if queued one by
// one. The caller holds the lock (Lock returned true). It does not
// allocate and does not touch the counters: the caller adds the Run up.
func (t *Target) DeliverBatch(hs []fifo.DgramHeader, payloads [][]byte) Run {
	return t.DeliverBatchMarks(hs, payloads, nil)
}

// DeliverBatchMarks is DeliverBatch that also writes what became of each
// datagram, Queued or a Dropped* value, in marks[i], when marks is not
// nil; marks must then be as long as the shorter of hs and payloads.
func (t *Target) DeliverBatchMarks(hs []fifo.DgramHeader, payloads [][]byte, marks []uint8) Run {
	var r Run
	n := min(len(hs), len(payloads))
	if marks != nil {
		marks = marks[:n]
	}
	for i := 0; i < n; {
		k, err := t.Rx.EnqueueDgrams(hs[i:n], payloads[i:n])
		for _, p := range payloads[i : i+k] {
			r.Bytes += uint64(len(p))
		}
		if marks != nil {
			clear(marks[i : i+k]) // Queued
		}
		r.Delivered += uint64(k)
		i += k
		if i == n {
			break
		}
		why := DroppedCorrupt
		switch err {
		case fifo.ErrNoSpace:
			r.Full++
			why = DroppedFull
		case fifo.ErrTooLarge:
			r.TooBig++
			why = DroppedTooBig
		default:
			r.Corrupt++
		}
		if marks != nil {
			marks[i] = why
		}
		i++
	}
	return r
}

// HeaderOf fills h for a received packet: Remote is the sender, Local the
// destination.
func HeaderOf(h *fifo.DgramHeader, p *frame.Packet) {
	h.Family = p.Family
	h.Flags = 0
	h.Remote = p.Src
	h.Local = p.Dst
	h.RemotePort = p.SrcPort
	h.LocalPort = p.DstPort
}

// Signal marks Rx as having data and, when the app was not signalled yet,
// queues an EventRx record for the Target's handle in the app's event
// queue (without writing its eventfd). It reports whether it queued one;
// the caller then calls Events.Signal once per batch.
func (t *Target) Signal() bool {
	if t.Events == nil || !t.Rx.SetEvent() {
		return false
	}
	if err := t.Events.Push(fifo.Event{Type: fifo.EventRx, Handle: uint64(t.Handle)}); err != nil {
		// A full event queue: the flag stays set, so the app finds the
		// data the next time it drains its fifos.
		return false
	}
	t.Signals.Add(1)
	return true
}

// Stats is a JSON-friendly copy of a Target's counters.
type Stats struct {
	Handle      flow.Handle    `json:"handle"`
	App         sessions.AppID `json:"app"`
	Kind        string         `json:"kind"`
	Worker      uint32         `json:"worker"`
	Local       string         `json:"local"`
	Remote      string         `json:"remote,omitempty"`
	Delivered   uint64         `json:"delivered"`
	RxBytes     uint64         `json:"rx_bytes"`
	DropFull    uint64         `json:"drop_fifo_full"`
	DropTooBig  uint64         `json:"drop_too_big"`
	DropCorrupt uint64         `json:"drop_fifo_corrupt"`
	Sent        uint64         `json:"sent"`
	TxBytes     uint64         `json:"tx_bytes"`
	TxDrops     uint64         `json:"tx_drops"`
	TxCorrupt   uint64         `json:"tx_corrupt"`
	Signals     uint64         `json:"signals"`
}

// Stats returns the Target's counters.
func (t *Target) Stats() Stats {
	s := Stats{Handle: t.Handle, App: t.App, Kind: t.Kind.String(), Worker: t.Worker, Local: t.Local.String(),
		Delivered: t.Delivered.Load(), RxBytes: t.RxBytes.Load(), DropFull: t.DropFull.Load(),
		DropTooBig: t.DropTooBig.Load(), DropCorrupt: t.DropCorrupt.Load(), Sent: t.Sent.Load(),
		TxBytes: t.TxBytes.Load(), TxDrops: t.TxDrops.Load(), TxCorrupt: t.TxCorrupt.Load(), Signals: t.Signals.Load()}
	if t.Remote.IsValid() {
		s.Remote = t.Remote.String()
	}
	return s
}
