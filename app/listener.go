package app

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
)

// maxAcceptQueue bounds the sessions waiting for Accept; more are refused
// (disconnected). The daemon holds a listener back once its backlog of
// sessions waits here untaken (Accept marks what it takes: fifo/ABI.md;
// this library says protocol 2.2 or later, which promises it), as a kernel
// listener's full accept queue drops SYNs. Refusing here closes
// connections whose handshake completed and whose peer may already send.
const maxAcceptQueue = 1 << 16

// Listener accepts sessions opened to a bound endpoint: cut-through
// sessions from other apps of the host (and, for transports the datapath
// accepts, sessions from the wire). It implements net.Listener.
type Listener struct {
	a      *App
	binds  []bound // one per family: two for a listener of both families
	addr   net.Addr
	llZone string // the zone of link-local addresses (linkZone)

	mu      sync.Mutex // guards closing and queue
	closing bool
	queue   []*Conn       // accepted sessions waiting for Accept, oldest first
	ready   chan struct{} // capacity 1: queue may have become non-empty
	done    chan struct{}
	once    sync.Once
	dl      *deadline // SetDeadline's, for Accept
}

// Listen binds uri (udp://ADDR:PORT or tcp://ADDR:PORT) and returns a
// net.Listener, which is a *Listener. A UDP Listener accepts the
// cut-through sessions of other apps of the host only: datagrams from the
// wire are read with ListenPacket (Go's net.Listen refuses udp; UDP
// servers use net.ListenPacket). A URI with no address
// (tcp://:PORT) listens on both families, as net.Listen("tcp", ":PORT")
// does: it binds 0.0.0.0 and [::] on one port, and its Addr is [::]:PORT.
// A host name (tcp://localhost:PORT) is resolved and one of its addresses
// bound, the first IPv4 one if it has one, as net.Listen does.
func (a *App) Listen(uri string) (net.Listener, error) {
	l, err := a.listen(uri)
	if err != nil {
		return nil, bindSyscallError(listenError(uri, err))
	}
	return l, nil
}

func (a *App) listen(uri string) (*Listener, error) {
	uris, eps, zone, err := listenURIs(uri)
	if err != nil {
		return nil, err
	}
	if err := a.enter(); err != nil {
		return nil, opError("listen", uri, err)
	}
	defer a.leave()
	a.beginBind()
	defer a.endBind() // after the acceptors are registered: the accepts that came meanwhile
	binds, err := a.bindAll(uris, eps)
	if err != nil {
		return nil, err
	}
	if d := testhook.ListenRegisterPause.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	l := &Listener{a: a, binds: binds, addr: zonedAddr(endpointAddr(lastBind(binds).ep), zone), llZone: linkZone(zone, lastBind(binds)),
		ready: make(chan struct{}, 1), done: make(chan struct{}), dl: newDeadline()}
	for _, b := range binds {
		a.addAcceptor(b.h, b.ep, l)
	}
	if !a.track(l) {
		l.Close()
		return nil, opError("listen", uri, closedError("app closed"))
	}
	return l, nil
}

// bound is one bind of a listener: its handle and endpoint (the port the
// daemon picked filled in), and the daemon's reply.
type bound struct {
	h  flow.Handle
	ep flow.Endpoint
	r  *api.BindReply
}

func (b bound) handle() flow.Handle { return b.h }

// handles returns the handles of a listener's binds.
func handles[B interface{ handle() flow.Handle }](binds []B) []flow.Handle {
	hs := make([]flow.Handle, len(binds))
	for i, b := range binds {
		hs[i] = b.handle()
	}
	return hs
}

// bothFamilies returns the URIs a listen URI binds: the URI itself, or,
// for one with no address (tcp://:PORT, udp://:PORT), the IPv4 and the
// IPv6 wildcard on that port; both reports the latter.
func bothFamilies(uri string) (uris []string, both bool) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || len(rest) < 2 || rest[0] != ':' {
		return []string{uri}, false
	}
	return []string{scheme + "://0.0.0.0" + rest, scheme + "://[::]" + rest}, true
}

