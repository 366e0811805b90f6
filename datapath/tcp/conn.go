package tcp

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// Handler receives a Conn's events. Every call for one Conn comes from the
// Conn's pump goroutine, one at a time, never with a gVisor lock held; a
// handler may call the Conn's methods but must not block for long (it
// stalls every Conn of that pump). Closed is always the last call, exactly
// once per Conn, whatever ended it: after it the Conn no longer touches its
// fifos and they may be freed.
type Handler interface {
	// Connected: an active open completed (not called for accepted
	// Conns: AcceptHandler.Accept is their event).
	Connected(c *Conn)
	// ConnectFailed: an active open failed; err is ECONNREFUSED,
	// ETIMEDOUT, EHOSTUNREACH or ENETUNREACH (errors.Is). Closed follows.
	ConnectFailed(c *Conn, err error)
	// Readable: data was queued in the rx fifo while its event flag was
	// clear (fifo.SetEvent said to signal the consumer).
	Readable(c *Conn)
	// Writable: the Conn removed data from the tx fifo and the app asked
	// to be told (fifo.DeqNotify).
	Writable(c *Conn)
	// PeerClosed: the peer sent FIN and every byte before it is in the rx
	// fifo. Sending still works until CloseWrite or Close.
	PeerClosed(c *Conn)
	// Reset: the connection ended abnormally: err is ECONNRESET (the
	// peer's RST), ETIMEDOUT (retransmissions gave up), ECONNABORTED (the
	// Stack closed) or ErrFifoCorrupt (the app broke a fifo's indices;
	// it wraps EIO). Closed follows.
	Reset(c *Conn, err error)
	// ResetAhead: gVisor reported the reset or timeout Reset will end
	// the Conn with (err, as Reset's) while it still holds data received
	// before it, which goes into the rx fifo as the app reads; Reset
	// follows once it is all there. Nothing is sent any more: the app's
	// writes should fail now, as a kernel socket's do once it has the
	// error, while its reads take that data first. Called at most once,
	// on the pump.
	ResetAhead(c *Conn, err error)
	// Closed: the Conn is finished (see above).
	Closed(c *Conn)
	// CloseRequested: the app marked its tx fifo closed
	// (fifo.RequestClose) instead of asking on the control socket. Called
	// once, on the pump, for an open Conn; the handler ends the session as
	// the app's disconnect would, which closes the Conn (Close).
	CloseRequested(c *Conn)
}

type connState uint8

const (
	stConnecting connState = iota
	stOpen
	stDone
)

// Conn joins a gVisor TCP endpoint to an app's stream fifos: the rx fifo
// (the Conn produces, the app consumes) and the tx fifo (the app produces,
// the Conn consumes). Its pump moves bytes gVisor→rx as the rx fifo has
// room and tx→gVisor as gVisor's send buffer has room. Nothing is dropped:
// with the rx fifo full the Conn stops reading, gVisor's receive buffer
// fills and the advertised window closes; with the peer's window closed,
// gVisor's send buffer fills and the bytes stay in the tx fifo.
//
// Its methods are safe for concurrent use and return at once; the pump
// acts on them. Call Kick when the app queued into the tx fifo or freed
// room in the rx fifo.
type Conn struct {
	s      *Stack
	id     uint64
	owner  uint64
	group  uint64 // owner's group for the buffers' bounds (Options.BufferGroup)
	pump   *pump
	queued atomic.Bool

	rxWaits atomic.Bool // the pump found the rx fifo full and waits for a dequeue (WantsRoom)

	ep    *tcp.Endpoint
	wq    *waiter.Queue
	entry waiter.Entry
	rx    *fifo.Fifo
	tx    *fifo.Fifo

	ka keepaliveState // guarded by its mu
	h  Handler

	local, remote netip.AddrPort

	// started is set once the fields above are final; the pump ignores
	// the Conn until then (Stack.Close or an Accept handler may request a
	// close before).
	started                           atomic.Bool
	closeReq, closeWriteReq, abortReq atomic.Bool
	abortErr                          atomic.Pointer[error] // set with abortReq by Stack.Close
	closeAt                           atomic.Int64          // unix nanos: graceful close deadline
	closeAcked                        atomic.Uint64         // acked() when closeAt was last set

	timerMu  sync.Mutex // guards timer and timerOff
	timer    *time.Timer
	timerOff bool // the Conn ended: no timer is armed any more (end)

	// runMu is held by whoever runs the Conn: its pump (run), or a worker
	// moving the tx fifo into gVisor itself (PushTx). The fields below
	// are owned by its holder.
	runMu sync.Mutex

	state     connState
	connectBy time.Time
	window    atomic.Pointer[peerWindow] // the link follows the peer's window (trackWindow)
	orphan    bool                       // finished with data for gVisor to deliver (orphans.go)
	rdClosed  bool                       // the peer's FIN reached the rx fifo
	wrClosed  bool                       // our FIN is queued in gVisor
	rxw       rxWriter
	txr       txReader
	txErr     error // an error PushTx met, for run to end the Conn with
	aheadTold bool  // ResetAhead was called
	appClose  bool  // the app's close mark in the tx fifo was handed to the Handler
	// rcvBuf and sndBuf are the gVisor buffer sizes the Stack accounts
	// for the Conn (buffers.go): written under the Stack's mu, read
	// without it to see whether gVisor grew a buffer.
	rcvBuf, sndBuf atomic.Int64

	// Bytes moved by the pump, read by Info from any goroutine.
	rxBytes, txBytes atomic.Uint64
	// endErr is the errno the Conn ended with (set before Reset).
	endErr atomic.Pointer[error]
	// sentReset: the Conn ended by resetting the connection itself
	// (Abort, a close timeout, the Stack closing).
	sentReset atomic.Bool
}

