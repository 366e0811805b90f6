package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/flow"
)

// tcpReservation holds a TCP port in the kernel: a bound, non-listening
// TCP socket of the interface's namespace, so that `ss -tan` shows the port
// and no kernel socket can take it while a listener or connection of the
// datapath uses it. The socket never sees a packet of the port: the XDP
// program steers them to the datapath.
type tcpReservation struct {
	fd   int
	addr netip.AddrPort
}

// reserveTCP binds a kernel TCP socket to local (port 0: an ephemeral port
// of the kernel's). Call it inside the interface's namespace.
func reserveTCP(local netip.AddrPort) (*tcpReservation, error) {
	a := local.Addr().Unmap()
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("reserve tcp %v: socket: %w", local, err)
	}
	fail := func(op string, err error) (*tcpReservation, error) {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			err = fmt.Errorf("%w: %w", flow.ErrAddressInUse, err)
		}
		return nil, fmt.Errorf("reserve tcp %v: %s: %w", local, op, err)
	}
	var sa unix.Sockaddr
	if fam == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("v6only", err)
		}
		sa = &unix.SockaddrInet6{Addr: a.As16(), Port: int(local.Port())}
	} else {
		sa = &unix.SockaddrInet4{Addr: a.As4(), Port: int(local.Port())}
	}
	if local.Port() == 0 {
		// An ephemeral port for an active open: the kernel picks it as
		// for a connect, so it may share it with other 4-tuples.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 0)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var port int
	switch s := got.(type) {
	case *unix.SockaddrInet4:
		port = s.Port
	case *unix.SockaddrInet6:
		port = s.Port
	}
	return &tcpReservation{fd: fd, addr: netip.AddrPortFrom(a, uint16(port))}, nil
}

// close releases the port.
func (r *tcpReservation) close() {
	if r != nil && r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}
