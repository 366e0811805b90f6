package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrReserve wraps failures to reserve a local port in the kernel.
var ErrReserve = errors.New("udp: cannot reserve local port")

// Reservation is a kernel UDP socket bound to a local address and port:
// while it is open the kernel gives the port to nobody else. A socket
// filter makes it drop everything the kernel delivers to it (datagrams
// that arrive before the XDP program steers the session's 5-tuple).
type Reservation struct {
	// mu guards fd: a worker sends on it (Send) and the kernel path
	// reads it (Recv) while the control plane may Close it; without it a
	// send could reach a descriptor number already reused for something
	// else.
	mu   sync.RWMutex
	fd   int
	addr netip.AddrPort

	// gmu serializes the membership changes (JoinGroup, LeaveGroup) and
	// guards groups, the memberships the socket has, and joined, those of
	// an IPv6 socket by group and the interface index asked for; it is
	// taken before mu.
	gmu    sync.Mutex
	groups int
	joined map[membership]struct{}

	// Send's state, under mu held for writing (an IPv4 Send): an IPv4
	// socket's IP_MTU_DISCOVER is IP_PMTUDISC_DO while it sends
	// don't-fragment datagrams, and pmtuWas its mode before.
	dfOn    bool
	pmtuWas int
}

// Reserve binds a kernel UDP socket to local (port 0: an ephemeral port
// the kernel chooses). It must run on a thread inside the network
// namespace the port belongs to.
func Reserve(local netip.AddrPort) (*Reservation, error) {
	return reserve(local, false)
}

// ReserveBeside is Reserve of an address whose port sockets of the
// caller's hold for addresses its bind conflicts with (a wildcard address
// beside specific ones, or an address beside a socket about to close that
// holds it), with SO_REUSEADDR set on them (SetReuseAddr): the kernel
// lets two sockets share a port only when both have it. The new socket
// binds with it and clears it after, as the caller clears it on the
// others, so that no socket binds beside them later; meanwhile the kernel
// gives each datagram to the socket of its destination address, the rest
// to the wildcard one.
func ReserveBeside(local netip.AddrPort) (*Reservation, error) {
	return reserve(local, true)
}

// SetReuseAddr sets or clears SO_REUSEADDR on the socket (ReserveBeside).
func (r *Reservation) SetReuseAddr(on bool) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return unix.EBADF
	}
	v := 0
	if on {
		v = 1
	}
	return unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, v)
}

func reserve(local netip.AddrPort, beside bool) (*Reservation, error) {
	a := local.Addr().Unmap()
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("reserve %v: socket: %w: %w", local, ErrReserve, err)
	}
	fail := func(op string, err error) (*Reservation, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("reserve %v: %s: %w: %w", local, op, ErrReserve, err)
	}
	// One instruction: return 0, i.e. keep no byte of any datagram.
	drop := unix.SockFprog{Len: 1, Filter: &[]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &drop); err != nil {
		return fail("attach filter", err)
	}
	var reuse func(fd int)
	if beside {
		reuse = func(fd int) { _ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) }
	}
	port, op, err := BindLocal(fd, netip.AddrPortFrom(a, local.Port()), reuse)
	if err != nil {
		return fail(op, err)
	}
	if beside {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 0); err != nil {
			return fail("clear SO_REUSEADDR", err)
		}
	}
	return &Reservation{fd: fd, addr: netip.AddrPortFrom(a.WithZone(""), port)}, nil
}

// zoneID is the interface index of a's zone, which must be one (a
// link-local address scoped by the caller, as "3"); 0 without one.
func zoneID(a netip.Addr) uint32 {
	z, err := strconv.ParseUint(a.Zone(), 10, 32)
	if err != nil {
		return 0
	}
	return uint32(z)
}

// BindLocal binds the IP socket fd (of a's family) to local, IPv6 sockets
// IPv6-only, after calling beforeBind (nil: none) on it, and returns the
// port the kernel bound (its pick for port 0). On failure it returns the
// step that failed; fd is the caller's to close. The port reservations of
// both transports bind this way.
func BindLocal(fd int, local netip.AddrPort, beforeBind func(fd int)) (port uint16, op string, err error) {
	a := local.Addr()
	var sa unix.Sockaddr
	if a.Is6() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return 0, "v6only", err
		}
		sa = &unix.SockaddrInet6{Addr: a.As16(), Port: int(local.Port()), ZoneId: zoneID(a)}
	} else {
		sa = &unix.SockaddrInet4{Addr: a.As4(), Port: int(local.Port())}
	}
	if beforeBind != nil {
		beforeBind(fd)
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EACCES) && local.Port() != 0 {
			err = fmt.Errorf("%w: port %d is below the namespace's net.ipv4.ip_unprivileged_port_start and the daemon lacks CAP_NET_BIND_SERVICE (the unit in deploy/ gives it)", err, local.Port())
		}
		return 0, "bind", err
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return 0, "getsockname", err
	}
	switch s := got.(type) {
	case *unix.SockaddrInet4:
		return uint16(s.Port), "", nil
	case *unix.SockaddrInet6:
		return uint16(s.Port), "", nil
	}
	return 0, "getsockname", fmt.Errorf("address of family %T", got)
}

// Connect connects the socket to the session's peer. It still receives
// nothing (its filter drops every datagram), but the kernel now reports
// the ICMP errors of the peer (port, host or network unreachable) to it:
// its fd polls with POLLERR and Err returns the error.
func (r *Reservation) Connect(remote netip.AddrPort) error {
	a := remote.Addr().Unmap()
	var sa unix.Sockaddr
	if r.addr.Addr().Is6() {
		sa = &unix.SockaddrInet6{Addr: a.As16(), Port: int(remote.Port()), ZoneId: zoneID(a)}
	} else {
		if !a.Is4() {
			return fmt.Errorf("connect reservation %v to %v: %w: address family", r.addr, remote, ErrReserve)
		}
		sa = &unix.SockaddrInet4{Addr: a.As4(), Port: int(remote.Port())}
	}
	if err := unix.Connect(r.fd, sa); err != nil {
		return fmt.Errorf("connect reservation %v to %v: %w: %w", r.addr, remote, ErrReserve, err)
	}
	return nil
}

// FD returns the socket's descriptor (-1 after Close), to poll it for
// errors. It stays owned by the Reservation.
func (r *Reservation) FD() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.fd
}

// Err returns and clears the socket's pending error (SO_ERROR): after
// Connect, the peer's ICMP error, e.g. ECONNREFUSED for port unreachable.
// nil: none.
func (r *Reservation) Err() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return nil
	}
	v, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// Addr returns the reserved address and port.
func (r *Reservation) Addr() netip.AddrPort { return r.addr }

// Close releases the port. It is safe to call more than once.
func (r *Reservation) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}