// ID returns the Conn's number, unique within its Stack.
func (c *Conn) ID() uint64 { return c.id }

// Owner returns the owner the Conn counts against.
func (c *Conn) Owner() uint64 { return c.owner }

// LocalAddr returns the local address and port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// RemoteAddr returns the peer's address and port.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// ConnInfo is what a Conn reports of itself: gVisor's state and counters
// of its endpoint, and the bytes the Conn moved each way.
type ConnInfo struct {
	// State is gVisor's name of the endpoint's TCP state (ESTABLISHED,
	// CLOSE-WAIT, TIME-WAIT, ...); it goes on after the Conn finished,
	// while gVisor closes the connection.
	State string
	// RxBytes went from gVisor into the rx fifo, TxBytes from the tx fifo
	// into gVisor.
	RxBytes, TxBytes uint64
	// SegmentsReceived and SegmentsSent are gVisor's counts of the
	// endpoint; Retransmits its retransmitted segments, Timeouts the
	// times its retransmission timer expired.
	SegmentsReceived, SegmentsSent uint64
	Retransmits, Timeouts          uint64
	// RecvQ is what gVisor received and the Conn has not moved into the
	// rx fifo yet (bytes); SendQ what gVisor holds to send or to have
	// acknowledged, as ss(8) shows Recv-Q and Send-Q.
	RecvQ, SendQ int
	// RcvBuf is gVisor's receive buffer now (bytes): Options.ReceiveBuffer
	// at first, grown by gVisor's receive buffer moderation, up to 4 MiB,
	// while the app drains the connection fast (pumpRx).
	RcvBuf int
	// RTT and RTTVar are gVisor's smoothed round-trip time of the
	// connection and its variation, 0 until data went and was
	// acknowledged; Cwnd its congestion window in segments (ss -i's rtt
	// and cwnd). Filled in by InfoRTT, not Info.
	RTT, RTTVar time.Duration
	Cwnd        uint32
	// ResetSent: the Conn ended by resetting the connection (Abort, a
	// close timeout, the Stack closing, a corrupt fifo). ResetReceived:
	// the peer reset it (the Conn ended with ECONNRESET). FifoCorrupt:
	// the Conn reset it because the app broke a fifo (ErrFifoCorrupt).
	ResetSent, ResetReceived, FifoCorrupt bool
}

// Info returns the Conn's state and counters. It is safe from any
// goroutine, also after Closed.
func (c *Conn) Info() ConnInfo {
	in := ConnInfo{State: c.ep.EndpointState().String(), RxBytes: c.rxBytes.Load(), TxBytes: c.txBytes.Load(),
		ResetSent: c.sentReset.Load()}
	if p := c.endErr.Load(); p != nil {
		in.ResetReceived = errors.Is(*p, syscall.ECONNRESET)
		in.FifoCorrupt = errors.Is(*p, ErrFifoCorrupt)
	}
	if st, ok := c.ep.Stats().(*tcp.Stats); ok {
		in.SegmentsReceived = st.SegmentsReceived.Value()
		in.SegmentsSent = st.SegmentsSent.Value()
		in.Retransmits = st.SendErrors.Retransmits.Value()
		in.Timeouts = st.SendErrors.Timeouts.Value()
	}
	if v, err := c.ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption); err == nil {
		in.RecvQ = v
	}
	in.SendQ, _ = c.unacked()
	in.RcvBuf = int(c.ep.SocketOptions().GetReceiveBufferSize())
	return in
}

// InfoRTT is Info with the round-trip time and the congestion window,
// which take the endpoint's lock once more: for `show sessions`, not for
// the counts kept as each connection ends.
func (c *Conn) InfoRTT() ConnInfo {
	in := c.Info()
	var ti tcpip.TCPInfoOption
	if c.ep.GetSockOpt(&ti) == nil {
		in.RTT, in.RTTVar, in.Cwnd = ti.RTT, ti.RTTVar, ti.SndCwnd
	}
	return in
}

// unacked returns what the Conn moved into gVisor and the peer has not
// acknowledged, in bytes (ConnInfo.SendQ: gVisor's endpoint does not tell
// it), and whether the link knows it (it follows the peer's window and
// saw the initial sequence number).
func (c *Conn) unacked() (int, bool) {
	if pw := c.window.Load(); pw != nil {
		return pw.unacked(c.txBytes.Load())
	}
	return 0, false
}

// acked returns how much of what the Conn moved into gVisor the peer
// acknowledged, or, where the link does not follow the connection's
// window, what the Conn moved (which moves as the peer acknowledges,
// once gVisor's send buffer is full).
func (c *Conn) acked() uint64 {
	tx := c.txBytes.Load()
	if pw := c.window.Load(); pw != nil {
		if q, ok := pw.unacked(tx); ok {
			return tx - uint64(q)
		}
	}
	return tx
}

