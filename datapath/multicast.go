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

// Multicast groups a UDP listener receives. The XDP program passes every
// frame to a multicast MAC on to its IP and UDP checks, and a datagram to
// a group's address is not to one of the namespace's addresses, so even a
// wildcard listener's port leaves it to the kernel (not_local). The
// kernel accepts a group's datagrams on an interface once a socket of its
// netns joined the group there, and delivers those to a port to the
// sockets bound to it: for a listener's port, its udp.Reservation, whose
// kernel path (kernelpath.go) reads them into the listener's rx fifo as
// it reads a broadcast. JoinGroup and LeaveGroup change the reservation's
// memberships, as IP_ADD_MEMBERSHIP and IPV6_JOIN_GROUP do a kernel
// socket's; they end with the socket, when the listener closes.

// JoinGroup makes app's UDP listener h (a global listener in datagram
// mode) a member of the multicast group on the interface of index ifindex
// in the Engine's netns (0: the interface the route to the group takes),
// through the kernel socket holding its port. The kernel's errors come
// as the sentinels the control protocol carries (api.Membership):
// flow.ErrAddressInUse, a member there already (EADDRINUSE);
// flow.ErrLimit, the bound on a socket's memberships reached (ENOBUFS:
// net.ipv4.igmp_max_memberships, in either family, groupBound); flow.ErrNetUnreachable, no such interface, or no route to
// the group to pick one (ENODEV); flow.ErrInvalidValue, a group the
// kernel refuses (EINVAL). A handle that is no such listener of app's is
// flow.ErrNotSupported (another transport, a connected session, a
// listener without a kernel path) or flow.ErrNotOwner.
func (e *Engine) JoinGroup(app sessions.AppID, h flow.Handle, group netip.Addr, ifindex int) error {
	res, err := e.listenerReservation(app, h)
	if err == nil {
		err = res.JoinGroup(group, ifindex, e.groupBound())
	}
	if err != nil {
		return fmt.Errorf("join group %v: %w", group, groupError(err, ifindex))
	}
	return nil
}

// defaultGroupBound is the kernel's default of
// net.ipv4.igmp_max_memberships, the bound of groupBound when the
// setting cannot be read.
const defaultGroupBound = 20

// groupBound is the number of groups a listener's socket may be a member
// of in either family: net.ipv4.igmp_max_memberships of the Engine's
// netns, which the kernel applies to IPv4 sockets alone (an IPv6 socket's
// memberships it bounds only by net.core.optmem_max, thousands of groups,
// each a membership of the interface and a report on the link: an app
// could have the daemon's sockets make them by the thousands per
// listener).
func (e *Engine) groupBound() int {
	if v, ok := e.sysctlInt("net/ipv4/igmp_max_memberships"); ok {
		return max(v, 0)
	}
	return defaultGroupBound
}

// LeaveGroup ends the membership JoinGroup made; a group the listener is
// not a member of on that interface is flow.ErrAddressNotInUse
// (EADDRNOTAVAIL). The other errors are JoinGroup's.
func (e *Engine) LeaveGroup(app sessions.AppID, h flow.Handle, group netip.Addr, ifindex int) error {
	res, err := e.listenerReservation(app, h)
	if err == nil {
		err = res.LeaveGroup(group, ifindex)
	}
	if err != nil {
		return fmt.Errorf("leave group %v: %w", group, groupError(err, ifindex))
	}
	return nil
}

// listenerReservation returns the opened kernel socket of app's UDP
// listener h.
func (e *Engine) listenerReservation(app sessions.AppID, h flow.Handle) (*udp.Reservation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	var t *udp.Target
	if lis := e.lis.Load(); lis != nil {
		t = (*lis)[h]
	}
	switch {
	case t == nil:
		return nil, fmt.Errorf("handle %#x is no UDP listener on the wire: %w", uint64(h), flow.ErrNotSupported)
	case t.App != app:
		return nil, fmt.Errorf("listener %#x: %w", uint64(h), flow.ErrNotOwner)
	}
	if res := e.ownSocketLocked(t); res != nil {
		return res, nil
	}
	// A listener of a port another listener's socket holds (a specific
	// address beside a wildcard one, or a wildcard one beside a specific
	// one), or whose kernel path did not open.
	return nil, fmt.Errorf("listener %v has no kernel socket of its own: %w", t.Local, flow.ErrNotSupported)
}

// ownSocketLocked is the opened kernel socket that holds listener t's own
// address and port (nil: none): Res, or, for a listener that shared
// another address's socket until that one closed, the socket of its own
// address it then took (ReleasePort), which it reads and sends through
// as Borrowed. A socket t borrows from a wildcard listener of its port is
// that listener's, and its memberships that listener's. e.mu is held.
func (e *Engine) ownSocketLocked(t *udp.Target) *udp.Reservation {
	if t.Res != nil {
		return t.Res
	}
	r := t.Borrowed.Load()
	if r == nil {
		return nil
	}
	if own, held := e.ports[targetKey(t)]; !held || own != r {
		return nil
	}
	return r
}

// groupError turns the errno of a membership change into the sentinel
// the control protocol carries for it, with a word on what it means.
func groupError(err error, ifindex int) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.EADDRINUSE:
		return fmt.Errorf("a member there already: %w", flow.ErrAddressInUse)
	case unix.EADDRNOTAVAIL:
		return fmt.Errorf("not a member there: %w", flow.ErrAddressNotInUse)
	case unix.ENOBUFS:
		return fmt.Errorf("the bound on a socket's memberships (net.ipv4.igmp_max_memberships, in either family) is reached: %w", flow.ErrLimit)
	case unix.ENODEV:
		if ifindex == 0 {
			return fmt.Errorf("no route to the group picks an interface (name one, or route the group, as ip route add 224.0.0.0/4 dev IF does): %w", flow.ErrNetUnreachable)
		}
		return fmt.Errorf("interface %d: no such device: %w", ifindex, flow.ErrNetUnreachable)
	case unix.EINVAL:
		return fmt.Errorf("the kernel refuses the group: %w", flow.ErrInvalidValue)
	case unix.EBADF:
		return fmt.Errorf("the listener is closed: %w", flow.ErrNoSession)
	}
	return err
}