// listenURIs parses a listen URI into the URIs it binds (bothFamilies, or
// a host name's address) and their endpoints, and returns the zone of its
// address when that address needs one (scopedZone: the zone of another
// address is dropped, as bind(2) ignores it); errors are opError's for
// "listen".
func listenURIs(uri string) (uris []string, eps []flow.Endpoint, zone string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	named, err := servicePort(ctx, uri)
	if err != nil {
		return nil, nil, "", opError("listen", uri, err)
	}
	named, zone = scopedZone(named)
	uris, _ = bothFamilies(named)
	eps = make([]flow.Endpoint, len(uris))
	for i, u := range uris {
		plain, _ := flow.SplitZone(u) // the zone goes to the daemon with u
		if eps[i], err = flow.ParseURI(plain); err == nil {
			continue
		}
		if perr := portError(uri); perr != nil {
			// A port out of range, as net.Listen says it before it
			// looks at the host: a *net.AddrError, under the URI's
			// error.
			return nil, nil, "", opError("listen", uri, &withCause{err: err, cause: perr})
		}
		t, name, port, ok := flow.URIName(u)
		if !ok {
			return nil, nil, "", opError("listen", uri, err)
		}
		// A host name (tcp://localhost:8080) listens on one of its
		// addresses, the first IPv4 one if it has one, as net.Listen
		// does.
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		if err == nil && len(addrs) == 0 {
			err = &net.DNSError{Err: "no address", Name: name, IsNotFound: true}
		}
		if err != nil {
			return nil, nil, "", opError("listen", uri, err)
		}
		pick := addrs[0]
		for _, a := range addrs {
			if a.Unmap().Is4() {
				pick = a
				break
			}
		}
		eps[i] = flow.Endpoint{Transport: t, Addr: pick.Unmap(), Port: port}
		uris[i] = eps[i].URI()
	}
	return uris, eps, zone, nil
}

// lastBind is the bind whose endpoint names a listener: its only one, or
// the IPv6 one of a listener of both families ([::]:PORT, as Go names
// such a listener).
func lastBind(binds []bound) bound { return binds[len(binds)-1] }

// bindAttempts is how many ports a listener of both families with port 0
// tries when the port its IPv4 bind got is taken in IPv6.
const bindAttempts = 8

// bindAll binds uris (parsed as eps) and returns them bound; when one
// fails, those bound before it are unbound. With more than one URI and
// port 0, every bind after the first takes the port the first got; a port
// taken in a later family is held until the call returns, so that the
// next try gets another. Errors are opError's for "listen".
func (a *App) bindAll(uris []string, eps []flow.Endpoint) ([]bound, error) {
	var held []bound
	defer func() {
		for _, b := range held {
			a.unbind(b.h)
		}
	}()
	for attempt := 1; ; attempt++ {
		binds := make([]bound, 0, len(uris))
		var err error
		for i, u := range uris {
			ep := eps[i]
			if i > 0 && ep.Port == 0 {
				ep.Port = binds[0].ep.Port
				u = ep.URI()
			}
			var r *api.BindReply
			if r, err = a.bind(u); err != nil {
				break
			}
			if ep.Port == 0 {
				ep.Port = r.Local.Port // the port the daemon picked
			}
			binds = append(binds, bound{h: r.Handle, ep: ep, r: r})
		}
		if err == nil {
			return binds, nil
		}
		if len(binds) > 0 && eps[0].Port == 0 && attempt < bindAttempts && errors.Is(err, syscall.EADDRINUSE) {
			held = append(held, binds[0])
			binds = binds[1:]
			err = nil
		}
		for _, b := range binds {
			a.unbind(b.h)
		}
		if err != nil {
			return nil, err
		}
	}
}

// bind binds uri for Listen and ListenPacket and returns the daemon's
// reply; errors are opError's for "listen".
func (a *App) bind(uri string) (*api.BindReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	// A reply after the timeout names a listener nobody uses: unbind it.
	late := func(m api.Message, fds []int) {
		api.CloseFDs(fds)
		if r, ok := m.(*api.BindReply); ok {
			go a.unbind(r.Handle)
		}
	}
	r, fds, err := doLate[*api.BindReply](ctx, a, &api.Bind{URI: uri}, late)
	api.CloseFDs(fds)
	if err != nil {
		return nil, opError("listen", uri, bindErrno(uri, err))
	}
	return r, nil
}