// Delivering reports whether gVisor still has data or a FIN of the Conn's
// to deliver; after Closed, whether the Conn is an orphan (orphans.go).
// That is FIN-WAIT-1, CLOSING and LAST-ACK, and ESTABLISHED or CLOSE-WAIT
// while the FIN waits behind data the peer's window holds back.
func (c *Conn) Delivering() bool {
	switch c.ep.EndpointState() {
	case tcp.StateFinWait2, tcp.StateTimeWait, tcp.StateClose, tcp.StateError:
		return false
	}
	return true
}

// ResetSent reports whether the Conn ended by resetting its connection
// itself (ConnInfo.ResetSent): gVisor released the local port as it sent
// the RST, and no TIME-WAIT follows.
func (c *Conn) ResetSent() bool { return c.sentReset.Load() }

// Finished reports whether gVisor is done with the Conn's connection
// (CLOSED or ERROR): nothing more is sent or received on it.
func (c *Conn) Finished() bool {
	switch c.ep.EndpointState() {
	case tcp.StateClose, tcp.StateError:
		return true
	}
	return false
}

// Keepalive is a Conn's TCP keepalive: after Idle without traffic gVisor
// sends a probe every Interval; Count probes unanswered end the Conn with
// ETIMEDOUT (Reset). Zero fields keep the values the Conn has.
type Keepalive struct {
	Enabled  bool
	Idle     time.Duration
	Interval time.Duration
	Count    int
}

// DefaultKeepalive is the keepalive every Conn starts with: Go's net
// package turns keepalive on with these for each connection net.Dial makes
// and a net.Listener accepts.
var DefaultKeepalive = Keepalive{Enabled: true, Idle: flow.KeepaliveIdle, Interval: flow.KeepaliveInterval, Count: flow.KeepaliveCount}

// SetKeepalive turns keepalive on or off and sets the values given, on
// or off, as setsockopt(2) of a kernel socket's options does. Safe from
// any goroutine.
func (c *Conn) SetKeepalive(k Keepalive) error {
	return c.ka.set(c.ep, k)
}

// keepaliveState is a Conn's keepalive as its app set it. gVisor's
// keepalive is never turned off once on: a keepalive timer that fires
// while the option is off is left pending for good (the expiry handler
// returns before it takes the timer's expiry), and keepalive turned on
// again never probes. Off is gVisor's keepalive on with an idle time of
// keepaliveNever instead.
type keepaliveState struct {
	mu      sync.Mutex
	started bool          // gVisor's keepalive is on (turned on once)
	off     bool          // the app's keepalive is off
	idle    time.Duration // the app's idle time
}

// keepaliveNever is the idle time that stands for keepalive off.
const keepaliveNever = 100 * 365 * 24 * time.Hour

