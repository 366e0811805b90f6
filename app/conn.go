package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

// Conn is one session: a connected UDP session (datagrams: one Read per
// datagram) or a TCP session, on the wire or cut-through (a byte stream).
// It implements net.Conn.
//
// Lock order: hmu, rd.mu, wr.mu (then the App's locks).
type Conn struct {
	a            *App
	e            *end
	laddr, raddr net.Addr
	local        netip.AddrPort
	remote       netip.AddrPort
	ln           *Listener // the listener it was accepted on, if any

	rd, wr half
	done   chan struct{}
	once   sync.Once

	wrClosed atomic.Bool // CloseWrite was called: writes fail with EPIPE
	finSent  atomic.Bool // a CloseWrite succeeded: the daemon has the FIN (or the cut-through peer is gone)
	rdClosed atomic.Bool // CloseRead was called
	abort    atomic.Bool // SetLinger(0): Close resets a TCP session

	// hmu serializes the control requests that name the session's handle
	// (CloseWrite, SetKeepAliveConfig, the reset of a corrupt cut-through
	// stream) with Close letting the session go: the daemon may give the
	// handle to another session of the app once this one is gone, and a
	// request sent (or handled) after that would change that one. Each
	// holds hmu from its look at done to its reply; Close closes done
	// before it takes hmu. No Read or Write takes it.
	hmu sync.Mutex
	let bool // guarded by hmu: the session was let go (Close, or the reset of a corrupt stream)
	// keepaliveOff, guarded by hmu: an app's call turned the wire
	// session's keepalive off (the daemon starts it on).
	keepaliveOff bool

	rhdr fifo.DgramHeader // guarded by rd.mu
	// wseq serializes stream writes (TCP), so that one Write's bytes
	// are never interleaved with another's; datagram writes need not.
	wseq sync.Mutex

	// soErr is the session's pending asynchronous error (an errno from
	// fifo.EventError: the peer's ICMP error, or EMSGSIZE for a
	// don't-fragment datagram too large for the path), reported once by
	// the next Read or Write, as a connected kernel socket's SO_ERROR.
	soErr atomic.Uint32
	// soCorrupt says that the pending ECONNREFUSED of a cut-through UDP
	// session is the one of its peer's corrupt fifo (resetCorrupt):
	// takeError returns it wrapped with flow.ErrFifoCorrupt.
	soCorrupt atomic.Bool
	// resetTold is set once a Read or Write returned the error of the
	// session's reset (or timeout): later reads return io.EOF and writes
	// EPIPE, as a kernel socket reports its sk_err once and is shut down
	// both ways after it.
	resetTold atomic.Bool

	df   atomic.Bool // SetDontFragment: datagrams to the wire go with fifo.DgramFlagDontFragment
	pmtu pmtuCache   // the path MTU to remote, for don't-fragment writes (checkPath)
}

func newConn(a *App, e *end, laddr, raddr net.Addr, local, remote netip.AddrPort) *Conn {
	return &Conn{a: a, e: e, laddr: laddr, raddr: raddr, local: local, remote: remote,
		rd: newHalf(), wr: newHalf(), done: make(chan struct{})}
}

// Dial opens a session to uri (udp://ADDR:PORT, or tcp://ADDR:PORT): a
// cut-through session when an app of the host listens there, a datapath
// session otherwise. The host may be a name (tcp://db.example:5432): it is
// resolved as net.Dial would, and its addresses tried in turn until one
// connects. No address (tcp://:7000) or an unspecified one (0.0.0.0, ::)
// dials the local system, as net.Dial does: the loopback address of that
// family (IPv4 for none). The net.Conn is a *Conn, but for a kernel socket
// of the host, which sessions do not reach: where no app listens on the
// loopback address dialed, or the daemon finds a kernel socket holding the
// port of the host's own address dialed (flow.ErrHostSocket), Dial
// connects with a kernel socket of this process, as net.Dial would, and
// returns it (a *net.TCPConn or *net.UDPConn, which App.Close leaves
// open), each address of a host name in turn; if that fails too, the
// kernel's error is returned for the host's own address or a ctx that
// ended, the daemon's for a loopback address (dialHost). If ctx ends
// first, Dial returns an error wrapping ctx's (context.DeadlineExceeded
// for a deadline) and closes the session its connect made, if any, even
// one the daemon made after the dial gave up. Its errors are a
// *net.OpError, as net.Dial's are: Op "dial", Net the URI's scheme, Addr
// the address dialed, Err an *Error (errors.Is finds the errno, the
// context's error or the sessions sentinel under it), held in an
// *os.SyscallError naming "connect" when an errno is under it, as
// net.Dial holds what connect(2) returned.
func (a *App) Dial(ctx context.Context, uri string) (net.Conn, error) {
	c, err := a.dialConn(ctx, uri, true)
	if err != nil {
		return nil, connectSyscallError(err)
	}
	return c, nil
}

// DialConn is Dial returning the *Conn: it never connects a kernel socket
// of the host (where Dial would, it fails as the daemon refused).
func (a *App) DialConn(ctx context.Context, uri string) (*Conn, error) {
	c, err := a.dialConn(ctx, uri, false)
	if err != nil {
		return nil, connectSyscallError(err)
	}
	return c.(*Conn), nil
}

