package app

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// acceptBacklog is how many accepted sessions wait for Accept; more are
// refused (disconnected).
const acceptBacklog = 256

// Listener accepts sessions opened to a bound endpoint: cut-through
// sessions from other apps of the host (and, for transports the datapath
// accepts, sessions from the wire). It implements net.Listener.
type Listener struct {
	a    *App
	h    flow.Handle
	ep   flow.Endpoint
	addr net.Addr
	q    chan *Conn

	mu      sync.Mutex // guards closing
	closing bool
	done    chan struct{}
	once    sync.Once
}

// Listen binds uri (udp://ADDR:PORT or tcp://ADDR:PORT) and returns a
// net.Listener, which is a *Listener.
func (a *App) Listen(uri string) (net.Listener, error) {
	ep, err := flow.ParseURI(uri)
	if err != nil {
		return nil, opError("listen", uri, err)
	}
	r, err := a.bind(uri)
	if err != nil {
		return nil, err
	}
	if ep.Port == 0 {
		ep.Port = r.Local.Port // the port the daemon picked
	}
	l := &Listener{a: a, h: r.Handle, ep: ep, addr: endpointAddr(ep), q: make(chan *Conn, acceptBacklog), done: make(chan struct{})}
	a.addAcceptor(r.Handle, ep, l)
	a.track(l)
	return l, nil
}

// bind binds uri for Listen and ListenPacket and returns the daemon's
// reply; errors are opError's for "listen".
func (a *App) bind(uri string) (*api.BindReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	r, fds, err := do[*api.BindReply](ctx, a, &api.Bind{URI: uri})
	api.CloseFDs(fds)
	if err != nil {
		return nil, opError("listen", uri, err)
	}
	return r, nil
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
		raddr = endpointAddr(info.Remote)
		remote = netip.AddrPortFrom(info.Remote.Addr, info.Remote.Port)
	}
	laddr, local := l.addr, netip.AddrPort{}
	if !info.CutThrough && info.Local.Addr.IsValid() {
		// The address the peer reached (a wildcard listener's is
		// unspecified).
		laddr = endpointAddr(info.Local)
		local = netip.AddrPortFrom(info.Local.Addr, info.Local.Port)
	}
	c := newConn(l.a, e, laddr, raddr, local, remote)
	c.ln = l
	select {
	case l.q <- c:
	default:
		return false
	}
	if !l.a.register(e.h, c) {
		e.gone.Store(true)
	}
	return true
}

// Accept waits for the next session.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.q:
		l.a.track(c)
		return c, nil
	case <-l.done:
		return nil, netError("accept", l.addr, nil, net.ErrClosed)
	case <-l.a.done:
		return nil, netError("accept", l.addr, nil, l.a.Err())
	}
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.addr }

// Handle returns the listener's handle.
func (l *Listener) Handle() flow.Handle { return l.h }

// Close unbinds; sessions already accepted stay open, those not accepted
// yet are closed.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		close(l.done)
		l.a.untrack(l)
		l.a.delAcceptor(l.h, l.ep, l)
		if l.a.stopped() == nil {
			err = l.a.unbind(l.h)
		}
		for {
			select {
			case c := <-l.q:
				c.Close()
				continue
			default:
			}
			break
		}
	})
	if err != nil {
		return netError("close", l.addr, nil, err)
	}
	return nil
}

func errorIsNoSession(err error) bool { return errors.Is(err, flow.ErrNoSession) }
