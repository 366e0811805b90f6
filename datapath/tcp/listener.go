package tcp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/xsessiond/xsessiond/fifo"
)

// AcceptHandler receives a Listener's connections.
type AcceptHandler interface {
	// Accept is called, on the Listener's pump, for each connection that
	// completed its handshake: it returns the fifos and the Handler of the
	// new Conn (its addresses are set), or an error to refuse it (the peer
	// gets RST). The fifos must stay allocated until h.Closed.
	Accept(c *Conn) (rx, tx *fifo.Fifo, h Handler, err error)
	// ListenerClosed: the Listener is finished; no Accept follows.
	ListenerClosed(l *Listener)
}

// Backlogger is an AcceptHandler that may hold a Listener back: while
// Backlogged reports true the Listener takes no connection from gVisor's
// accept queue, which, once full, drops SYNs (Overflows), and looks again
// every backlogRecheck.
//
// So a held-back listener has up to twice its backlog waiting: the
// handler's and gVisor's queue's. Cutting gVisor's queue short while held
// back (Endpoint.Listen again with a smaller backlog) was tried and is not
// done: gVisor resets a handshake that completes while the length is 0,
// and answers a SYN with a cookie once the handshakes under way reach the
// length less one (Linux does so at its whole backlog); gVisor's cookies
// carry no window scale, and a client whose final ACK of a cookie met the
// full queue believes it is connected while gVisor holds nothing of it (a
// listener of backlog 4 with a queue of 2 while held back: 7 of 20
// sequential kernel clients connected, one of them never accepted).
type Backlogger interface {
	Backlogged() bool
}

// backlogRecheck is how often a held-back Listener looks whether its
// handler has room again.
const backlogRecheck = 2 * time.Millisecond

// Listener is a passive open: gVisor completes handshakes up to the
// backlog, and its pump hands each connection to the AcceptHandler. Close
// may be called from any goroutine, handlers included; it returns at once.
type Listener struct {
	s      *Stack
	id     uint64
	owner  uint64
	pump   *pump
	queued atomic.Bool
	addr   netip.AddrPort

	ep    *tcp.Endpoint
	wq    waiter.Queue
	entry waiter.Entry
	h     AcceptHandler
	// rcvBuf is the Stack's receive buffer, which an accepted Conn gets
	// (Listen gives the connections queued in gVisor less). Set before
	// the listener starts.
	rcvBuf int64

	limited  atomic.Uint64 // handshakes reset over MaxConns/MaxConnsPerOwner or the buffers' bounds
	recheck  atomic.Bool   // a look after backlogRecheck is due
	started  atomic.Bool   // the fields above are final
	closeReq atomic.Bool
	done     bool // owned by the pump
}

// ListenBacklog returns the backlog Listen gives a listener asked for
// backlog: Options.DefaultBacklog for 0 or less, at most
// Options.MaxBacklog.
func (s *Stack) ListenBacklog(backlog int) int {
	if backlog <= 0 {
		backlog = s.opts.DefaultBacklog
	}
	return min(backlog, s.opts.MaxBacklog)
}

// queuedRcvBuf is the receive buffer of a connection gVisor completed and
// the Listener has not taken yet (Linux's tcp_rmem default): see Listen.
const queuedRcvBuf = 128 << 10

// Listen opens a listener on addr (an address of the stack, or unspecified
// for every address of its family; a port the caller reserved) with a
// backlog of established connections not yet accepted (0: the default; at
// most Options.MaxBacklog). Accepted Conns count against owner.
func (s *Stack) Listen(addr netip.AddrPort, backlog int, owner uint64, h AcceptHandler) (*Listener, error) {
	if h == nil {
		return nil, errors.New("listen: nil handler")
	}
	a := addr.Addr().Unmap()
	if !a.IsValid() || addr.Port() == 0 {
		return nil, fmt.Errorf("listen %s: %w", addr, syscall.EINVAL)
	}
	backlog = s.ListenBacklog(backlog)
	l := &Listener{s: s, id: s.nextID.Add(1), owner: owner, addr: netip.AddrPortFrom(a, addr.Port()), h: h}
	l.pump = s.pumpFor(l.id)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("listen %s: %w", addr, ErrClosed)
	}
	s.listeners[l] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	fail := func(what string, err error) (*Listener, error) {
		if l.ep != nil {
			l.ep.Close()
		}
		s.forgetListener(l)
		return nil, fmt.Errorf("listen %s: %s: %w", addr, what, err)
	}
	ep, terr := s.gs.NewEndpoint(tcp.ProtocolNumber, protoOf(a), &l.wq)
	if terr != nil {
		return fail("new endpoint", toErrno(terr))
	}
	l.ep = ep.(*tcp.Endpoint)
	if a.Is6() {
		l.ep.SocketOptions().SetV6Only(true)
	}
	l.ep.SocketOptions().SetReuseAddress(true)
	fa := tcpip.FullAddress{NIC: nicID, Port: addr.Port()}
	if !a.IsUnspecified() {
		fa.Addr = tcpAddr(a)
	}
	if terr := l.ep.Bind(fa); terr != nil {
		return fail("bind", toErrno(terr))
	}
	// The connections gVisor completes take their receive buffer from the
	// listener's as it listens. Those it queues while the app's backlog
	// is full (Backlogged) hold what their peers send in buffers no bound
	// counts until the Listener takes them: while queued they have
	// queuedRcvBuf, and accept gives them the Stack's as it charges them.
	// Set without notice, the listener's own tuning (the window scale its
	// handshakes offer) stays on.
	l.rcvBuf = l.ep.SocketOptions().GetReceiveBufferSize()
	l.ep.SocketOptions().SetReceiveBufferSize(min(queuedRcvBuf, l.rcvBuf), false)
	l.entry = waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { l.pump.schedule(l) })
	l.wq.EventRegister(&l.entry)
	if terr := l.ep.Listen(backlog); terr != nil {
		l.wq.EventUnregister(&l.entry)
		return fail("listen", toErrno(terr))
	}
	l.started.Store(true)
	l.pump.schedule(l) // a Close requested meanwhile, handshakes already queued
	return l, nil
}