// connectSyscallError holds the errno of a failed Dial's *net.OpError in
// an *os.SyscallError naming "connect", as net.Dial holds what connect(2)
// returned (ECONNREFUSED, ENETUNREACH, ETIMEDOUT, ...): OpError.Err is the
// *os.SyscallError, and the library's error is under it. Errors with no
// errno, and those of a context or of a closed App, are returned as they
// are, as net.Dial's are.
func connectSyscallError(err error) error {
	return inSyscallError(err, "connect", func(oe *net.OpError) {
		if e, ok := oe.Err.(*Error); ok && strings.HasPrefix(e.Msg, "connect ") {
			// "dial tcp ADDR: connect: connection refused", as net.Dial
			// says it: the OpError names the address already.
			if _, rest, ok := strings.Cut(e.Msg, ": "); ok {
				e.Msg = rest
			}
		}
	})
}

// dialConn is Dial (host: trying a kernel socket of the host where the
// daemon's sessions do not reach, dialHost, address by address) and
// DialConn (not).
func (a *App) dialConn(ctx context.Context, uri string, host bool) (net.Conn, error) {
	dial := func(target string, ep flow.Endpoint) (net.Conn, error) {
		c, err := a.dial(ctx, uri, target, ep)
		if err == nil {
			return c, nil
		}
		if host {
			return dialHost(ctx, err)
		}
		return nil, err
	}
	target, err := servicePort(ctx, uri)
	if err != nil {
		return nil, dialError(uri, nil, err)
	}
	if uris, both := bothFamilies(target); both {
		target = uris[0] // no address: IPv4's unspecified one, made loopback below
	}
	// A zone (tcp://[fe80::1%eth0]:80) goes to the daemon with the URI,
	// which checks that it names the namespace's link; that of an address
	// that needs none is dropped, as connect(2) ignores it (scopedZone).
	target, _ = scopedZone(target)
	plain, _ := flow.SplitZone(target)
	ep, err := flow.ParseURI(plain)
	if err == nil {
		if ep.Addr.IsUnspecified() {
			if ep.Family() == flow.Family4 {
				ep.Addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			} else {
				ep.Addr = netip.IPv6Loopback()
			}
			target = ep.URI()
		}
		return dial(target, ep)
	}
	if perr := portError(uri); perr != nil {
		// A port out of range, as net.Dial says it before it looks at
		// the host: a *net.AddrError, under the URI's error (as
		// Listen's).
		return nil, dialError(uri, nil, &withCause{err: err, cause: perr})
	}
	t, name, port, ok := flow.URIName(target)
	if !ok {
		return nil, dialError(uri, nil, err)
	}
	// A host name, resolved as net.Dial resolves it (this process's
	// resolver), its addresses tried in turn until one connects; the
	// first one's error otherwise.
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, dialError(uri, nil, err)
	}
	var first error
	for _, addr := range addrs {
		ep := flow.Endpoint{Transport: t, Addr: addr.Unmap(), Port: port}
		c, err := dial(ep.URI(), ep)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dial connects to ep, which target names to the daemon; uri is what the
// caller gave, for its errors.
func (a *App) dial(ctx context.Context, uri, target string, ep flow.Endpoint) (*Conn, error) {
	raddr := endpointAddr(ep)
	_, zone := flow.SplitZone(target)
	if zone != "" {
		// RemoteAddr names the link as a kernel socket's does:
		// [fe80::1%eth0]:80.
		switch ra := raddr.(type) {
		case *net.TCPAddr:
			ra.Zone = zone
		case *net.UDPAddr:
			ra.Zone = zone
		}
	}
	// fail is the dial's error, naming raddr as net.Dial's does.
	fail := func(err error) (*Conn, error) { return nil, dialError(uri, raddr, err) }
	if err := a.enter(); err != nil {
		return fail(err)
	}
	defer a.leave()
	ch := make(chan connectResult, 1)
	a.mu.Lock()
	opaque := a.nextOpaque
	a.nextOpaque++
	if a.nextOpaque == 0 {
		a.nextOpaque = 1
	}
	a.dials[opaque] = ch
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.dials, opaque)
		a.mu.Unlock()
		// A connect that completed while the dial gave up (its Connect
		// call or its wait for the event cut short by ctx) made a
		// session nobody uses. The reactor hands a result over under
		// a.mu, so past the delete above it is in ch or the reactor
		// closes the session itself.
		select {
		case res := <-ch:
			if res.err == nil {
				a.drop(res.h)
			}
		default:
		}
	}()
	// A reply that comes after ctx gave the dial up names a session
	// nobody will use: close it.
	late := func(m api.Message, fds []int) {
		api.CloseFDs(fds)
		if r, ok := m.(*api.ConnectReply); ok {
			a.drop(r.Handle)
		}
	}
	r, fds, err := doLate[*api.ConnectReply](ctx, a, &api.Connect{URI: target, Opaque: opaque}, late)
	if err != nil {
		return fail(err)
	}
	remote := netip.AddrPortFrom(ep.Addr, ep.Port)
	var e *end
	var laddr net.Addr
	var local netip.AddrPort
	if r.CutThrough {
		if len(fds) != 2 {
			api.CloseFDs(fds)
			a.drop(r.Handle)
			return fail(fmt.Errorf("%w: cut-through reply without its descriptors: %w", ErrProtocol, errFDsLost))
		}
		e, err = newCTEnd(&r.SessionInfo, fds[0], fds[1])
		if err != nil {
			a.drop(r.Handle)
			return fail(err)
		}
		laddr = &CutThroughAddr{Session: r.Handle}
	} else {
		api.CloseFDs(fds)
		res := connectResult{h: r.Handle}
		if r.Rx.Size > 0 {
			res.rx, res.tx = r.Rx, r.Tx
		} else {
			// The connect goes on in the datapath: its Connected (or
			// ConnectFailed) event comes through the event queue.
			select {
			case res = <-ch:
			case <-ctx.Done():
				a.drop(r.Handle)
				return fail(ctx.Err())
			case <-a.done:
				return fail(a.Err())
			}
			if res.err != nil {
				return fail(fmt.Errorf("connect %s: %w", uri, res.err))
			}
		}
		rx, tx, ok, err := a.segFifos(res.rx, res.tx)
		if err == nil && !ok {
			err = fmt.Errorf("%w: session fifos in a segment this app does not have", ErrProtocol)
		}
		if err != nil {
			a.drop(res.h)
			return fail(err)
		}
		e = &end{h: res.h, rx: rx, tx: tx, signalFD: a.kick(res.h.Worker()), sleeping: a.sleepFlag(res.h.Worker()), datapath: true,
			dgram: ep.Transport == flow.TransportUDP, remote: remote}
		if ep.Transport == flow.TransportTCP && r.Local.Port == 0 {
			// The datapath chose the port as the connect went on.
			r.Local.Transport, r.Local.Port = flow.TransportTCP, res.localPort
		}
		if res.local.IsValid() {
			// The address the connection has (the reply may name only
			// the port, or an unspecified address).
			r.Local.Transport, r.Local.Addr, r.Local.Port = ep.Transport, res.local.Addr(), res.local.Port()
		}
		local = addrPortOf(r.Local)
		// A link-local LocalAddr names the link too, as the kernel's.
		laddr = zonedAddr(endpointAddr(r.Local), zone)
	}
	c := newConn(a, e, laddr, raddr, local, remote)
	if d := testhook.DialRegisterPause.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	a.sync(func() {
		if !a.register(e.h, c) {
			e.gone.Store(true)
		}
	})
	if !a.track(c) {
		c.Close()
		return fail(closedError("app closed"))
	}
	return c, nil
}

