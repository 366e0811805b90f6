package nsbind

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// NeighState is a kernel neighbour entry's NUD state (NUD_* bits).
type NeighState uint16

// Neighbour states, as the kernel numbers them.
const (
	NeighIncomplete NeighState = unix.NUD_INCOMPLETE
	NeighReachable  NeighState = unix.NUD_REACHABLE
	NeighStale      NeighState = unix.NUD_STALE
	NeighDelay      NeighState = unix.NUD_DELAY
	NeighProbe      NeighState = unix.NUD_PROBE
	NeighFailed     NeighState = unix.NUD_FAILED
	NeighNoARP      NeighState = unix.NUD_NOARP
	NeighPermanent  NeighState = unix.NUD_PERMANENT
)

// usableStates are the states whose link-layer address may be used to send:
// confirmed, unconfirmed while the kernel re-checks it, or set without
// resolution (permanent; noarp: a static entry an operator set with `nud
// noarp`, or any entry of a device that does no ARP): the kernel's
// NUD_VALID.
const usableStates = NeighReachable | NeighStale | NeighDelay | NeighProbe | NeighPermanent | NeighNoARP

// Usable reports whether an entry in this state has a link-layer address
// frames may be sent to.
func (s NeighState) Usable() bool { return s&usableStates != 0 }

func (s NeighState) String() string {
	if s == 0 {
		return "none"
	}
	names := []struct {
		bit  NeighState
		name string
	}{
		{NeighIncomplete, "incomplete"}, {NeighReachable, "reachable"}, {NeighStale, "stale"},
		{NeighDelay, "delay"}, {NeighProbe, "probe"}, {NeighFailed, "failed"},
		{NeighNoARP, "noarp"}, {NeighPermanent, "permanent"},
	}
	var parts []string
	rest := s
	for _, n := range names {
		if s&n.bit != 0 {
			parts = append(parts, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint16(rest)))
	}
	return strings.Join(parts, "|")
}

// checkUnicast validates an address argument and returns it unmapped and
// without zone.
func checkUnicast(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap().WithZone("")
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%w: %v", ErrInvalidAddress, a)
	}
	return a, nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Route is the kernel's route to a destination (RouteGet).
type Route struct {
	Gateway netip.Addr // the next hop; invalid when the destination is on-link
	IfIndex int        // the outgoing interface
	Src     netip.Addr // the source address the kernel would pick
	// MTU is the route's: its mtu metric, or the path MTU the kernel
	// learned for the destination (a cached route exception); 0 when it
	// sets none and the interface's applies.
	MTU int
	// Broadcast: the destination is a broadcast address of the link (a
	// broadcast route: the subnet's, or 255.255.255.255), sent to the
	// broadcast MAC with no neighbour to resolve.
	Broadcast bool
	// Multicast: the destination is a multicast group (a multicast
	// route), sent to the group's MAC with no neighbour to resolve; the
	// Gateway of such a route is not a next hop.
	Multicast bool
	// Local: the destination is an address of this host (a local route:
	// one of the namespace's addresses, or loopback), which the kernel
	// delivers to the host's own sockets through the loopback interface.
	Local bool
}

// RouteGet asks the namespace's kernel routing for dst, a unicast or
// multicast address, as ip route get does. A local dst gives the loopback
// interface. ErrNoRoute when the kernel has no route, or only an
// unreachable, prohibit, blackhole or throw one.
func (n *Namespace) RouteGet(dst netip.Addr) (Route, error) {
	return n.RouteGetFrom(dst, netip.Addr{})
}

