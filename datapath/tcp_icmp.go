package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// Routers' ICMP errors for the TCP stack's connections.
//
// A router on the way that cannot forward a packet as large as the
// connection's segments answers with an ICMP "fragmentation needed"
// (IPv4) or "packet too big" (IPv6) message; one that cannot reach the
// peer at all, with a "destination unreachable" (no route, no host
// answering its ARP or ND, a filter). The XDP program leaves ICMP to the
// kernel, and the kernel, which has no socket of such a connection (its
// ports are held by bound sockets that never connect), drops it: the
// connection would resend its segments unchanged and stall, or wait out
// its connect timeout, where a kernel socket's would shrink its segments
// or fail its connect at once. icmpWatch reads a copy of each such
// message from a raw socket of the interface's namespace (the kernel
// hands every raw ICMP socket a copy of what it receives, and handles the
// message as before) and tells the connection it names: a smaller path
// MTU lowers its MSS (tcp.Stack.LowerPathMTU), an unreachable peer fails
// a connection still in its handshake with ENETUNREACH, EHOSTUNREACH or
// ECONNREFUSED (tcp.Stack.Unreachable), as Linux's do, by the codes
// Linux maps to those errors.
//
// What a message may do is bounded as Linux bounds it: a path MTU below
// 552 bytes (IPv4, Linux's min_pmtu) or 1,280 (IPv6) is taken as that
// floor, a message only lowers a connection's MSS, an established
// connection is not ended by an unreachable message, and one about no
// connection of the stack changes nothing. Unlike Linux, the quoted
// sequence number is not checked against the connection's unacknowledged
// data (gVisor does not expose it), so an off-path sender that guesses a
// connection's four-tuple can lower its MSS to that floor, or fail it
// while it connects. The goroutine takes at most pmtuBudget messages per
// pmtuWindow; the kernel drops what a flood leaves beyond its socket's
// buffer.
const (
	pmtuMin4   = 552
	pmtuMin6   = 1280
	pmtuWindow = 100 * time.Millisecond
	pmtuBudget = 1000
)

// icmpWatch holds the raw ICMP sockets (-1 where one could not be opened)
// and the eventfd that stops the goroutine.
type icmpWatch struct {
	fd4, fd6     int
	stop         int
	tooBig       atomic.Uint64 // path MTU messages about a connection of the Stack
	unreachables atomic.Uint64 // unreachable messages that failed a connect
}

// icmpMsg is what an ICMP error says of a TCP connection from local to
// remote: a path MTU (mtu, unreach zero), or an unreachable peer.
type icmpMsg struct {
	local, remote netip.AddrPort
	mtu           uint32
	unreach       tcp.Unreachable
}

// openICMPWatch opens the raw sockets in the namespace nsh, each filtered
// to the ICMP types it wants. It fails only if neither opens.
func openICMPWatch(nsh netns.NsHandle) (*icmpWatch, error) {
	w := &icmpWatch{fd4: -1, fd6: -1, stop: -1}
	var errs []error
	err := doIn(nsh, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
		if err == nil {
			// ICMP_FILTER: a bit set for each type the socket does not
			// want; all but destination unreachable (3).
			if err = unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(^uint32(1<<3))); err != nil {
				unix.Close(fd)
			} else {
				w.fd4 = fd
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("icmp socket: %w", err))
		}
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMPV6)
		if err == nil {
			var f unix.ICMPv6Filter
			for i := range f.Data {
				f.Data[i] = ^uint32(0)
			}
			f.Data[0] &^= 1<<1 | 1<<2 // destination unreachable, packet too big
			if err = unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
				unix.Close(fd)
			} else {
				w.fd6 = fd
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("icmpv6 socket: %w", err))
		}
		return nil
	})
	if err == nil && w.fd4 < 0 && w.fd6 < 0 {
		err = errors.Join(errs...)
	}
	if err == nil {
		w.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	}
	if err != nil {
		w.close()
		return nil, fmt.Errorf("icmp watch: %w", err)
	}
	return w, nil
}

func (w *icmpWatch) close() {
	for _, fd := range []int{w.fd4, w.fd6, w.stop} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// wake makes run return.
func (w *icmpWatch) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(w.stop, one[:])
}

