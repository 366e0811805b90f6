package api

import (
	"net/netip"

	"github.com/xsessiond/xsessiond/flow"
)

// PathMTU asks for the path MTU of datagrams from the app's listener or
// session Handle to Remote, as the datapath would send them: the
// interface's MTU, lowered by the route's (a route's mtu metric, or a path
// MTU the kernel learned from ICMP). The reply is a PathMTUReply; an Error
// wrapping flow.ErrNotSupported when no datapath serves the handle's
// namespace (no limit is known then). Protocol 1.2: a client sends it only
// to a daemon whose HelloReply says minor version 2 or more (an older one
// closes the connection on a type it does not know).
type PathMTU struct {
	Handle flow.Handle
	Remote netip.Addr
}

// PathMTUReply answers PathMTU: the largest IP packet, in bytes, that
// leaves whole towards the remote address. Protocol 1.2.
type PathMTUReply struct {
	MTU uint32
}

// Type returns TypePathMTU.
func (*PathMTU) Type() Type { return TypePathMTU }

// FDs returns 0.
func (*PathMTU) FDs() int { return 0 }

func (m *PathMTU) encode(e *encoder) {
	e.u64(uint64(m.Handle))
	e.addr(m.Remote)
}

func (m *PathMTU) decode(d *decoder) {
	m.Handle = flow.Handle(d.u64())
	m.Remote = d.addr()
}

// Type returns TypePathMTUReply.
func (*PathMTUReply) Type() Type { return TypePathMTUReply }

// FDs returns 0.
func (*PathMTUReply) FDs() int { return 0 }

func (m *PathMTUReply) encode(e *encoder) { e.u32(m.MTU) }
func (m *PathMTUReply) decode(d *decoder) { m.MTU = d.u32() }