// peerError records an asynchronous error of the session and wakes its
// calls.
func (c *Conn) peerError(_ flow.Handle, errno syscall.Errno) {
	if errno == syscall.EMSGSIZE {
		c.pmtu.clear() // the path MTU shrank since it was asked
	}
	c.soErr.Store(uint32(errno))
	c.rd.poke()
	c.wr.poke()
}

// takeError returns and clears the pending asynchronous error.
func (c *Conn) takeError() error {
	if v := c.soErr.Swap(0); v != 0 {
		if syscall.Errno(v) == syscall.ECONNREFUSED && c.soCorrupt.Swap(false) {
			return errRefusedFifoCorrupt
		}
		return syscall.Errno(v)
	}
	return nil
}

// ctDgram reports whether e is a cut-through UDP session: one whose peer
// gone is as a kernel UDP socket's peer port closed (refusedLater), never
// an end of its reads.
func ctDgram(e *end) bool { return e.dgram && !e.datapath }

// refusedLater is what a datagram written to a cut-through peer that is
// gone does: nothing is sent, and the next Read or Write fails with
// ECONNREFUSED, as the port unreachable of a loopback peer whose socket
// closed makes a connected kernel UDP socket's next call fail. A Read
// waiting wakes with it.
func (c *Conn) refusedLater() {
	if c.soErr.CompareAndSwap(0, uint32(syscall.ECONNREFUSED)) {
		c.rd.poke()
		c.wr.poke()
	}
}

// halfClosed records a stream's peer FIN or reset (early* bits).
func (c *Conn) halfClosed(what uint8) {
	if what&earlyTimedOut != 0 {
		c.e.timedOut.Store(true)
	}
	if what&earlyFifoCorrupt != 0 {
		c.e.fifoCorrupt.Store(true)
	}
	if what&earlyBrokenPipe != 0 {
		c.e.brokenPipe.Store(true)
	}
	if what&earlyReset != 0 {
		c.e.reset.Store(true)
	}
	if what&earlyFIN != 0 {
		c.e.fin.Store(true)
		c.rd.poke()
	}
	if what&earlyResetAhead != 0 {
		c.e.resetAhead.Store(true)
		c.wr.poke()
	}
}

// resetCorrupt resets a cut-through stream session whose fifo (rx when
// rx is set, else tx) its peer, which shares the fifos' memory, left with
// corrupt indices, as the daemon resets a wire session for the same
// reason: the next Read or Write (the caller's, which looks again) fails
// with ECONNRESET because of flow.ErrFifoCorrupt, once, and the session is
// over for this end as after any reset; a corrupt rx is not read again.
// The daemon is told (Abort: the peer's reads end with ECONNRESET) so that
// it lets the session go; off the caller's goroutine, which holds rd.mu or
// wr.mu, so that no call waits for the round trip. If that request fails,
// Close ends the session. rd.mu or wr.mu is held.
//
// A UDP session has no reset: its next Read or Write fails with
// ECONNREFUSED because of flow.ErrFifoCorrupt, once, and the session is
// then as one whose peer is gone (refusedLater); the daemon is told with
// a Disconnect.
func (c *Conn) resetCorrupt(rx bool) {
	e := c.e
	if rx {
		e.broken.Store(true)
	}
	if e.fifoCorrupt.Swap(true) {
		return
	}
	if e.dgram {
		c.soCorrupt.Store(true)
		c.soErr.Store(uint32(syscall.ECONNREFUSED))
	} else {
		e.reset.Store(true)
	}
	e.gone.Store(true)
	c.rd.poke()
	c.wr.poke()
	go func() {
		c.hmu.Lock()
		defer c.hmu.Unlock()
		if c.let || c.a.stopped() != nil {
			return
		}
		var m api.Message = &api.Disconnect{Handle: e.h}
		if c.a.canAbort() && !e.dgram {
			m = &api.Abort{Handle: e.h}
		}
		if c.a.endSession(m) == nil {
			c.let = true
		}
	}()
}