// run reads the sockets until wake (or ctx's end, while it waits out its
// budget) and hands each message to st.
func (w *icmpWatch) run(ctx context.Context, st *tcp.Stack) {
	fds := []unix.PollFd{{Fd: int32(w.stop), Events: unix.POLLIN}}
	for _, fd := range []int{w.fd4, w.fd6} {
		if fd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		}
	}
	buf := make([]byte, 1500)
	start, n := time.Now(), 0
	for {
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if fds[0].Revents != 0 {
			return
		}
		for _, p := range fds[1:] {
			if p.Revents&unix.POLLNVAL != 0 {
				return
			}
			if p.Revents&unix.POLLERR != 0 {
				// A pending socket error (none is asked for) would
				// wake poll at once until read; reading clears it.
				_, _ = unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			}
			for p.Revents&unix.POLLIN != 0 && n < pmtuBudget {
				m, _, err := unix.Recvfrom(int(p.Fd), buf, unix.MSG_DONTWAIT)
				if err != nil {
					break
				}
				n++
				parse := parseICMPv6
				if int(p.Fd) == w.fd4 {
					parse = parseICMPv4
				}
				msg, ok := parse(buf[:m])
				switch {
				case !ok:
				case msg.unreach != 0:
					if st.Unreachable(msg.local, msg.remote, msg.unreach) {
						w.unreachables.Add(1)
					}
				case st.LowerPathMTU(msg.local, msg.remote, msg.mtu):
					w.tooBig.Add(1)
				}
			}
		}
		if n >= pmtuBudget {
			if d := pmtuWindow - time.Since(start); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
		if time.Since(start) >= pmtuWindow {
			start, n = time.Now(), 0
		}
	}
}

// unreach4 maps the codes of an ICMPv4 destination unreachable to what
// they say of the peer, as Linux's icmp_err_convert maps them to
// ENETUNREACH, EHOSTUNREACH and ECONNREFUSED; codes it maps to other
// errors (protocol unreachable, source route failed, host unknown, ...)
// are left alone.
var unreach4 = [16]tcp.Unreachable{
	0: tcp.NetUnreachable, 1: tcp.HostUnreachable, 3: tcp.PortUnreachable,
	6: tcp.NetUnreachable, 9: tcp.NetUnreachable, 10: tcp.HostUnreachable, 11: tcp.NetUnreachable,
	12: tcp.HostUnreachable, 13: tcp.HostUnreachable, 14: tcp.HostUnreachable, 15: tcp.HostUnreachable,
}

// unreach6 is unreach4 for ICMPv6 (Linux's icmpv6_err_convert): no route,
// beyond the scope of the source and address unreachable, port
// unreachable; the administrative refusals (EACCES) are left alone.
var unreach6 = [5]tcp.Unreachable{0: tcp.NetUnreachable, 2: tcp.HostUnreachable, 3: tcp.HostUnreachable, 4: tcp.PortUnreachable}

// parseICMPv4 reads an IPv4 packet holding an ICMP destination
// unreachable message about a TCP segment: local and remote are the
// segment's source and destination (this host's end first); for
// fragmentation needed, mtu is the next hop's MTU, raised to pmtuMin4.
func parseICMPv4(b []byte) (m icmpMsg, ok bool) {
	if len(b) < 20 {
		return
	}
	hl := int(b[0]&0x0f) * 4
	if b[0]>>4 != 4 || hl < 20 || len(b) < hl {
		return
	}
	icmp := b[hl:]
	if len(icmp) < 8+20+8 || icmp[0] != 3 {
		return
	}
	switch code := icmp[1]; {
	case code == 4:
		m.mtu = max(uint32(binary.BigEndian.Uint16(icmp[6:8])), pmtuMin4)
	case int(code) < len(unreach4) && unreach4[code] != 0:
		m.unreach = unreach4[code]
	default:
		return
	}
	in := icmp[8:]
	ihl := int(in[0]&0x0f) * 4
	if in[0]>>4 != 4 || ihl < 20 || in[9] != unix.IPPROTO_TCP || len(in) < ihl+8 {
		return
	}
	src, dst := netip.AddrFrom4([4]byte(in[12:16])), netip.AddrFrom4([4]byte(in[16:20]))
	th := in[ihl:]
	m.local = netip.AddrPortFrom(src, binary.BigEndian.Uint16(th[0:2]))
	m.remote = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(th[2:4]))
	return m, true
}

// parseICMPv6 reads an ICMPv6 packet too big or destination unreachable
// message (a raw ICMPv6 socket's, without the IPv6 header) about a TCP
// segment, as parseICMPv4; mtu is raised to pmtuMin6.
func parseICMPv6(b []byte) (m icmpMsg, ok bool) {
	if len(b) < 8+40+8 {
		return
	}
	switch typ, code := b[0], b[1]; {
	case typ == 2 && code == 0:
		m.mtu = max(binary.BigEndian.Uint32(b[4:8]), pmtuMin6)
	case typ == 1 && int(code) < len(unreach6) && unreach6[code] != 0:
		m.unreach = unreach6[code]
	default:
		return
	}
	in := b[8:]
	if in[0]>>4 != 6 || in[6] != unix.IPPROTO_TCP {
		return
	}
	src, dst := netip.AddrFrom16([16]byte(in[8:24])), netip.AddrFrom16([16]byte(in[24:40]))
	th := in[40:]
	m.local = netip.AddrPortFrom(src, binary.BigEndian.Uint16(th[0:2]))
	m.remote = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(th[2:4]))
	return m, true
}
