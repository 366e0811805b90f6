package app

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

type nopOwner struct{}

func (nopOwner) peerClosed(flow.Handle) {}

// A reset or FIN of a session this side dropped without owning it (a dial
// that gave up, an acceptor gone) can come after the drop; it must not be
// kept for the next session with the handle (a worker's handles are
// reused), which would then start closed. An event of a session not yet
// registered is kept for it.
func TestDroppedSessionEventsNotKept(t *testing.T) {
	done := make(chan struct{})
	close(done) // the drop's Disconnect finds the app stopped and sends nothing
	a := &App{done: done, err: errors.New("stopped for the test"), owners: map[flow.Handle]owner{},
		goneEarly: map[flow.Handle]uint8{}, closing: map[flow.Handle]struct{}{}, localOf: map[flow.Handle]netip.AddrPort{}}
	event := func(typ fifo.EventType, h flow.Handle) {
		ev := (&fifo.SessionEvent{Type: typ, Handle: uint64(h)}).Encode()
		a.handleEvent(&ev)
	}
	dropped := flow.MakeHandle(0, 3)
	event(fifo.EventPeerClosed, dropped) // before the drop: forgotten with it
	lev := (&fifo.SessionEvent{Type: fifo.EventLocalAddr, Handle: uint64(dropped), Local: netip.MustParseAddrPort("10.0.0.1:80")}).Encode()
	a.handleEvent(&lev)
	a.drop(dropped)
	event(fifo.EventReset, dropped)
	event(fifo.EventDisconnected, dropped)
	if !a.register(dropped, nopOwner{}) {
		t.Fatal("the next session with a dropped session's handle took its reset")
	}
	if _, ok := a.goneEarly[dropped]; ok {
		t.Fatalf("kept for the next session: %#x", a.goneEarly[dropped])
	}
	if l, ok := a.takeLocal(dropped); ok {
		t.Fatalf("the dropped session's local address %v kept for the next session", l)
	}
	early := flow.MakeHandle(0, 4)
	event(fifo.EventReset, early)
	if a.register(early, nopOwner{}) {
		t.Fatal("a reset that came before its session's owner registered was lost")
	}
}

// handleSet keeps the last handles added, at most twice its generation.
func TestHandleSetBounded(t *testing.T) {
	var s handleSet
	for i := range 3 * handleSetGen {
		s.add(flow.MakeHandle(0, uint32(i)))
	}
	if n := len(s.cur) + len(s.old); n > 2*handleSetGen {
		t.Fatalf("%d handles kept", n)
	}
	if s.has(flow.MakeHandle(0, 0)) {
		t.Error("the oldest handle is still there")
	}
	if !s.has(flow.MakeHandle(0, 3*handleSetGen-1)) || !s.has(flow.MakeHandle(0, 2*handleSetGen)) {
		t.Error("the newest handles are gone")
	}
	s.del(flow.MakeHandle(0, 3*handleSetGen-1))
	if s.has(flow.MakeHandle(0, 3*handleSetGen-1)) {
		t.Error("a deleted handle is still there")
	}
}

// A reset event's code reaches the session's reads and writes: a timeout
// as ETIMEDOUT, a reset for a corrupt fifo as an error that is both
// ECONNRESET and flow.ErrFifoCorrupt, anything else as ECONNRESET.
func TestResetReasons(t *testing.T) {
	a := &App{owners: map[flow.Handle]owner{}, goneEarly: map[flow.Handle]uint8{},
		closing: map[flow.Handle]struct{}{}, localOf: map[flow.Handle]netip.AddrPort{}}
	for i, c := range []struct {
		code     flow.Code
		is, isnt []error
	}{
		{flow.CodeOK, []error{syscall.ECONNRESET}, []error{flow.ErrFifoCorrupt, syscall.ETIMEDOUT}},
		{flow.CodeUnknown, []error{syscall.ECONNRESET}, []error{flow.ErrFifoCorrupt}},
		{flow.CodeTimedOut, []error{syscall.ETIMEDOUT}, []error{syscall.ECONNRESET}},
		{flow.CodeFifoCorrupt, []error{syscall.ECONNRESET, flow.ErrFifoCorrupt, syscall.EIO}, []error{syscall.ETIMEDOUT}},
	} {
		h := flow.MakeHandle(0, uint32(i))
		ev := (&fifo.SessionEvent{Type: fifo.EventReset, Handle: uint64(h), Code: uint64(c.code)}).Encode()
		a.handleEvent(&ev)
		conn := &Conn{e: &end{h: h}}
		if a.register(h, conn) {
			t.Fatalf("code %d: the reset before the session's owner registered was lost", c.code)
		}
		err := conn.e.resetErr()
		for _, want := range c.is {
			if !errors.Is(err, want) {
				t.Errorf("code %d: %v is not %v", c.code, err, want)
			}
		}
		for _, not := range c.isnt {
			if errors.Is(err, not) {
				t.Errorf("code %d: %v is %v", c.code, err, not)
			}
		}
	}
}