func (c *Conn) peerClosed(flow.Handle) {
	c.e.gone.Store(true)
	c.rd.poke()
	c.wr.poke()
}

// LocalAddr returns this end's address: a *CutThroughAddr for a
// cut-through session this app dialed; for an accepted session, the
// address its peer reached (on the wire or cut-through), never a
// wildcard listener's unspecified one.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the peer's address: the dialled address, or a
// *CutThroughAddr for a session accepted from another app.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// Handle returns the session's handle.
func (c *Conn) Handle() flow.Handle { return c.e.h }

// SetDeadline sets the read and write deadlines. After Close it fails
// with an error wrapping net.ErrClosed, as the other setters do.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.deadlineClosed(); err != nil {
		return err
	}
	c.rd.dl.set(t)
	c.wr.dl.set(t)
	return nil
}

// SetReadDeadline sets the deadline of Read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.deadlineClosed(); err != nil {
		return err
	}
	c.rd.dl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline of Write.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.deadlineClosed(); err != nil {
		return err
	}
	c.wr.dl.set(t)
	return nil
}

// deadlineClosed is the error of a deadline setter on a closed Conn (nil
// while open): its *net.OpError names the local address alone, as a
// net.Conn's does.
func (c *Conn) deadlineClosed() error {
	if isClosed(c.done) {
		return addrError("set", c.laddr, net.ErrClosed)
	}
	return nil
}

// setClosed is the error of setter op on a closed Conn (nil while open),
// as a net.Conn's setters fail after Close. Op is what net.TCPConn's
// errors say: "set" for a setter, "close" for CloseWrite and CloseRead.
func (c *Conn) setClosed(op string) error {
	if isClosed(c.done) {
		return netError(op, c.laddr, c.raddr, net.ErrClosed)
	}
	return nil
}

// syscallError holds err, an errno or an error over one, in an
// *os.SyscallError naming call ("read", "write", "shutdown"; "recvfrom",
// "sendto" for a PacketConn's datagrams), as the net
// package holds what a system call of a kernel socket returned: a
// program finds it there (errors.As, or OpError.Err's type), and the
// text reads as the kernel socket's ("read: connection reset by peer").
// Other errors are returned as they are.
func syscallError(call string, err error) error {
	var errno syscall.Errno
	var se *os.SyscallError
	if err == nil || !errors.As(err, &errno) || errors.As(err, &se) {
		return err
	}
	return &os.SyscallError{Syscall: call, Err: err}
}

// errNotConnected is the error of CloseWrite and CloseRead of a TCP
// session that is over, as shutdown(2) of a kernel socket in CLOSE fails.
var errNotConnected = os.NewSyscallError("shutdown", syscall.ENOTCONN)

// ended reports whether a TCP session is over, as a kernel socket in
// CLOSE is: reset (by its peer, a timeout, the daemon; also while the
// data received before the reset is still on its way: resetAhead), or
// both of its halves closed and, on the wire, the session gone (the peer
// has the FIN; a cut-through peer has it at once, and its Close, which
// ends the session, is its FIN).
func (c *Conn) ended() bool {
	e := c.e
	if e.reset.Load() || e.resetAhead.Load() {
		return true
	}
	if !c.finSent.Load() {
		return false
	}
	if e.datapath {
		return e.fin.Load() && e.gone.Load()
	}
	return e.fin.Load() || e.gone.Load()
}

// peerGoneCT reports whether the peer of a cut-through session closed it
// (without a reset): this end is as a kernel socket in CLOSE_WAIT, whose
// CloseWrite succeeds, with nothing left to tell the daemon.
func (c *Conn) peerGoneCT() bool {
	return !c.e.datapath && c.e.gone.Load() && !c.e.reset.Load()
}

