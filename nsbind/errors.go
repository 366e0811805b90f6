package nsbind

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
