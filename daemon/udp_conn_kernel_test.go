package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// The tests of this file compare the app library's UDP sockets with
// kernel UDP sockets of host B in the same run, as udp_semantics_test.go
// does, for IPv6, listeners of both families and link-local addresses.

// udpAddrPortWriter is the WriteToUDPAddrPort of a *net.UDPConn and an
// *app.PacketConn.
type udpAddrPortWriter interface {
	WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
}

// udpAddrPortReader is the ReadFromUDPAddrPort of a *net.UDPConn and an
// *app.PacketConn.
type udpAddrPortReader interface {
	ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
}

// writeErrno records a write's result with whether its error is
// ENETUNREACH, which udpErrClass does not name.
func (o *udpObs) writeErrno(step string, n int, err error) {
	o.add(step, "n=%d err=%s enetunreach=%v", n, udpErrClass(err), errors.Is(err, syscall.ENETUNREACH))
}

// TestPacketConnIPv6MatchesKernelUDP: a PacketConn bound to
// udp://[::]:0 returns what a kernel UDP socket bound to [::]:0 through
// net.ListenUDP("udp6", ...) returns (IPV6_V6ONLY set, as the app's IPv6
// wildcard takes IPv6 alone): the largest datagram IPv6 carries (65,527
// bytes) goes both ways and a byte more fails with EMSGSIZE; a WriteTo
// or WriteToUDPAddrPort to an IPv4 address, given as 4 bytes, as
// IPv4-mapped IPv6 or as a netip.Addr, fails with ENETUNREACH, sending
// nothing; a short buffer truncates; an empty datagram is read.
func TestPacketConnIPv6MatchesKernelUDP(t *testing.T) {
	rig, a := udpSemRig(t)
	buf := make([]byte, 70000)
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		pc := listenUDPSide(t, rig, a, side, "udp6", "[::]:0")
		o := newUDPObs()
		peer := kernelClient(t, rig.A) // both families: 0.0.0.0 with "udp"
		pport := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
		peer6 := netip.AddrPortFrom(rig.A.IPv6, pport)
		peer4 := netip.AddrPortFrom(rig.A.IPv4, pport)
		o.labels[peer6] = "peer's IPv6 address"
		o.labels[peer4] = "peer's IPv4 address"
		self := netip.AddrPortFrom(rig.B.IPv6, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		o.labels[self] = "self"
		o.add("local address", "%s", o.addr(pc.LocalAddr()))

		big := bytes.Repeat([]byte("y"), app.MaxDatagram6+1)
		n, err := pc.WriteTo(big[:app.MaxDatagram6], net.UDPAddrFromAddrPort(peer6))
		o.write("65,527 bytes written", n, err)
		n, from, err := recvWithin(peer, buf)
		o.read("the peer's read of them", buf, n, from, err)
		peer.WriteToUDPAddrPort(big[:app.MaxDatagram6], self)
		n, from, err = recvWithin(pc, buf)
		o.read("65,527 bytes read", buf, n, from, err)
		n, err = pc.WriteTo(big, net.UDPAddrFromAddrPort(peer6))
		o.write("65,528 bytes written", n, err)

		mapped := netip.AddrPortFrom(netip.AddrFrom16(peer4.Addr().As16()), pport)
		n, err = pc.WriteTo([]byte("four"), &net.UDPAddr{IP: peer4.Addr().AsSlice(), Port: int(pport)})
		o.writeErrno("to an IPv4 address of 4 bytes", n, err)
		n, err = pc.WriteTo([]byte("mapped"), net.UDPAddrFromAddrPort(mapped))
		o.writeErrno("to an IPv4-mapped address", n, err)
		n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort([]byte("four"), peer4)
		o.writeErrno("WriteToUDPAddrPort to an IPv4 address", n, err)
		n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort([]byte("mapped"), mapped)
		o.writeErrno("WriteToUDPAddrPort to an IPv4-mapped address", n, err)
		peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err = peer.ReadFrom(buf)
		o.read("the peer's read after them", buf, n, from, err)

		peer.WriteToUDPAddrPort(bytes.Repeat([]byte("0123456789"), 10), self)
		short := make([]byte, 10)
		n, from, err = recvWithin(pc, short)
		o.read("100 bytes read into 10", short, n, from, err)
		peer.WriteToUDPAddrPort(nil, self)
		n, from, err = recvWithin(pc, buf)
		o.read("an empty datagram read", buf, n, from, err)
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}

// TestPacketConnBothFamiliesSenderMatchesKernelUDP: a PacketConn of both
// families (udp://:0) names its senders as a kernel UDP socket from
// net.ListenUDP("udp", ":0") does, a dual-stack socket: an IPv4 sender by
// its IPv4-mapped IPv6 address, in ReadFrom's *net.UDPAddr (16 bytes) and
// ReadFromUDPAddrPort's netip.AddrPort alike, an IPv6 sender by its
// address; and a reply to either address reaches the sender.
func TestPacketConnBothFamiliesSenderMatchesKernelUDP(t *testing.T) {
	rig, a := udpSemRig(t)
	buf := make([]byte, 64)
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		pc := listenUDPSide(t, rig, a, side, "udp", ":0")
		o := newUDPObs()
		peer := kernelClient(t, rig.A)
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		o.add("local address", "ip=%v port set=%v", pc.LocalAddr().(*net.UDPAddr).IP, port != 0)
		for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
			to := netip.AddrPortFrom(dst, port)
			peer.WriteToUDPAddrPort([]byte("ReadFrom"), to)
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, from, err := pc.ReadFrom(buf)
			u, _ := from.(*net.UDPAddr)
			if u == nil {
				o.add("ReadFrom of a datagram to "+dst.String(), "n=%d err=%s from=%T", n, udpErrClass(err), from)
				continue
			}
			o.add("ReadFrom of a datagram to "+dst.String(), "n=%d err=%s ip bytes=%d ip=%v addrport=%v",
				n, udpErrClass(err), len(u.IP), u.IP, u.AddrPort().Addr())
			n, err = pc.WriteTo([]byte("reply"), from)
			o.write("reply with WriteTo", n, err)
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err = peer.ReadFrom(buf)
			o.add("the peer's read of it", "n=%d err=%s data=%q", n, udpErrClass(err), buf[:max(n, 0)])

			peer.WriteToUDPAddrPort([]byte("AddrPort"), to)
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, ap, err := pc.(udpAddrPortReader).ReadFromUDPAddrPort(buf)
			o.add("ReadFromUDPAddrPort of a datagram to "+dst.String(), "n=%d err=%s addr=%v", n, udpErrClass(err), ap.Addr())
			n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort([]byte("reply"), ap)
			o.write("reply with WriteToUDPAddrPort", n, err)
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err = peer.ReadFrom(buf)
			o.add("the peer's read of it", "n=%d err=%s data=%q", n, udpErrClass(err), buf[:max(n, 0)])
		}
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}