func (ks *keepaliveState) set(ep *tcp.Endpoint, k Keepalive) error {
	if !flow.KeepaliveValid(k.Idle, k.Interval, k.Count) {
		return fmt.Errorf("set keepalive: idle %v, interval %v, count %d: %w", k.Idle, k.Interval, k.Count, syscall.EINVAL)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k.Interval > 0 {
		o := tcpip.KeepaliveIntervalOption(k.Interval)
		if terr := ep.SetSockOpt(&o); terr != nil {
			return fmt.Errorf("set keepalive interval: %w", toErrno(terr))
		}
	}
	if k.Count > 0 {
		if terr := ep.SetSockOptInt(tcpip.KeepaliveCountOption, k.Count); terr != nil {
			return fmt.Errorf("set keepalive count: %w", toErrno(terr))
		}
	}
	if k.Idle > 0 {
		ks.idle = k.Idle
	}
	if ks.idle == 0 {
		ks.idle = DefaultKeepalive.Idle
	}
	idle := tcpip.KeepaliveIdleOption(ks.idle)
	if !k.Enabled {
		idle = tcpip.KeepaliveIdleOption(keepaliveNever)
	}
	if terr := ep.SetSockOpt(&idle); terr != nil {
		return fmt.Errorf("set keepalive idle: %w", toErrno(terr))
	}
	ks.off = !k.Enabled
	if !ks.started {
		ks.started = true
		ep.SocketOptions().SetKeepAlive(true)
	}
	return nil
}

// get returns the keepalive as the app set it, from ep's values.
func (ks *keepaliveState) get(ep *tcp.Endpoint) Keepalive {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var interval tcpip.KeepaliveIntervalOption
	_ = ep.GetSockOpt(&interval)
	count, _ := ep.GetSockOptInt(tcpip.KeepaliveCountOption)
	return Keepalive{Enabled: ks.started && !ks.off && ep.SocketOptions().GetKeepAlive(), Idle: ks.idle, Interval: time.Duration(interval), Count: count}
}

// Rx and Tx return the Conn's fifos.
func (c *Conn) Rx() *fifo.Fifo { return c.rx }

// Tx returns the Conn's tx fifo.
func (c *Conn) Tx() *fifo.Fifo { return c.tx }

// Kick makes the pump look at the Conn: call it when the app queued into
// the tx fifo or dequeued from the rx fifo (the fifo's event and dequeue
// notifications tell when).
func (c *Conn) Kick() { c.pump.schedule(c) }

// CloseWrite sends FIN once the tx fifo has drained into gVisor (a half
// close): receiving goes on until the peer's FIN.
func (c *Conn) CloseWrite() {
	c.closeWriteReq.Store(true)
	c.Kick()
}

// Close closes gracefully: once the tx fifo has drained into gVisor, FIN is
// sent and the Conn finishes (Closed); gVisor delivers what it still holds
// and keeps TIME-WAIT on its own (an orphan: what it holds stays
// accounted until the peer has it, and a peer that takes nothing of it
// for Options.CloseTimeout gets a reset; orphans.go). Data the app left
// unread (in the rx fifo or in gVisor), or that the peer sends after the
// Close, resets the connection at once instead, as close(2) does on Linux
// (Stats.AbortedOnClose). A tx fifo that does not drain within
// Options.CloseTimeout of the peer taking nothing (a peer keeping its
// window shut) ends in a reset; a peer that reads, however slowly, gets
// it all, as from Linux.
func (c *Conn) Close() {
	d := c.s.opts.CloseTimeout
	// The deadline before the request: a pump that sees closeReq reads
	// it, and a zero one would end the close at once in a reset.
	if c.closeAt.Load() == 0 {
		c.closeAcked.Store(c.acked())
	}
	c.closeAt.CompareAndSwap(0, time.Now().Add(d).UnixNano())
	if c.closeReq.Swap(true) {
		return
	}
	c.armTimer(d)
	c.Kick()
}

// Abort resets the connection (RST) and finishes the Conn (Closed).
func (c *Conn) Abort() { c.abort(false) }

func (c *Conn) abort(stackClosing bool) {
	if stackClosing {
		err := error(syscall.ECONNABORTED)
		c.abortErr.Store(&err)
	}
	c.abortReq.Store(true)
	c.Kick()
}

func (c *Conn) queuedFlag() *atomic.Bool { return &c.queued }

// armTimer schedules a Kick after d, unless the Conn ended: a timer then
// (a Close after the end) would keep it for nothing.
func (c *Conn) armTimer(d time.Duration) {
	c.timerMu.Lock()
	defer c.timerMu.Unlock()
	if c.timerOff {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(d, c.Kick)
}

// newConn makes a Conn around a gVisor endpoint, admitted against the
// limits, not yet started.
func (s *Stack) newConn(owner uint64) (*Conn, error) {
	c := &Conn{s: s, id: s.nextID.Add(1), owner: owner, group: owner}
	if s.opts.BufferGroup != nil {
		c.group = s.opts.BufferGroup(owner)
	}
	c.pump = s.pumpFor(c.id)
	if err := s.admit(c); err != nil {
		return nil, err
	}
	return c, nil
}

// register subscribes the Conn to its endpoint's events: each one
// schedules the Conn on its pump.
func (c *Conn) register() {
	c.entry = waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.WritableEvents|waiter.EventHUp|waiter.EventErr|waiter.EventRdHUp,
		func(waiter.EventMask) { c.pump.schedule(c) })
	c.wq.EventRegister(&c.entry)
}

// Dial opens a connection from local (port 0: an ephemeral port of gVisor's;
// the address unspecified: the stack's address for the route) to remote,
// counted against owner. Connected or ConnectFailed follows on h. rx and
// tx are the app's fifos; they must stay allocated until h.Closed.
func (s *Stack) Dial(local, remote netip.AddrPort, owner uint64, rx, tx *fifo.Fifo, h Handler) (*Conn, error) {
	return s.DialMTU(local, remote, 0, owner, rx, tx, h)
}

// DialMTU is Dial over a route to remote whose MTU is mtu (the size of an
// IP packet), when that is below the link's: the connection's SYN
// advertises an MSS that fits the route and its segments are sized by it
// from the first, as Linux sizes a connection by its route's MTU. 0: the
// link's MTU.
func (s *Stack) DialMTU(local, remote netip.AddrPort, mtu uint32, owner uint64, rx, tx *fifo.Fifo, h Handler) (*Conn, error) {
	if rx == nil || tx == nil || h == nil {
		return nil, errors.New("dial: nil fifo or handler")
	}
	raddr := remote.Addr().Unmap()
	if !raddr.IsValid() || remote.Port() == 0 {
		return nil, fmt.Errorf("dial %s: %w", remote, syscall.EINVAL)
	}
	c, err := s.newConn(owner)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", remote, err)
	}
	c.rx, c.tx, c.h = rx, tx, h
	c.wq = new(waiter.Queue)
	ep, terr := s.gs.NewEndpoint(tcp.ProtocolNumber, protoOf(raddr), c.wq)
	if terr != nil {
		s.release(c)
		return nil, fmt.Errorf("dial %s: new endpoint: %w", remote, toErrno(terr))
	}
	c.ep = ep.(*tcp.Endpoint)
	if err := s.chargeBuffers(c); err != nil {
		c.ep.Close()
		s.release(c)
		return nil, fmt.Errorf("dial %s: %w", remote, err)
	}
	_ = c.ka.set(c.ep, DefaultKeepalive) // valid values: it cannot fail
	fail := func(what string, terr tcpip.Error) (*Conn, error) {
		c.ep.Close()
		s.release(c)
		return nil, fmt.Errorf("dial %s: %s: %w", remote, what, toErrno(terr))
	}
	if raddr.Is6() {
		c.ep.SocketOptions().SetV6Only(true)
	}
	laddr := local.Addr().Unmap()
	if (laddr.IsValid() && !laddr.IsUnspecified()) || local.Port() != 0 {
		fa := tcpip.FullAddress{NIC: nicID, Port: local.Port()}
		if laddr.IsValid() && !laddr.IsUnspecified() {
			fa.Addr = tcpAddr(laddr)
		}
		if terr := c.ep.Bind(fa); terr != nil {
			return fail("bind "+local.String(), terr)
		}
	}
	c.state = stConnecting
	c.connectBy = time.Now().Add(s.opts.ConnectTimeout)
	terr = s.connectVia(c.ep, tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(raddr), Port: remote.Port()}, mtu)
	if _, ok := terr.(*tcpip.ErrConnectStarted); !ok && terr != nil {
		return fail("connect", terr)
	}
	c.remote = netip.AddrPortFrom(raddr, remote.Port())
	if la, terr := c.ep.GetLocalAddress(); terr == nil {
		c.local = netip.AddrPortFrom(fromTCPAddr(la.Addr), la.Port)
	}
	// Registered after Connect so that the pump never sees the Conn before
	// its fields are set; the Kick covers any event missed meanwhile (run
	// reads the endpoint's state, not the events).
	c.register()
	c.armTimer(s.opts.ConnectTimeout)
	c.started.Store(true)
	c.Kick()
	return c, nil
}

