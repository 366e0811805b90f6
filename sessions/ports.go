package sessions

import (
	"fmt"
	"net/netip"
)

// PortReserver is a Datapath that holds the ports of global listeners in
// the host's own stack (the daemon's engine binds a kernel socket to each),
// so that nothing else on the host takes a port the layer hands out and a
// port something else holds is refused. The layer calls it under its
// control-plane lock, before a global listener is published and after it
// is removed; it must not block or call back into the Layer, but for Seq,
// which takes no lock.
type PortReserver interface {
	// ReservePort holds e's port; port 0 asks for an ephemeral one. It
	// returns the port it holds, or 0 when it holds none for e (a
	// transport it does not serve; the layer then picks a port itself). A
	// port already taken fails with an error wrapping ErrAddressInUse.
	ReservePort(e Endpoint) (uint16, error)
	// ReleasePort gives back what ReservePort holds for e (its port
	// filled in). A port it does not hold is ignored. The layer calls it
	// after publishing the change that stops steering e, when it had
	// published one (Seq counts it), so that a reserver that steers may
	// hand the port back only once it applied every change up to Seq.
	ReleasePort(e Endpoint)
}

// Default range Bind picks ports from when no PortReserver does
// (Config.EphemeralPorts): Linux's default ip_local_port_range.
const (
	DefaultEphemeralLow  = 32768
	DefaultEphemeralHigh = 60999
)

// bindPortLocked settles e's port for a bind by app a: a PortReserver
// (for an app with global scope) holds the port in the host's stack, or
// picks one for port 0; otherwise port 0 is picked from the ephemeral
// range among the ports no listener of e's transport and family uses. It
// returns e with its port and whether the PortReserver holds it (the
// caller releases it when the bind fails). It never returns port 0: a
// bind of port 0 must not make an every-port entry.
func (l *Layer) bindPortLocked(a *app, e Endpoint) (Endpoint, bool, error) {
	if r, ok := l.cfg.Datapath.(PortReserver); ok && a.hasGlobal() {
		p, err := r.ReservePort(e)
		if err != nil {
			return e, false, err
		}
		if p != 0 {
			if e.Port != 0 && p != e.Port {
				r.ReleasePort(Endpoint{Transport: e.Transport, Addr: e.Addr, Port: p, IfIndex: e.IfIndex, FIB: e.FIB})
				return e, false, fmt.Errorf("datapath reserved port %d for %d: %w", p, e.Port, ErrInvalidValue)
			}
			e.Port = p
			return e, true, nil
		}
	}
	if e.Port != 0 {
		return e, false, nil
	}
	lo, hi := l.cfg.EphemeralPorts[0], l.cfg.EphemeralPorts[1]
	if lo == 0 || hi < lo {
		lo, hi = DefaultEphemeralLow, DefaultEphemeralHigh
	}
	n := uint32(hi-lo) + 1
	set := l.listeners.Load().set(e.FIB)
	wild := e
	wild.Addr = zeroAddr(e.Family())
	for i := range n {
		p := lo + uint16((l.nextPort+i)%n)
		e.Port, wild.Port = p, p
		if set.get(keyOf(e)) != nil || set.get(keyOf(wild)) != nil {
			continue
		}
		if a.hasLocal() && (a.ns.local[keyOf(e)] != nil || a.ns.local[keyOf(wild)] != nil) {
			continue
		}
		l.nextPort = (l.nextPort + i + 1) % n
		return e, false, nil
	}
	e.Port = 0
	return e, false, fmt.Errorf("no free port in %d-%d: %w", lo, hi, ErrAddressInUse)
}

// releasePortLocked gives back the port a PortReserver holds for e.
func (l *Layer) releasePortLocked(e Endpoint) {
	if r, ok := l.cfg.Datapath.(PortReserver); ok {
		r.ReleasePort(e)
	}
}

// zeroAddr is the unspecified address of family fam.
func zeroAddr(fam uint8) netip.Addr {
	if fam == Family6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// BoundEndpoint returns the endpoint app id's listener h is bound to (its
// port as Bind chose it), global or local.
func (l *Layer) BoundEndpoint(id AppID, h Handle) (Endpoint, error) {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return Endpoint{}, fmt.Errorf("bound endpoint: %w", err)
	}
	if h.IsLocal() {
		e, err := ParseLocalListenerHandle(h)
		if err != nil {
			return Endpoint{}, fmt.Errorf("bound endpoint: %w", err)
		}
		return a.endpointFor(e), nil
	}
	ln := l.glisten[h]
	if ln == nil || ln.App != id {
		return Endpoint{}, fmt.Errorf("bound endpoint: handle %#x: %w", uint64(h), ErrAddressNotInUse)
	}
	return ln.Endpoint, nil
}

// WireEndpoint returns the local endpoint, with its interface and FIB,
// from which app id's listener or session h sends to the wire: a global
// listener's bound endpoint, or a datapath session's local end. An
// unknown handle fails with ErrNoSession, another app's with ErrNotOwner,
// and a handle that sends nothing to the wire (a local listener, a
// cut-through session) with ErrNotSupported.
func (l *Layer) WireEndpoint(id AppID, h Handle) (Endpoint, error) {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return Endpoint{}, fmt.Errorf("wire endpoint: %w", err)
	}
	if h.IsLocal() {
		return Endpoint{}, fmt.Errorf("wire endpoint: local listener %#x: %w", uint64(h), ErrNotSupported)
	}
	if ln := l.glisten[h]; ln != nil {
		if ln.App != id {
			return Endpoint{}, fmt.Errorf("wire endpoint: listener %#x: %w", uint64(h), ErrNotOwner)
		}
		return ln.Endpoint, nil
	}
	s := l.sess[h]
	if s == nil {
		return Endpoint{}, fmt.Errorf("wire endpoint: handle %#x: %w", uint64(h), ErrNoSession)
	}
	if s.app.id != id {
		return Endpoint{}, fmt.Errorf("wire endpoint: session %#x: %w", uint64(h), ErrNotOwner)
	}
	if s.kind == kindCutThrough {
		return Endpoint{}, fmt.Errorf("wire endpoint: cut-through session %#x: %w", uint64(h), ErrNotSupported)
	}
	local := tupleLocal(&s.tuple)
	return Endpoint{Transport: s.tuple.Proto, Addr: local.Addr(), Port: local.Port(), IfIndex: s.ifindex, FIB: s.fib}, nil
}