// Read reads one datagram (UDP: what does not fit in b is dropped) or the
// bytes queued (TCP). After the peer closed a TCP session and everything
// it sent was read, Read returns io.EOF. A UDP session never ends its
// reads so: once a cut-through peer is gone, reads wait, and a Write
// succeeds and makes the next Read or Write fail with ECONNREFUSED, as
// on a kernel UDP socket whose loopback peer's port closed.
func (c *Conn) Read(b []byte) (int, error) {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	e := c.e
	if len(b) == 0 {
		// A read of nothing returns at once, as Go's poller answers it
		// on a kernel socket: past the deadline, or after the peer's
		// FIN or reset, too; only a Close fails it. A datagram waiting
		// stays for the next read.
		if err := c.rd.check(c.a, c.done); err != nil && err != errTimeout {
			return 0, netError("read", c.laddr, c.raddr, err)
		}
		return 0, nil
	}
	for {
		if err := c.rd.check(c.a, c.done); err != nil {
			return 0, netError("read", c.laddr, c.raddr, err)
		}
		if err := c.takeError(); err != nil {
			return 0, netError("read", c.laddr, c.raddr, syscallError("read", err))
		}
		if e.dgram {
			if !e.broken.Load() {
				n, ok, err := e.readDgram(b, &c.rhdr)
				if err == fifo.ErrCorrupt && !e.datapath {
					c.resetCorrupt(true)
					continue // reported as the pending error it is
				}
				if err != nil {
					return 0, netError("read", c.laddr, c.raddr, err)
				}
				if ok {
					return n, nil
				}
			}
		} else if !e.broken.Load() {
			n, err := e.rx.Dequeue(b)
			if n > 0 {
				e.afterDequeue(n)
				return n, nil
			}
			if err == fifo.ErrCorrupt && !e.datapath {
				c.resetCorrupt(true)
				continue // reported as the reset it is
			}
			if err != nil && err != fifo.ErrEmpty {
				return 0, netError("read", c.laddr, c.raddr, err)
			}
		}
		// A cut-through UDP peer gone ends no read: it waits, as a
		// kernel UDP socket's, for a datagram, its deadline, or the
		// ECONNREFUSED of a write (refusedLater).
		if (e.gone.Load() || e.fin.Load()) && !e.readable() && !ctDgram(e) {
			if err := e.readEndErr(); err != nil && c.resetTold.CompareAndSwap(false, true) {
				return 0, netError("read", c.laddr, c.raddr, syscallError("read", err))
			}
			return 0, io.EOF
		}
		if c.rdClosed.Load() {
			return 0, io.EOF // CloseRead: nothing queued, and no waiting
		}
		if c.spinRead(e) {
			continue
		}
		var s sleeper
		if e.broken.Load() {
			// Its peer broke the rx fifo (a cut-through UDP session,
			// whose reads wait on): nothing in it is read again, and its
			// indices, which may say there is, must not wake this read at
			// each of the app's wake-ups.
			s = c.rd.armIdle(c.a)
		} else {
			s = c.rd.arm(c.a, e.rx, nil)
			e.rx.ClearEvent()
		}
		// An asynchronous error recorded after the look at the top of
		// the loop poked the broadcast channel this sleeper did not hold
		// yet: look at it once more now that it is armed.
		if e.readable() || c.readEnded(e) || c.soErr.Load() != 0 || c.rdClosed.Load() {
			c.rd.disarm(c.a, s)
			continue
		}
		c.a.reads.sleeps.Add(1)
		if err := c.rd.sleep(c.a, c.done, 0, s); err != nil {
			return 0, netError("read", c.laddr, c.raddr, err)
		}
	}
}

// readEnded reports whether the peer's end (gone, or a stream's FIN)
// ends a read with nothing to read: never for a cut-through UDP session.
func (c *Conn) readEnded(e *end) bool {
	return (e.gone.Load() || e.fin.Load()) && !ctDgram(e)
}

// spinRead yields the CPU while the read spin lasts (spin.go) and reports
// whether e has data, or the read must look again for another reason. A
// read of a TCP session over the datapath does not spin (spinsFor).
func (c *Conn) spinRead(e *end) bool {
	if !e.spinsFor() {
		return false
	}
	for sp := (spinner{}); sp.next(c.a); {
		if e.readable() || c.readEnded(e) || c.soErr.Load() != 0 || isClosed(c.done) {
			sp.hit(c.a)
			return true
		}
	}
	return false
}

