package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// The kernel path of a reserved port. Whatever the XDP program leaves to
// the kernel for the port reaches the Reservation's socket: above all the
// fragments of datagrams larger than a frame that arrive out of order (the
// worker reassembles those whose first fragment comes first), which the
// kernel reassembles (bounded per namespace by net.ipv4.ipfrag_high_thresh
// and ipfrag_time, their IPv6 twins, overlapping fragments dropped as RFC
// 5722 asks, every failure counted in /proc/net/snmp's ReasmFails), and
// datagrams that
// arrive before the program steers the port. Open makes the socket keep
// them, with their destination address, for Recv. Send sends a datagram
// through the kernel, which fragments it to the path MTU, or, for a
// don't-fragment datagram, refuses it with EMSGSIZE when it does not fit
// the path MTU.

// kernelRcvBuf is the receive buffer asked for an opened reservation: a
// few dozen datagrams of 64 KiB.
const kernelRcvBuf = 4 << 20

// Open makes the socket keep what the kernel delivers to it (it dropped
// everything before) and report each datagram's destination address.
func (r *Reservation) Open() error {
	var err error
	if r.addr.Addr().Is6() {
		err = unix.SetsockoptInt(r.fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	} else {
		err = unix.SetsockoptInt(r.fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
	if err != nil {
		return fmt.Errorf("open reservation %v: pktinfo: %w", r.addr, err)
	}
	_ = unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, kernelRcvBuf)
	// A datagram larger than a frame to a broadcast address goes out
	// through this socket, as a Go program's UDP socket sends it.
	_ = unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
	if err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0); err != nil {
		return fmt.Errorf("open reservation %v: detach filter: %w", r.addr, err)
	}
	return nil
}

// ErrTruncated: Recv's datagram did not fit its buffer.
var ErrTruncated = errors.New("datagram larger than the buffer")

// Recv reads one datagram the kernel delivered into buf without blocking:
// its length, sender and destination address. unix.EAGAIN: none; an errno
// of recvmsg(2) is the socket's pending error (an ICMP error of a
// connected socket), which the read cleared.
// oob must hold a pktinfo control message (64 bytes do).
func (r *Reservation) Recv(buf, oob []byte) (int, netip.AddrPort, netip.Addr, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fd < 0 {
		return 0, netip.AddrPort{}, netip.Addr{}, unix.EBADF
	}
	n, oobn, flags, sa, err := unix.Recvmsg(r.fd, buf, oob, unix.MSG_DONTWAIT)
	if err != nil {
		return 0, netip.AddrPort{}, netip.Addr{}, err
	}
	if flags&unix.MSG_TRUNC != 0 {
		return 0, netip.AddrPort{}, netip.Addr{}, ErrTruncated
	}
	var from netip.AddrPort
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		from = netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port))
	case *unix.SockaddrInet6:
		from = netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port))
	}
	dst := r.addr.Addr()
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err == nil {
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
				dst = netip.AddrFrom4([4]byte(m.Data[8:12])) // in_pktinfo.ipi_addr: the header's destination
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16:
				dst = netip.AddrFrom16([16]byte(m.Data[0:16]))
			}
		}
	}
	return n, from, dst, nil
}

