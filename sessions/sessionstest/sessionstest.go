// Package sessionstest has fakes of what package sessions needs from the
// outside, so its tests and those of its users run without a kernel: a
// static NetView, heap-backed Memory, and a Datapath that records calls.
//
// All fakes are safe for concurrent use.
package sessionstest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// View is a static sessions.NetView: interfaces with addresses, each in a
// FIB. Loopback addresses are local to every FIB.
type View struct {
	mu     sync.Mutex
	ifaddr map[int][]netip.Addr        // ifindex -> addresses
	fibs   map[flow.FIBID][]netip.Addr // FIB -> addresses of all its interfaces
}

// NewView returns an empty view.
func NewView() *View {
	return &View{ifaddr: map[int][]netip.Addr{}, fibs: map[flow.FIBID][]netip.Addr{}}
}

// Add gives interface ifindex, in FIB fib, the address a. It returns v.
func (v *View) Add(ifindex int, fib flow.FIBID, a netip.Addr) *View {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ifaddr[ifindex] = append(v.ifaddr[ifindex], a)
	v.fibs[fib] = append(v.fibs[fib], a)
	return v
}

// Remove takes address a off interface ifindex in FIB fib.
func (v *View) Remove(ifindex int, fib flow.FIBID, a netip.Addr) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ifaddr[ifindex] = slices.DeleteFunc(v.ifaddr[ifindex], func(x netip.Addr) bool { return x == a })
	v.fibs[fib] = slices.DeleteFunc(v.fibs[fib], func(x netip.Addr) bool { return x == a })
}

// HasAddress implements sessions.NetView.
func (v *View) HasAddress(ifindex int, a netip.Addr) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Contains(v.ifaddr[ifindex], a)
}

// IsLocal implements sessions.NetView.
func (v *View) IsLocal(fib flow.FIBID, a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Contains(v.fibs[fib], a)
}

// ErrInjected is the error fakes return when told to fail.
var ErrInjected = errors.New("injected failure")

// Datapath is a sessions.Datapath that records calls. Open picks Local as
// the source address and ports counting up from 40000.
type Datapath struct {
	mu         sync.Mutex
	Local4     netip.Addr
	Local6     netip.Addr
	FailOpen   bool
	FailListen bool
	nextPort   uint16
	Opens      []sessions.OpenRequest
	Listens    []sessions.Listener
	Unlistens  []sessions.Listener
	Closes     []flow.Handle
	Shed       int // ports given up by ShedKept
	kept       map[uint32]int
	draining   map[uint32]int
}

// Keep says the datapath keeps n ports after the sessions of owner's
// apps (sessions.PortKeeper).
func (d *Datapath) Keep(owner uint32, n int) { d.setCount(&d.kept, owner, n) }

// KeptPorts implements sessions.PortKeeper.
func (d *Datapath) KeptPorts(owner uint32) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kept[owner] + d.draining[owner]
}

// Drain says the datapath keeps n ports of owner's closed sessions that
// are still draining: kept, but not to be shed.
func (d *Datapath) Drain(owner uint32, n int) { d.setCount(&d.draining, owner, n) }

// setCount sets owner's count in *m to n.
func (d *Datapath) setCount(m *map[uint32]int, owner uint32, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if *m == nil {
		*m = map[uint32]int{}
	}
	(*m)[owner] = n
}

// ShedKept implements sessions.PortKeeper: it gives up to n of the
// ports Keep said it keeps.
func (d *Datapath) ShedKept(owner uint32, n int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := min(n, d.kept[owner])
	d.kept[owner] -= k
	d.Shed += k
	return k
}

// NewDatapath returns a fake datapath whose connects come from local4 and
// local6.
func NewDatapath(local4, local6 netip.Addr) *Datapath {
	return &Datapath{Local4: local4, Local6: local6, nextPort: 40000}
}