// bindErrno adds to the daemon's refusal of a bind the errno a kernel
// socket's bind(2) fails with for the same reason: EADDRNOTAVAIL for an
// address that is not the namespace's, EINVAL for an address no socket
// of the transport can bind (a TCP listener on an IPv6 multicast
// address), EACCES for a port below 1024 without CAP_NET_BIND_SERVICE.
// (EADDRINUSE for a port in use opError adds.) An IPv6 link-local address
// of uri that names no link (no zone) and is not the namespace's is
// EINVAL, as bind(2) refuses such an address without a scope id before it
// looks whether it is the host's; the namespace's own is bound without a
// zone, on the namespace's link. Other errors are returned as they are.
func bindErrno(uri string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return err
	}
	switch {
	case errors.Is(err, flow.ErrNotInNamespace) && unzonedLinkLocal(uri):
		return &withCause{err: err, cause: syscall.EINVAL}
	case errors.Is(err, flow.ErrNotInNamespace):
		return &withCause{err: err, cause: syscall.EADDRNOTAVAIL}
	case errors.Is(err, flow.ErrInvalidValue):
		return &withCause{err: err, cause: syscall.EINVAL}
	case errors.Is(err, flow.ErrPermission):
		return &withCause{err: err, cause: syscall.EACCES}
	}
	return err
}

// unzonedLinkLocal reports whether uri names an IPv6 link-local unicast
// address without a zone, which a kernel socket binds or connects only
// with a scope id naming its link (bind(2) and connect(2) fail with
// EINVAL without one).
func unzonedLinkLocal(uri string) bool {
	plain, zone := flow.SplitZone(uri)
	if zone != "" {
		return false
	}
	ep, err := flow.ParseURI(plain)
	return err == nil && ep.Addr.Is6() && !ep.Addr.Is4In6() && ep.Addr.IsLinkLocalUnicast()
}

// withCause is err, whose text it has, and cause, which errors.Is and
// errors.As find under it too: the errno or *net.AddrError a kernel
// socket's call gives for what err says.
type withCause struct{ err, cause error }

func (e *withCause) Error() string   { return e.err.Error() }
func (e *withCause) Unwrap() []error { return []error{e.err, e.cause} }

// bindSyscallError holds the errno of a failed Listen or ListenPacket's
// *net.OpError in an *os.SyscallError naming "bind", as net.Listen holds
// what bind(2) returned (inSyscallError).
func bindSyscallError(err error) error { return inSyscallError(err, "bind", nil) }

// inSyscallError holds the errno of err, a failed call's *net.OpError, in
// an *os.SyscallError naming call, as the net package holds what the
// system call returned: OpError.Err is the *os.SyscallError, and the
// library's error is under it; edit, if not nil, amends the OpError first.
// Errors with no errno, with an *os.SyscallError already, of a closed App
// or of a context are returned as they are.
func inSyscallError(err error, call string, edit func(*net.OpError)) error {
	oe, ok := err.(*net.OpError)
	if !ok || oe.Err == nil {
		return err
	}
	var errno syscall.Errno
	var se *os.SyscallError
	if !errors.As(oe.Err, &errno) || errors.As(oe.Err, &se) || errors.Is(oe.Err, net.ErrClosed) ||
		errors.Is(oe.Err, context.Canceled) || errors.Is(oe.Err, context.DeadlineExceeded) {
		return err
	}
	if edit != nil {
		edit(oe)
	}
	oe.Err = &os.SyscallError{Syscall: call, Err: oe.Err}
	return oe
}

// portError is the error net.Listen gives the port of a URI whose port is
// a number out of 0-65535 (a negative one too): a *net.AddrError "invalid
// port" naming the port as written. It is nil for any other port, valid
// or not a number (the URI parser says what is wrong with those).
func portError(uri string) error {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil
	}
	_, port, err := net.SplitHostPort(rest)
	if err != nil {
		return nil
	}
	n, err := strconv.Atoi(port)
	if (err == nil && n >= 0 && n <= 65535) || (err != nil && !errors.Is(err, strconv.ErrRange)) {
		return nil
	}
	return &net.AddrError{Err: "invalid port", Addr: port}
}

// accept queues a session for Accept.
func (l *Listener) accept(e *end, info *api.SessionInfo) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	var raddr net.Addr = &CutThroughAddr{Session: e.h}
	var remote netip.AddrPort
	if !info.CutThrough && info.Remote.Addr.IsValid() {
		// A link-local peer's address names the link, as a kernel
		// listener's connection has it (fe80::1%eth0).
		raddr = zonedAddr(endpointAddr(info.Remote), l.llZone)
		remote = netip.AddrPortFrom(info.Remote.Addr, info.Remote.Port)
	}
	if len(l.queue) >= maxAcceptQueue {
		return false
	}
	laddr, local := l.addr, netip.AddrPort{}
	if info.Local.Addr.IsValid() {
		// The address the peer reached, on the wire or cut-through (a
		// wildcard listener's is unspecified), as a kernel listener's
		// connection has it.
		laddr = zonedAddr(endpointAddr(info.Local), l.llZone)
		if !info.CutThrough {
			local = netip.AddrPortFrom(info.Local.Addr, info.Local.Port)
		}
	}
	if len(l.binds) > 1 {
		// A listener of both families names IPv4 peers as the kernel's
		// dual-stack socket does.
		laddr, raddr = mapped4(laddr), mapped4(raddr)
	}
	c := newConn(l.a, e, laddr, raddr, local, remote)
	c.ln = l
	l.queue = append(l.queue, c)
	select {
	case l.ready <- struct{}{}:
	default:
	}
	if !l.a.register(e.h, c) {
		e.gone.Store(true)
	}
	return true
}

