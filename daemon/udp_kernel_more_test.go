package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The tests of this file compare the app library's UDP sockets with
// kernel UDP sockets in the same run, as udp_errno_test.go does: what
// each call returned and how its error is made (udpErrnoShape), with the
// kernel socket's record as the expectation.

// TestPacketConnCutThroughPeerGoneWriteToMatchesKernel: a UDP listener's
// WriteTo to a cut-through peer that closed its session succeeds, again
// and again, also once a ReadFrom let the listener forget the session,
// as a kernel UDP socket's WriteTo to a loopback port whose socket closed
// succeeds (the port unreachable it draws fails no call of an unconnected
// socket). Before, WriteTo failed with EPIPE while the session was known,
// then with flow.ErrNoSession.
func TestPacketConnCutThroughPeerGoneWriteToMatchesKernel(t *testing.T) {
	d := startDaemon(t)
	srv, cli := attach(t, d, app.Options{Name: "listener"}), attach(t, d, app.Options{Name: "peer"})
	buf := make([]byte, 64)
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		o := newUDPObs()
		var pc net.PacketConn
		var c net.Conn
		var err error
		if side == "kernel" {
			if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
				c, err = net.Dial("udp", pc.LocalAddr().String())
			}
		} else {
			if pc, err = srv.ListenPacket("udp://127.0.0.1:0"); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err = cli.Dial(ctx, "udp://"+pc.LocalAddr().String())
				cancel()
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		network := sideNetwork(side, "udp4")
		names := udpNames{}
		names.set(pc.LocalAddr(), "own")
		shape := func(step string, n int, err error) {
			o.add(step, "n=%d %s", n, udpErrnoShape(err, network, names, true))
		}
		n, err := c.Write([]byte("hello"))
		shape("the peer's write", n, err)
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		shape("the listener's read", n, err)
		names.set(from, "peer")
		n, err = pc.WriteTo([]byte("reply"), from)
		shape("a reply while the peer is there", n, err)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err = c.Read(buf)
		o.add("the peer's read", "n=%d data=%q err=%v", n, buf[:n], err)
		c.Close()
		time.Sleep(100 * time.Millisecond) // the peer's close is known
		n, err = pc.WriteTo([]byte("anyone?"), from)
		shape("a reply after the peer closed", n, err)
		n, err = pc.WriteTo([]byte("anyone now?"), from)
		shape("another reply", n, err)
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err = pc.ReadFrom(buf)
		shape("a read, nothing queued", n, err)
		n, err = pc.WriteTo([]byte("still?"), from)
		shape("a reply after that read", n, err)
		pc.Close()
		n, err = pc.WriteTo([]byte("closed"), from)
		shape("a reply after Close", n, err)
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}

// TestPacketConnDestinationCheckOrderMatchesKernel: when a WriteTo's
// destination and size are wrong in more than one way, the error is the
// one a kernel UDP socket reports, which looks at them in its order: an
// IPv6 socket (IPV6_V6ONLY, as the app's IPv6 wildcard) refuses an IPv4
// destination (ENETUNREACH) before it looks at its port, and IPv4 refuses
// a datagram larger than 65,535 bytes (EMSGSIZE) before it looks at the
// port; a datagram larger than IP carries but no larger than that, to
// port 0, fails for the port (EINVAL), and so does one to port 0 of an
// IPv6 address, whatever its size. Before, port 0 came first: EINVAL.
func TestPacketConnDestinationCheckOrderMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	for _, fam := range []struct{ name, network, addr string }{
		{"ipv4", "udp4", "0.0.0.0:0"},
		{"ipv6", "udp6", "[::]:0"},
		{"both", "udp", ":0"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			kernelThenApp(t, rig, a, fam.network, fam.addr, func(o *udpObs, pc net.PacketConn, network string, names udpNames) {
				writeTo := func(size int, to netip.AddrPort) {
					step := fmt.Sprintf("%d bytes to %v", size, to)
					names.set(net.UDPAddrFromAddrPort(to), "destination")
					n, err := pc.WriteTo(make([]byte, size), net.UDPAddrFromAddrPort(to))
					o.add("WriteTo "+step, "n=%d %s", n, udpErrnoShape(err, network, names, true))
					n, err = pc.(udpAddrPortWriter).WriteToUDPAddrPort(make([]byte, size), to)
					o.add("WriteToUDPAddrPort "+step, "n=%d %s", n, udpErrnoShape(err, network, names, true))
				}
				v4, v6 := netip.AddrPortFrom(rig.A.IPv4, 0), netip.AddrPortFrom(rig.A.IPv6, 0)
				if fam.network != "udp4" {
					writeTo(1, v4)
					writeTo(app.MaxDatagram6+1, v6)
					writeTo(1<<16, v6)
				}
				if fam.network != "udp6" {
					writeTo(app.MaxDatagram4+1, v4)
					writeTo(1<<16, v4)
				}
			})
		})
	}
}

// TestPacketConnWriteToUDPAddrPortErrorAddrMatchesKernel: the
// *net.OpError of a failed WriteToUDPAddrPort names the destination as
// it was given, as package net names it: an IPv4-mapped IPv6 address
// prints as one ([::ffff:10.77.0.1]:9), on an IPv6 socket that refuses it
// (ENETUNREACH) and on an IPv4 socket past its write deadline alike.
// Before, it was printed as the IPv4 address (10.77.0.1:9).
func TestPacketConnWriteToUDPAddrPortErrorAddrMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(rig.A.IPv4.As16()), 9)
	for _, fam := range []struct{ name, network, addr string }{
		{"ipv4", "udp4", "0.0.0.0:0"},
		{"ipv6", "udp6", "[::]:0"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			kernelThenApp(t, rig, a, fam.network, fam.addr, func(o *udpObs, pc net.PacketConn, network string, names udpNames) {
				names["[::ffff:"+rig.A.IPv4.String()+"]:9"] = "the mapped address given"
				if fam.network == "udp4" {
					pc.SetWriteDeadline(time.Now().Add(-time.Second))
				}
				n, err := pc.(udpAddrPortWriter).WriteToUDPAddrPort([]byte("x"), mapped)
				o.add("WriteToUDPAddrPort to an IPv4-mapped address", "n=%d %s", n, udpErrnoShape(err, network, names, true))
			})
		})
	}
}

// kernelThenApp runs steps on a kernel UDP socket, then on an app's
// PacketConn, each listening on addr of network (the kernel's name of
// it; network, as steps get it, the name of the side's errors), and
// compares what steps recorded of each, the kernel's record the
// expectation. names holds the socket's own address.
func kernelThenApp(t *testing.T, rig *nstest.Pair, a *app.App, network, addr string, steps func(o *udpObs, pc net.PacketConn, network string, names udpNames)) {
	t.Helper()
	var obs [2]*udpObs
	for i, side := range []string{"kernel", "app"} {
		o := newUDPObs()
		pc := listenUDPSide(t, rig, a, side, network, addr)
		names := udpNames{}
		names.set(pc.LocalAddr(), "own")
		steps(o, pc, sideNetwork(side, network), names)
		obs[i] = o
	}
	compareUDPObs(t, obs[0], obs[1])
}
