package sessions

import (
	"errors"
	"fmt"
)

// Bind and unbind (seed: vnet_bind_i, vnet_unbind_i).

// Bind makes app listen on e (seed: vnet_bind_i). The endpoint must belong
// to the app's namespace (ErrNotInNamespace) and be free in the FIB's global
// table (ErrAddressInUse), and, for an app with global scope, in the host's
// own stack when the Datapath is a PortReserver. Port 0 picks a free
// ephemeral port (see bindPortLocked): a bind never makes an every-port
// entry, which only a proxy's attach does. An app with local scope binding the zero address
// also gets an entry in its namespace's local table, which must be free too;
// an app with local scope only can bind nothing else (ErrScope) and gets the
// local handle back. An app with global scope gets the global listener's
// handle; when the global listen fails, the local entry is removed again.
func (l *Layer) Bind(id AppID, e Endpoint) (Handle, error) {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	if err := validEndpoint(e); err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	e = a.endpointFor(e)
	if e.Transport == TransportTCP && e.Addr.Is6() && e.Addr.IsMulticast() {
		// As Linux's bind(2) of a TCP socket refuses an IPv6 multicast
		// address: EINVAL.
		return InvalidHandle, fmt.Errorf("bind %s: a TCP listener on an IPv6 multicast address: %w", e.URI(), ErrInvalidValue)
	}
	if !EndpointInNamespace(l.cfg.View, e) {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), ErrNotInNamespace)
	}
	if a.hasGlobal() {
		if err := l.portRoomLocked(a); err != nil {
			return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), err)
		}
	}
	e, reserved, err := l.bindPortLocked(a, e)
	if err != nil {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), err)
	}
	ok := false
	if reserved {
		defer func() {
			if !ok {
				l.releasePortLocked(e)
			}
		}()
	}
	k := keyOf(e)
	if l.listeners.Load().set(e.FIB).get(k) != nil {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), ErrAddressInUse)
	}
	if err := l.overlapsOtherOwnerLocked(a, e); err != nil {
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), err)
	}
	h := InvalidHandle
	haveLocal := false
	if a.hasLocal() && e.IsZero() {
		if a.ns.local[k] != nil {
			return InvalidHandle, fmt.Errorf("bind %s: local table: %w", e.URI(), ErrAddressInUse)
		}
		h = LocalListenerHandle(e.Transport, e.Family(), e.Port)
		ln := &Listener{Handle: h, App: a.id, Endpoint: e, Local: true}
		a.ns.local[k] = ln
		a.local[k] = ln
		haveLocal = true
	}
	if !a.hasGlobal() {
		if !haveLocal {
			return InvalidHandle, fmt.Errorf("bind %s: an app with local scope only can bind the zero address only: %w", e.URI(), ErrScope)
		}
		ok = true
		return h, nil
	}
	gh, err := l.startListenLocked(a, e, false)
	if err != nil {
		if haveLocal {
			delete(a.ns.local, k)
			delete(a.local, k)
		}
		return InvalidHandle, fmt.Errorf("bind %s: %w", e.URI(), err)
	}
	ok = true
	return gh, nil
}

// BindURI parses uri and binds it.
func (l *Layer) BindURI(id AppID, uri string) (Handle, error) {
	e, err := ParseURI(uri)
	if err != nil {
		return InvalidHandle, fmt.Errorf("bind: %w", err)
	}
	return l.Bind(id, e)
}

// startListenLocked adds a global listener, tells the datapath and the
// feed.
func (l *Layer) startListenLocked(a *app, e Endpoint, proxy bool) (Handle, error) {
	h := l.newHandleLocked(ListenerWorker)
	ln := &Listener{Handle: h, App: a.id, Namespace: a.ns.cfg.ID, Endpoint: e, Proxy: proxy}
	ln.Worker = h.Index() % uint32(len(l.shards))
	if l.wdp != nil {
		ln.Worker = l.wdp.ListenerWorker(*ln)
		if int(ln.Worker) >= len(l.shards) {
			l.freeHandleLocked(h)
			return InvalidHandle, fmt.Errorf("listen: datapath chose worker %d of %d: %w", ln.Worker, len(l.shards), ErrInvalidValue)
		}
	}
	if e.Transport == TransportUDP {
		pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
		if err != nil {
			l.freeHandleLocked(h)
			if errors.Is(err, ErrNoMemory) {
				return InvalidHandle, fmt.Errorf("listen: %w", err)
			}
			return InvalidHandle, fmt.Errorf("listen: %w: %w", ErrNoMemory, err)
		}
		if added != nil {
			l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
		}
		ln.Pair, ln.Memory = pair, a.mem
	}
	if l.cfg.Datapath != nil {
		if err := l.cfg.Datapath.Listen(*ln); err != nil {
			l.freeHandleLocked(h)
			if ln.Memory != nil {
				a.mem.FreePair(ln.Pair)
			}
			return InvalidHandle, err // the datapath's names the listen
		}
	}
	k := keyOf(e)
	l.listeners.Store(l.listeners.Load().with(e.FIB, k, ln, true))
	l.glisten[h] = ln
	a.global[h] = ln
	if !proxy {
		l.portsLocked(a, 1)
	}
	l.publishLocked(Change{Op: OpAdd, Kind: KindListener, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: listenTuple(e), Handle: h})
	return h, nil
}