// Open implements sessions.Datapath.
func (d *Datapath) Open(req sessions.OpenRequest) (netip.AddrPort, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.FailOpen {
		return netip.AddrPort{}, ErrInjected
	}
	d.Opens = append(d.Opens, req)
	d.nextPort++
	src := d.Local4
	if req.Remote.Addr.Is6() {
		src = d.Local6
	}
	return netip.AddrPortFrom(src, d.nextPort), nil
}

// Listen implements sessions.Datapath.
func (d *Datapath) Listen(l sessions.Listener) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.FailListen {
		return ErrInjected
	}
	d.Listens = append(d.Listens, l)
	return nil
}

// Unlisten implements sessions.Datapath.
func (d *Datapath) Unlisten(l sessions.Listener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Unlistens = append(d.Unlistens, l)
}

// Close implements sessions.Datapath.
func (d *Datapath) Close(h flow.Handle, _ flow.FiveTuple) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Closes = append(d.Closes, h)
}

// SetFail sets the failure switches.
func (d *Datapath) SetFail(open, listen bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.FailOpen, d.FailListen = open, listen
}

// Calls returns copies of what was recorded.
func (d *Datapath) Calls() (opens []sessions.OpenRequest, listens, unlistens []sessions.Listener, closes []flow.Handle) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.Opens), slices.Clone(d.Listens), slices.Clone(d.Unlistens), slices.Clone(d.Closes)
}

// Notifier records the events it sees.
type Notifier struct {
	mu     sync.Mutex
	events []sessions.Event
}

// Notify implements sessions.Notifier.
func (n *Notifier) Notify(ev sessions.Event) {
	n.mu.Lock()
	n.events = append(n.events, ev)
	n.mu.Unlock()
}

// Events returns the events seen so far.
func (n *Notifier) Events() []sessions.Event {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

// Memory is a heap-backed sessions.Memory. Segments have no file
// descriptor. It counts what is alive, for leak checks.
type Memory struct {
	mu      sync.Mutex
	FailApp bool // NewApp fails
	FailCT  bool // NewCutThrough fails
	// OnFree, when set before the first NewApp, is called with every pair
	// FreePair frees, after the free and without locks held.
	OnFree   func(sessions.FifoPair)
	apps     int
	pairs    int
	cts      int
	segments int
	nextSeg  int
	// closedWith counts the pairs still allocated when their app's memory
	// was closed (freed with it); misuse records frees of a pair not
	// allocated (twice, or never) or of a closed app's memory.
	closedWith int
	misuse     []string
}

// ClosedWithApp returns how many pairs were freed by their app memory's
// Close rather than one by one; Live still counts them.
func (m *Memory) ClosedWithApp() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closedWith
}

// Misuse returns what FreePair was wrongly asked to do: free a pair twice,
// one it never gave out, or one of a closed app memory; and charges given
// back twice or left when an app memory closed (App.Uncharge).
func (m *Memory) Misuse() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.misuse)
}

// Live returns how many app memories, session fifo pairs, cut-through
// memories and segments are alive.
func (m *Memory) Live() (apps, pairs, cts, segments int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apps, m.pairs, m.cts, m.segments
}

// Segment is a heap segment: a name and a size.
type Segment struct {
	name string
	size uint64
	used uint32
}

// Name implements sessions.Segment.
func (s *Segment) Name() string { return s.name }

// Size implements sessions.Segment.
func (s *Segment) Size() int { return int(s.size) }

// FD implements sessions.Segment: always -1.
func (s *Segment) FD() int { return -1 }

func (m *Memory) newSegmentLocked(name string, size uint64) *Segment {
	m.nextSeg++
	m.segments++
	return &Segment{name: fmt.Sprintf("%s-%d", name, m.nextSeg), size: size}
}

// NewApp implements sessions.Memory.
func (m *Memory) NewApp(o sessions.AppMemoryOptions) (sessions.AppMemory, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailApp {
		return nil, ErrInjected
	}
	m.apps++
	a := &App{m: m, o: o}
	a.evseg = m.newSegmentLocked(o.Name+"-evq", 4096)
	a.segs = []*Segment{m.newSegmentLocked(o.Name, o.SegmentSize)}
	return a, nil
}