// RouteGetFrom is RouteGet for a packet from src, an address of the
// namespace, as ip route get DST from SRC does: the kernel's policy rules
// that match the source (ip rule from ADDR) choose the table, as they do
// for a kernel socket bound to src. An invalid, unspecified or link-local
// src is none (RouteGet): a link-local source needs its link named, and
// no policy routes by one.
func (n *Namespace) RouteGetFrom(dst, src netip.Addr) (Route, error) {
	verb := "route get " + dst.String() + " in " + n.desc
	d := dst.Unmap().WithZone("")
	if !d.IsValid() || d.IsUnspecified() {
		return Route{}, fmt.Errorf("%s: %w: %v", verb, ErrInvalidAddress, d)
	}
	var opts *netlink.RouteGetOptions
	if s := src.Unmap().WithZone(""); s.IsValid() && !s.IsUnspecified() && !s.IsLinkLocalUnicast() && s.Is4() == d.Is4() {
		verb = "route get " + dst.String() + " from " + s.String() + " in " + n.desc
		opts = &netlink.RouteGetOptions{SrcAddr: s.AsSlice()}
	}
	var rt Route
	err := n.handle(verb, func(h *netlink.Handle) error {
		rs, err := h.RouteGetWithOptions(d.AsSlice(), opts) // nil opts: RouteGet
		if err != nil {
			for _, e := range []error{unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EACCES, unix.EPERM, unix.EINVAL, unix.ESRCH} {
				if errors.Is(err, e) {
					detail := ""
					if e != unix.ENETUNREACH && e != unix.EHOSTUNREACH {
						detail = err.Error()
					}
					return noRoute(verb, detail, err)
				}
			}
			return fmt.Errorf("%s: %w", verb, err)
		}
		if len(rs) == 0 {
			return noRoute(verb, "", nil)
		}
		r := rs[0]
		switch r.Type {
		case unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_BLACKHOLE, unix.RTN_THROW:
			return noRoute(verb, routeTypeName(r.Type)+" route", routeTypeErrno(r.Type))
		}
		if r.LinkIndex <= 0 {
			return noRoute(verb, "no outgoing interface", nil)
		}
		rt.IfIndex, rt.MTU, rt.Broadcast, rt.Multicast = r.LinkIndex, r.MTU, r.Type == unix.RTN_BROADCAST, d.IsMulticast()
		rt.Local = r.Type == unix.RTN_LOCAL
		if g, ok := netip.AddrFromSlice(r.Gw); ok && !g.IsUnspecified() && !rt.Multicast {
			rt.Gateway = g.Unmap()
		}
		if s, ok := netip.AddrFromSlice(r.Src); ok {
			rt.Src = s.Unmap()
		}
		return nil
	})
	if err != nil {
		return Route{}, err
	}
	return rt, nil
}

// LookupNeighbour reads the kernel's neighbour entry for ip on ifindex. It
// returns the entry whatever its state; err is ErrNoNeighbour only when
// there is no entry at all.
func (n *Namespace) LookupNeighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, NeighState, error) {
	verb := fmt.Sprintf("neighbour %v on %d in %s", ip, ifindex, n.desc)
	a, err := checkUnicast(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", verb, err)
	}
	if ifindex <= 0 {
		return nil, 0, fmt.Errorf("%s: %w", verb, ErrNoInterface)
	}
	var mac net.HardwareAddr
	var state NeighState
	err = n.handle(verb, func(h *netlink.Handle) error {
		// The entry alone, as "ip neigh get" asks for it; a dump of the
		// whole table only where the kernel refuses that: a dump costs
		// a lookup about 1 ms with 1,000 entries (a flood of
		// destinations), the entry alone tens of microseconds.
		m, st, found, gerr := n.neighGet(ifindex, a)
		switch {
		case gerr == nil && found:
			mac, state = m, st
			return nil
		case gerr == nil:
			return fmt.Errorf("%s: %w", verb, ErrNoNeighbour)
		case isNoDevice(gerr):
			return wrapNoInterface(verb, gerr)
		}
		ns, err := h.NeighList(ifindex, familyOf(a))
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return wrapNoInterface(verb, err)
		}
		for _, e := range ns {
			ea, ok := netip.AddrFromSlice(e.IP)
			if !ok || ea.Unmap() != a || e.LinkIndex != ifindex || e.Flags&netlink.NTF_PROXY != 0 {
				continue
			}
			mac, state = slices.Clone(e.HardwareAddr), NeighState(e.State)
			return nil
		}
		return fmt.Errorf("%s: %w", verb, ErrNoNeighbour)
	})
	return mac, state, err
}

// Neighbour returns the link-layer address of ip on ifindex from the
// kernel's neighbour table when the entry is usable (reachable, stale,
// delay, probe, permanent or noarp). ok is false otherwise, also when the lookup
// failed; LookupNeighbour says why.
func (n *Namespace) Neighbour(ifindex int, ip netip.Addr) (mac net.HardwareAddr, state NeighState, ok bool) {
	mac, state, err := n.LookupNeighbour(ifindex, ip)
	if err != nil || !state.Usable() || len(mac) == 0 {
		return nil, state, false
	}
	return mac, state, true
}

