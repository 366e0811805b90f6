package api

import (
	"net/netip"

	"github.com/xsessiond/xsessiond/flow"
)

// Membership makes the app's UDP listener Handle (a global one, in
// datagram mode) join the multicast Group, or leave it with Leave set, on
// the interface named Iface in the netns of the app's namespace ("": the
// interface the route to the group takes), as IP_ADD_MEMBERSHIP and
// IPV6_JOIN_GROUP (IP_DROP_MEMBERSHIP, IPV6_LEAVE_GROUP) do for a kernel
// socket bound there: the daemon's kernel socket holding the listener's
// port joins, and the group's datagrams to the port reach the listener's
// rx fifo through it, as a broadcast does. The interface goes by name
// because the app's netns may not be the namespace's. Group is a
// multicast address of the listener's family. The membership lasts until
// the leave or the listener's end.
//
// The reply is OK. The codes of an Error stand for the kernel's errno,
// which the app library gives back beside the sentinel:
//
//	flow.ErrAddressInUse     EADDRINUSE     a member on that interface already
//	flow.ErrAddressNotInUse  EADDRNOTAVAIL  a leave of a group not joined there
//	flow.ErrLimit            ENOBUFS        a listener's memberships at net.ipv4.igmp_max_memberships (either family)
//	flow.ErrNetUnreachable   ENODEV         no route to the group picks an interface
//	flow.ErrInvalidValue     EINVAL         not a multicast address of the listener's family, or no interface of that name
//
// flow.ErrNotSupported: the handle is no UDP listener on the wire (a
// connected session, another transport, no datapath). Protocol 2.3: a
// client sends it only to a daemon whose HelloReply says minor version 3
// or more (an older one closes the connection on a type it does not
// know).
type Membership struct {
	Handle flow.Handle
	Group  netip.Addr
	Iface  string // at most MaxIfaceLen bytes
	Leave  bool
}

// Type returns TypeMembership.
func (*Membership) Type() Type { return TypeMembership }

// FDs returns 0.
func (*Membership) FDs() int { return 0 }

func (m *Membership) encode(e *encoder) {
	e.u64(uint64(m.Handle))
	e.addr(m.Group)
	e.str(m.Iface, MaxIfaceLen, "membership interface")
	e.bool(m.Leave)
}

func (m *Membership) decode(d *decoder) {
	m.Handle = flow.Handle(d.u64())
	m.Group = d.addr()
	m.Iface = d.str(MaxIfaceLen, "membership interface")
	m.Leave = d.bool()
}