// next takes the oldest session waiting for Accept, nil when none.
func (l *Listener) next() *Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return nil
	}
	c := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	if len(l.queue) == 0 {
		l.queue = nil // let the backing array go
	} else {
		// Others wait: the next Accept must not sleep on ready.
		select {
		case l.ready <- struct{}{}:
		default:
		}
	}
	return c
}

// Accept waits for the next session. Once the listener is closed, by its
// Close or by the App's, it fails as a closed net.TCPListener's does:
// "accept tcp ADDR: use of closed network connection", net.ErrClosed
// itself under the *net.OpError. An App that stopped without Close (the
// daemon gone) fails it with the App's error, which wraps net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	if err := l.a.enter(); err != nil {
		// The App's Close began: it closes every listener, this one too.
		return nil, addrError("accept", l.addr, net.ErrClosed)
	}
	defer l.a.leave()
	for {
		// The listener's own close first: the App's Close closes its
		// listeners before it stops the App.
		if isClosed(l.done) {
			return nil, addrError("accept", l.addr, net.ErrClosed)
		}
		select {
		case <-l.a.done:
			return nil, addrError("accept", l.addr, l.a.Err())
		default:
		}
		// Past the deadline Accept fails even with a session waiting,
		// as a net.TCPListener's does.
		passed := l.dl.wait()
		if isClosed(passed) {
			return nil, addrError("accept", l.addr, errTimeout)
		}
		if c := l.next(); c != nil {
			if !l.a.track(c) {
				c.Close()
				return nil, addrError("accept", l.addr, closedError("app closed"))
			}
			if c.e.datapath && !c.e.dgram {
				// Out of the listener's backlog (fifo/ABI.md).
				c.e.tx.MarkTaken()
			}
			return c, nil
		}
		select {
		case <-l.ready:
		case <-l.done:
		case <-l.a.done:
		case <-passed:
		}
	}
}

// SetDeadline sets the deadline of Accept, as net.TCPListener's does: past
// it, Accept (a waiting one too) fails with an error wrapping
// os.ErrDeadlineExceeded, whose Timeout reports true; the zero time means
// none. After Close it returns net.ErrClosed itself, as a closed
// net.TCPListener's does (no *net.OpError around it, unlike a Conn's
// setters).
func (l *Listener) SetDeadline(t time.Time) error {
	if isClosed(l.done) {
		return net.ErrClosed
	}
	l.dl.set(t)
	return nil
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Handle returns the listener's handle; for a listener of both families,
// its IPv4 bind's (Handles has both).
func (l *Listener) Handle() flow.Handle { return l.binds[0].h }

// Handles returns the handles of the listener's binds: one, or for a
// listener of both families, its IPv4 bind's and its IPv6 bind's.
func (l *Listener) Handles() []flow.Handle { return handles(l.binds) }

// Close unbinds; sessions already accepted stay open, those not accepted
// yet are reset (their peers read ECONNRESET), as closing a kernel
// listener resets the connections in its accept queue. A second Close
// fails with an error wrapping net.ErrClosed, as a net.Listener's does.
func (l *Listener) Close() error {
	var err error
	first := false
	l.once.Do(func() {
		first = true
		l.mu.Lock()
		l.closing = true
		waiting := l.queue
		l.queue = nil
		l.mu.Unlock()
		close(l.done)
		l.a.untrack(l)
		l.a.delAcceptor(l)
		if l.a.stopped() == nil {
			for _, b := range l.binds {
				err = errors.Join(err, l.a.unbind(b.h))
			}
		}
		// Connections never accepted are reset, as a kernel listener's
		// close resets those in its accept queue.
		for _, c := range waiting {
			_ = c.SetLinger(0)
			c.Close()
		}
		l.dl.stop()
	})
	if !first {
		return addrError("close", l.addr, net.ErrClosed)
	}
	if err != nil {
		return addrError("close", l.addr, err)
	}
	return nil
}

func errorIsNoSession(err error) bool { return errors.Is(err, flow.ErrNoSession) }
