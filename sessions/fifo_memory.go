package sessions

import (
	"errors"
	"fmt"

	"github.com/xsessiond/xsessiond/fifo"
)

// FifoMemory is the Memory of the daemon: memfd segments of package fifo.
// Each app gets a fifo.Manager with its event queue in its first segment;
// each cut-through session gets a segment of its own holding its two fifos.
//
// Events are written to an app's event queue as fifo.Events:
//
//	Type    the fifo.EventType of the EventKind (accepted 1, connected 2,
//	        connect failed 3, disconnected 4, segment added 8)
//	Flags   FlagCutThrough for a cut-through session
//	Handle  the session
//	Arg32   connected, connect failed: the app's opaque context;
//	        segment added: the new segment's index in the app's manager;
//	        accepted: the Transport
//	Args[0] accepted, connected: fifo.RefArg of the app's rx fifo
//	Args[1] accepted, connected: fifo.RefArg of the app's tx fifo
//	        (for a cut-through session the segment index is 0 and the refs
//	        point into the session's own segment, passed separately)
//	Args[2] accepted: the listener handle; connect failed: the error Code
//	Args[3], Args[4] the peer's address, 16 bytes in AddrBytes form
//	Args[5] peer port | local port<<16 | family<<32 | transport<<40
type FifoMemory struct {
	NoDump    bool // keep segments out of the daemon's core dumps
	HugePages bool // ask for huge pages, falling back to normal pages
}

// FlagCutThrough is set in the Flags of the events of a cut-through session.
const FlagCutThrough = fifo.EventFlagCutThrough

var _ Memory = FifoMemory{}

// NewApp implements Memory.
func (m FifoMemory) NewApp(o AppMemoryOptions) (AppMemory, error) {
	mgr, err := fifo.NewManager(fifo.ManagerOptions{
		Name:               o.Name,
		SegmentSize:        int(o.SegmentSize),
		AddSegmentSize:     int(o.AddSegmentSize),
		MaxSegments:        o.MaxSegments,
		MaxFifoMemory:      int64(o.MaxFifoMemory),
		EventQueueCapacity: o.EventQueueSize,
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
}

// FifoManager returns the fifo.Manager behind an AppMemory made by FifoMemory.
func FifoManager(am AppMemory) (*fifo.Manager, bool) {
	fa, ok := am.(*fifoApp)
	if !ok {
		return nil, false
	}
	return fa.m, true
}

func ref(f *fifo.Fifo) FifoRef {
	return FifoRef{Segment: f.Segment().Name(), Offset: f.Offset(), Size: f.Size()}
}

func (a *fifoApp) AllocPair(rxSize, txSize uint32) (FifoPair, Segment, error) {
	rx, tx, added, err := a.m.AllocPair(rxSize, txSize)
	if err != nil {
		if errors.Is(err, fifo.ErrTooManySegments) || errors.Is(err, fifo.ErrFifoMemoryLimit) || errors.Is(err, fifo.ErrSegmentFull) {
			return FifoPair{}, nil, fmt.Errorf("%w: %w", ErrNoMemory, err)
		}
		return FifoPair{}, nil, err
	}
	p := FifoPair{Rx: rx, Tx: tx, RxRef: ref(rx), TxRef: ref(tx), Segment: rx.Segment()}
	if added == nil {
		return p, nil, nil
	}
	return p, added, nil
}

func (a *fifoApp) FreePair(p FifoPair) {
	rx, _ := p.Rx.(*fifo.Fifo)
	tx, _ := p.Tx.(*fifo.Fifo)
	a.m.FreePair(rx, tx)
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
	return q.Send(encodeEvent(a.m, ev))
}

func (a *fifoApp) Close() error { return a.m.Close() }

// encodeEvent writes ev as the fifo.Event FifoMemory documents.
func encodeEvent(m *fifo.Manager, ev Event) fifo.Event {
	fe := fifo.Event{Handle: uint64(ev.Handle)}
	switch ev.Kind {
	case EventAccepted:
		fe.Type = fifo.EventAccepted
		fe.Arg32 = uint32(ev.Transport)
		fe.Args[2] = uint64(ev.Listener)
	case EventConnected:
		fe.Type = fifo.EventConnected
		fe.Arg32 = ev.Opaque
	case EventConnectFailed:
		fe.Type = fifo.EventConnectFailed
		fe.Arg32 = ev.Opaque
		fe.Args[2] = uint64(CodeOf(ev.Err))
	case EventDisconnected:
		fe.Type = fifo.EventDisconnected
	case EventSegmentAdded:
		fe.Type = fifo.EventSegmentAdded
		if s, ok := ev.Segment.(*fifo.Segment); ok {
			fe.Arg32 = s.Index()
		}
	}
	if ev.CutThrough {
		fe.Flags |= FlagCutThrough
	}
	if ev.Kind == EventAccepted || ev.Kind == EventConnected {
		rx, _ := ev.Pair.Rx.(*fifo.Fifo)
		tx, _ := ev.Pair.Tx.(*fifo.Fifo)
		if rx != nil && tx != nil {
			if ev.CutThrough {
				fe.Args[0] = fifo.RefArg(fifo.FifoRef{Offset: rx.Offset()})
				fe.Args[1] = fifo.RefArg(fifo.FifoRef{Offset: tx.Offset()})
			} else {
				fe.Args[0] = fifo.RefArg(m.Ref(rx))
				fe.Args[1] = fifo.RefArg(m.Ref(tx))
			}
		}
	}
	peer, local := ev.Remote, ev.Local
	if ev.Kind == EventAccepted && !peer.IsValid() {
		peer = ev.Local // a cut-through accept knows only the address the client dialled
	}
	if peer.IsValid() {
		b := AddrBytes(peer.Addr())
		fe.Args[3] = leUint64(b[0:8])
		fe.Args[4] = leUint64(b[8:16])
		fam := Family4
		if peer.Addr().Is6() && !peer.Addr().Is4In6() {
			fam = Family6
		}
		fe.Args[5] = uint64(peer.Port()) | uint64(local.Port())<<16 | uint64(fam)<<32 | uint64(ev.Transport)<<40
	}
	return fe
}

func leUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
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
	return FifoPair{Rx: c.s2c, Tx: c.c2s, RxRef: ref(c.s2c), TxRef: ref(c.c2s), Segment: c.seg}
}

func (c *fifoCT) Server() FifoPair {
	return FifoPair{Rx: c.c2s, Tx: c.s2c, RxRef: ref(c.c2s), TxRef: ref(c.s2c), Segment: c.seg}
}

func (c *fifoCT) Segment() Segment { return c.seg }

func (c *fifoCT) Close() error { return c.seg.Close() }

// Fifos returns the *fifo.Fifo values of a pair made by FifoMemory.
func (p FifoPair) Fifos() (rx, tx *fifo.Fifo, ok bool) {
	rx, ok1 := p.Rx.(*fifo.Fifo)
	tx, ok2 := p.Tx.(*fifo.Fifo)
	return rx, tx, ok1 && ok2
}