// Write sends b: one datagram (UDP), or a byte stream (TCP), waiting for
// room while the fifo is full. With SetDontFragment, a datagram larger
// than the path MTU fails with an error wrapping syscall.EMSGSIZE.
func (c *Conn) Write(b []byte) (int, error) {
	e := c.e
	if e.dgram {
		// Closed, or past the write deadline, the write fails so before
		// its size is looked at, as a kernel socket's does.
		if err := c.wr.check(c.a, c.done); err != nil {
			return 0, netError("write", c.laddr, c.raddr, err)
		}
		// An errno (EMSGSIZE, the peer's ECONNREFUSED, EPIPE of a
		// cut-through peer gone) is held in an *os.SyscallError naming
		// "write", as the net package holds a connected kernel UDP
		// socket's; net.ErrClosed and deadlines are not.
		if err := checkDgramSize(len(b), c.remote); err != nil {
			return 0, netError("write", c.laddr, c.raddr, syscallError("write", err))
		}
		if err := c.takeError(); err != nil {
			return 0, netError("write", c.laddr, c.raddr, syscallError("write", err))
		}
		if e.datapath && c.df.Load() {
			if err := c.a.checkPath(&c.pmtu, e.h, c.remote.Addr(), len(b), &c.wr, c.done); err != nil {
				return 0, netError("write", c.laddr, c.raddr, syscallError("write", err))
			}
		}
		var hdr fifo.DgramHeader
		toHeader(&hdr, c.local, c.remote)
		if e.datapath && c.df.Load() {
			hdr.Flags = fifo.DgramFlagDontFragment
		}
		c.wr.mu.Lock()
		defer c.wr.mu.Unlock()
		err := writeDgram(c.a, &c.wr, c.done, e, &hdr, b)
		if err == fifo.ErrCorrupt && !e.datapath {
			// The peer broke the fifo: the session is let go, and this
			// write reports it, unless another call took the report.
			c.resetCorrupt(false)
			if err := c.takeError(); err != nil {
				return 0, netError("write", c.laddr, c.raddr, syscallError("write", err))
			}
			err = errPeerClosed
		}
		if err == errPeerClosed && !e.datapath {
			// The cut-through peer is gone: the datagram is lost as one
			// to a loopback port nobody has, which the next call hears of.
			c.refusedLater()
			return len(b), nil
		}
		if err != nil {
			return 0, netError("write", c.laddr, c.raddr, syscallError("write", err))
		}
		return len(b), nil
	}
	c.wseq.Lock()
	defer c.wseq.Unlock()
	c.wr.mu.Lock()
	defer c.wr.mu.Unlock()
	written := 0
	asked := false
	defer func() {
		if asked {
			c.wr.doneWaiting(e)
		}
	}()
	// Each pass looks, as a kernel socket's write does, for why the
	// write must stop before it queues more: a write of nothing, too,
	// fails so (past the deadline, after Close, CloseWrite or a reset).
	// A CloseWrite while the write waits for room ends it with what it
	// queued: nothing goes into the fifo after the FIN was asked for.
	for {
		if err := c.wr.check(c.a, c.done); err != nil {
			return written, netError("write", c.laddr, c.raddr, err)
		}
		// A reset not reported yet comes first, after CloseWrite too, as
		// a kernel socket's write reports its pending error (sk_err)
		// before the EPIPE of its shut down half; so does one whose data
		// received before it the reads have still to take (resetAhead),
		// as a kernel socket's writes fail once it has the error while
		// its reads return what was queued first.
		ahead := e.resetAhead.Load()
		if (e.gone.Load() && e.reset.Load() || ahead) && c.resetTold.CompareAndSwap(false, true) {
			return written, netError("write", c.laddr, c.raddr, syscallError("write", e.resetErr()))
		}
		if c.wrClosed.Load() {
			// EPIPE, as a write after shutdown(SHUT_WR) of a kernel
			// socket.
			return written, netError("write", c.laddr, c.raddr, syscallError("write", syscall.EPIPE))
		}
		if e.gone.Load() || ahead {
			// The peer closed the session, or its reset was reported.
			return written, netError("write", c.laddr, c.raddr, syscallError("write", syscall.EPIPE))
		}
		if len(b) == 0 {
			return 0, nil
		}
		n, err := e.tx.Enqueue(b[written:])
		if n > 0 {
			written += n
			e.afterEnqueue()
			if written == len(b) {
				return written, nil
			}
			continue
		}
		if err == fifo.ErrCorrupt && !e.datapath {
			c.resetCorrupt(false)
			continue // reported as the reset it is
		}
		if err != nil && err != fifo.ErrNoSpace {
			return written, netError("write", c.laddr, c.raddr, err)
		}
		s := c.wr.arm(c.a, nil, e.tx)
		if !asked {
			asked = true
			c.wr.waiting++
		}
		e.tx.WantDeqNotify(fifo.DeqNotifyAlways)
		if e.tx.MaxEnqueue() > 0 || e.gone.Load() || e.resetAhead.Load() {
			c.wr.disarm(c.a, s)
			continue
		}
		poll := time.Duration(0)
		if e.datapath {
			poll = datapathPoll
		}
		if err := c.wr.sleep(c.a, c.done, poll, s); err != nil {
			return written, netError("write", c.laddr, c.raddr, err)
		}
	}
}

// SetKeepAlive turns TCP keepalive of a session on the wire on or off, as
// net.TCPConn's does (the daemon's TCP sends the probes); the idle time,
// interval and count stay what they are. A connection starts with
// keepalive on, 15 s idle, 15 s between probes and 9 probes, as those of
// net.Dial and of a net.Listener's Accept do. A datagram or cut-through
// session fails with flow.ErrNotSupported.
func (c *Conn) SetKeepAlive(on bool) error {
	return c.setKeepalive(&on, net.KeepAliveConfig{Idle: -1, Interval: -1, Count: -1})
}

// SetKeepAlivePeriod sets the idle time before the first keepalive probe
// (0: 15 s; negative: unchanged), as net.TCPConn's does: keepalive stays
// on or off as it was. A datagram or cut-through session fails with
// flow.ErrNotSupported.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	return c.setKeepalive(nil, net.KeepAliveConfig{Idle: d, Interval: -1, Count: -1})
}

// SetKeepAliveConfig sets TCP keepalive of a session on the wire, as
// net.TCPConn's does: with Enable, a probe after Idle without traffic,
// then every Interval; Count unanswered probes end the session and its
// reads and writes fail with syscall.ETIMEDOUT. Zero fields take Go's
// defaults (15 s, 15 s, 9), negative ones keep the current values.
// Durations are rounded up to whole seconds, and an idle time or interval
// over 32767 s or a count over 127 fails with syscall.EINVAL (in an
// *os.SyscallError naming "setsockopt"), as a kernel socket's do. Once
// the connection is over (reset, timed out, both halves closed) but the
// Conn is not closed, it succeeds, as setsockopt(2) of a kernel socket in
// CLOSE does. A datagram or cut-through session fails with
// flow.ErrNotSupported.
func (c *Conn) SetKeepAliveConfig(k net.KeepAliveConfig) error {
	return c.setKeepalive(&k.Enable, k)
}