// neighGet asks the kernel for the entry of a on ifindex alone
// (RTM_GETNEIGH with NDA_DST, which Linux answers since 5.0) over a
// rtnetlink socket inside the namespace. found is false when there is
// none (ENOENT); an error means the request failed or was refused, and
// the caller reads the table instead. Called with n.mu held shared.
func (n *Namespace) neighGet(ifindex int, a netip.Addr) (mac net.HardwareAddr, st NeighState, found bool, err error) {
	fd, err := n.getSocket()
	if err != nil {
		return nil, 0, false, err
	}
	n.getMu.Lock()
	defer n.getMu.Unlock()
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: uint8(familyOf(a)), Index: uint32(ifindex)})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, a.AsSlice()))
	seq := req.Seq
	if err := unix.Sendto(fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, 0, false, err
	}
	buf := make([]byte, 4096)
	for {
		nr, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, 0, false, err // EAGAIN: no answer within the socket's timeout
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:nr])
		if err != nil {
			return nil, 0, false, err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // the late answer of a request that timed out
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, 0, false, errors.New("short netlink error")
				}
				switch e := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[0:4]))); e {
				case 0:
					continue
				case unix.ENOENT:
					return nil, 0, false, nil
				default:
					return nil, 0, false, e
				}
			case unix.RTM_NEWNEIGH:
				idx, dst, mac, st, err := neighAnswer(m.Data)
				if err != nil {
					return nil, 0, false, err
				}
				if dst != a || idx != ifindex {
					return nil, 0, false, errors.New("neighbour get answered another entry")
				}
				return mac, st, true, nil
			}
		}
	}
}

// neighAnswer reads the body of an RTM_NEWNEIGH message: the ndmsg's
// interface index and state, NDA_DST and NDA_LLADDR. Every length is
// checked against the message's: a message too short for what it
// announces is an error (the library's NeighDeserialize indexes its
// header and some attributes unchecked, and looks a 16-byte link-layer
// address's interface up in the calling thread's namespace, not n's).
func neighAnswer(b []byte) (ifindex int, dst netip.Addr, mac net.HardwareAddr, st NeighState, err error) {
	if len(b) < unix.SizeofNdMsg {
		return 0, netip.Addr{}, nil, 0, fmt.Errorf("neighbour message of %d bytes, shorter than its header", len(b))
	}
	ifindex = int(int32(binary.NativeEndian.Uint32(b[4:8])))
	st = NeighState(binary.NativeEndian.Uint16(b[8:10]))
	for rest := b[unix.SizeofNdMsg:]; len(rest) >= unix.SizeofRtAttr; {
		alen := int(binary.NativeEndian.Uint16(rest[0:2]))
		if alen < unix.SizeofRtAttr || alen > len(rest) {
			return 0, netip.Addr{}, nil, 0, fmt.Errorf("neighbour message: attribute of %d bytes in %d", alen, len(rest))
		}
		val := rest[unix.SizeofRtAttr:alen]
		switch binary.NativeEndian.Uint16(rest[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) {
		case unix.NDA_DST:
			d, ok := netip.AddrFromSlice(val)
			if !ok {
				return 0, netip.Addr{}, nil, 0, fmt.Errorf("neighbour message: destination of %d bytes", len(val))
			}
			dst = d.Unmap()
		case unix.NDA_LLADDR:
			mac = slices.Clone(net.HardwareAddr(val))
		}
		// Attributes are padded to 4 bytes; the last one's padding may
		// be cut off.
		rest = rest[min(len(rest), (alen+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1)):]
	}
	if !dst.IsValid() {
		return 0, netip.Addr{}, nil, 0, errors.New("neighbour message without destination")
	}
	return ifindex, dst, mac, st, nil
}

// getSocket returns the namespace's rtnetlink socket for neighGet,
// opening it on first use. Called with n.mu held shared.
func (n *Namespace) getSocket() (int, error) {
	return n.lazySocket(&n.nlGet, "rtnetlink socket", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE, func(fd int) error {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		// An answer comes at once; one that does not leaves the caller
		// to the dump rather than waiting.
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
	})
}

// lazySocket returns *slot, a socket of the namespace, opening it inside
// the namespace and setting it up on first use. n.mu must be held (shared
// is enough: sockMu serialises creation).
func (n *Namespace) lazySocket(slot *int, what string, domain, typ, proto int, setup func(fd int) error) (int, error) {
	n.sockMu.Lock()
	defer n.sockMu.Unlock()
	if *slot >= 0 {
		return *slot, nil
	}
	var fd int
	err := inNamespace(int(n.ns), func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		return err
	})
	if err == nil {
		if err = setup(fd); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	*slot = fd
	return fd, nil
}

// ResolveNeighbour makes the kernel resolve ip on ifindex (ARP for IPv4,
// neighbour discovery for IPv6) without waiting for the answer. The entry
// it creates is the kernel's own and ages like any other; read the result
// with Neighbour, or wait for it with WaitNeighbour. A usable entry is left
// alone, a stale one gets re-confirmed, a missing or failed one is probed.
//
// IPv4 asks through rtnetlink with NTF_USE (as "ip neigh replace IP dev IF
// use" does): the kernel creates the entry if needed and runs its state
// machine on it as if a packet were waiting. No packet but the ARP request
// leaves the host.
//
// IPv6 cannot use that path reliably: a solicitation started without a
// packet takes its source from the interface's link-local address and is
// silently not sent while that address is still tentative (the first
// second or two after the link comes up, or for good when DAD is off and
// there is no link-local). So for IPv6 a zero-length UDP datagram to the
// discard port (9) of ip is sent out of ifindex (IPV6_PKTINFO) from an
// unconnected socket inside the namespace; the kernel queues it on the new
// entry, solicits with the datagram's source address, and sends the
// datagram once resolved. The peer answers it, at most, with an ICMPv6
// port unreachable, which is ignored.
func (n *Namespace) ResolveNeighbour(ifindex int, ip netip.Addr) error {
	verb := fmt.Sprintf("resolve neighbour %v on %d in %s", ip, ifindex, n.desc)
	a, err := checkUnicast(ip)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return fmt.Errorf("%s: %w", verb, ErrNoInterface)
	}
	if a.Is6() {
		return n.resolve6(verb, ifindex, a)
	}
	return n.use(verb, ifindex, a)
}

