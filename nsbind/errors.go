package nsbind

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/flow"
)

// Errors returned by this package, wrapped as "verb: %w" with the detail;
// test them with errors.Is.
var (
	// ErrNoNamespace: the name or path does not lead to a network namespace.
	ErrNoNamespace = errors.New("no such network namespace")
	// ErrNoInterface: no interface with that name or index in the namespace.
	ErrNoInterface = errors.New("no such interface")
	// ErrNoRoute: the namespace has no usable route to the destination.
	ErrNoRoute = errors.New("no route to destination")
	// ErrNoNeighbour: the kernel has no usable neighbour entry (yet), or
	// resolving it failed.
	ErrNoNeighbour = errors.New("no usable neighbour entry")
	// ErrClosed: the Namespace or View was closed.
	ErrClosed = errors.New("closed")
	// ErrInvalidAddress: an address argument is not a valid IPv4 or IPv6
	// unicast address.
	ErrInvalidAddress = errors.New("invalid address")
)

// isNoDevice reports whether err is the kernel's way of saying that an
// interface does not exist.
func isNoDevice(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// wrapNoInterface turns a netlink error about a missing link into
// ErrNoInterface and leaves the others alone.
func wrapNoInterface(verb string, err error) error {
	if isNoDevice(err) {
		return fmt.Errorf("%s: %w: %w", verb, ErrNoInterface, err)
	}
	return fmt.Errorf("%s: %w", verb, err)
}

// noRouteError is ErrNoRoute with its cause: it says "no route to
// destination" once, whatever the kernel answered, and wraps both
// ErrNoRoute and the sentinel of package flow whose errno a kernel
// socket's connect would have returned: flow.ErrNetUnreachable
// (ENETUNREACH: no route, or a throw route), flow.ErrUnreachable
// (EHOSTUNREACH: an unreachable route), flow.ErrProhibited (EACCES: a
// prohibit route) or flow.ErrBlackhole (EINVAL: a blackhole route), so
// that errors.Is(err, syscall.EACCES) and the like hold as they do for a
// kernel socket, and the sentinel's code crosses the control socket.
type noRouteError struct {
	verb   string
	detail string // "" or what kind of route there was
	why    error  // the flow sentinel
}

func (e *noRouteError) Error() string {
	if e.detail != "" {
		return e.verb + ": " + ErrNoRoute.Error() + " (" + e.detail + ")"
	}
	return e.verb + ": " + ErrNoRoute.Error()
}

func (e *noRouteError) Unwrap() []error { return []error{ErrNoRoute, e.why} }

// noRoute returns the error of a destination without a usable route; the
// kernel's errno, when there is one, decides which it is, as it decides a
// kernel socket's connect's.
func noRoute(verb, detail string, kernel error) error {
	e := &noRouteError{verb: verb, detail: detail, why: flow.ErrNetUnreachable}
	switch {
	case errors.Is(kernel, unix.EHOSTUNREACH):
		e.why = flow.ErrUnreachable
	case errors.Is(kernel, unix.EACCES):
		e.why = flow.ErrProhibited
	case errors.Is(kernel, unix.EINVAL):
		e.why = flow.ErrBlackhole
	}
	return e
}

// routeTypeErrno is the errno a kernel socket's connect gets for a route
// of type t (RTN_UNREACHABLE, RTN_PROHIBIT, RTN_BLACKHOLE, RTN_THROW), for
// noRoute.
func routeTypeErrno(t int) error {
	switch t {
	case unix.RTN_UNREACHABLE:
		return unix.EHOSTUNREACH
	case unix.RTN_PROHIBIT:
		return unix.EACCES
	case unix.RTN_BLACKHOLE:
		return unix.EINVAL
	}
	return unix.ENETUNREACH
}
