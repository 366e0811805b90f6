package datapath

import (
	"net/netip"
	"sync"

	"github.com/xsessiond/xsessiond/flow"
)

// A listener's port goes back to the kernel (its kernel socket closes)
// only once the XDP program no longer steers it: once the mirror applied
// the layer's change that removed the listener, which the layer publishes
// before it calls ReleasePort. Before that, a kernel socket that took the
// port at once (as one may the moment a kernel socket's close returns)
// would lose its first datagrams to the workers, and its first
// connections to the daemon's TCP stack, which refuses them. The daemon
// answers an app's unbind after WaitMirror, which waits for these closes
// too, and its answer to a close of a connected UDP session when one
// waits (HandingBack), so the port is the kernel's when the app's Close
// returns. A connected session's port is handed back the same way, once
// its 5-tuple is no longer steered.

// handback is a kernel socket that holds a port until the mirror applied
// the layer's changes up to seq.
type handback struct {
	seq   uint64
	proto flow.Transport
	local netip.AddrPort
	close func()
}

// handbacks are the ports waiting for the mirror, in the order they were
// handed back.
type handbacks struct {
	mu      sync.Mutex
	q       []handback
	applied uint64 // the mirror's last applied change, as runHandbacks saw it
	closed  bool   // Close ran them all: later ones close at once
}

// handBack closes the kernel socket that holds local's port (close) once
// the mirror applied every change the layer published so far; at once
// when it did, or when the Engine is not started or closed.
func (e *Engine) handBack(proto flow.Transport, local netip.AddrPort, close func()) {
	l := e.layer.Load()
	if l == nil {
		close()
		return
	}
	seq := l.Seq()
	hb := &e.handbacks
	hb.mu.Lock()
	// hb.applied, not the mirror's own count: the layer's lock may be
	// held here, and the mirror takes it under its own in a resync. The
	// mirror's goroutine stores it, and runs the due ones, under hb.mu
	// after each step (runHandbacks), so one queued here is seen by the
	// run after the mirror applied seq.
	if hb.closed || hb.applied >= seq {
		hb.mu.Unlock()
		close()
		return
	}
	hb.q = append(hb.q, handback{seq: seq, proto: proto, local: local, close: close})
	hb.mu.Unlock()
}

// handBackTCP hands back the port a TCP connection or listener held
// (res, nil: none).
func (e *Engine) handBackTCP(res *tcpReservation) {
	if res != nil {
		e.handBack(flow.TransportTCP, res.addr, res.close)
	}
}

// runHandbacks closes the sockets whose changes the mirror applied. The
// mirror's goroutine, after each change or resync, before it notes
// progress (WaitMirror). The sockets close under hb.mu (plain closes), so
// that WaitMirror and HandingBack, which look under it, never see one
// out of the queue and not yet closed.
func (e *Engine) runHandbacks() {
	applied := e.mirror.Stats().LastSeq
	hb := &e.handbacks
	hb.mu.Lock()
	defer hb.mu.Unlock()
	hb.applied = applied
	hb.closeWhereLocked(func(h *handback) bool { return h.seq <= applied })
}

// closeWhereLocked closes the waiting sockets that match and takes them
// out of the queue, keeping the order of the others. hb.mu is held.
func (hb *handbacks) closeWhereLocked(match func(*handback) bool) {
	keep := hb.q[:0]
	for i := range hb.q {
		if h := &hb.q[i]; match(h) {
			h.close()
		} else {
			keep = append(keep, *h)
		}
	}
	clear(hb.q[len(keep):])
	hb.q = keep
}

// handbacksDue reports whether a socket whose change is at or before seq
// still waits to close.
func (e *Engine) handbacksDue(seq uint64) bool {
	hb := &e.handbacks
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for _, h := range hb.q {
		if h.seq <= seq {
			return true
		}
	}
	return false
}

// flushHandbacks closes now the sockets of proto waiting to hand back a
// port that a bind of local (an address and port of the daemon's
// listener) conflicts with: the same address, or either the unspecified
// one, of either family. The listener that takes the port gets what
// reaches it once the mirror applied its change; the kernel must not
// refuse its bind for the socket that waits.
func (e *Engine) flushHandbacks(proto flow.Transport, local netip.AddrPort) {
	hb := &e.handbacks
	hb.mu.Lock()
	defer hb.mu.Unlock()
	hb.closeWhereLocked(func(h *handback) bool { return h.proto == proto && conflicts(h.local, local) })
}

// conflicts reports whether kernel sockets bound to a and b conflict
// without SO_REUSEADDR: one port, and the same address or either one
// unspecified (an IPv6 wildcard socket takes the IPv4 addresses too, so
// the families are not told apart).
func conflicts(a, b netip.AddrPort) bool {
	if a.Port() != b.Port() {
		return false
	}
	x, y := a.Addr().Unmap().WithZone(""), b.Addr().Unmap().WithZone("")
	return x == y || x.IsUnspecified() || y.IsUnspecified()
}

// closeHandbacks closes every socket that waits, and those handed back
// later at once (Close).
func (e *Engine) closeHandbacks() {
	hb := &e.handbacks
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for _, h := range hb.q {
		h.close()
	}
	hb.q, hb.closed = nil, true
}

// HandingBack reports whether a port of proto waits for the mirror to go
// back to the kernel: the daemon then answers an app's close of a
// connected UDP session once it has (WaitMirror), so that the port is the
// kernel's when the close returns. (A TCP connection's port is held
// through TIME-WAIT after its close, as the kernel's is.)
func (e *Engine) HandingBack(proto flow.Transport) bool {
	hb := &e.handbacks
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for _, h := range hb.q {
		if h.proto == proto {
			return true
		}
	}
	return false
}