// UseNeighbour tells the kernel that its entry for ip on ifindex is in
// use, as a packet it sent through the entry would, for frames sent past
// it (AF_XDP): rtnetlink with NTF_USE, as "ip neigh replace IP dev IF use"
// asks. A stale entry is checked: after delay_first_probe_time, probes go
// to its link-layer address, and an unanswered last one fails the entry,
// which ResolveNeighbour then resolves afresh. Without it, an entry nothing
// of the kernel's uses stays stale at its address for good, also when the
// neighbour took a new one without announcing it. A reachable entry is
// only marked used; one being checked or resolved is left alone. No packet
// but the kernel's probes leaves the host. It is meant for an entry the
// kernel has (Neighbour found it); a missing one is created and resolved
// as ResolveNeighbour's IPv4 request does, which for IPv6 may send nothing
// (see ResolveNeighbour).
func (n *Namespace) UseNeighbour(ifindex int, ip netip.Addr) error {
	verb := fmt.Sprintf("use neighbour %v on %d in %s", ip, ifindex, n.desc)
	a, err := checkUnicast(ip)
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return fmt.Errorf("%s: %w", verb, ErrNoInterface)
	}
	return n.use(verb, ifindex, a)
}

// use runs the kernel's state machine on the entry of a on ifindex as if
// a packet were waiting on it (NTF_USE), creating the entry if needed.
func (n *Namespace) use(verb string, ifindex int, a netip.Addr) error {
	return n.handle(verb, func(h *netlink.Handle) error {
		err := h.NeighSet(&netlink.Neigh{
			LinkIndex: ifindex,
			Family:    familyOf(a),
			IP:        a.AsSlice(),
			Flags:     netlink.NTF_USE,
		})
		if err != nil {
			return wrapNoInterface(verb, err)
		}
		return nil
	})
}

// discardPort is the UDP port ResolveNeighbour's IPv6 datagram goes to.
const discardPort = 9

