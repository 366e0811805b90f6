package app

import (
	"context"
	"errors"
	"net"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/flow"
)

// dialHost is Dial's way to a kernel socket of the host, which the
// daemon's sessions do not reach (the datapath carries sessions to other
// hosts, and between apps cut-through): after the daemon answered err, a
// failed dial's *net.OpError, Dial connects with a kernel socket of this
// process, as net.Dial would, when
//   - the daemon says a kernel socket holds the port of the host's own
//     address dialed (flow.ErrHostSocket), or
//   - no app listens on the loopback address dialed (flow.ErrLocalConnect)
//     and, for UDP, a kernel socket of this process's network namespace
//     may hold its port (heldHere: a UDP connect succeeds whether or not
//     anything is there, and the daemon's refusal is what a kernel
//     socket's first read would report).
//
// The loopback address is this process's: in the interface's network
// namespace the host's, in a container's its own, as net.Dial's. It
// returns the kernel socket, or an error: err when the case is none of
// these; else, the kernel's dial failing too, the kernel's error for the
// host's own address or a dial ctx ended (a timeout, the port's owner
// refusing: net.Dial's error), and err for a loopback address nothing
// listens on (flow.ErrLocalConnect, which wraps ECONNREFUSED as the
// kernel's would).
func dialHost(ctx context.Context, err error) (net.Conn, error) {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Addr == nil || (oe.Net != "tcp" && oe.Net != "udp") {
		return nil, err
	}
	host := errors.Is(err, flow.ErrHostSocket)
	switch {
	case host:
	case errors.Is(err, flow.ErrLocalConnect):
		if oe.Net == "udp" && !heldHere(oe.Addr) {
			return nil, err
		}
	default:
		return nil, err
	}
	var d net.Dialer
	c, kerr := d.DialContext(ctx, oe.Net, oe.Addr.String())
	if kerr == nil {
		return c, nil
	}
	if host || ctx.Err() != nil {
		return nil, kerr
	}
	return nil, err
}

// heldHere reports whether a kernel UDP socket of this process's network
// namespace may hold addr's port: whether a bind of it fails with
// EADDRINUSE, or EACCES (a port below 1024, which this process may not
// bind: a resolver's on 127.0.0.53:53, say; the kernel socket's reads
// then say whether anything is there).
func heldHere(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua.Port == 0 {
		return false
	}
	ap := ua.AddrPort()
	a := ap.Addr().Unmap()
	fam, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: a.As16(), Port: int(ap.Port())})
	if a.Is4() {
		fam, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: a.As4(), Port: int(ap.Port())}
	}
	if !a.IsLoopback() {
		return false
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	err = unix.Bind(fd, sa)
	return errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EACCES)
}