// recOwner records that its session's peer went away.
type recOwner struct{ gone bool }

func (o *recOwner) peerClosed(flow.Handle) { o.gone = true }

// recAcceptor registers a recOwner for every session accepted, as a
// Listener registers its Conn.
type recAcceptor struct {
	a      *App
	owners map[flow.Handle]*recOwner
}

func (r *recAcceptor) accept(e *end, _ *api.SessionInfo) bool {
	o := &recOwner{}
	r.owners[e.h] = o
	if !r.a.register(e.h, o) {
		o.gone = true
	}
	return true
}

// An accept whose fifos are in a segment not mapped yet waits for it
// (parked); a reset of that session that comes before the segment waits
// behind it, and reaches the accepted session once the segment is there,
// even where an earlier session with the handle was dropped or closed
// through its tx fifo: taken for that session's end, it was dropped (or
// answered with a Disconnect of the new session), and the session was
// accepted as if alive while the daemon kept it ended and its fifos held.
func TestParkedAcceptThenReset(t *testing.T) {
	m, err := fifo.NewManager(fifo.ManagerOptions{Name: "parked", SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rx, tx, _, err := m.AllocPair(4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rref, tref := m.Ref(rx), m.Ref(tx)
	for _, stale := range []string{"none", "dropped", "closing"} {
		t.Run(stale, func(t *testing.T) {
			done := make(chan struct{})
			close(done) // a Disconnect finds the app stopped and sends nothing
			a := &App{done: done, err: errors.New("stopped for the test"), owners: map[flow.Handle]owner{},
				goneEarly: map[flow.Handle]uint8{}, closing: map[flow.Handle]struct{}{}, localOf: map[flow.Handle]netip.AddrPort{},
				acceptors: map[flow.Handle]acceptor{}, segs: map[uint32]*fifo.Segment{}}
			acc := &recAcceptor{a: a, owners: map[flow.Handle]*recOwner{}}
			ln := flow.MakeHandle(0, 1)
			a.acceptors[ln] = acc
			h := flow.MakeHandle(0, 9)
			switch stale {
			case "dropped":
				a.dropped.add(h)
			case "closing":
				a.closing[h] = struct{}{}
			}
			accepted := (&fifo.SessionEvent{Type: fifo.EventAccepted, Handle: uint64(h), Listener: uint64(ln),
				Transport: uint8(flow.TransportTCP), Rx: rref, Tx: tref, Peer: netip.MustParseAddrPort("10.0.0.1:4000")}).Encode()
			reset := (&fifo.SessionEvent{Type: fifo.EventReset, Handle: uint64(h)}).Encode()
			a.handleEvent(&accepted)
			a.handleEvent(&reset)
			if len(acc.owners) != 0 {
				t.Fatal("accepted before its segment was mapped")
			}
			a.segs[rref.Segment] = m.Segment(rref.Segment)
			a.replayParked()
			o := acc.owners[h]
			if o == nil {
				t.Fatal("not accepted once its segment was mapped")
			}
			if !o.gone {
				t.Fatal("the accepted session did not learn of its reset")
			}
			if len(a.parked) != 0 {
				t.Fatalf("%d events still parked", len(a.parked))
			}
		})
	}
}