var _ sessions.MemoryCharger = (*App)(nil)

// App is one app's heap memory. It keeps the events the app was sent.
type App struct {
	m      *Memory
	o      sessions.AppMemoryOptions
	mu     sync.Mutex
	evseg  *Segment
	segs   []*Segment
	used   uint64
	charge uint64 // bytes counted by Charge
	events []sessions.Event
	closed bool
	live   map[*fifo.Fifo]bool // by the pair's rx fifo
}

// AllocPair implements sessions.AppMemory. A pair goes in
// the first segment with room; a new segment of AddSegmentSize is added
// when none has, within MaxSegments and MaxFifoMemory.
func (a *App) AllocPair(rx, tx uint32) (sessions.FifoPair, sessions.Segment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return sessions.FifoPair{}, nil, errors.New("app memory closed")
	}
	need := uint64(rx) + uint64(tx)
	if a.o.MaxFifoMemory != 0 && a.used+a.charge+need > a.o.MaxFifoMemory {
		return sessions.FifoPair{}, nil, fmt.Errorf("fifo memory limit %d: %w", a.o.MaxFifoMemory, flow.ErrNoMemory)
	}
	var seg, added *Segment
	for _, s := range a.segs {
		if s.size-uint64(s.used) >= need {
			seg = s
			break
		}
	}
	if seg == nil {
		if a.o.MaxSegments != 0 && len(a.segs) >= a.o.MaxSegments {
			return sessions.FifoPair{}, nil, fmt.Errorf("segment limit %d: %w", a.o.MaxSegments, flow.ErrNoMemory)
		}
		size := max(a.o.AddSegmentSize, need)
		a.m.mu.Lock()
		seg = a.m.newSegmentLocked(a.o.Name, size)
		a.m.mu.Unlock()
		a.segs = append(a.segs, seg)
		added = seg
	}
	rf, err := heapFifo(seg.name, rx)
	if err != nil {
		return sessions.FifoPair{}, nil, err
	}
	tf, err := heapFifo(seg.name, tx)
	if err != nil {
		return sessions.FifoPair{}, nil, err
	}
	p := sessions.FifoPair{Rx: rf, Tx: tf, Segment: seg}
	if a.live == nil {
		a.live = map[*fifo.Fifo]bool{}
	}
	a.live[rf] = true
	seg.used += uint32(need)
	a.used += need
	a.m.mu.Lock()
	a.m.pairs++
	a.m.mu.Unlock()
	if added == nil {
		return p, nil, nil
	}
	return p, added, nil
}

// Charge implements sessions.MemoryCharger: bytes count against
// MaxFifoMemory with the pairs.
func (a *App) Charge(bytes uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("app memory closed")
	}
	if a.o.MaxFifoMemory != 0 && (bytes > a.o.MaxFifoMemory || a.used+a.charge > a.o.MaxFifoMemory-bytes) {
		return fmt.Errorf("fifo memory limit %d: %w", a.o.MaxFifoMemory, flow.ErrNoMemory)
	}
	a.charge += bytes
	return nil
}

// Uncharge implements sessions.MemoryCharger. Giving back more than was
// charged, or charging a closed memory, is recorded as misuse
// (Memory.Misuse).
func (a *App) Uncharge(bytes uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || bytes > a.charge {
		a.m.mu.Lock()
		a.m.misuse = append(a.m.misuse, fmt.Sprintf("uncharge of %d bytes of app memory %q (closed %v): %d charged", bytes, a.o.Name, a.closed, a.charge))
		a.m.mu.Unlock()
		return
	}
	a.charge -= bytes
}

// Charged returns the bytes Charge counted and Uncharge did not give back.
func (a *App) Charged() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.charge
}