// connectVia connects ep to to over a route of MTU mtu. gVisor takes a
// connection's route, and with it the MTU that sizes its SYN's MSS and its
// segments, from its route table when the connect starts, and keeps it: a
// route to the one address with that MTU is in the table for the connect
// alone. The connects that need one take turns (routeMu), as routes of
// their own would hide each other.
func (s *Stack) connectVia(ep *tcp.Endpoint, to tcpip.FullAddress, mtu uint32) tcpip.Error {
	if mtu == 0 || mtu >= s.link.MTU() {
		return ep.Connect(to)
	}
	host := tcpip.AddressWithPrefix{Address: to.Addr, PrefixLen: to.Addr.BitLen()}.Subnet()
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.gs.AddRoute(tcpip.Route{Destination: host, NIC: nicID, MTU: mtu})
	defer s.gs.RemoveRoutes(func(r tcpip.Route) bool { return r.Destination == host && r.MTU == mtu })
	return ep.Connect(to)
}

// run is the pump's work on the Conn: state changes, rx, tx, closing.
func (c *Conn) run() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.runLocked()
}

func (c *Conn) runLocked() {
	if c.state == stDone || !c.started.Load() {
		return
	}
	if c.abortReq.Load() {
		var err error
		if p := c.abortErr.Load(); p != nil {
			err = *p
		}
		c.reset(err)
		return
	}
	if c.state == stConnecting {
		switch st := c.ep.EndpointState(); st {
		case tcp.StateSynSent, tcp.StateConnecting, tcp.StateInitial, tcp.StateBound:
			if time.Now().After(c.connectBy) {
				c.connectFailed(syscall.ETIMEDOUT)
			}
			return
		case tcp.StateError, tcp.StateClose:
			err := toErrno(c.ep.LastError())
			if err == nil {
				err = syscall.ECONNREFUSED
			}
			c.connectFailed(err)
			return
		}
		c.state = stOpen
		c.trackWindow()
		c.h.Connected(c)
		if c.state == stDone || c.abortReq.Load() {
			c.Kick()
			return
		}
	}
	if !c.pumpRx() || !c.pumpTx() {
		return
	}
	// The close mark is read after pumpTx cleared the tx fifo's event
	// flag (moveTx), as data is: a mark stored before the clear is seen
	// here, and one stored after it comes with the app's signal.
	if !c.appClose && c.tx.CloseRequested() {
		c.appClose = true
		c.h.CloseRequested(c)
		if c.state == stDone {
			return
		}
	}
	closing := c.closeReq.Load()
	if closing && c.unread() {
		// Data left unread, or sent by the peer after (the pump moved it
		// to the rx fifo), resets a closed connection (Close; RFC 2525
		// 2.17, RFC 1122 4.2.2.13) instead of filling an rx fifo nobody
		// reads while a peer that writes before it reads waits.
		c.s.abortedOnClose.Add(1)
		c.reset(syscall.ECONNABORTED)
		return
	}
	if c.heldReset() {
		// Reset with data received before it still in gVisor: nothing is
		// sent any more (a CloseWrite neither: gVisor's Shutdown would
		// fail and the Conn end before that data is in the rx fifo), and
		// the Conn ends once the data is there (pumpRx, pumpTx).
		return
	}
	if (closing || c.closeWriteReq.Load()) && !c.wrClosed && c.tx.MaxDequeue() == 0 {
		if closing {
			c.finish()
			return
		}
		c.wrClosed = true
		if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
			c.fail(toErrno(terr))
			return
		}
	}
	if c.wrClosed && (c.rdClosed || closing) {
		// Both FINs done, or a Close after CloseWrite: our FIN is
		// queued already and nothing is left to send.
		c.finish()
		return
	}
	if closing && time.Now().UnixNano() >= c.closeAt.Load() {
		a := c.acked()
		if a == c.closeAcked.Load() {
			c.reset(syscall.ETIMEDOUT)
			return
		}
		// The peer took data since the deadline was set: a slow
		// reader, not a shut window. Another CloseTimeout.
		d := c.s.opts.CloseTimeout
		c.closeAcked.Store(a)
		c.closeAt.Store(time.Now().Add(d).UnixNano())
		c.armTimer(d)
	}
	if c.brokenPipe() {
		c.fail(syscall.EPIPE)
		return
	}
	if c.ep.EndpointState() == tcp.StateError {
		// A reset or timeout the reads and writes above did not meet
		// (the rx fifo full, nothing to send), with no data held
		// (heldReset). StateClose is not one: after both FINs gVisor
		// may still hold data for a full rx fifo.
		err := toErrno(c.ep.LastError())
		if err == nil {
			err = syscall.ECONNRESET
		}
		c.fail(err)
	}
}

