package datapath

import (
	"errors"
	"fmt"
	"net/netip"

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
// (ip_local_port_range).

var _ sessions.PortReserver = (*enginePath)(nil)

// ReservePort holds e's port in the kernel (sessions.PortReserver). It
// holds none for a transport the datapath does not serve or another
// interface's endpoint, and returns 0 then.
func (p *enginePath) ReservePort(ep sessions.Endpoint) (uint16, error) {
	e := p.e
	// An Engine not made by New (the in-memory rigs of the tests) has
	// no namespace to reserve in.
	if !servedTransport(ep.Transport) || !p.ours(ep.IfIndex) || e.ns == nil {
		return 0, nil
	}
	a := ep.Addr.Unmap()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	var res *udp.Reservation
	err := doIn(e.nsh, func() error {
		var err error
		res, err = udp.Reserve(netip.AddrPortFrom(a, ep.Port))
		return err
	})
	if errors.Is(err, unix.EADDRINUSE) {
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
	if old := e.ports[k]; old != nil { // cannot happen: the kernel refuses a second bind
		res.Close()
		return 0, fmt.Errorf("reserve %s: %w", ep.URI(), flow.ErrAddressInUse)
	}
	e.ports[k] = res
	return k.Port(), nil
}

// ReleasePort closes the reservation of e's port.
func (p *enginePath) ReleasePort(ep sessions.Endpoint) {
	e := p.e
	k := kernelKey(ep)
	e.mu.Lock()
	res := e.ports[k]
	if res != nil {
		delete(e.ports, k)
	}
	e.mu.Unlock()
	res.Close()
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
	a := ep.Addr.Unmap()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, ep.Port)
}
