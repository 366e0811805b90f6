package app

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/xsessiond/xsessiond/flow"
)

// CutThroughAddr is the address of a cut-through peer: another app of the
// host, reached through shared memory with no packet and no IP address of
// its own. ReadFrom returns it for datagrams of cut-through sessions;
// WriteTo answers the session when given it.
type CutThroughAddr struct {
	Session flow.Handle // this app's end of the session
}

// Network returns "xsession".
func (a *CutThroughAddr) Network() string { return "xsession" }

func (a *CutThroughAddr) String() string { return fmt.Sprintf("cut-through:%#x", uint64(a.Session)) }

// endpointAddr is the net.Addr of a session endpoint.
func endpointAddr(e flow.Endpoint) net.Addr {
	ap := netip.AddrPortFrom(e.Addr, e.Port)
	if e.Transport == flow.TransportTCP {
		return net.TCPAddrFromAddrPort(ap)
	}
	return net.UDPAddrFromAddrPort(ap)
}

// unspecified is the unspecified address of a's family.
func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func addrPortOf(e flow.Endpoint) netip.AddrPort {
	a := e.Addr
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, e.Port)
}

// mapped4 returns a TCP address of IPv4 in its IPv4-mapped IPv6 form, as a
// kernel socket of both families (net.Listen("tcp", ":PORT")) names its
// IPv4 peers and the addresses they reached; any other address as it is.
func mapped4(a net.Addr) net.Addr {
	if x, ok := a.(*net.TCPAddr); ok {
		if ap := x.AddrPort(); ap.Addr().Is4() {
			return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port()))
		}
	}
	return a
}

// zonedAddr sets zone on a (a *net.TCPAddr or *net.UDPAddr) when its
// address is link-local: the address of a socket bound or connected with
// a zone names its link, as getsockname gives it a scope id, and other
// addresses none. It returns a.
func zonedAddr(a net.Addr, zone string) net.Addr {
	if zone == "" {
		return a
	}
	switch x := a.(type) {
	case *net.TCPAddr:
		if x.IP.IsLinkLocalUnicast() || x.IP.IsLinkLocalMulticast() {
			x.Zone = zone
		}
	case *net.UDPAddr:
		if x.IP.IsLinkLocalUnicast() || x.IP.IsLinkLocalMulticast() {
			x.Zone = zone
		}
	}
	return a
}

// linkZone is the zone an app names a link-local peer of its namespace's
// link with, for a listener whose last bind (the IPv6 one of a listener of
// both families) is b: zone when the app gave one, or else the link's
// interface index from the daemon's reply, which the daemon takes back in
// a zone as it takes the name. "" for an IPv4 listener, which has no
// link-local peers, and for a reply without an index.
func linkZone(zone string, b bound) string {
	if !b.ep.Addr.Is6() { // endpoints are unmapped (flow.ParseURI)
		return ""
	}
	if zone != "" || b.r.Local.IfIndex <= 0 {
		return zone
	}
	return strconv.Itoa(b.r.Local.IfIndex)
}

// needsScope reports whether a is an IPv6 address whose zone a kernel
// socket reads (a link-local unicast address, or a multicast group of
// interface- or link-local scope: __ipv6_addr_needs_scope_id). bind(2),
// connect(2) and sendto(2) ignore the scope id of any other address, and
// getsockname gives it none.
func needsScope(a netip.Addr) bool {
	if !a.Is6() || a.Is4In6() {
		return false
	}
	return a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()
}

// scopedZone splits uri (with a numeric port) into the URI to send the
// daemon and the zone of its address: the zone of a bracketed address
// that needs one (needsScope), which the daemon checks; the URI without
// it and "" for an address that needs none, whose zone the kernel
// ignores (tcp://[fd77::1%lo]:80 binds fd77::1, as net.Listen does). A
// URI that does not parse comes back as it is, with its zone.
func scopedZone(uri string) (string, string) {
	plain, zone := flow.SplitZone(uri)
	if zone == "" {
		return uri, ""
	}
	ep, err := flow.ParseURI(plain)
	if err != nil || needsScope(ep.Addr) {
		return uri, zone
	}
	return plain, ""
}
