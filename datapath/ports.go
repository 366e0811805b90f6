package datapath

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// The ports of UDP listeners are held in the kernel as a connected
// session's is: by a udp.Reservation, a kernel UDP socket bound to the
// listener's address and port that drops whatever reaches it. So `ss -uan`
// in the namespace shows every port the daemon serves, no kernel socket
// can bind one of them, and a port a kernel socket holds is refused
// (EADDRINUSE). Port 0 takes the kernel's pick from its ephemeral range
// (ip_local_port_range). A TCP listener's port is held by a bound kernel
// TCP socket of its own (tcp_path.go); for port 0 the kernel picks it here
// too.

var _ sessions.PortReserver = (*enginePath)(nil)

// ReservePort holds e's port in the kernel (sessions.PortReserver). A TCP
// listener's port is held by a kernel TCP socket of its own, which the
// listen opens (tcp_path.go); for port 0 it is opened here, so that the
// kernel picks the port, as for a kernel listener: one no kernel socket
// holds, from its ip_local_port_range, none of its ip_local_reserved_ports.
// It holds none for another transport or another interface's endpoint, nor
// for a TCP listener of a given port, and returns 0 then.
func (p *enginePath) ReservePort(ep sessions.Endpoint) (uint16, error) {
	e := p.e
	// An Engine not made by New (the in-memory rigs of the tests) has
	// no namespace to reserve in.
	if !p.ours(ep.IfIndex) || e.ns == nil {
		return 0, nil
	}
	if ep.Transport == flow.TransportTCP && ep.Port == 0 && e.tcp != nil {
		return e.tcp.pickListenPort(ep)
	}
	if ep.Transport != flow.TransportUDP {
		return 0, nil
	}
	a := kernelKey(ep).Addr()
	if ep.Port != 0 {
		e.flushHandbacks(flow.TransportUDP, netip.AddrPortFrom(a, ep.Port))
	}
	var res *udp.Reservation
	err := doIn(e.nsh, func() error {
		var err error
		res, err = udp.Reserve(netip.AddrPortFrom(e.scoped(a), ep.Port))
		return err
	})
	if errors.Is(err, unix.EADDRINUSE) && ep.Port != 0 && a.IsUnspecified() {
		// Sockets of the daemon's may hold specific addresses of the
		// port (other apps' listeners): the wildcard's own binds beside
		// them.
		res, err = e.reserveBesideOwn(netip.AddrPortFrom(e.scoped(a), ep.Port))
	}
	if errors.Is(err, unix.EADDRINUSE) {
		if ep.Port != 0 && e.shareOwnPort(ep) {
			return ep.Port, nil
		}
		return 0, fmt.Errorf("reserve %s in the kernel: %w: %w", ep.URI(), flow.ErrAddressInUse, err)
	}
	if err != nil {
		return 0, fmt.Errorf("reserve %s in the kernel: %w", ep.URI(), err)
	}
	k := res.Addr()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		res.Close()
		return 0, ErrClosed
	}
	if _, old := e.ports[k]; old { // cannot happen: the kernel refuses a second bind
		res.Close()
		return 0, fmt.Errorf("reserve %s: %w", ep.URI(), flow.ErrAddressInUse)
	}
	e.ports[k] = res
	return k.Port(), nil
}

// reserveBesideOwn reserves w, a wildcard address and port, beside the
// daemon's own sockets of specific addresses of that port (listeners of
// other apps), which the session layer lets bind side by side as it lets
// a specific listener bind beside a wildcard one (reserveBesideLocked).
// The kernel then delivers to each socket what goes to its address, the
// rest (other addresses, broadcasts, groups) to the wildcard's, so every
// listener has its kernel path. EADDRINUSE when no socket of the daemon's
// holds the port, or when another socket (not the daemon's) does.
func (e *Engine) reserveBesideOwn(w netip.AddrPort) (*udp.Reservation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	holders := e.specificHoldersLocked(w)
	if len(holders) == 0 || e.closed {
		return nil, unix.EADDRINUSE
	}
	return e.reserveBesideLocked(w, holders)
}