// Addr returns the address the Listener is bound to.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Overflows returns the handshakes gVisor dropped because the Listener's
// backlog was full (its SYN and final-ACK drops).
func (l *Listener) Overflows() uint64 {
	st, ok := l.ep.Stats().(*tcp.Stats)
	if !ok {
		return 0
	}
	return st.ReceiveErrors.ListenOverflowSynDrop.Value() + st.ReceiveErrors.ListenOverflowAckDrop.Value()
}

// Limited returns the completed handshakes the Listener reset because the
// Stack's MaxConns or MaxConnsPerOwner was reached, or its buffers' bounds
// had no room (BufferBytes, GroupBufferBytes): ErrTooManyConns. Those reset
// because the Stack was closing are not counted.
func (l *Listener) Limited() uint64 { return l.limited.Load() }

// Owner returns the owner its Conns count against.
func (l *Listener) Owner() uint64 { return l.owner }

// Close stops listening: handshakes not yet accepted are reset, Conns
// already accepted go on. The port is free for another Listen when it
// returns, as after close(2) of a kernel listener (gVisor releases a
// listening endpoint's port as it closes it); ListenerClosed follows on the
// handler.
func (l *Listener) Close() {
	l.closeReq.Store(true)
	if l.started.Load() {
		l.ep.Close()
	}
	l.pump.schedule(l)
}

func (l *Listener) queuedFlag() *atomic.Bool { return &l.queued }

func (s *Stack) forgetListener(l *Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	s.connWG.Done()
}

// run accepts what gVisor has queued, or closes the Listener.
func (l *Listener) run() {
	if l.done || !l.started.Load() {
		return
	}
	if l.closeReq.Load() {
		l.done = true
		l.wq.EventUnregister(&l.entry)
		l.ep.Close()
		l.h.ListenerClosed(l)
		l.s.forgetListener(l)
		return
	}
	bl, _ := l.h.(Backlogger)
	for !l.closeReq.Load() {
		if bl != nil && bl.Backlogged() {
			if l.recheck.CompareAndSwap(false, true) {
				time.AfterFunc(backlogRecheck, func() {
					l.recheck.Store(false)
					l.pump.schedule(l)
				})
			}
			return
		}
		var peer tcpip.FullAddress
		nep, wq, terr := l.ep.Accept(&peer)
		if terr != nil {
			return // ErrWouldBlock: the next EventIn brings us back
		}
		l.accept(nep.(*tcp.Endpoint), wq, peer)
	}
	l.pump.schedule(l) // closing
}

// accept wraps an accepted endpoint in a Conn and offers it to the handler.
func (l *Listener) accept(ep *tcp.Endpoint, wq *waiter.Queue, peer tcpip.FullAddress) {
	rst := func() {
		ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
		ep.Close()
	}
	c, err := l.s.newConn(l.owner)
	if err != nil {
		if errors.Is(err, ErrTooManyConns) { // not ErrClosed: the Stack is closing
			l.limited.Add(1)
		}
		rst()
		return
	}
	c.ep, c.wq = ep, wq
	_ = c.ka.set(ep, DefaultKeepalive) // valid values: it cannot fail
	// The Stack's receive buffer, which Listen held back while queued:
	// set without notice, gVisor's tuning stays on, and the next
	// acknowledgement offers the window it makes.
	if o := ep.SocketOptions(); o.GetReceiveBufferSize() < l.rcvBuf {
		o.SetReceiveBufferSize(l.rcvBuf, false)
	}
	if err := l.s.chargeBuffers(c); err != nil {
		l.limited.Add(1)
		rst()
		l.s.release(c)
		return
	}
	c.state = stOpen
	c.remote = netip.AddrPortFrom(fromTCPAddr(peer.Addr), peer.Port)
	if la, terr := ep.GetLocalAddress(); terr == nil {
		c.local = netip.AddrPortFrom(fromTCPAddr(la.Addr), la.Port)
	}
	rx, tx, h, err := l.h.Accept(c)
	if err != nil || rx == nil || tx == nil || h == nil {
		rst()
		l.s.release(c)
		return
	}
	c.rx, c.tx, c.h = rx, tx, h
	c.trackWindow()
	c.register()
	c.started.Store(true)
	c.Kick()
}
