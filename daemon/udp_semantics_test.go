package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The tests of this file run one sequence of calls twice: on a kernel UDP
// socket of host B, through package net, and on the app library's socket
// on the daemon, which serves host B's link; kernel sockets on host A are
// the peers of both. What each call returned (its byte count, the class
// of its error, the type and value of its address, the data read) is
// written down, and the two records must match line by line: the kernel's
// record is the expectation.

// udpObs records what a sequence of calls returned, one line a call.
type udpObs struct {
	lines  []string
	labels map[netip.AddrPort]string // addresses with a name of their own ("self", "peer")
}

func newUDPObs() *udpObs { return &udpObs{labels: map[netip.AddrPort]string{}} }

func (o *udpObs) add(step, format string, args ...any) {
	o.lines = append(o.lines, step+": "+fmt.Sprintf(format, args...))
}

// read records a read of n bytes of buf from from.
func (o *udpObs) read(step string, buf []byte, n int, from net.Addr, err error) {
	o.add(step, "n=%d err=%s from=%s data=%q", n, udpErrClass(err), o.addr(from), buf[:min(max(n, 0), 16, len(buf))])
}

// write records a write's result.
func (o *udpObs) write(step string, n int, err error) {
	o.add(step, "n=%d err=%s", n, udpErrClass(err))
}

// addr describes an address: its type and, for a *net.UDPAddr, its name
// when it has one, else its IP and whether the port is set.
func (o *udpObs) addr(a net.Addr) string {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		if a == nil {
			return "<nil>"
		}
		return fmt.Sprintf("%T", a)
	}
	if u == nil {
		return "(*net.UDPAddr)(nil)"
	}
	ap := u.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if l, ok := o.labels[ap]; ok {
		return "*net.UDPAddr " + l
	}
	port := "0"
	if u.Port != 0 {
		port = "N"
	}
	return fmt.Sprintf("*net.UDPAddr %s port=%s zone=%q", ap.Addr(), port, u.Zone)
}

// udpErrClass is what a program learns of err with errors.Is, errors.As
// and net.Error: the operation, and errClass's sentinels and timeout.
func udpErrClass(err error) string {
	if err == nil {
		return "nil"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "op=" + oe.Op + "," + errClass(err)
	}
	return errClass(err)
}

// compareUDPObs fails t for every line where the app's record differs
// from the kernel's.
func compareUDPObs(t *testing.T, kernel, app *udpObs) {
	t.Helper()
	for i := range max(len(kernel.lines), len(app.lines)) {
		var k, a string
		if i < len(kernel.lines) {
			k = kernel.lines[i]
		}
		if i < len(app.lines) {
			a = app.lines[i]
		}
		if k != a {
			t.Errorf("call %d differs:\n\tkernel: %s\n\tapp:    %s", i+1, k, a)
		} else if testing.Verbose() {
			t.Logf("call %d: %s", i+1, k)
		}
	}
}

// udpSemRig is a rig with a daemon on host B's link, an app attached with
// fifos that hold the largest datagrams, and the neighbours of A and B
// resolved, so that no first datagram waits for ARP.
func udpSemRig(t *testing.T) (*nstest.Pair, *app.App) {
	t.Helper()
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "semantics", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	for _, dst := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		if err := rig.B.Ping(dst); err != nil {
			t.Fatalf("ping %v from B: %v", dst, err)
		}
	}
	for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		if err := rig.A.Ping(dst); err != nil {
			t.Fatalf("ping %v from A: %v", dst, err)
		}
	}
	return rig, a
}