// specificHoldersLocked returns the daemon's sockets of specific addresses
// of w's port and family. e.mu is held.
func (e *Engine) specificHoldersLocked(w netip.AddrPort) []*udp.Reservation {
	var holders []*udp.Reservation
	for o, r := range e.ports {
		if r != nil && o.Port() == w.Port() && o.Addr().Is4() == w.Addr().Is4() && !o.Addr().IsUnspecified() {
			holders = append(holders, r)
		}
	}
	return holders
}

// reserveBesideLocked reserves a (scoped) beside holders, sockets of the
// daemon's that hold a's port and that a's bind conflicts with: with
// SO_REUSEADDR set on them for the bind, and cleared after on all
// (udp.ReserveBeside), so that no other socket binds beside them later.
// e.mu is held throughout: no holder closes meanwhile (ReleasePort takes
// its socket out of e.ports under e.mu first, and closes it after its
// heirs are bound).
func (e *Engine) reserveBesideLocked(a netip.AddrPort, holders []*udp.Reservation) (*udp.Reservation, error) {
	for _, r := range holders {
		_ = r.SetReuseAddr(true)
	}
	var res *udp.Reservation
	err := doIn(e.nsh, func() error {
		var err error
		res, err = udp.ReserveBeside(a)
		return err
	})
	for _, r := range holders {
		if cerr := r.SetReuseAddr(false); cerr != nil && err == nil {
			e.log.Warn("SO_REUSEADDR left set on a port's socket: a kernel socket with it may bind beside", "local", r.Addr(), "err", cerr)
		}
	}
	return res, err
}

// shareOwnPort records ep, a specific address, as held through the
// daemon's own reservation of its family's wildcard address of the same
// port, when there is one: the session layer lets a wildcard and a
// specific listener of one port live side by side, which the kernel
// refuses to two sockets without SO_REUSEADDR (that would let kernel
// sockets share the port too). The entry holds no socket (nil);
// ReleasePort moves the kernel's hold to it when the socket's own
// listener goes. A wildcard address shares no socket: it binds beside
// the daemon's sockets of specific addresses (reserveBesideOwn); nor does
// a specific address beside another specific address's socket, which
// does not hold it: the kernel refused its bind for another socket's,
// not the daemon's.
func (e *Engine) shareOwnPort(ep sessions.Endpoint) bool {
	k := kernelKey(ep)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, held := e.ports[k]; e.closed || held || k.Addr().IsUnspecified() {
		// k's own listener holds it (or shares it) already: a second
		// bind of k is refused, and its entry stays as it is.
		return false
	}
	for o, r := range e.ports {
		if r != nil && o.Port() == k.Port() && o.Addr().Is4() == k.Addr().Is4() && o.Addr().IsUnspecified() {
			e.ports[k] = nil
			return true
		}
	}
	return false
}

// shareKernelLocked makes t, a listener of k whose port the daemon's
// socket of another address holds (shareOwnPort), a sharer of that
// socket's kernel path when it is a wildcard address's: t sends its
// datagrams larger than a frame, and those to multicast groups, through
// it, from t's address (IP_PKTINFO), and kernelRx gives t what it reads
// for t's address. Beside a socket of a specific address t has no kernel
// path (a datagram through it would leave from that address). e.mu is
// held.
func (e *Engine) shareKernelLocked(t *udp.Target, k netip.AddrPort) {
	for o, r := range e.ports {
		if r != nil && o.Port() == k.Port() && o.Addr().Is4() == k.Addr().Is4() && o.Addr().IsUnspecified() {
			t.Borrowed.Store(r)
			e.sharers[k] = t
			return
		}
	}
}

