package sessions

import (
	"fmt"
	"net/netip"
)

// NetView is the session layer's view of the kernel's interfaces and
// addresses. Package nsbind satisfies it; sessionstest has a static fake.
// Implementations must be safe for concurrent use.
type NetView interface {
	// HasAddress reports whether the interface ifindex (within the Linux
	// network namespace of the session layer's namespace) has address a.
	HasAddress(ifindex int, a netip.Addr) bool
	// IsLocal reports whether a is an address of any interface of the
	// network namespace that FIB fib belongs to, loopback included.
	IsLocal(fib FIBID, a netip.Addr) bool
}

// EndpointIsZero reports whether the endpoint's address is the unspecified
// address (a wildcard bind), as the seed's session_endpoint_is_zero.
func EndpointIsZero(e Endpoint) bool { return e.IsZero() }

// EndpointIsLocal reports whether the endpoint names this host without
// naming an interface address: the unspecified address or a loopback
// address. Connecting to such a destination can only be served by the local
// table (seed: session_endpoint_is_local).
func EndpointIsLocal(e Endpoint) bool {
	return e.IsZero() || e.Addr.IsLoopback()
}

// EndpointInNamespace reports whether the endpoint can be bound in the
// namespace whose interface and FIB were filled into e (seed:
// session_endpoint_in_ns): the zero address always can; a loopback address
// (a listener for the apps of this host alone, as on a kernel socket)
// when it is local to the namespace's FIB; any other address must be
// configured on the namespace's interface, when it has one, and be local
// to the namespace's FIB.
func EndpointInNamespace(v NetView, e Endpoint) bool {
	if e.IsZero() {
		return true
	}
	if e.IfIndex != 0 && !e.Addr.IsLoopback() && !v.HasAddress(e.IfIndex, e.Addr) {
		return false
	}
	return v.IsLocal(e.FIB, e.Addr)
}

// validEndpoint checks what bind and connect need of every endpoint.
func validEndpoint(e Endpoint) error {
	switch e.Transport {
	case TransportTCP, TransportUDP:
	case TransportSCTP:
		return fmt.Errorf("sctp: %w", ErrNotSupported)
	default:
		return fmt.Errorf("transport %v: %w", e.Transport, ErrNotSupported)
	}
	if e.Addr.IsValid() && e.Addr.Zone() != "" {
		return fmt.Errorf("address %v has a zone: %w", e.Addr, ErrInvalidValue)
	}
	return nil
}

// listenTuple is the key of a listener on e: Remote and RemotePort zero.
func listenTuple(e Endpoint) FiveTuple {
	return FiveTuple{
		Local:     AddrBytes(e.Addr),
		LocalPort: e.Port,
		Proto:     e.Transport,
		Family:    e.Family(),
	}
}