// FreePair implements sessions.AppMemory. A pair not allocated, or one of
// a closed app memory, is recorded as misuse (Memory.Misuse).
func (a *App) FreePair(p sessions.FifoPair) {
	if a.freePair(p) && a.m.OnFree != nil {
		a.m.OnFree(p)
	}
}

func (a *App) freePair(p sessions.FifoPair) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	if a.closed || !a.live[p.Rx] {
		a.m.misuse = append(a.m.misuse, fmt.Sprintf("free of pair %p of app memory %q (closed %v): not allocated", p.Rx, a.o.Name, a.closed))
		return false
	}
	delete(a.live, p.Rx)
	a.used -= uint64(p.Rx.Size()) + uint64(p.Tx.Size())
	a.m.pairs--
	return true
}

// Segments implements sessions.AppMemory.
func (a *App) Segments() []sessions.Segment {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]sessions.Segment, len(a.segs))
	for i, s := range a.segs {
		out[i] = s
	}
	return out
}

// EventSegment implements sessions.AppMemory.
func (a *App) EventSegment() sessions.Segment { return a.evseg }

// Notify implements sessions.AppMemory: the event is kept.
func (a *App) Notify(ev sessions.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.events) >= a.o.EventQueueSize {
		return errors.New("event queue full")
	}
	a.events = append(a.events, ev)
	return nil
}

// Events returns and forgets the events the app was sent.
func (a *App) Events() []sessions.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	ev := a.events
	a.events = nil
	return ev
}

// Closed reports whether Close was called.
func (a *App) Closed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// Close implements sessions.AppMemory.
func (a *App) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("app memory closed twice")
	}
	a.closed = true
	a.m.mu.Lock()
	if a.charge != 0 {
		a.m.misuse = append(a.m.misuse, fmt.Sprintf("app memory %q closed with %d bytes charged", a.o.Name, a.charge))
	}
	a.m.closedWith += len(a.live)
	a.m.apps--
	a.m.segments -= len(a.segs) + 1
	a.m.mu.Unlock()
	return nil
}

// NewCutThrough implements sessions.Memory.
func (m *Memory) NewCutThrough(name string, c2s, s2c uint32) (sessions.CutThrough, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailCT {
		return nil, ErrInjected
	}
	a, err := heapFifo(name, c2s)
	if err != nil {
		return nil, err
	}
	b, err := heapFifo(name, s2c)
	if err != nil {
		return nil, err
	}
	m.cts++
	seg := m.newSegmentLocked(name, uint64(c2s)+uint64(s2c))
	return &CutThrough{m: m, seg: seg, c2s: a, s2c: b}, nil
}

// CutThrough is the heap memory of one cut-through session.
type CutThrough struct {
	m        *Memory
	seg      *Segment
	c2s, s2c *fifo.Fifo
	closed   bool
}

// Client implements sessions.CutThrough.
func (c *CutThrough) Client() sessions.FifoPair {
	return sessions.FifoPair{Rx: c.s2c, Tx: c.c2s, Segment: c.seg}
}

// Server implements sessions.CutThrough.
func (c *CutThrough) Server() sessions.FifoPair {
	return sessions.FifoPair{Rx: c.c2s, Tx: c.s2c, Segment: c.seg}
}

// Segment implements sessions.CutThrough.
func (c *CutThrough) Segment() sessions.Segment { return c.seg }

// Close implements sessions.CutThrough.
func (c *CutThrough) Close() error {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	if c.closed {
		return errors.New("cut-through memory closed twice")
	}
	c.closed = true
	c.m.cts--
	c.m.segments--
	return nil
}

// heapFifo returns a fifo of size data bytes alone in a heap segment of
// package fifo. The fake segments only count bytes; the fifos are real.
func heapFifo(name string, size uint32) (*fifo.Fifo, error) {
	seg, err := fifo.NewHeapSegment(name, fifo.SegmentHeaderSize+fifo.FifoHeaderSize+int(size))
	if err != nil {
		return nil, err
	}
	return seg.AllocFifo(size)
}