// kernelUDP opens a kernel UDP socket of network (udp, udp4, udp6) bound
// to addr in host h, closed when the test ends.
func kernelUDP(t *testing.T, h *nstest.Host, network, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		la, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP(network, la)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvWithin reads one datagram from c, waiting up to 2 s.
func recvWithin(c net.PacketConn, b []byte) (int, net.Addr, error) {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	return c.ReadFrom(b)
}

// portNobodyHas returns a UDP port of host h no socket has.
func portNobodyHas(t *testing.T, h *nstest.Host) uint16 {
	t.Helper()
	c, err := bindKernel(h, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	return p
}

// udpEnv is what a sequence of calls works with besides the socket under
// test: where host A reaches that socket, and kernel sockets of host A.
type udpEnv struct {
	self      netip.AddrPort // the socket under test, as host A reaches it
	peer      *net.UDPConn   // a kernel socket of host A
	peerAddr  netip.AddrPort // peer, as host B sees it
	other     *net.UDPConn   // another kernel socket of host A
	closedDst netip.AddrPort // a port of host A no socket has
}

// newUDPEnv makes the kernel sockets of host A and names their
// addresses in o.
func newUDPEnv(t *testing.T, rig *nstest.Pair, o *udpObs, closedPort uint16) *udpEnv {
	t.Helper()
	peer, other := kernelClient(t, rig.A), kernelClient(t, rig.A)
	env := &udpEnv{
		peer:      peer,
		peerAddr:  netip.AddrPortFrom(rig.A.IPv4, uint16(peer.LocalAddr().(*net.UDPAddr).Port)),
		other:     other,
		closedDst: netip.AddrPortFrom(rig.A.IPv4, closedPort),
	}
	o.labels[env.peerAddr] = "peer"
	o.labels[netip.AddrPortFrom(rig.A.IPv4, uint16(other.LocalAddr().(*net.UDPAddr).Port))] = "other"
	return env
}

// setSelf records that host A reaches the socket under test at B's IPv4
// address and port, and names it in o.
func (env *udpEnv) setSelf(rig *nstest.Pair, o *udpObs, port int) {
	env.self = netip.AddrPortFrom(rig.B.IPv4, uint16(port))
	o.labels[env.self] = "self"
}

// blockedCall runs call in a goroutine, then, once it has had 100 ms to
// block, act, and reports the call's error, and whether it returned
// before act or failed to return within 2 s of it.
func blockedCall(call func() error, act func()) string {
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return "returned before it was woken: err=" + udpErrClass(err)
	case <-time.After(100 * time.Millisecond):
	}
	act()
	select {
	case err := <-done:
		return "woken: err=" + udpErrClass(err)
	case <-time.After(2 * time.Second):
		return "still blocked 2 s later"
	}
}

// packetCase is a sequence of calls on an unconnected socket bound to
// 0.0.0.0 on host B.
type packetCase struct {
	name string
	run  func(o *udpObs, pc net.PacketConn, env *udpEnv)
}

// TestPacketConnMatchesKernelUDP: sequences of calls on an app's
// PacketConn bound to udp://0.0.0.0:0 return what they return on a kernel
// UDP socket bound to 0.0.0.0:0 through package net (net.ListenUDP with
// "udp4": the app's wildcard is one family's): a read into a short
// buffer truncates the datagram and drops the rest; zero-length datagrams
// go both ways, and a read into an empty buffer consumes a datagram; the
// largest datagram IPv4 carries goes both ways, and a byte more fails
// with EMSGSIZE; port 0 and an address of another type are refused with
// EINVAL; deadlines in the past fail reads and writes, also with data
// queued, and cleared they no longer do; a read deadline moved to now
// wakes a blocked read; Close wakes a blocked read with net.ErrClosed,
// and after Close every call fails with net.ErrClosed, whatever its
// arguments; an ICMP port unreachable for a datagram sent does not fail
// the unconnected socket's later calls.
func TestPacketConnMatchesKernelUDP(t *testing.T) {
	rig, a := udpSemRig(t)
	closedPort := portNobodyHas(t, rig.A)
	buf := make([]byte, 70000)
	cases := []packetCase{
		{"ShortBufferTruncates", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			env.peer.WriteToUDPAddrPort(bytes.Repeat([]byte("0123456789"), 10), env.self)
			short := make([]byte, 10)
			n, from, err := recvWithin(pc, short)
			o.read("100 bytes read into 10", short, n, from, err)
			env.peer.WriteToUDPAddrPort([]byte("next"), env.self)
			n, from, err = recvWithin(pc, buf)
			o.read("the next datagram", buf, n, from, err)
		}},
		{"ZeroLengthDatagrams", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			env.peer.WriteToUDPAddrPort(nil, env.self)
			n, from, err := recvWithin(pc, buf)
			o.read("an empty datagram read", buf, n, from, err)
			n, err = pc.WriteTo(nil, net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("an empty datagram written", n, err)
			n, from, err = recvWithin(env.peer, buf)
			o.read("the peer's read of it", buf, n, from, err)
			env.peer.WriteToUDPAddrPort([]byte("one"), env.self)
			env.peer.WriteToUDPAddrPort([]byte("two"), env.self)
			time.Sleep(50 * time.Millisecond)
			n, from, err = recvWithin(pc, nil)
			o.read("a read into an empty buffer", nil, n, from, err)
			n, from, err = recvWithin(pc, buf)
			o.read("the read after it", buf, n, from, err)
		}},
		{"LargestDatagrams", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			big := bytes.Repeat([]byte("x"), app.MaxDatagram4+1)
			n, err := pc.WriteTo(big[:app.MaxDatagram4], net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("65,507 bytes written", n, err)
			n, from, err := recvWithin(env.peer, buf)
			o.read("the peer's read of them", buf, n, from, err)
			env.peer.WriteToUDPAddrPort(big[:app.MaxDatagram4], env.self)
			n, from, err = recvWithin(pc, buf)
			o.read("65,507 bytes read", buf, n, from, err)
			n, err = pc.WriteTo(big, net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("65,508 bytes written", n, err)
		}},
		{"BadDestinations", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			n, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.peerAddr.Addr(), 0)))
			o.write("to port 0", n, err)
			n, err = pc.WriteTo([]byte("x"), &net.TCPAddr{IP: env.peerAddr.Addr().AsSlice(), Port: int(env.peerAddr.Port())})
			o.write("to a *net.TCPAddr", n, err)
			n, err = pc.WriteTo([]byte("x"), nil)
			o.write("to a nil net.Addr", n, err)
			// Refused by package net before the kernel sees them, with
			// errors of its own: only that they fail must hold.
			for _, bad := range []struct {
				what string
				to   net.Addr
			}{
				{"to a nil *net.UDPAddr", (*net.UDPAddr)(nil)},
				{"to an IPv6 address", &net.UDPAddr{IP: net.ParseIP("fd77::1"), Port: 9}},
			} {
				n, err := pc.WriteTo([]byte("x"), bad.to)
				o.add(bad.what, "n=%d failed=%v", n, err != nil)
			}
			// Package net's error names no address for a nil
			// *net.UDPAddr (not a non-nil net.Addr holding nil).
			_, err = pc.WriteTo([]byte("x"), (*net.UDPAddr)(nil))
			var oe *net.OpError
			o.add("to a nil *net.UDPAddr: the error's Addr", "op-error=%v addr-nil=%v", errors.As(err, &oe), oe != nil && oe.Addr == nil)
		}},
		{"DeadlinesInThePast", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			o.add("set read deadline", "err=%s", udpErrClass(pc.SetReadDeadline(time.Now().Add(-time.Second))))
			env.peer.WriteToUDPAddrPort([]byte("queued"), env.self)
			time.Sleep(100 * time.Millisecond)
			n, from, err := pc.ReadFrom(buf)
			o.read("read past the deadline, a datagram queued", buf, n, from, err)
			o.add("clear read deadline", "err=%s", udpErrClass(pc.SetReadDeadline(time.Time{})))
			n, from, err = pc.ReadFrom(buf)
			o.read("read with the deadline cleared", buf, n, from, err)
			o.add("set write deadline", "err=%s", udpErrClass(pc.SetWriteDeadline(time.Now().Add(-time.Second))))
			n, err = pc.WriteTo([]byte("late"), net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("write past the deadline", n, err)
			n, err = pc.WriteTo([]byte("late"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.peerAddr.Addr(), 0)))
			o.write("write to port 0 past the deadline", n, err)
			o.add("clear write deadline", "err=%s", udpErrClass(pc.SetWriteDeadline(time.Time{})))
			n, err = pc.WriteTo([]byte("in time"), net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("write with the deadline cleared", n, err)
			n, from, err = recvWithin(env.peer, buf)
			o.read("the peer's read", buf, n, from, err)
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			o.add("read deadline moved to now while blocked", "%s", blockedCall(func() error {
				_, _, err := pc.ReadFrom(buf)
				return err
			}, func() { pc.SetReadDeadline(time.Now()) }))
		}},
		{"Close", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			own := make([]byte, 64) // the blocked read's: it may return after this sequence went on
			o.add("close while a read is blocked", "%s", blockedCall(func() error {
				_, _, err := pc.ReadFrom(own)
				return err
			}, func() { o.add("close", "err=%s", udpErrClass(pc.Close())) }))
			n, from, err := pc.ReadFrom(buf)
			o.read("read after close", buf, n, from, err)
			n, err = pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("write after close", n, err)
			n, err = pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(env.peerAddr.Addr(), 0)))
			o.write("write to port 0 after close", n, err)
			n, err = pc.WriteTo(make([]byte, app.MaxDatagram4+1), net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("write of 65,508 bytes after close", n, err)
			o.add("set deadline after close", "err=%s", udpErrClass(pc.SetDeadline(time.Now())))
			o.add("set read deadline after close", "err=%s", udpErrClass(pc.SetReadDeadline(time.Now())))
			o.add("set write deadline after close", "err=%s", udpErrClass(pc.SetWriteDeadline(time.Now())))
			o.add("close again", "err=%s", udpErrClass(pc.Close()))
			o.add("local address after close", "%s", o.addr(pc.LocalAddr()))
		}},
		{"PortUnreachableIgnored", func(o *udpObs, pc net.PacketConn, env *udpEnv) {
			n, err := pc.WriteTo([]byte("anyone?"), net.UDPAddrFromAddrPort(env.closedDst))
			o.write("write to a port nobody has", n, err)
			time.Sleep(100 * time.Millisecond) // the ICMP error is back
			env.peer.WriteToUDPAddrPort([]byte("after"), env.self)
			n, from, err := recvWithin(pc, buf)
			o.read("read after the ICMP error", buf, n, from, err)
			n, err = pc.WriteTo([]byte("still"), net.UDPAddrFromAddrPort(env.peerAddr))
			o.write("write after the ICMP error", n, err)
			n, from, err = recvWithin(env.peer, buf)
			o.read("the peer's read", buf, n, from, err)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				pc := listenUDPSide(t, rig, a, side, "udp4", "0.0.0.0:0")
				o := newUDPObs()
				env := newUDPEnv(t, rig, o, closedPort)
				env.setSelf(rig, o, pc.LocalAddr().(*net.UDPAddr).Port)
				o.add("local address", "%s", o.addr(pc.LocalAddr()))
				c.run(o, pc, env)
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// connCase is a sequence of calls on a UDP socket of host B connected to
// a kernel socket of host A (env.peer), or to a port of A no socket has.
type connCase struct {
	name    string
	closed  bool // connected to env.closedDst
	unowned bool // connected to an address of A's subnet nobody owns (its ARP goes unanswered)
	run     func(o *udpObs, c net.Conn, env *udpEnv)
}

// TestUDPConnMatchesKernel: sequences of calls on a UDP session an app
// dialed return what they return on a kernel UDP socket of host B
// connected to the same address through net.Dial("udp", ...): the local
// and remote addresses; a read into a short buffer truncates the
// datagram; zero-length datagrams go both ways; a read into an empty
// buffer returns 0 at once and consumes nothing, as package net makes
// it; datagrams from another source than the connected one are not
// received; a datagram to a port nobody has makes the next read fail
// with ECONNREFUSED, once; a datagram to an address of the subnet that
// nobody owns makes no read fail, also after the kernel's ARP for it went
// unanswered (about 3 s): Linux reports that to a connected TCP socket,
// not a UDP one; the largest datagram IPv4 carries goes both
// ways and a byte more fails with EMSGSIZE; deadlines in the past fail
// reads and writes and cleared no longer do; Close wakes a blocked read
// with net.ErrClosed, and after Close every call fails with
// net.ErrClosed, whatever its arguments.
func TestUDPConnMatchesKernel(t *testing.T) {
	rig, a := udpSemRig(t)
	closedPort := portNobodyHas(t, rig.A)
	buf := make([]byte, 70000)
	cases := []connCase{
		{"ShortBufferAndZeroLength", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			env.peer.WriteToUDPAddrPort(bytes.Repeat([]byte("0123456789"), 10), env.self)
			short := make([]byte, 10)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(short)
			o.read("100 bytes read into 10", short, n, nil, err)
			env.peer.WriteToUDPAddrPort(nil, env.self)
			env.peer.WriteToUDPAddrPort([]byte("next"), env.self)
			n, err = c.Read(buf)
			o.read("an empty datagram read", buf, n, nil, err)
			n, err = c.Read(buf)
			o.read("the next datagram", buf, n, nil, err)
			n, err = c.Write(nil)
			o.write("an empty datagram written", n, err)
			n, from, err := recvWithin(env.peer, buf)
			o.read("the peer's read of it", buf, n, from, err)
		}},
		{"ReadIntoEmptyBuffer", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			timed := func(step string) {
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				start := time.Now()
				n, err := c.Read(nil)
				o.add(step, "n=%d err=%s at once=%v", n, udpErrClass(err), time.Since(start) < 250*time.Millisecond)
			}
			timed("a read into an empty buffer, nothing queued")
			env.peer.WriteToUDPAddrPort([]byte("queued"), env.self)
			time.Sleep(100 * time.Millisecond)
			timed("a read into an empty buffer, a datagram queued")
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			o.read("the read after it", buf, n, nil, err)
		}},
		{"OtherSourcesFiltered", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			env.other.WriteToUDPAddrPort([]byte("intruder"), env.self)
			time.Sleep(50 * time.Millisecond)
			env.peer.WriteToUDPAddrPort([]byte("peer"), env.self)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			o.read("a read after datagrams of another source and the peer", buf, n, nil, err)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err = c.Read(buf)
			o.read("the read after it", buf, n, nil, err)
		}},
		{"PortUnreachableRefuses", true, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			n, err := c.Write([]byte("anyone?"))
			o.write("write to a port nobody has", n, err)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err = c.Read(buf)
			o.read("the read after it", buf, n, nil, err)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err = c.Read(buf)
			o.read("the next read", buf, n, nil, err)
		}},
		{"HostUnreachable", false, true, func(o *udpObs, c net.Conn, env *udpEnv) {
			n, err := c.Write([]byte("anyone?"))
			o.write("write to an address nobody owns", n, err)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = c.Read(buf)
			o.read("a read while, and after, ARP goes unanswered", buf, n, nil, err)
			n, err = c.Write([]byte("anyone now?"))
			o.write("a write after it", n, err)
		}},
		{"LargestDatagrams", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			big := bytes.Repeat([]byte("x"), app.MaxDatagram4+1)
			n, err := c.Write(big[:app.MaxDatagram4])
			o.write("65,507 bytes written", n, err)
			n, from, err := recvWithin(env.peer, buf)
			o.read("the peer's read of them", buf, n, from, err)
			env.peer.WriteToUDPAddrPort(big[:app.MaxDatagram4], env.self)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err = c.Read(buf)
			o.read("65,507 bytes read", buf, n, nil, err)
			n, err = c.Write(big)
			o.write("65,508 bytes written", n, err)
		}},
		{"DeadlinesInThePast", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			o.add("set read deadline", "err=%s", udpErrClass(c.SetReadDeadline(time.Now().Add(-time.Second))))
			env.peer.WriteToUDPAddrPort([]byte("queued"), env.self)
			time.Sleep(100 * time.Millisecond)
			n, err := c.Read(buf)
			o.read("read past the deadline, a datagram queued", buf, n, nil, err)
			o.add("clear read deadline", "err=%s", udpErrClass(c.SetReadDeadline(time.Time{})))
			n, err = c.Read(buf)
			o.read("read with the deadline cleared", buf, n, nil, err)
			o.add("set write deadline", "err=%s", udpErrClass(c.SetWriteDeadline(time.Now().Add(-time.Second))))
			n, err = c.Write([]byte("late"))
			o.write("write past the deadline", n, err)
			n, err = c.Write(make([]byte, app.MaxDatagram4+1))
			o.write("write of 65,508 bytes past the deadline", n, err)
			o.add("clear write deadline", "err=%s", udpErrClass(c.SetWriteDeadline(time.Time{})))
			n, err = c.Write([]byte("in time"))
			o.write("write with the deadline cleared", n, err)
			n, from, err := recvWithin(env.peer, buf)
			o.read("the peer's read", buf, n, from, err)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			o.add("read deadline moved to now while blocked", "%s", blockedCall(func() error {
				_, err := c.Read(buf)
				return err
			}, func() { c.SetReadDeadline(time.Now()) }))
		}},
		{"Close", false, false, func(o *udpObs, c net.Conn, env *udpEnv) {
			own := make([]byte, 64) // the blocked read's: it may return after this sequence went on
			o.add("close while a read is blocked", "%s", blockedCall(func() error {
				_, err := c.Read(own)
				return err
			}, func() { o.add("close", "err=%s", udpErrClass(c.Close())) }))
			n, err := c.Read(buf)
			o.read("read after close", buf, n, nil, err)
			n, err = c.Write([]byte("x"))
			o.write("write after close", n, err)
			n, err = c.Write(make([]byte, app.MaxDatagram4+1))
			o.write("write of 65,508 bytes after close", n, err)
			o.add("set deadline after close", "err=%s", udpErrClass(c.SetDeadline(time.Now())))
			o.add("close again", "err=%s", udpErrClass(c.Close()))
			o.add("addresses after close", "%s, %s", o.addr(c.LocalAddr()), o.addr(c.RemoteAddr()))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				o := newUDPObs()
				env := newUDPEnv(t, rig, o, closedPort)
				dst := env.peerAddr
				if tc.closed {
					dst = env.closedDst
					o.labels[dst] = "closed"
				}
				if tc.unowned {
					b := rig.A.IPv4.As4()
					b[3] = byte(210 + i) // each side its own, so that one's failed entry is not the other's
					dst = netip.AddrPortFrom(netip.AddrFrom4(b), 9)
					o.labels[dst] = "unowned"
				}
				c := dialUDPSide(t, rig, a, side, dst)
				if la, ok := c.LocalAddr().(*net.UDPAddr); ok {
					env.setSelf(rig, o, la.Port)
				}
				o.add("addresses", "%s, %s", o.addr(c.LocalAddr()), o.addr(c.RemoteAddr()))
				tc.run(o, c, env)
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// TestPacketConnConcurrentReadFromKeepsSenders: sixteen goroutines read one
// PacketConn at once, with ReadFrom and ReadFromUDPAddrPort, while eight
// kernel sockets of host A send to it, each datagram naming its sender's
// port. As on a kernel UDP socket read the same way, every datagram
// comes with its own sender's address, and none is read twice.
func TestPacketConnConcurrentReadFromKeepsSenders(t *testing.T) {
	const readers, senders, per = 16, 8, 5000
	rig, a := udpSemRig(t)
	type result struct{ got, wrong, twice int }
	run := func(pc net.PacketConn) result {
		self := netip.AddrPortFrom(rig.B.IPv4, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		var mu sync.Mutex
		var res result
		seen := map[[6]byte]bool{}
		var rwg sync.WaitGroup
		for i := range readers {
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				buf := make([]byte, 64)
				for k := 0; ; k++ {
					var n int
					var from netip.AddrPort
					var err error
					if (i+k)%2 == 0 {
						var fa net.Addr
						n, fa, err = pc.ReadFrom(buf)
						if ua, ok := fa.(*net.UDPAddr); ok {
							from = ua.AddrPort()
						}
					} else {
						n, from, err = pc.(interface {
							ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
						}).ReadFromUDPAddrPort(buf)
					}
					if err != nil {
						return
					}
					var key [6]byte
					copy(key[:], buf[:n])
					mu.Lock()
					res.got++
					if n != 6 || from.Addr().Unmap() != rig.A.IPv4 || from.Port() != uint16(key[0])<<8|uint16(key[1]) {
						res.wrong++
						if res.wrong <= 3 {
							t.Logf("%x came from %v", buf[:n], from)
						}
					}
					if seen[key] {
						res.twice++
					}
					seen[key] = true
					mu.Unlock()
				}
			}()
		}
		var swg sync.WaitGroup
		for range senders {
			s := kernelClient(t, rig.A)
			port := uint16(s.LocalAddr().(*net.UDPAddr).Port)
			swg.Add(1)
			go func() {
				defer swg.Done()
				for seq := range per {
					b := []byte{byte(port >> 8), byte(port), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
					s.WriteToUDPAddrPort(b, self)
					if seq%64 == 63 {
						time.Sleep(time.Millisecond) // keep most of them from being dropped
					}
				}
			}()
		}
		swg.Wait()
		time.Sleep(300 * time.Millisecond)
		pc.Close()
		rwg.Wait()
		return res
	}
	kernel := run(kernelUDP(t, rig.B, "udp4", "0.0.0.0:0"))
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	got := run(pc)
	t.Logf("kernel: %+v; app: %+v (of %d sent)", kernel, got, senders*per)
	if got.wrong != kernel.wrong || got.twice != kernel.twice {
		t.Errorf("datagrams read with another sender's address: %d (kernel %d); read twice: %d (kernel %d)",
			got.wrong, kernel.wrong, got.twice, kernel.twice)
	}
	// Enough read for the check above to mean something; how many a
	// loaded machine drops is not this test's business.
	if got.got < 1000 {
		t.Errorf("the app read %d datagrams of %d sent (the kernel %d)", got.got, senders*per, kernel.got)
	}
}

// TestPacketConnLocalAddrMatchesKernelUDP: a PacketConn's LocalAddr is
// the *net.UDPAddr a kernel UDP socket bound to the same address reports
// (the app's wildcard of one family against a kernel socket of that
// family, udp4 or udp6; no address, udp://:0, against net.ListenUDP("udp",
// ":0"), which takes both): the unspecified or given address, and the
// port it got for port 0, on which host A's datagrams of each family it
// takes arrive, from host A's address.
func TestPacketConnLocalAddrMatchesKernelUDP(t *testing.T) {
	rig, a := udpSemRig(t)
	buf := make([]byte, 64)
	for _, tc := range []struct {
		name, network, kaddr string       // the app listens on udp://kaddr
		families             []netip.Addr // the addresses of B host A sends to
	}{
		{"IPv4Wildcard", "udp4", "0.0.0.0:0", []netip.Addr{rig.B.IPv4}},
		{"IPv4Address", "udp4", netip.AddrPortFrom(rig.B.IPv4, 0).String(), []netip.Addr{rig.B.IPv4}},
		{"IPv6Wildcard", "udp6", "[::]:0", []netip.Addr{rig.B.IPv6}},
		{"IPv6Address", "udp6", netip.AddrPortFrom(rig.B.IPv6, 0).String(), []netip.Addr{rig.B.IPv6}},
		{"BothFamilies", "udp", ":0", []netip.Addr{rig.B.IPv4, rig.B.IPv6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				pc := listenUDPSide(t, rig, a, side, tc.network, tc.kaddr)
				o := newUDPObs()
				peer := kernelClient(t, rig.A)
				pport := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
				o.labels[netip.AddrPortFrom(rig.A.IPv4, pport)] = "peer's IPv4 address"
				o.labels[netip.AddrPortFrom(rig.A.IPv6, pport)] = "peer's IPv6 address"
				la, ok := pc.LocalAddr().(*net.UDPAddr)
				o.add("local address", "%s", o.addr(pc.LocalAddr()))
				if !ok {
					obs[i] = o
					continue
				}
				for _, dst := range tc.families {
					peer.WriteToUDPAddrPort([]byte("hello"), netip.AddrPortFrom(dst, uint16(la.Port)))
					n, from, err := recvWithin(pc, buf)
					o.read("a datagram to its port at "+dst.String(), buf, n, from, err)
				}
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}

// TestPacketConnHostLocalDestinationCounted: a datagram an app outside
// the interface's namespace (this test's process; host B is another
// namespace) writes to an address of host B itself, loopback or host B's
// own, does not reach B's sockets (the app could not reach them with a
// kernel socket of its own either): WriteTo takes it, as UDP takes a
// datagram it may lose, and the daemon drops it counted as no-route, not
// as a header the app got wrong; a datagram to host A right after still
// goes out. (TestPacketConnWriteToThisHostMatchesKernel has an app in B's
// namespace reach them.)
func TestPacketConnHostLocalDestinationCounted(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "hostlocal"})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer := kernelClient(t, rig.A)
	drops := func(name string) uint64 { return d.Engine().Stats().Totals.Drops[name] }
	noRoute, badHeader := drops("no-route"), drops("tx-bad-header")
	for _, dst := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), rig.B.IPv4} {
		if n, err := pc.WriteTo([]byte("local"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9))); err != nil || n != 5 {
			t.Fatalf("WriteTo %v: %d, %v", dst, n, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for drops("no-route") < noRoute+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := drops("no-route") - noRoute; got != 2 {
		t.Errorf("no-route drops: %d, want 2 (loopback and host B's address)", got)
	}
	if got := drops("tx-bad-header") - badHeader; got != 0 {
		t.Errorf("tx-bad-header drops: %d, want 0", got)
	}
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, uint16(peer.LocalAddr().(*net.UDPAddr).Port)))
	if _, err := pc.WriteTo([]byte("wire"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, _, err := recvWithin(peer, buf); err != nil || string(buf[:n]) != "wire" {
		t.Fatalf("host A read %q, %v; want \"wire\"", buf[:n], err)
	}
}

// dialUDPSide connects a UDP socket in host B to dst: a kernel socket for
// side "kernel", else an app's through the daemon; closed when the test
// ends.
func dialUDPSide(t *testing.T, rig *nstest.Pair, a *app.App, side string, dst netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if side == "kernel" {
		if err := rig.B.Do(func() (err error) {
			c, err = net.Dial("udp", dst.String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		c, err = a.Dial(ctx, "udp://"+dst.String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// listenUDPSide opens a UDP socket in host B on addr: a kernel socket of
// network for side "kernel", else an app's through the daemon; closed when
// the test ends.
func listenUDPSide(t *testing.T, rig *nstest.Pair, a *app.App, side, network, addr string) net.PacketConn {
	t.Helper()
	if side == "kernel" {
		return kernelUDP(t, rig.B, network, addr)
	}
	p, err := a.ListenPacket("udp://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
