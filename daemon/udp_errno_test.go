package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The tests of this file compare the *net.OpError of a UDP socket's
// failed calls, on the app library's sockets and on kernel sockets of host
// B opened through package net in the same rig: its Op, its Net, Source
// and Addr, whether OpError.Err is an *os.SyscallError and the call it
// names ("read", "write", "recvfrom", "sendto"), and the errno under it.

// udpErrnoShape describes err as a program that takes it apart sees it:
// the *net.OpError's Op; its Net, "socket's" when it is the network the
// socket was opened with (network); Source and Addr, by their names in
// names (keyed by String) or as "other ADDR"; where an *os.SyscallError
// is (OpError.Err itself, or deeper) and the call it names; and, with
// errno set, the errno errors.As finds under it (errors.Is then holds for
// it), with errClass's sentinels; without, only whether there is one.
func udpErrnoShape(err error, network string, names map[string]string, errno bool) string {
	if err == nil {
		return "nil"
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("no *net.OpError (%T): %s", err, errClass(err))
	}
	name := func(a net.Addr) string {
		if a == nil {
			return "nil"
		}
		if v := reflect.ValueOf(a); v.Kind() == reflect.Pointer && v.IsNil() {
			return "nil"
		}
		if l, ok := names[a.String()]; ok {
			return l
		}
		return "other " + a.String()
	}
	nw := oe.Net
	if nw == network {
		nw = "socket's"
	}
	sc := "no *os.SyscallError"
	var se *os.SyscallError
	if s, ok := oe.Err.(*os.SyscallError); ok {
		sc = "Err is *os.SyscallError " + s.Syscall
	} else if errors.As(err, &se) {
		sc = "*os.SyscallError " + se.Syscall + " deeper than Err"
	}
	s := fmt.Sprintf("op=%s net=%s source=%s addr=%s %s", oe.Op, nw, name(oe.Source), name(oe.Addr), sc)
	if !errno {
		var e syscall.Errno
		return s + " errno present=" + boolText(errors.As(err, &e))
	}
	en := "no errno"
	var e syscall.Errno
	if errors.As(err, &e) {
		en = unix.ErrnoName(e)
		if !errors.Is(err, e) {
			en += " (errors.Is does not find it)"
		}
	}
	return s + " errno=" + en + " class=" + errClass(err)
}

// udpNames names the addresses of a socket's errors: its own, and
// others'.
type udpNames map[string]string

func (n udpNames) set(a net.Addr, name string) {
	if a != nil {
		n[a.String()] = name
	}
}

// setDontFragment turns don't fragment on for c: IP_PMTUDISC_DO (and
// IPV6_DONTFRAG) on a kernel socket, SetDontFragment on the app's.
func setDontFragment(t *testing.T, c any) {
	t.Helper()
	if k, ok := c.(*net.UDPConn); ok {
		rc, err := k.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			if k.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
				return
			}
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1))
		}); err != nil {
			t.Fatal(err)
		}
		if serr != nil {
			t.Fatal(serr)
		}
		return
	}
	if err := c.(interface{ SetDontFragment(bool) error }).SetDontFragment(true); err != nil {
		t.Fatal(err)
	}
}

// sideNetwork is the network a socket's errors name: what the kernel
// socket was opened with, "udp" (the URI's scheme) for the app's.
func sideNetwork(side, kernel string) string {
	if side == "kernel" {
		return kernel
	}
	return "udp"
}

