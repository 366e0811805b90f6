package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/flow"
)

// tcpReservation holds a TCP port in the kernel: a bound, non-listening
// TCP socket of the interface's namespace, so that no kernel socket can
// take the port while a listener or connection of the datapath uses it.
// The kernel's socket diagnostics list it as bound and inactive (`ss
// -tanB`; plain `ss -tan` lists only listening and connected sockets). It
// does not listen so that a connection that reaches the kernel anyway (from
// the host itself, through another interface) is refused rather than left
// in a backlog nobody accepts. The socket never sees a packet of the port
// the XDP program steers.
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
	var noPort func(int)
	if local.Port() == 0 {
		// An ephemeral port for an active open: the kernel picks it as
		// for a connect, so it may share it with other 4-tuples.
		noPort = func(fd int) { _ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 0) }
	}
	port, op, err := udp.BindLocal(fd, netip.AddrPortFrom(a, local.Port()), noPort)
	if err != nil {
		return fail(op, err)
	}
	return &tcpReservation{fd: fd, addr: netip.AddrPortFrom(a.WithZone(""), port)}, nil
}

// close releases the port.
func (r *tcpReservation) close() {
	if r != nil && r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}