// heldReset reports whether the connection was reset or timed out while
// gVisor holds data received before that, and then tells the Handler
// once (ResetAhead): that data goes into the rx fifo as the app drains
// it (pumpRx asked to be told), and the Conn ends with the error (txErr)
// once it is all there (pumpRx's read after the last of it, or pumpTx),
// as a Linux socket's reads return the data queued before an RST. Its
// writes fail at once, as Linux's do: an app waiting for room in the tx
// fifo, which nothing drains any more, would not read that data. That is
// gVisor's error state (the error taken here: gVisor reports it once),
// or CLOSE with the sending half open, where a reset after the peer's
// FIN leaves it (brokenPipe: EPIPE) while the FIN waits behind the data.
// runMu must be held.
func (c *Conn) heldReset() bool {
	if c.txErr == nil {
		// The state first: an atomic load, where rxHeld asks gVisor
		// under its locks, on every run of every open Conn.
		if !c.heldState() || !c.rxHeld() {
			return false
		}
		err := error(syscall.EPIPE)
		if c.ep.EndpointState() == tcp.StateError {
			if err = toErrno(c.ep.LastError()); err == nil {
				err = syscall.ECONNRESET
			}
		}
		c.txErr = err
	}
	c.resetAhead()
	return true
}

// brokenPipe reports whether gVisor closed the connection while its
// sending half is open, after the peer's FIN was passed on to the rx
// fifo: the peer, whose FIN came first (CLOSE-WAIT), reset the
// connection, as a peer that closed its socket answers what is sent to it
// after. gVisor then moves to CLOSE with ErrAborted, not to its error
// state. Linux's tcp_reset in CLOSE_WAIT reports EPIPE to the writes that
// follow and leaves the reads at their end of stream; the Conn ends with
// EPIPE for that (flow.ErrBrokenPipe to the app). runMu must be held.
func (c *Conn) brokenPipe() bool {
	return c.rdClosed && !c.wrClosed && c.ep.EndpointState() == tcp.StateClose
}

// unread reports whether the rx fifo holds data the app has not read (as
// its shared indices say: the Conn's own view is the producer's), or gVisor
// data the pump has not moved yet.
func (c *Conn) unread() bool {
	if c.rx.Queued() {
		return true
	}
	n, err := c.ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
	return err == nil && n > 0
}

// WantsRoom reports whether the pump found the rx fifo full the last time
// it moved data into it, and asked the app to say when it dequeues: a
// dequeue notification is then one the Conn waits for. Any goroutine.
func (c *Conn) WantsRoom() bool { return c.rxWaits.Load() }

// pumpRx moves data from gVisor into the rx fifo. It returns false when the
// Conn finished.
func (c *Conn) pumpRx() bool {
	if c.rdClosed {
		return true
	}
	committed, armed := 0, false
	var rerr tcpip.Error
	for {
		a, b, err := c.rx.Reserve(0)
		if errors.Is(err, fifo.ErrNoSpace) {
			if armed {
				break
			}
			// Full: ask the app to tell us when it dequeues, then look
			// once more (it may have dequeued meanwhile).
			c.rx.WantDeqNotify(fifo.DeqNotifyIfFull)
			c.rxWaits.Store(true)
			armed = true
			continue
		}
		if c.rxWaits.Load() {
			c.rxWaits.Store(false)
		}
		if err != nil {
			c.fail(ErrFifoCorrupt)
			return false
		}
		c.rxw.a, c.rxw.b = a, b
		res, terr := c.ep.Read(&c.rxw, tcpip.ReadOptions{})
		c.rxw.a, c.rxw.b = nil, nil
		if res.Count > 0 {
			if err := c.rx.Commit(res.Count); err != nil {
				c.fail(ErrFifoCorrupt)
				return false
			}
			committed += res.Count
			c.rxBytes.Add(uint64(res.Count))
		}
		if terr != nil {
			// ErrWouldBlock: gVisor's receive queue is empty. Reading
			// until an error (rather than stopping at a short read) is
			// what finds a FIN that came with the last data.
			rerr = terr
			break
		}
	}
	if committed > 0 {
		if c.rx.SetEvent() {
			c.h.Readable(c)
		}
		// gVisor sizes the receive buffer from what the reader copies
		// per round trip (its receive buffer moderation), as Linux's
		// autotuning does; only its readers report it.
		c.growRcvBuf(committed)
	}
	switch rerr.(type) {
	case nil, *tcpip.ErrWouldBlock:
	case *tcpip.ErrClosedForReceive:
		if c.ep.EndpointState() == tcp.StateError {
			// No FIN: gVisor reports a reset or timeout once, and a
			// write met it first (PushTx or pumpTx, which left it in txErr).
			err := c.txErr
			if err == nil {
				err = toErrno(c.ep.LastError())
			}
			if err == nil {
				err = syscall.ECONNRESET
			}
			c.fail(err)
			return false
		}
		c.rdClosed = true
		c.h.PeerClosed(c)
	default:
		c.fail(toErrno(rerr))
		return false
	}
	return c.state != stDone
}