// TestUDPConnErrnoMatchesKernel: the errors of a connected UDP socket's
// Read and Write, an app's Conn and a kernel socket from net.Dial("udp",
// ...), are alike: after the peer's ICMP port unreachable (IPv4 and
// IPv6), Read and Write fail with ECONNREFUSED once, held in an
// *os.SyscallError naming "read" or "write"; so does a Write of a
// datagram larger than the family allows (EMSGSIZE); past a deadline and
// after Close, the errors wrap os.ErrDeadlineExceeded and net.ErrClosed,
// with no *os.SyscallError.
func TestUDPConnErrnoMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	closedPort := portNobodyHas(t, rig.A)
	buf := make([]byte, 70000)
	for _, fam := range []struct {
		name string
		addr netip.Addr
		max  int
	}{
		{"ipv4", rig.A.IPv4, app.MaxDatagram4},
		{"ipv6", rig.A.IPv6, app.MaxDatagram6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				o := newUDPObs()
				network := sideNetwork(side, "udp")
				peer := kernelClient(t, rig.A)
				peerAddr := netip.AddrPortFrom(fam.addr, uint16(peer.LocalAddr().(*net.UDPAddr).Port))
				shape := func(c net.Conn, step string, n int, err error) {
					names := udpNames{}
					names.set(c.LocalAddr(), "own")
					names.set(c.RemoteAddr(), "peer")
					o.add(step, "n=%d %s", n, udpErrnoShape(err, network, names, true))
				}

				cc := dialUDPSide(t, rig, a, side, netip.AddrPortFrom(fam.addr, closedPort))
				n, err := cc.Write([]byte("anyone?"))
				shape(cc, "write to a port nobody has", n, err)
				time.Sleep(200 * time.Millisecond) // the ICMP error is back
				cc.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err = cc.Read(buf)
				shape(cc, "Read after the ICMP error", n, err)
				cc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err = cc.Read(buf)
				shape(cc, "the next Read", n, err)
				cc.Write([]byte("again"))
				time.Sleep(200 * time.Millisecond)
				n, err = cc.Write([]byte("and again"))
				shape(cc, "Write after the ICMP error", n, err)
				n, err = cc.Write([]byte("once more"))
				shape(cc, "the next Write", n, err)

				c := dialUDPSide(t, rig, a, side, peerAddr)
				n, err = c.Write(make([]byte, fam.max+1))
				shape(c, "Write of a byte more than the largest datagram", n, err)
				c.SetReadDeadline(time.Now().Add(-time.Second))
				n, err = c.Read(buf)
				shape(c, "Read past the deadline", n, err)
				c.SetWriteDeadline(time.Now().Add(-time.Second))
				n, err = c.Write([]byte("late"))
				shape(c, "Write past the deadline", n, err)
				c.Close()
				n, err = c.Read(buf)
				shape(c, "Read after Close", n, err)
				n, err = c.Write([]byte("closed"))
				shape(c, "Write after Close", n, err)
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// TestPacketConnErrnoMatchesKernel: the errors of an unconnected UDP
// socket's calls, an app's PacketConn and a kernel socket from
// net.ListenUDP (udp4 on 0.0.0.0, udp6 on [::]), are alike: WriteTo and
// WriteToUDPAddrPort of a datagram larger than the family allows
// (EMSGSIZE), to port 0 (EINVAL) and, on the IPv6 socket, to an IPv4
// address (ENETUNREACH) fail with the errno in an
// *os.SyscallError naming "sendto"; a WriteTo to a *net.TCPAddr fails
// with a bare EINVAL, as package net refuses it itself; a datagram to the
// subnet's broadcast address goes; past a deadline and after Close the
// errors wrap os.ErrDeadlineExceeded and net.ErrClosed, with no
// *os.SyscallError.
func TestPacketConnErrnoMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	buf := make([]byte, 70000)
	if p := rig.A.IPv4.As4(); p[0] != 10 || p[1] != 77 || p[2] != 0 {
		t.Fatalf("the rig's subnet is not 10.77.0.0/24 (A is %v)", rig.A.IPv4)
	}
	for _, fam := range []struct {
		name, network, addr string
		peer                netip.Addr
		max                 int
	}{
		{"ipv4", "udp4", "0.0.0.0:0", rig.A.IPv4, app.MaxDatagram4},
		{"ipv6", "udp6", "[::]:0", rig.A.IPv6, app.MaxDatagram6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				o := newUDPObs()
				network := sideNetwork(side, fam.network)
				pc := listenUDPSide(t, rig, a, side, fam.network, fam.addr)
				peer := kernelClient(t, rig.A)
				peerAddr := netip.AddrPortFrom(fam.peer, uint16(peer.LocalAddr().(*net.UDPAddr).Port))
				names := udpNames{}
				names.set(pc.LocalAddr(), "own")
				shape := func(step string, n int, err error) {
					o.add(step, "n=%d %s", n, udpErrnoShape(err, network, names, true))
				}
				writeTo := func(step string, b []byte, to netip.AddrPort) {
					names.set(net.UDPAddrFromAddrPort(to), "destination")
					n, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
					shape("WriteTo "+step, n, err)
					n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort(b, to)
					shape("WriteToUDPAddrPort "+step, n, err)
				}
				writeTo("of a byte more than the largest datagram", make([]byte, fam.max+1), peerAddr)
				writeTo("to port 0", []byte("x"), netip.AddrPortFrom(fam.peer, 0))
				if fam.network == "udp4" {
					writeTo("to the subnet's broadcast address", []byte("x"), netip.MustParseAddrPort("10.77.0.255:9"))
				} else {
					writeTo("to an IPv4 address", []byte("x"), netip.AddrPortFrom(rig.A.IPv4, 9))
				}
				tcp := &net.TCPAddr{IP: fam.peer.AsSlice(), Port: 9}
				names.set(tcp, "destination")
				n, err := pc.WriteTo([]byte("x"), tcp)
				shape("WriteTo a *net.TCPAddr", n, err)

				pc.SetReadDeadline(time.Now().Add(-time.Second))
				n, _, err = pc.ReadFrom(buf)
				shape("ReadFrom past the deadline", n, err)
				n, _, err = pc.(udpAddrPortReader).ReadFromUDPAddrPort(buf)
				shape("ReadFromUDPAddrPort past the deadline", n, err)
				pc.SetWriteDeadline(time.Now().Add(-time.Second))
				writeTo("past the deadline", []byte("late"), peerAddr)
				pc.Close()
				n, _, err = pc.ReadFrom(buf)
				shape("ReadFrom after Close", n, err)
				n, _, err = pc.(udpAddrPortReader).ReadFromUDPAddrPort(buf)
				shape("ReadFromUDPAddrPort after Close", n, err)
				writeTo("after Close", []byte("closed"), peerAddr)
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// TestUDPDontFragmentErrnoMatchesKernel: with a path MTU of 1,280 to host
// A in B's routes, a UDP socket with don't fragment set (an app's
// SetDontFragment; IP_PMTUDISC_DO, IPV6_DONTFRAG on a kernel socket)
// refuses a datagram of 1,400 bytes with EMSGSIZE in an *os.SyscallError
// naming the call: "write" for a connected socket's Write, "sendto" for
// WriteTo and WriteToUDPAddrPort; 1,000 bytes go.
func TestUDPDontFragmentErrnoMatchesKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	routeMTU(t, rig.B, rig.A.IPv4, 1280)
	routeMTU(t, rig.B, rig.A.IPv6, 1280)
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "dferrno"})
	for _, fam := range []struct {
		name, network, addr string
		peer                netip.Addr
	}{
		{"ipv4", "udp4", "0.0.0.0:0", rig.A.IPv4},
		{"ipv6", "udp6", "[::]:0", rig.A.IPv6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				o := newUDPObs()
				peer := kernelClient(t, rig.A)
				peerAddr := netip.AddrPortFrom(fam.peer, uint16(peer.LocalAddr().(*net.UDPAddr).Port))

				c := dialUDPSide(t, rig, a, side, peerAddr)
				setDontFragment(t, c)
				cnames := udpNames{}
				cnames.set(c.LocalAddr(), "own")
				cnames.set(c.RemoteAddr(), "peer")
				for _, size := range []int{1400, 1000} {
					n, err := c.Write(make([]byte, size))
					o.add(fmt.Sprintf("Write of %d bytes", size), "n=%d %s", n, udpErrnoShape(err, sideNetwork(side, "udp"), cnames, true))
				}

				pc := listenUDPSide(t, rig, a, side, fam.network, fam.addr)
				setDontFragment(t, pc)
				pnames := udpNames{}
				pnames.set(pc.LocalAddr(), "own")
				pnames.set(net.UDPAddrFromAddrPort(peerAddr), "peer")
				network := sideNetwork(side, fam.network)
				for _, size := range []int{1400, 1000} {
					n, err := pc.WriteTo(make([]byte, size), net.UDPAddrFromAddrPort(peerAddr))
					o.add(fmt.Sprintf("WriteTo of %d bytes", size), "n=%d %s", n, udpErrnoShape(err, network, pnames, true))
					n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort(make([]byte, size), peerAddr)
					o.add(fmt.Sprintf("WriteToUDPAddrPort of %d bytes", size), "n=%d %s", n, udpErrnoShape(err, network, pnames, true))
				}
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// TestPacketConnNoAsyncErrorMatchesKernel: an unconnected UDP socket
// fails no later call for an asynchronous error. A kernel socket (without
// IP_RECVERR) whose datagrams drew ICMP port unreachables, and the app's
// PacketConn whose don't-fragment datagram the datapath dropped when the
// path MTU shrank below what its write was told, each read on (ReadFrom
// and ReadFromUDPAddrPort time out, with nothing to read) and write on (a
// small datagram is taken), in the same form. The app's write of 1,400
// bytes after the report fails at once with EMSGSIZE: the report cleared
// the path MTU the library kept, as the kernel's next sendto with
// IP_PMTUDISC_DO fails (TestDontFragment). Before, the app's next read
// failed with the report, ending a server's read loop.
func TestPacketConnNoAsyncErrorMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	closed := netip.AddrPortFrom(rig.A.IPv4, portNobodyHas(t, rig.A))
	buf := make([]byte, 4096)
	big, small := make([]byte, 1400), []byte("small")
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		o := newUDPObs()
		network := sideNetwork(side, "udp4")
		peer := kernelClient(t, rig.A)
		peerAddr := netip.AddrPortFrom(rig.A.IPv4, uint16(peer.LocalAddr().(*net.UDPAddr).Port))
		pc := listenUDPSide(t, rig, a, side, "udp4", "0.0.0.0:0")
		names := udpNames{}
		names.set(pc.LocalAddr(), "own")
		names.set(net.UDPAddrFromAddrPort(peerAddr), "destination")
		if side == "kernel" {
			for range 3 {
				if _, err := pc.WriteTo([]byte("anyone?"), net.UDPAddrFromAddrPort(closed)); err != nil {
					t.Fatalf("kernel: to a port nobody has: %v", err)
				}
				time.Sleep(200 * time.Millisecond) // the ICMP error is back
			}
		} else {
			// Told the interface's MTU, the write keeps it 10 s; the
			// route's MTU lowered, the datapath follows within its
			// resolver's lifetimes (about 6 s), drops the datagram and
			// reports it, which clears what the library kept: the next
			// write of 1,400 bytes asks again and is refused.
			routeMTU(t, rig.B, rig.A.IPv4, 0)
			setDontFragment(t, pc)
			if _, err := pc.WriteTo(big, net.UDPAddrFromAddrPort(peerAddr)); err != nil {
				t.Fatalf("app: 1,400 bytes, route mtu raised: %v", err)
			}
			routeMTU(t, rig.B, rig.A.IPv4, 1280)
			for start := time.Now(); ; time.Sleep(300 * time.Millisecond) {
				_, err := pc.WriteTo(big, net.UDPAddrFromAddrPort(peerAddr))
				if errors.Is(err, syscall.EMSGSIZE) {
					break
				}
				if err != nil {
					t.Fatalf("app: 1,400 bytes after the route mtu was lowered: %v", err)
				}
				if time.Since(start) > 12*time.Second {
					t.Fatal("app: 1,400 bytes still taken 12 s after the route mtu was lowered to 1,280")
				}
			}
		}
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		o.add("ReadFrom after the error", "n=%d %s", n, udpErrnoShape(err, network, names, false))
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err = pc.(udpAddrPortReader).ReadFromUDPAddrPort(buf)
		o.add("ReadFromUDPAddrPort after the error", "n=%d %s", n, udpErrnoShape(err, network, names, false))
		n, err = pc.WriteTo(small, net.UDPAddrFromAddrPort(peerAddr))
		o.add("WriteTo after the error", "n=%d %s", n, udpErrnoShape(err, network, names, false))
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}