// Send sends payload to dst through the kernel, from src when it is valid
// (else the route's source, or the bound address), without blocking. The
// kernel fragments it to the path MTU; with df (don't fragment) it sends
// it as one packet (IPv4: DF set) or fails with unix.EMSGSIZE when the
// packet exceeds the path MTU. oob must hold two control messages (64
// bytes do); callers that may send at once (two listeners sharing the
// socket: udp.Target.Borrowed) each pass their own. An IPv4 send holds
// the socket to itself: its don't-fragment mode is the socket's
// (setDF), switched around the datagram.
func (r *Reservation) Send(payload []byte, dst netip.AddrPort, src netip.Addr, oob []byte, df bool) error {
	if r.addr.Addr().Is6() {
		r.mu.RLock()
		defer r.mu.RUnlock()
	} else {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	if r.fd < 0 {
		return unix.EBADF
	}
	a := dst.Addr().Unmap()
	var sa unix.Sockaddr
	oob = oob[:0]
	if r.addr.Addr().Is6() {
		s6 := sockaddrs6.Get().(*unix.SockaddrInet6)
		defer sockaddrs6.Put(s6)
		*s6 = unix.SockaddrInet6{Addr: a.As16(), Port: int(dst.Port())}
		sa = s6
		if src.IsValid() && r.addr.Addr().IsUnspecified() {
			oob = appendCmsg(oob, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, 20)
			s := src.As16()
			copy(oob[unix.CmsgSpace(0):], s[:])
		}
		if df {
			start := len(oob)
			oob = appendCmsg(oob, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 4)
			binary.NativeEndian.PutUint32(oob[start+unix.CmsgLen(0):], 1)
		}
	} else {
		if !a.Is4() {
			return unix.EAFNOSUPPORT
		}
		s4 := sockaddrs4.Get().(*unix.SockaddrInet4)
		defer sockaddrs4.Put(s4)
		*s4 = unix.SockaddrInet4{Addr: a.As4(), Port: int(dst.Port())}
		sa = s4
		if src.IsValid() && r.addr.Addr().IsUnspecified() && src.Unmap().Is4() {
			oob = appendCmsg(oob, unix.IPPROTO_IP, unix.IP_PKTINFO, 12)
			s := src.Unmap().As4()
			copy(oob[unix.CmsgSpace(0)+4:], s[:]) // in_pktinfo.ipi_spec_dst
		}
		if err := r.setDF(df); err != nil {
			return err
		}
	}
	_, err := unix.SendmsgN(r.fd, payload, oob, sa, unix.MSG_DONTWAIT)
	return err
}

// sockaddrs4 and sockaddrs6 lend Send the destination it hands the
// kernel (which copies it): a socket address passed as a unix.Sockaddr
// escapes to the heap, and every datagram to a multicast group, whatever
// its size, goes out through Send.
var (
	sockaddrs4 = sync.Pool{New: func() any { return new(unix.SockaddrInet4) }}
	sockaddrs6 = sync.Pool{New: func() any { return new(unix.SockaddrInet6) }}
)

// setDF switches an IPv4 socket's path MTU discovery to IP_PMTUDISC_DO
// (df) or back to the mode it had, when it is not so already: IPv4 has no
// control message for it, so the mode follows the datagrams sent, at two
// system calls per change.
func (r *Reservation) setDF(df bool) error {
	if df == r.dfOn {
		return nil
	}
	mode := r.pmtuWas
	if df {
		was, err := unix.GetsockoptInt(r.fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER)
		if err != nil {
			return fmt.Errorf("don't fragment: %w", err)
		}
		r.pmtuWas, mode = was, unix.IP_PMTUDISC_DO
	}
	if err := unix.SetsockoptInt(r.fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode); err != nil {
		return fmt.Errorf("don't fragment: %w", err)
	}
	r.dfOn = df
	return nil
}

// appendCmsg appends a zeroed control message of n data bytes.
func appendCmsg(b []byte, level, typ int32, n int) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(n))...)
	h := b[start:]
	binary.NativeEndian.PutUint64(h[0:8], uint64(unix.CmsgLen(n)))
	binary.NativeEndian.PutUint32(h[8:12], uint32(level))
	binary.NativeEndian.PutUint32(h[12:16], uint32(typ))
	return b
}

// JoinGroup makes the socket a member of the multicast group on the
// interface of index ifindex in the socket's netns (0: the one the route
// to the group takes), as IP_ADD_MEMBERSHIP with an ip_mreqn (IPv4) or
// IPV6_JOIN_GROUP (IPv6) does for any kernel socket: the kernel then
// accepts the group's datagrams on that interface and delivers those to
// the socket's port to it (a socket bound to a wildcard address; one
// bound to a unicast address gets none). The membership lasts until
// LeaveGroup or Close. An IPv6 socket is a member of at most max groups
// (max < 0: no bound): Linux bounds an IPv4 socket's memberships
// (net.ipv4.igmp_max_memberships), an IPv6 one's only by its option
// memory (net.core.optmem_max, thousands of groups). The errors wrap the
// kernel's errno: EADDRINUSE, a member there already; ENOBUFS,
// net.ipv4.igmp_max_memberships (IPv6: max) reached; ENODEV, no such
// interface, or no route to the group to pick one; EINVAL, not a
// multicast address of the socket's family; EBADF, the socket is closed.
func (r *Reservation) JoinGroup(group netip.Addr, ifindex, max int) error {
	return r.membership(group, ifindex, true, max)
}