// pumpTx moves data from the tx fifo into gVisor's send buffer. It returns
// false when the Conn ended.
func (c *Conn) pumpTx() bool {
	if c.wrClosed {
		return true
	}
	err := c.txErr
	c.txErr = nil
	if err == nil {
		err = c.moveTx()
	}
	if err != nil {
		if !errors.Is(err, ErrFifoCorrupt) && c.heldState() && c.rxHeld() {
			// A reset or timeout a write met first (gVisor reports it
			// once), or the reset after the peer's FIN (EPIPE): the Conn
			// ends with it after the data received before it is in the
			// rx fifo (pumpRx takes it from txErr). Nothing more is
			// sent: PushTx and pumpTx step back while txErr is set.
			c.txErr = err
			c.resetAhead()
			return true
		}
		c.fail(err)
		return false
	}
	return c.state != stDone
}

// heldState reports whether gVisor's endpoint is in a state heldReset
// keeps the Conn in while data is held: reset or timed out (ERROR), or
// reset after the peer's FIN with the sending half open (CLOSE). runMu
// must be held.
func (c *Conn) heldState() bool {
	switch c.ep.EndpointState() {
	case tcp.StateError:
		return true
	case tcp.StateClose:
		return !c.wrClosed
	}
	return false
}

// resetAhead tells the Handler, once, of the reset (txErr) that ends the
// Conn after the data gVisor holds. runMu must be held.
func (c *Conn) resetAhead() {
	if c.aheadTold || c.txErr == nil {
		return
	}
	c.aheadTold = true
	c.h.ResetAhead(c, c.txErr)
}

// rxHeld reports whether gVisor holds received data the pump has not moved
// into the rx fifo, before the peer's FIN. runMu must be held.
func (c *Conn) rxHeld() bool {
	if c.rdClosed {
		return false
	}
	n, err := c.ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
	return err == nil && n > 0
}

// moveTx moves what the tx fifo holds into gVisor's send buffer, until
// either is empty or full, and signals the app when it made room in a tx
// fifo it is waiting on. It returns the error to end the Conn with.
func (c *Conn) moveTx() error {
	c.tx.ClearEvent()
	released := 0
	defer func() {
		if released > 0 {
			c.growSndBuf()
			if c.tx.DeqNotify(released) {
				c.h.Writable(c)
			}
		}
	}()
	for {
		a, b, err := c.tx.PeekSlices()
		if errors.Is(err, fifo.ErrEmpty) {
			return nil
		}
		if err != nil {
			return ErrFifoCorrupt
		}
		c.txr.a, c.txr.b = a, b
		n, terr := c.ep.Write(&c.txr, tcpip.WriteOptions{})
		c.txr.a, c.txr.b = nil, nil
		if n > 0 {
			if err := c.tx.Release(int(n)); err != nil {
				return ErrFifoCorrupt
			}
			released += int(n)
			c.txBytes.Add(uint64(n))
		}
		if terr != nil {
			if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
				return nil
			}
			if c.brokenPipe() {
				return syscall.EPIPE
			}
			return toErrno(terr)
		}
		if int(n) < len(a)+len(b) {
			return nil // gVisor's send buffer is full: EventOut brings us back
		}
	}
}

// PushTx moves the tx fifo into gVisor from the caller's goroutine, as
// the pump would, and reports whether it did. A worker that finds an
// app's data in the tx fifo calls it instead of Kick: the data then
// leaves without waking the pump, one hand-over fewer for every reply.
// It does nothing and returns false (the caller then Kicks)
// while the pump runs the Conn, or when the Conn is not simply open (a
// connect, close or abort pending), so that everything but moving bytes
// stays the pump's; so is an app's close mark in the tx fifo. An error it
// meets is left for the pump to end the Conn with (it returns true and
// Kicks itself): the Handler's calls that end a Conn stay on the pump.
func (c *Conn) PushTx() bool {
	if !c.runMu.TryLock() {
		return false
	}
	defer c.runMu.Unlock()
	if !c.started.Load() || c.state != stOpen || c.wrClosed || c.txErr != nil ||
		c.closeReq.Load() || c.closeWriteReq.Load() || c.abortReq.Load() || c.tx.CloseRequested() {
		return false
	}
	if err := c.moveTx(); err != nil {
		c.txErr = err
		c.Kick()
	} else if c.tx.CloseRequested() {
		c.Kick() // a mark stored before moveTx cleared the event flag
	}
	return true
}

// connectFailed ends an active open.
func (c *Conn) connectFailed(err error) {
	c.closeNow()
	c.end()
	c.h.ConnectFailed(c, err)
	c.s.forget(c, false)
	c.h.Closed(c)
	c.s.connWG.Done()
}