// setKeepalive turns keepalive on or off (enable nil: as it is) and sets
// k's idle time, interval and count.
func (c *Conn) setKeepalive(enable *bool, k net.KeepAliveConfig) error {
	if c.e.dgram || !c.e.datapath {
		if err := c.setClosed("set"); err != nil {
			return err
		}
		return netError("set", c.laddr, c.raddr, flow.ErrNotSupported)
	}
	// Looked at and sent with hmu held, which Close takes after it closed
	// done and before it lets the session go (hmu).
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if err := c.setClosed("set"); err != nil {
		return err
	}
	idle, ok1 := keepaliveSeconds(k.Idle, flow.KeepaliveIdle)
	interval, ok2 := keepaliveSeconds(k.Interval, flow.KeepaliveInterval)
	if !ok1 || !ok2 || k.Count > flow.KeepaliveMaxCount {
		// What setsockopt(2) of TCP_KEEPIDLE, TCP_KEEPINTVL or
		// TCP_KEEPCNT says of a value past Linux's bounds, as
		// net.TCPConn's setters report it; nothing is changed.
		return netError("set", c.laddr, c.raddr, os.NewSyscallError("setsockopt", syscall.EINVAL))
	}
	if c.e.gone.Load() || c.let {
		// The connection is over (reset, timed out, or both halves
		// closed) and the daemon has nothing left to set: a kernel
		// socket in CLOSE takes the options all the same.
		return nil
	}
	on := !c.keepaliveOff
	if enable != nil {
		on = *enable
	}
	m := &api.SetKeepalive{Handle: c.e.h, Enabled: on, Idle: idle, Interval: interval}
	switch {
	case k.Count == 0:
		m.Count = flow.KeepaliveCount
	case k.Count > 0:
		m.Count = uint32(k.Count)
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_, fds, err := c.a.call(ctx, m)
	api.CloseFDs(fds)
	if errorIsNoSession(err) {
		// The connection ended before the daemon had the call.
		return nil
	}
	if err != nil {
		return netError("set", c.laddr, c.raddr, err)
	}
	c.keepaliveOff = !on
	return nil
}

// keepaliveSeconds is a keepalive idle time or interval as a kernel
// socket takes it from net.TCPConn: def for zero, rounded up to whole
// seconds (which is all setsockopt(2) takes); 0 for negative (the current
// value stays). ok is false past Linux's bound.
func keepaliveSeconds(d, def time.Duration) (time.Duration, bool) {
	switch {
	case d < 0:
		return 0, true
	case d == 0:
		d = def
	}
	if d > flow.KeepaliveMaxSeconds*time.Second {
		return 0, false
	}
	return (d + time.Second - 1) / time.Second * time.Second, true
}

// CloseWrite closes the sending half of a TCP session, on the wire or
// cut-through: the peer reads io.EOF once it has what was written; reading
// goes on. Writes after it fail with an error wrapping syscall.EPIPE; a
// Write waiting for room returns so at once, with what it queued, which
// the peer reads before io.EOF, as on a kernel socket. As shutdown(2) of a
// kernel socket, it returns nil only once the FIN is on its way (a second
// call then returns nil too): one that fails (the daemon did not answer in
// time, or refused) leaves the writes refused, as the FIN may still go
// out, and the next CloseWrite asks again. A UDP session has no half to
// close: flow.ErrNotSupported. After Close it fails with an error
// wrapping net.ErrClosed, as net.TCPConn's does.
func (c *Conn) CloseWrite() error {
	if c.e.dgram {
		return netError("close", c.laddr, c.raddr, flow.ErrNotSupported)
	}
	c.wr.mu.Lock()
	if err := c.setClosed("close"); err != nil {
		c.wr.mu.Unlock()
		return err
	}
	if c.ended() {
		c.wr.mu.Unlock()
		return netError("close", c.laddr, c.raddr, errNotConnected)
	}
	if c.finSent.Load() {
		c.wr.mu.Unlock()
		return nil
	}
	if !c.wrClosed.Swap(true) {
		// A Write waiting for room (it sleeps without wr.mu) wakes, finds
		// wrClosed once this call lets wr.mu go, and ends with EPIPE;
		// nothing goes into the fifo after the FIN was asked for.
		c.wr.poke()
	}
	c.wr.mu.Unlock()
	if c.peerGoneCT() {
		c.finSent.Store(true)
		return nil
	}
	// Looked at and sent with hmu held, which Close takes after it closed
	// done and before it lets the session go (hmu).
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if err := c.setClosed("close"); err != nil {
		return err
	}
	if c.let {
		// The reset of a corrupt cut-through stream let it go.
		return netError("close", c.laddr, c.raddr, errNotConnected)
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_, fds, err := c.a.call(ctx, &api.CloseWrite{Handle: c.e.h})
	api.CloseFDs(fds)
	if errorIsNoSession(err) {
		// The session ended before the daemon had the call: a reset,
		// or the Close of a cut-through peer, whose event is queued
		// already.
		c.a.sync(func() {})
		err = errNotConnected
		if c.peerGoneCT() {
			err = nil
		}
	}
	if err != nil {
		return netError("close", c.laddr, c.raddr, err)
	}
	c.finSent.Store(true)
	return nil
}

// CloseRead closes the receiving half of a TCP session, as
// net.TCPConn's does on Linux (shutdown with SHUT_RD): a Read waiting
// returns io.EOF at once, and later reads return what is queued, then
// io.EOF where they would wait; what the peer sends still fills the
// receive fifo (and closes the window when it is full), and a Close with
// data left unread resets the connection. A UDP session has no half to
// close: flow.ErrNotSupported.
func (c *Conn) CloseRead() error {
	if c.e.dgram {
		return netError("close", c.laddr, c.raddr, flow.ErrNotSupported)
	}
	if err := c.setClosed("close"); err != nil {
		return err
	}
	if c.ended() {
		return netError("close", c.laddr, c.raddr, errNotConnected)
	}
	c.rdClosed.Store(true)
	c.rd.poke()
	return nil
}

// SetLinger sets what Close does with data the peer was not sent yet, as
// net.TCPConn's: sec < 0 (the default) sends it, then FIN, with Close
// returning at once; sec == 0 drops it and resets the connection (an RST
// on the wire; a cut-through peer's reads end with ECONNRESET once they
// have what was queued for them); sec > 0 is as sec < 0 (Close does not
// wait, as Go allows). A UDP session fails with flow.ErrNotSupported, as
// does SetLinger(0) with a daemon of protocol 2.0 (no Abort).
func (c *Conn) SetLinger(sec int) error {
	if err := c.setClosed("set"); err != nil {
		return err
	}
	if c.e.dgram || sec == 0 && !c.a.canAbort() {
		return netError("set", c.laddr, c.raddr, flow.ErrNotSupported)
	}
	c.abort.Store(sec == 0)
	return nil
}

// Close closes the session; the peer's reads of a TCP session then end
// with io.EOF once they have what was written, or with ECONNRESET after
// SetLinger(0), or when data this end left unread (or the peer sent after
// the Close) made Close reset the connection, as close(2) of a kernel
// socket does. A second Close fails with an error wrapping net.ErrClosed,
// as a net.Conn's does.
func (c *Conn) Close() error {
	var err error
	first := false
	c.once.Do(func() {
		first = true
		close(c.done)
		// A Read or Write under way meets done at its next look, before it
		// touches a fifo again, and one asleep wakes with net.ErrClosed.
		// Once both locks were taken, none touches the fifos any more (a
		// writer woken from now on leaves tx alone: end.closed), and none
		// waits for what follows, which may be a round trip to the daemon.
		c.rd.mu.Lock()
		c.wr.mu.Lock()
		c.e.closed = true
		c.wr.mu.Unlock()
		c.rd.mu.Unlock()
		c.a.waitTxTaken(c.e)
		var marked bool
		marked, err = c.letGo()
		if d := testhook.CloseMarkPause.Load(); marked && d > 0 {
			time.Sleep(time.Duration(d))
		}
		c.rd.mu.Lock()
		c.wr.mu.Lock()
		// A disconnect event sent before the session was closed is
		// handled while the session is still known.
		c.a.sync(func() {
			c.a.unregister(c.e.h, c)
			if marked && c.e.gone.Load() {
				// Reset or timed out while the mark was on its way:
				// the daemon did not take the mark.
				c.a.ackEnded(c.e.h)
			}
		})
		c.a.closeEnd(c.e)
		c.wr.mu.Unlock()
		c.rd.mu.Unlock()
		c.rd.dl.stop()
		c.wr.dl.stop()
		// Untracked last: the App's Close, which unmaps the fifos once
		// the objects it tracks are closed, waits for this Close (and so
		// for a Read or Write under way) rather than run beside it.
		c.a.untrack(c)
	})
	if !first {
		return netError("close", c.laddr, c.raddr, net.ErrClosed)
	}
	if err != nil {
		return netError("close", c.laddr, c.raddr, err)
	}
	return nil
}

// letGo ends the session in the daemon for Close, unless the reset of a
// corrupt stream did already, and reports whether it stored the close
// mark of a wire TCP session. done is closed, and no Read or Write
// touches the fifos any more.
func (c *Conn) letGo() (marked bool, err error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.let {
		return false, nil
	}
	c.let = true
	e := c.e
	wireTCP := e.datapath && !e.dgram
	switch {
	case c.a.stopped() != nil:
	case wireTCP && !c.abort.Load() && !e.gone.Load():
		// A wire TCP session closes through its tx fifo: the worker
		// that drains it sends what is queued, then FIN, and ends the
		// session (fifo.RequestClose), with no round trip on the
		// control socket. wr.mu serializes the fifo's producer.
		c.wr.mu.Lock()
		c.a.closeMarked(e.h)
		e.tx.RequestClose()
		e.afterEnqueue()
		c.wr.mu.Unlock()
		return true, nil
	case e.gone.Load() && !wireTCP && !e.fifoCorrupt.Load():
		// The peer closed it: the daemon has nothing left of it.
	case (c.abort.Load() || e.fifoCorrupt.Load() && c.a.canAbort()) && !e.dgram:
		// SetLinger(0), or a corrupt cut-through stream whose reset did
		// not reach the daemon: a reset, what is queued dropped (a wire
		// session the daemon ended is released as Disconnect releases
		// it).
		err = c.a.endSession(&api.Abort{Handle: e.h})
	default:
		// A wire TCP session the daemon ended (a reset, a timeout)
		// keeps its fifos until this Disconnect says they are no
		// longer used.
		err = c.a.endSession(&api.Disconnect{Handle: e.h})
	}
	return false, err
}