// TestUDPLinkLocalAddrsMatchKernel: a PacketConn bound to host B's
// link-local address with the zone of its link, and a Conn dialed to host
// A's link-local address with that zone, have the addresses a kernel UDP
// socket bound or connected so has: the zone in LocalAddr (and
// RemoteAddr) too.
func TestUDPLinkLocalAddrsMatchKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	llA, llB := linkLocalOf(t, rig.A), linkLocalOf(t, rig.B)
	peer, err := rig.A.ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	pport := peer.LocalAddr().(*net.UDPAddr).Port
	listen := "[" + llB.String() + "%" + rig.B.Link + "]:0"
	dial := (&net.UDPAddr{IP: llA.AsSlice(), Port: pport, Zone: rig.B.Link}).String()
	// addr describes a as a program sees it: its IP, whether its port is
	// set, and its zone.
	addr := func(a net.Addr) string {
		u, ok := a.(*net.UDPAddr)
		if !ok || u == nil {
			return "not a *net.UDPAddr"
		}
		return "ip=" + u.IP.String() + " port set=" + boolText(u.Port != 0) + " zone=" + u.Zone
	}
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		o := newUDPObs()
		var pc net.PacketConn
		var c net.Conn
		if side == "kernel" {
			// In host B, where the kernel names the zone by B's links.
			if err := rig.B.Do(func() (err error) {
				if pc, err = net.ListenPacket("udp6", listen); err != nil {
					return err
				}
				c, err = net.Dial("udp", dial)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		} else {
			if pc, err = a.ListenPacket("udp://" + listen); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err = a.Dial(ctx, "udp://"+dial)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { pc.Close(); c.Close() })
		o.add("listener's local address", "%s", addr(pc.LocalAddr()))
		o.add("connection's local address", "%s", addr(c.LocalAddr()))
		o.add("connection's remote address", "%s", addr(c.RemoteAddr()))
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestUDPConnIPv6MatchesKernel: a UDP session an app dialed to an IPv6
// address returns what a kernel UDP socket connected there through
// net.Dial("udp", ...) returns: the largest datagram IPv6 carries goes
// both ways and a byte more fails with EMSGSIZE; the *net.OpError of a
// Read and a Write past their deadlines and after Close has Op "read" or
// "write", the local address in Source and the remote one in Addr; and,
// connected to a port nobody has, the ICMPv6 error fails the next Write
// with ECONNREFUSED, once, and also wakes a Read blocked when it comes.
func TestUDPConnIPv6MatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	closedPort := portNobodyHas(t, rig.A)
	buf := make([]byte, 70000)
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		o := newUDPObs()
		peer := kernelClient(t, rig.A)
		peerAddr := netip.AddrPortFrom(rig.A.IPv6, uint16(peer.LocalAddr().(*net.UDPAddr).Port))
		closed := netip.AddrPortFrom(rig.A.IPv6, closedPort)
		o.labels[peerAddr] = "peer"
		o.labels[closed] = "closed"
		dial := func(dst netip.AddrPort) net.Conn { return dialUDPSide(t, rig, a, side, dst) }
		c := dial(peerAddr)
		self := c.LocalAddr().(*net.UDPAddr).AddrPort()
		o.labels[self] = "self"
		o.add("addresses", "%s, %s", o.addr(c.LocalAddr()), o.addr(c.RemoteAddr()))
		big := bytes.Repeat([]byte("z"), app.MaxDatagram6+1)
		n, err := c.Write(big[:app.MaxDatagram6])
		o.write("65,527 bytes written", n, err)
		n, from, err := recvWithin(peer, buf)
		o.read("the peer's read of them", buf, n, from, err)
		peer.WriteToUDPAddrPort(big[:app.MaxDatagram6], self)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err = c.Read(buf)
		o.read("65,527 bytes read", buf, n, nil, err)
		n, err = c.Write(big)
		o.write("65,528 bytes written", n, err)

		la, ra := c.LocalAddr(), c.RemoteAddr()
		c.SetReadDeadline(time.Now().Add(-time.Second))
		_, err = c.Read(buf)
		o.add("Read past the deadline", "%s", opFields(err, la, ra))
		c.SetWriteDeadline(time.Now().Add(-time.Second))
		_, err = c.Write([]byte("late"))
		o.add("Write past the deadline", "%s", opFields(err, la, ra))
		c.Close()
		_, err = c.Read(buf)
		o.add("Read after Close", "%s", opFields(err, la, ra))
		_, err = c.Write([]byte("closed"))
		o.add("Write after Close", "%s", opFields(err, la, ra))

		cc := dial(closed)
		n, err = cc.Write([]byte("anyone?"))
		o.write("write to a port nobody has", n, err)
		time.Sleep(200 * time.Millisecond) // the ICMPv6 error is back
		n, err = cc.Write([]byte("again"))
		o.write("the write after the ICMPv6 error", n, err)
		n, err = cc.Write([]byte("and again"))
		o.write("the next write", n, err)
		time.Sleep(200 * time.Millisecond)
		cc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err = cc.Read(buf)
		o.read("a read after the second ICMPv6 error", buf, n, nil, err)
		cc.SetReadDeadline(time.Now().Add(3 * time.Second))
		o.add("a read blocked when an ICMPv6 error comes", "%s", blockedCall(func() error {
			_, err := cc.Read(buf)
			return err
		}, func() { cc.Write([]byte("wake")) }))
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}
