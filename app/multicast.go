package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// JoinGroup makes the listener a member of the multicast group on the
// interface ifi (nil: the interface the route to the group takes), as
// golang.org/x/net/ipv4's and ipv6's PacketConn.JoinGroup do for a kernel
// UDP socket: ReadFrom then returns the group's datagrams to the
// listener's port, with their sender's address. group is a *net.UDPAddr
// or a *net.IPAddr (its port and zone are not looked at). The daemon's
// kernel socket holding the port joins, so what holds for a kernel socket
// holds here: a listener of a wildcard address receives the group's
// datagrams (one of a unicast address gets none), and, as Linux's
// IP_MULTICAST_ALL has it, a group another socket of the host joined
// reaches the port too. A listener of both families (udp://:PORT) joins
// on its bind of the group's family; a listener of the other family
// fails. The interface goes to the daemon by name, which it looks up in
// the netns of the app's namespace (the app's own netns may be another).
// The membership lasts until LeaveGroup or Close.
//
// The errors are *net.OpError (Op "join"). Where a kernel socket's join
// fails with an errno, errors.Is finds that errno and the flow sentinel
// the daemon reported: syscall.EADDRINUSE with flow.ErrAddressInUse, a
// member on that interface already; syscall.ENOBUFS with flow.ErrLimit,
// the bound on a listener's memberships of its family's groups
// (net.ipv4.igmp_max_memberships of the daemon's netns, which the daemon
// applies to IPv6 groups too); syscall.ENODEV with
// flow.ErrNetUnreachable, no route to the group to pick an interface (a
// nil ifi); syscall.EINVAL with flow.ErrInvalidValue, a group that is not
// a multicast address of the listener's family, or an interface the
// namespace's netns does not have. A daemon without multicast
// membership (protocol before 2.3), or without a datapath, fails with
// flow.ErrNotSupported.
func (p *PacketConn) JoinGroup(ifi *net.Interface, group net.Addr) error {
	return p.membership("join", ifi, group, false)
}

// LeaveGroup ends the listener's membership of the multicast group on the
// interface ifi (nil: the interface the route to the group takes), as
// x/net's PacketConn.LeaveGroup does. A group the listener did not join
// there fails with an error that is syscall.EADDRNOTAVAIL and
// flow.ErrAddressNotInUse; the other errors are JoinGroup's, with Op
// "leave".
func (p *PacketConn) LeaveGroup(ifi *net.Interface, group net.Addr) error {
	return p.membership("leave", ifi, group, true)
}

func (p *PacketConn) membership(op string, ifi *net.Interface, group net.Addr, leave bool) error {
	g, err := groupOf(group)
	if err != nil {
		return netError(op, p.laddr, group, err)
	}
	ga := &net.IPAddr{IP: g.AsSlice()}
	if isClosed(p.done) {
		return netError(op, p.laddr, ga, net.ErrClosed)
	}
	b, err := p.bindOfFamily(g)
	if err != nil {
		return netError(op, p.laddr, ga, err)
	}
	m := &api.Membership{Handle: b.h, Group: g, Leave: leave}
	if ifi != nil {
		if ifi.Name == "" || len(ifi.Name) > api.MaxIfaceLen {
			return netError(op, p.laddr, ga, &Error{
				Msg: fmt.Sprintf("interface %q (index %d): the daemon looks interfaces up by name, which this one lacks", ifi.Name, ifi.Index),
				Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)})
		}
		m.Iface = ifi.Name
	}
	if p.a.cl.Server().Minor < 3 {
		return netError(op, p.laddr, ga, &Error{
			Msg: fmt.Sprintf("the daemon speaks protocol %d.%d: multicast membership takes 2.3", p.a.cl.Server().Major, p.a.cl.Server().Minor),
			Err: flow.ErrNotSupported})
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_, fds, err := p.a.call(ctx, m)
	api.CloseFDs(fds)
	if err != nil {
		if isClosed(p.done) {
			// Close unbound the listener meanwhile: the daemon's
			// refusal is for a handle gone, which the caller knows as
			// a closed listener.
			return netError(op, p.laddr, ga, net.ErrClosed)
		}
		return netError(op, p.laddr, ga, groupError(op, g, err))
	}
	return nil
}

// groupOf returns the address of a group given as x/net takes it.
func groupOf(group net.Addr) (netip.Addr, error) {
	var ip net.IP
	switch g := group.(type) {
	case *net.UDPAddr:
		if g != nil {
			ip = g.IP
		}
	case *net.IPAddr:
		if g != nil {
			ip = g.IP
		}
	default:
		return netip.Addr{}, &Error{Msg: fmt.Sprintf("group %v is a %T: want a *net.UDPAddr or a *net.IPAddr", group, group),
			Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, &Error{Msg: "group has no address", Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
	}
	return a.Unmap(), nil
}

// bindOfFamily returns the listener's bind of g's family.
func (p *PacketConn) bindOfFamily(g netip.Addr) (*wireBind, error) {
	for i := range p.binds {
		if addrPortOf(p.binds[i].ep).Addr().Unmap().Is4() == g.Is4() {
			return &p.binds[i], nil
		}
	}
	fam, other := "IPv4", "IPv6"
	if g.Is4() {
		fam, other = "IPv6", "IPv4"
	}
	return nil, &Error{Msg: fmt.Sprintf("the listener %v is %s alone: an %s group takes a listener of its family or of both (udp://:PORT)", p.laddr, fam, other),
		Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
}

// groupError is the error of a membership change the daemon refused: its
// sentinel, and the errno a kernel socket's setsockopt reports for it
// (api.Membership).
func groupError(op string, g netip.Addr, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, flow.ErrAddressInUse):
		errno = syscall.EADDRINUSE
	case errors.Is(err, flow.ErrAddressNotInUse):
		errno = syscall.EADDRNOTAVAIL
	case errors.Is(err, flow.ErrLimit):
		errno = syscall.ENOBUFS
	case errors.Is(err, flow.ErrNetUnreachable):
		errno = syscall.ENODEV
	case errors.Is(err, flow.ErrInvalidValue):
		errno = syscall.EINVAL
	}
	// The OpError names the operation and the group already.
	msg := strings.TrimPrefix(remoteText(err), fmt.Sprintf("%s group %v: ", op, g))
	if errno == 0 {
		return &Error{Msg: msg, Err: err}
	}
	return &Error{Msg: msg, Err: errors.Join(err, errno)}
}
