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
)

// Path MTU discovery for the TCP stack's connections.
//
// A router on the way that cannot forward a packet as large as the
// connection's segments answers with an ICMP "fragmentation needed"
// (IPv4) or "packet too big" (IPv6) message. The XDP program leaves ICMP
// to the kernel, and the kernel, which has no socket of such a connection
// (its ports are held by bound sockets that never connect), drops it: the
// connection would resend its segments unchanged and stall where a kernel
// socket's would shrink them. pmtuWatch reads a copy of each such message
// from a raw socket of the interface's namespace (the kernel hands every
// raw ICMP socket a copy of what it receives, and handles the message as
// before) and tells the connection it names (tcp.Stack.LowerPathMTU).
//
// What a message may do is bounded as Linux bounds it: a path MTU below
// 552 bytes (IPv4, Linux's min_pmtu) or 1,280 (IPv6) is taken as that
// floor, a message only lowers a connection's MSS, and one about no
// connection of the stack changes nothing. Unlike Linux, the quoted
// sequence number is not checked against the connection's unacknowledged
// data (gVisor does not expose it), so an off-path sender that guesses a
// connection's four-tuple can lower its MSS to that floor. The goroutine
// takes at most pmtuBudget messages per pmtuWindow; the kernel drops what
// a flood leaves beyond its socket's buffer.
const (
	pmtuMin4   = 552
	pmtuMin6   = 1280
	pmtuWindow = 100 * time.Millisecond
	pmtuBudget = 1000
)

// pmtuWatch holds the raw ICMP sockets (-1 where one could not be opened)
// and the eventfd that stops the goroutine.
type pmtuWatch struct {
	fd4, fd6 int
	stop     int
	messages atomic.Uint64 // messages about a connection of the Stack
}

// openPMTUWatch opens the raw sockets in the namespace nsh, each filtered
// to the one ICMP type it wants. It fails only if neither opens.
func openPMTUWatch(nsh netns.NsHandle) (*pmtuWatch, error) {
	w := &pmtuWatch{fd4: -1, fd6: -1, stop: -1}
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
			f.Data[0] &^= 1 << 2 // packet too big
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
		return nil, fmt.Errorf("path mtu watch: %w", err)
	}
	return w, nil
}

func (w *pmtuWatch) close() {
	for _, fd := range []int{w.fd4, w.fd6, w.stop} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// wake makes run return.
func (w *pmtuWatch) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(w.stop, one[:])
}

// run reads the sockets until wake (or ctx's end, while it waits out its
// budget) and hands each message to lower.
func (w *pmtuWatch) run(ctx context.Context, lower func(local, remote netip.AddrPort, mtu uint32) bool) {
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
				var local, remote netip.AddrPort
				var mtu uint32
				var ok bool
				if int(p.Fd) == w.fd4 {
					local, remote, mtu, ok = parseFragNeeded(buf[:m])
				} else {
					local, remote, mtu, ok = parsePacketTooBig(buf[:m])
				}
				if ok && lower(local, remote, mtu) {
					w.messages.Add(1)
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

// parseFragNeeded reads an IPv4 packet holding an ICMP destination
// unreachable, fragmentation needed message about a TCP segment: local
// and remote are the segment's source and destination (this host's end
// first), mtu the next hop's MTU, raised to pmtuMin4.
func parseFragNeeded(b []byte) (local, remote netip.AddrPort, mtu uint32, ok bool) {
	if len(b) < 20 {
		return
	}
	hl := int(b[0]&0x0f) * 4
	if b[0]>>4 != 4 || hl < 20 || len(b) < hl {
		return
	}
	icmp := b[hl:]
	if len(icmp) < 8+20+8 || icmp[0] != 3 || icmp[1] != 4 {
		return
	}
	mtu = max(uint32(binary.BigEndian.Uint16(icmp[6:8])), pmtuMin4)
	in := icmp[8:]
	ihl := int(in[0]&0x0f) * 4
	if in[0]>>4 != 4 || ihl < 20 || in[9] != unix.IPPROTO_TCP || len(in) < ihl+8 {
		return
	}
	src, dst := netip.AddrFrom4([4]byte(in[12:16])), netip.AddrFrom4([4]byte(in[16:20]))
	th := in[ihl:]
	local = netip.AddrPortFrom(src, binary.BigEndian.Uint16(th[0:2]))
	remote = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(th[2:4]))
	return local, remote, mtu, true
}

// parsePacketTooBig reads an ICMPv6 packet too big message (a raw ICMPv6
// socket's, without the IPv6 header) about a TCP segment, as
// parseFragNeeded; mtu is raised to pmtuMin6.
func parsePacketTooBig(b []byte) (local, remote netip.AddrPort, mtu uint32, ok bool) {
	if len(b) < 8+40+8 || b[0] != 2 || b[1] != 0 {
		return
	}
	mtu = max(binary.BigEndian.Uint32(b[4:8]), pmtuMin6)
	in := b[8:]
	if in[0]>>4 != 6 || in[6] != unix.IPPROTO_TCP {
		return
	}
	src, dst := netip.AddrFrom16([16]byte(in[8:24])), netip.AddrFrom16([16]byte(in[24:40]))
	th := in[40:]
	local = netip.AddrPortFrom(src, binary.BigEndian.Uint16(th[0:2]))
	remote = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(th[2:4]))
	return local, remote, mtu, true
}