// ReleasePort closes the reservation of e's port. When listeners of other
// addresses of the port shared it (shareOwnPort), each of them that the
// kernel lets bind takes over its own address's hold, and its kernel
// path: those of specific addresses first, as they do not conflict with
// one another, then a wildcard one, beside the daemon's sockets of
// specific addresses. The heirs bind beside the socket that goes
// (reserveBesideLocked) before it closes, so that the port is never free
// for a kernel socket of another program in between. The socket closes
// once the program no longer steers the port (handback.go).
func (p *enginePath) ReleasePort(ep sessions.Endpoint) {
	e := p.e
	k := kernelKey(ep)
	if ep.Transport == flow.TransportTCP {
		if e.tcp != nil {
			e.tcp.dropListenPort(k)
		}
		return
	}
	e.mu.Lock()
	res, ok := e.ports[k]
	if ok {
		delete(e.ports, k)
	}
	if res != nil && !e.closed {
		e.inheritLocked(res, k)
		for _, t := range e.sharers {
			// Nothing more through the socket that closes; the heirs
			// have sockets of their own.
			t.Borrowed.CompareAndSwap(res, nil)
		}
	}
	e.mu.Unlock()
	if res != nil {
		e.handBack(flow.TransportUDP, k, func() { res.Close() })
	}
}

// inheritLocked binds the sockets of the heirs of res, the socket of k
// about to close: the listeners of k's port and family that held their
// address through another's socket (entries without one), beside res.
// e.mu is held.
func (e *Engine) inheritLocked(res *udp.Reservation, k netip.AddrPort) {
	var heirs []netip.AddrPort
	for o, r := range e.ports {
		if r == nil && o.Port() == k.Port() && o.Addr().Is4() == k.Addr().Is4() {
			heirs = append(heirs, o)
		}
	}
	slices.SortFunc(heirs, func(a, b netip.AddrPort) int {
		return cmp.Compare(btoi(a.Addr().IsUnspecified()), btoi(b.Addr().IsUnspecified()))
	})
	for _, h := range heirs {
		holders := []*udp.Reservation{res}
		if h.Addr().IsUnspecified() {
			holders = append(holders, e.specificHoldersLocked(h)...)
		}
		nr, err := e.reserveBesideLocked(netip.AddrPortFrom(e.scoped(h.Addr()), h.Port()), holders)
		if err != nil {
			continue
		}
		e.ports[h] = nr
		if t := e.heirTargetLocked(h); t != nil && e.pw != nil && nr.Open() == nil {
			// Its own kernel path now: sent through and read.
			delete(e.sharers, h)
			t.Borrowed.Store(nr)
			e.watchKernelLocked(t, nr)
		}
	}
}

// heirTargetLocked is the listener of h, an address whose port it held
// through another address's socket: a sharer's, or a wildcard listener's
// (which shares no kernel path beside a specific address's socket, so is
// found among the listeners). e.mu is held.
func (e *Engine) heirTargetLocked(h netip.AddrPort) *udp.Target {
	if t := e.sharers[h]; t != nil {
		return t
	}
	for _, t := range *e.lis.Load() {
		if t.Res == nil && targetKey(t) == h {
			return t
		}
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// closePortsLocked releases every listener's reservation (Close).
func (e *Engine) closePortsLocked() {
	for k, r := range e.ports {
		r.Close()
		delete(e.ports, k)
	}
}

// kernelKey is the key of ep's reservation in Engine.ports.
func kernelKey(ep sessions.Endpoint) netip.AddrPort {
	return portKey(netip.AddrPortFrom(ep.Addr, ep.Port))
}

// targetKey is the key in Engine.ports of UDP listener t's address.
func targetKey(t *udp.Target) netip.AddrPort { return portKey(t.Local) }

// portKey is the key in Engine.ports of local: its address unmapped, no
// address the IPv4 wildcard.
func portKey(local netip.AddrPort) netip.AddrPort {
	a := local.Addr().Unmap()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, local.Port())
}

var _ sessions.PortKeeper = (*enginePath)(nil)

// KeptPorts returns the ports held after the layer let go of the TCP
// connections that owner's apps opened: draining, delivering, in
// TIME-WAIT (sessions.PortKeeper).
func (p *enginePath) KeptPorts(owner uint32) int {
	if p.e.tcp == nil {
		return 0
	}
	return p.e.tcp.keptPorts(owner)
}

// ShedKept releases early n or more (a batch) of the ports held for
// TIME-WAIT after owner's apps' connections, oldest first
// (sessions.PortKeeper).
func (p *enginePath) ShedKept(owner uint32, n int) int {
	if p.e.tcp == nil {
		return 0
	}
	return p.e.tcp.shedKept(owner, n)
}
