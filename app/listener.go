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

// maxAcceptQueue bounds the sessions waiting for Accept; more are refused
// (disconnected). The daemon bounds a listener's backlog and an app's
// connections well below it: refusing here would close connections whose
// handshake completed and whose peer already sends, which a kernel
// listener never does (its full accept queue drops SYNs instead).
const maxAcceptQueue = 1 << 16

// Listener accepts sessions opened to a bound endpoint: cut-through
// sessions from other apps of the host (and, for transports the datapath
// accepts, sessions from the wire). It implements net.Listener.
type Listener struct {
	a    *App
	h    flow.Handle
	ep   flow.Endpoint
	addr net.Addr

	mu      sync.Mutex // guards closing and queue
	closing bool
	queue   []*Conn       // accepted sessions waiting for Accept, oldest first
	ready   chan struct{} // capacity 1: queue may have become non-empty
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
	if err := a.enter(); err != nil {
		return nil, opError("listen", uri, err)
	}
	defer a.leave()
	r, err := a.bind(uri)
	if err != nil {
		return nil, err
	}
	if ep.Port == 0 {
		ep.Port = r.Local.Port // the port the daemon picked
	}
	l := &Listener{a: a, h: r.Handle, ep: ep, addr: endpointAddr(ep), ready: make(chan struct{}, 1), done: make(chan struct{})}
	a.addAcceptor(r.Handle, ep, l)
	if !a.track(l) {
		l.Close()
		return nil, opError("listen", uri, closedError("app closed"))
	}
	return l, nil
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
	if len(l.queue) >= maxAcceptQueue {
		return false
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

// Accept waits for the next session.
func (l *Listener) Accept() (net.Conn, error) {
	if err := l.a.enter(); err != nil {
		return nil, netError("accept", l.addr, nil, err)
	}
	defer l.a.leave()
	for {
		select {
		case <-l.done:
			return nil, netError("accept", l.addr, nil, net.ErrClosed)
		case <-l.a.done:
			return nil, netError("accept", l.addr, nil, l.a.Err())
		default:
		}
		if c := l.next(); c != nil {
			if !l.a.track(c) {
				c.Close()
				return nil, netError("accept", l.addr, nil, closedError("app closed"))
			}
			return c, nil
		}
		select {
		case <-l.ready:
		case <-l.done:
		case <-l.a.done:
		}
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
		waiting := l.queue
		l.queue = nil
		l.mu.Unlock()
		close(l.done)
		l.a.untrack(l)
		l.a.delAcceptor(l.h, l.ep, l)
		if l.a.stopped() == nil {
			err = l.a.unbind(l.h)
		}
		for _, c := range waiting {
			c.Close()
		}
	})
	if err != nil {
		return netError("close", l.addr, nil, err)
	}
	return nil
}

func errorIsNoSession(err error) bool { return errors.Is(err, flow.ErrNoSession) }