// fail ends the Conn after gVisor reported err, or a fifo was corrupt
// (Reset then Closed).
func (c *Conn) fail(err error) {
	c.endErr.Store(&err)
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
	if errors.Is(err, ErrFifoCorrupt) {
		c.sentReset.Store(true) // the connection was open: Close resets it
	}
	c.ep.Close()
	c.end()
	c.h.Reset(c, err)
	c.s.forget(c, false)
	c.h.Closed(c)
	c.s.connWG.Done()
}

// reset sends RST and ends the Conn; err, when set, is reported with Reset
// before Closed.
func (c *Conn) reset(err error) {
	if c.closeNow() {
		c.sentReset.Store(true)
	}
	c.end()
	if err != nil {
		c.endErr.Store(&err)
		c.h.Reset(c, err)
	}
	c.s.forget(c, false)
	c.h.Closed(c)
	c.s.connWG.Done()
}

// closeNow closes the endpoint with a zero linger: a connection past its
// handshake is reset, one still in SYN-SENT abandoned, and either way
// gVisor releases the local port before Close returns. That holds also
// for a Conn still connecting whose handshake gVisor completed since the
// pump last looked: a plain Close would send a FIN there and keep the
// port through FIN-WAIT and TIME-WAIT, while the Conn's owner, told that
// it never connected, lets the port go at once (a connect from it then
// failed with EADDRINUSE). closeNow reports whether it reset a
// connection.
func (c *Conn) closeNow() bool {
	var open bool
	switch c.ep.EndpointState() {
	case tcp.StateEstablished, tcp.StateSynRecv, tcp.StateCloseWait, tcp.StateFinWait1, tcp.StateFinWait2:
		open = true // the states gVisor resets on such a Close
	}
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
	c.ep.Close()
	return open
}

// EndTimeWait ends the connection of a finished Conn that gVisor still
// holds in TIME-WAIT or FIN-WAIT-2, for an owner that lets its local port
// go early (to reuse it, as Linux reuses a port in TIME-WAIT): an RST ends
// it and gVisor releases the port before EndTimeWait returns, so that a
// connect the kernel gives the port next is not refused in gVisor's bind
// (EADDRINUSE). Data the peer sends a connection in FIN-WAIT-2 after its
// app closed has nowhere to go (Linux answers it with an RST too). It
// does nothing in other states and reports whether it ended one; safe
// after Closed, from any goroutine.
func (c *Conn) EndTimeWait() bool {
	switch c.ep.EndpointState() {
	case tcp.StateTimeWait, tcp.StateFinWait2:
		c.ep.Abort()
		return true
	}
	return false
}

// finish closes gracefully (FIN, or nothing more when both FINs are done).
// Keepalive goes off first: the connection gVisor keeps after (FIN-WAIT,
// TIME-WAIT) has no app, and Linux's orphans and TIME-WAIT sockets send
// no probes (gVisor's keepalive timer, armed as the last ACK goes, probed
// from TIME-WAIT).
func (c *Conn) finish() {
	_ = c.ka.set(c.ep, Keepalive{}) // off: valid values, it cannot fail
	c.ep.Close()
	c.orphan = c.Delivering()
	c.end()
	if !c.s.forget(c, c.orphan) && c.orphan { // the Stack is closing
		c.untrackWindow()
	}
	c.h.Closed(c)
	c.s.connWG.Done()
}

// trackWindow has the link follow the peer's receive window for as long
// as the Conn lives, so that its bare acknowledgements stay inside it
// (windows).
func (c *Conn) trackWindow() {
	if pw := c.s.link.win.track(c.local, c.remote); pw != nil {
		c.window.Store(pw)
	}
}

// untrackWindow ends trackWindow's tracking.
func (c *Conn) untrackWindow() {
	if pw := c.window.Swap(nil); pw != nil {
		c.s.link.win.untrack(c.local, c.remote, pw, c.s.link.send)
	}
}

// end detaches the Conn from gVisor's notifications, its timer and the
// link's window tracking.
func (c *Conn) end() {
	c.state = stDone
	if !c.orphan {
		c.untrackWindow()
	}
	c.wq.EventUnregister(&c.entry)
	c.stopTimer()
}

// stopTimer stops the Conn's timer for good: armTimer arms none after it.
func (c *Conn) stopTimer() {
	c.timerMu.Lock()
	defer c.timerMu.Unlock()
	c.timerOff = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// rxWriter is the io.Writer gVisor's Read fills: the rx fifo's reserved
// space, in at most two slices.
type rxWriter struct{ a, b []byte }

func (w *rxWriter) Write(p []byte) (int, error) {
	n := copy(w.a, p)
	w.a = w.a[n:]
	if n < len(p) {
		m := copy(w.b, p[n:])
		w.b = w.b[m:]
		n += m
	}
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// txReader is the tcpip.Payloader gVisor's Write reads: the tx fifo's
// queued bytes, in at most two slices.
type txReader struct{ a, b []byte }

func (r *txReader) Read(p []byte) (int, error) {
	n := copy(p, r.a)
	r.a = r.a[n:]
	if n < len(p) {
		m := copy(p[n:], r.b)
		r.b = r.b[m:]
		n += m
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *txReader) Len() int { return len(r.a) + len(r.b) }