func (l *Layer) stopListenLocked(a *app, ln *Listener) {
	e := ln.Endpoint
	l.listeners.Store(l.listeners.Load().with(e.FIB, keyOf(e), nil, false))
	delete(l.glisten, ln.Handle)
	delete(a.global, ln.Handle)
	if !ln.Proxy {
		l.portsLocked(a, -1)
	}
	l.freeHandleLocked(ln.Handle)
	// The change before the port goes back: a PortReserver hands the
	// port back to the kernel once the datapath applied it (no longer
	// steers the port), as it sees from Seq.
	l.publishLocked(Change{Op: OpDel, Kind: KindListener, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: listenTuple(e), Handle: ln.Handle})
	if l.cfg.Datapath != nil {
		l.cfg.Datapath.Unlisten(*ln)
		if !ln.Proxy {
			l.releasePortLocked(e)
		}
	}
	if ln.Memory != nil && !a.detaching {
		mem, pair := ln.Memory, ln.Pair
		l.reclaimLocked(func() { mem.FreePair(pair) })
	}
}

// ListenerPair returns the datagram fifo pair of app's global UDP listener
// h and the worker that owns it (drains its Tx fifo; its kick eventfd is
// the one to write). ErrAddressNotInUse when h names no global listener,
// ErrNotOwner when it is another app's, ErrNotSupported when the listener
// has no pair (not UDP).
func (l *Layer) ListenerPair(id AppID, h Handle) (FifoPair, uint32, error) {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: %w", err)
	}
	ln := l.glisten[h]
	if ln == nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: handle %#x: %w", uint64(h), ErrAddressNotInUse)
	}
	if ln.App != id {
		return FifoPair{}, 0, fmt.Errorf("listener pair: handle %#x: %w", uint64(h), ErrNotOwner)
	}
	if ln.Memory == nil {
		return FifoPair{}, 0, fmt.Errorf("listener pair: %s has no datagram fifos: %w", ln.Endpoint.URI(), ErrNotSupported)
	}
	return ln.Pair, ln.Worker, nil
}

// Unbind stops a listener of app (seed: vnet_unbind_i). With local scope,
// the local-table entry is found from the global listener the handle names
// or, for a local handle, from the endpoint the handle encodes; with global
// scope, the global listener is removed. A handle naming no listener fails
// with ErrAddressNotInUse, another app's listener with ErrNotOwner; nothing
// is removed then.
func (l *Layer) Unbind(id AppID, h Handle) error {
	l.lock()
	defer l.unlock()
	return l.unbindLocked(id, h)
}

// listensOnLocked reports whether h is a handle of one of a's listeners,
// global or local.
func (a *app) listensOnLocked(h Handle) bool {
	if h.IsLocal() {
		for _, ln := range a.local {
			if ln.Handle == h {
				return true
			}
		}
		return false
	}
	return a.global[h] != nil
}

func (l *Layer) unbindLocked(id AppID, h Handle) error {
	a, err := l.appLocked(id)
	if err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	var (
		localKey  listenKey
		haveLocal bool
		gl        *Listener
	)
	if !h.IsLocal() {
		gl = l.glisten[h]
		if gl == nil {
			if s := l.sess[h]; (s != nil && s.app == a) || a.ended[h] != nil {
				return fmt.Errorf("unbind: handle %#x is a session of this app, not a listener: disconnect it instead: %w", uint64(h), ErrAddressNotInUse)
			}
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrAddressNotInUse)
		}
		if gl.App != a.id {
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrNotOwner)
		}
		if gl.Proxy {
			return fmt.Errorf("unbind: handle %#x is a proxy's every-port listener (detach instead): %w", uint64(h), ErrInvalidValue)
		}
	}
	if a.hasLocal() {
		var sep Endpoint
		if gl != nil {
			sep = gl.Endpoint
		} else {
			sep, err = ParseLocalListenerHandle(h)
			if err != nil {
				return fmt.Errorf("unbind: %w", err)
			}
			sep = a.endpointFor(sep)
		}
		localKey = keyOf(sep)
		if ln := a.ns.local[localKey]; ln != nil {
			if ln.App != a.id {
				if gl == nil {
					return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrNotOwner)
				}
			} else {
				haveLocal = true
			}
		} else if gl == nil {
			return fmt.Errorf("unbind: handle %#x: %w", uint64(h), ErrAddressNotInUse)
		}
	} else if gl == nil {
		return fmt.Errorf("unbind: local handle %#x for an app without local scope: %w", uint64(h), ErrAddressNotInUse)
	}
	if haveLocal {
		delete(a.ns.local, localKey)
		delete(a.local, localKey)
	}
	if a.hasGlobal() && gl != nil {
		l.stopListenLocked(a, gl)
	}
	return nil
}

// UnbindURI unbinds app's listener on uri (seed: vnet_unbind_uri): the
// listener of the global table of the FIB of the app's namespace (the seed
// looked in the default namespace's table; later VPP, and this package,
// use the app's own). ErrAddressNotInUse when there is none. The lookup and
// the unbind happen under one hold of the lock, so no other call can
// replace the listener in between.
func (l *Layer) UnbindURI(id AppID, uri string) error {
	e, err := ParseURI(uri)
	if err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return fmt.Errorf("unbind: %w", err)
	}
	e = a.endpointFor(e)
	ln := l.listeners.Load().set(e.FIB).get(keyOf(e))
	if ln == nil {
		return fmt.Errorf("unbind %s: %w", e.URI(), ErrAddressNotInUse)
	}
	return l.unbindLocked(id, ln.Handle)
}