// LeaveGroup ends the socket's membership of the multicast group on the
// interface of index ifindex (0: the interface of the route to the group,
// as for the join), as IP_DROP_MEMBERSHIP or IPV6_LEAVE_GROUP does. The
// errors wrap the kernel's errno: EADDRNOTAVAIL, not a member there;
// ENODEV and EBADF as for JoinGroup.
func (r *Reservation) LeaveGroup(group netip.Addr, ifindex int) error {
	return r.membership(group, ifindex, false, -1)
}

func (r *Reservation) membership(group netip.Addr, ifindex int, join bool, max int) error {
	r.gmu.Lock()
	defer r.gmu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	op := "leave"
	if join {
		op = "join"
	}
	if r.fd < 0 {
		return fmt.Errorf("%s group %v on %v: %w", op, group, r.addr, unix.EBADF)
	}
	if ifindex < 0 || ifindex > 0x7fffffff {
		return fmt.Errorf("%s group %v on %v: ifindex %d: %w", op, group, r.addr, ifindex, unix.ENODEV)
	}
	g := group.Unmap()
	var err error
	if r.addr.Addr().Is6() {
		if !g.Is6() {
			return fmt.Errorf("%s group %v on %v: not an IPv6 address: %w", op, group, r.addr, unix.EINVAL)
		}
		opt := unix.IPV6_LEAVE_GROUP
		if join {
			opt = unix.IPV6_JOIN_GROUP
			// A group joined there already is the kernel's to refuse
			// (EADDRINUSE), as Linux checks an IPv4 socket's
			// memberships before its bound.
			_, member := r.joined[membership{g, ifindex}]
			if max >= 0 && r.groups >= max && g.IsMulticast() && !member {
				return fmt.Errorf("%s group %v on %v: a member of %d groups: %w", op, group, r.addr, r.groups, unix.ENOBUFS)
			}
		}
		err = unix.SetsockoptIPv6Mreq(r.fd, unix.IPPROTO_IPV6, opt, &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(ifindex)})
	} else {
		if !g.Is4() {
			return fmt.Errorf("%s group %v on %v: not an IPv4 address: %w", op, group, r.addr, unix.EINVAL)
		}
		opt := unix.IP_DROP_MEMBERSHIP
		if join {
			opt = unix.IP_ADD_MEMBERSHIP
		}
		err = unix.SetsockoptIPMreqn(r.fd, unix.IPPROTO_IP, opt, &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifindex)})
	}
	if err != nil {
		return fmt.Errorf("%s group %v on %v: %w", op, group, r.addr, err)
	}
	if join {
		r.groups++
	} else if r.groups > 0 {
		r.groups--
	}
	if r.addr.Addr().Is6() {
		if r.joined == nil {
			r.joined = map[membership]struct{}{}
		}
		if join {
			r.joined[membership{g, ifindex}] = struct{}{}
		} else {
			// The kernel left the membership of the interface ifindex
			// resolves to: an entry of index 0 may be that one, as a
			// leave of 0 may be any entry's. Dropping one too many
			// only keeps a repeated join under the bound.
			for m := range r.joined {
				if m.group == g && (m.ifindex == ifindex || m.ifindex == 0 || ifindex == 0) {
					delete(r.joined, m)
				}
			}
		}
	}
	return nil
}

// membership is an IPv6 socket's membership of a group on the interface
// of an index (0: the one of the route to the group).
type membership struct {
	group   netip.Addr
	ifindex int
}