func (n *Namespace) resolve6(verb string, ifindex int, a netip.Addr) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.h == nil {
		return fmt.Errorf("%s: %w", verb, ErrClosed)
	}
	fd, err := n.udp6Locked()
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	sa := &unix.SockaddrInet6{Port: discardPort, Addr: a.As16()}
	oob := unix.PktInfo6(&unix.Inet6Pktinfo{Ifindex: uint32(ifindex)})
	_, err = unix.SendmsgN(fd, nil, oob, sa, unix.MSG_DONTWAIT)
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN):
		// Sent, or the socket buffer is full of datagrams still waiting
		// for resolution: the kernel is resolving already.
		return nil
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("%s: %w: %w", verb, ErrNoInterface, err)
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return noRoute(verb, "", err)
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return noRoute(verb, "no source address", err)
	}
	return fmt.Errorf("%s: %w", verb, err)
}

// udp6Locked returns the namespace's IPv6 UDP socket, creating it on first
// use. n.mu must be held (shared is enough: sockMu serialises creation).
func (n *Namespace) udp6Locked() (int, error) {
	return n.lazySocket(&n.udp6, "udp socket", unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP, func(fd int) error {
		// Nothing is ever read from it: keep what could queue up small.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1)
		return nil
	})
}

// WaitNeighbour waits until the kernel's entry for ip on ifindex is usable
// and returns it. It follows the neighbour table through a netlink
// subscription, so it wakes when the entry changes, not on a timer. It
// returns ErrNoNeighbour when resolution fails (the entry turns failed, or
// is failed when the wait begins) and ctx's error when ctx ends first. It
// does not start resolution itself: call ResolveNeighbour first.
func (n *Namespace) WaitNeighbour(ctx context.Context, ifindex int, ip netip.Addr) (net.HardwareAddr, NeighState, error) {
	verb := fmt.Sprintf("wait for neighbour %v on %d in %s", ip, ifindex, n.desc)
	a, err := checkUnicast(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", verb, err)
	}
	fd, err := n.dupFD()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", verb, err)
	}
	defer unix.Close(fd)
	nsh := nsHandle(fd)
	ch := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	var stopping stopFlag
	errc := make(chan error, 1)
	err = netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace: &nsh,
		ErrorCallback: func(err error) {
			if stopping.stopped() {
				return
			}
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		return nil, 0, fmt.Errorf("%s: subscribe: %w", verb, err)
	}
	defer func() {
		stopping.stop()
		close(done)
		for range ch {
		}
	}()
	// Subscribed first, read second: a change between the two is seen.
	// An entry already failed when read has failed since the caller's
	// ResolveNeighbour, which turned a failed entry incomplete again: its
	// notice may have come before the subscription, and none will follow.
	if mac, st, err := n.LookupNeighbour(ifindex, a); err == nil {
		if st.Usable() && len(mac) > 0 {
			return mac, st, nil
		}
		if st&NeighFailed != 0 {
			return nil, st, fmt.Errorf("%s: %w: resolution failed", verb, ErrNoNeighbour)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("%s: %w", verb, ctx.Err())
		case err := <-errc:
			// The subscription may have lost messages: look once more.
			if mac, st, ok := n.Neighbour(ifindex, a); ok {
				return mac, st, nil
			}
			return nil, 0, fmt.Errorf("%s: subscription: %w", verb, err)
		case u, open := <-ch:
			if !open {
				if mac, st, ok := n.Neighbour(ifindex, a); ok {
					return mac, st, nil
				}
				return nil, 0, fmt.Errorf("%s: subscription ended", verb)
			}
			ua, ok := netip.AddrFromSlice(u.IP)
			if !ok || ua.Unmap() != a || u.LinkIndex != ifindex {
				continue
			}
			st := NeighState(u.State)
			if u.Type == unix.RTM_NEWNEIGH && st.Usable() && len(u.HardwareAddr) > 0 {
				return slices.Clone(u.HardwareAddr), st, nil
			}
			if u.Type == unix.RTM_NEWNEIGH && st&NeighFailed != 0 {
				return nil, st, fmt.Errorf("%s: %w: resolution failed", verb, ErrNoNeighbour)
			}
		}
	}
}

// routeTypeName names the route types that mean no route.
func routeTypeName(t int) string {
	switch t {
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_THROW:
		return "throw"
	}
	return fmt.Sprintf("type %d", t)
}
