package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPWildcardFollowsNewAddress: an address added to host B while the
// daemon runs reaches an app's wildcard TCP listener as soon as netlink
// announces it, as it reaches a kernel listener at once. Until the
// daemon follows it, the XDP program passes a SYN to that address to the
// kernel, where only the port's reservation is bound, and the kernel
// refuses it: a kernel client on host A sees ECONNREFUSED.
func TestTCPWildcardFollowsNewAddress(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "server"})
	for i, tc := range []struct {
		wildcard, added string
		prefix          int
	}{
		{"0.0.0.0", "10.77.0.50", 24},
		{"[::]", "fd77::50", 64},
	} {
		t.Run(tc.added, func(t *testing.T) {
			port := 7310 + i
			ln := listenApp(t, a, "tcp://"+tc.wildcard+":"+strconv.Itoa(port))
			go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
			added := netip.MustParseAddr(tc.added)
			to := netip.AddrPortFrom(added, uint16(port)).String()
			args := []string{"addr", "add", added.String() + "/" + strconv.Itoa(tc.prefix), "dev", rig.B.Link}
			if added.Is6() {
				args = append(args, "nodad")
			}
			ipIn(t, rig.B, args...)
			t.Cleanup(func() {
				exec.Command("ip", "-n", rig.B.Name, "addr", "del", added.String()+"/"+strconv.Itoa(tc.prefix), "dev", rig.B.Link).Run()
			})
			since := time.Now()
			refused := 0
			for {
				var c net.Conn
				err := rig.A.Do(func() (err error) {
					c, err = net.DialTimeout("tcp", to, 2*time.Second)
					return err
				})
				if errors.Is(err, syscall.ECONNREFUSED) && time.Since(since) < 3*time.Second {
					refused++
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatalf("dial %s %v after the address was added (%d refused before): %v", to, time.Since(since), refused, err)
				}
				took := time.Since(since)
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				msg := []byte("to an address added a moment ago")
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
					t.Fatalf("echo: %q, %v", got, err)
				}
				t.Logf("first connection accepted %v after the address was added (%d refused before)", took, refused)
				// The view's netlink event comes within milliseconds; a
				// look once a second would leave it refused for half a
				// second on average.
				if took > 250*time.Millisecond {
					t.Errorf("the app's listener took the address %v after it was added (%d connections refused): want it followed at once", took, refused)
				}
				return
			}
		})
	}
}

// TestMACChangeFollowed: after host B's interface takes a new hardware
// address (ip link set … address), a connection open before goes on, a
// new one is accepted, and B's frames leave with the new address as
// their source, as a kernel socket's would. Before, the XDP program and
// the worker kept the old address: frames to the new one were another
// host's to them, the kernel refused the SYNs.
func TestMACChangeFollowed(t *testing.T) {
	const port = 7320
	rig, _ := echoRig(t, "tcp://0.0.0.0:"+strconv.Itoa(port))
	dial := func() net.Conn {
		t.Helper()
		c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
		t.Cleanup(func() { c.Close() })
		return c
	}
	echoErr := func(c net.Conn, what string) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := []byte(what)
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("%s: write: %w", what, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != what {
			return fmt.Errorf("%s: echo %q, %v", what, got, err)
		}
		return nil
	}
	echo := func(c net.Conn, what string) {
		t.Helper()
		if err := echoErr(c, what); err != nil {
			t.Fatal(err)
		}
	}
	before := dial()
	echo(before, "before the change")

	// Host A's frames from B, read from a packet socket on A.
	var fd int
	if err := rig.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: rig.A.IfIndex, Protocol: htons(unix.ETH_P_IP)})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000}); err != nil {
		t.Fatal(err)
	}

	newMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x42}
	ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "address", newMAC.String())
	ipIn(t, rig.A, "neigh", "flush", "dev", rig.A.Link) // A asks again, as after its entry went stale
	time.Sleep(200 * time.Millisecond)                  // the netlink event's way to the daemon
	echo(before, "a connection open before the change")
	after := dial()
	echo(after, "a connection after the change")

	// Drain what A's packet socket holds, then look at the source of B's
	// next segments.
	buf := make([]byte, 2048)
	for {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	done := make(chan error, 1)
	go func() { done <- echoErr(after, "once more, looked at on the wire") }()
	seen := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && seen == 0; {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < 14+20+20 {
			continue
		}
		ip := buf[14:n]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != unix.IPPROTO_TCP || netip.AddrFrom4([4]byte(ip[12:16])) != rig.B.IPv4 || len(ip) < ihl+4 ||
			binary.BigEndian.Uint16(ip[ihl:]) != port {
			continue
		}
		if src := net.HardwareAddr(buf[6:12]); src.String() != newMAC.String() {
			t.Fatalf("a segment of B's left with source MAC %v, want the new %v", src, newMAC)
		}
		seen++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatal("no segment of B's seen on A's packet socket")
	}
}

// TestMTUChangeFollowed: after host B's interface takes a smaller MTU, a
// new TCP connection advertises the MSS that fits it, an app's datagram
// larger than it leaves in fragments, and connections opened before the
// change (IPv4 and IPv6) send segments that fit it, as a kernel socket's
// do. Before, the daemon kept the MTU it started with: host A's
// full-sized segments were too large for B's link and the connection
// stalled, and the datagram left whole, too large for A's; and then
// gVisor kept an open connection's MSS, whose segments were too large
// for A's link.
func TestMTUChangeFollowed(t *testing.T) {
	const port = 7330
	rig, a := echoRig(t, "tcp://:"+strconv.Itoa(port))
	pc, err := a.ListenPacket("udp://0.0.0.0:" + strconv.Itoa(port+1))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	setMTU := func(h *nstest.Host, mtu int) { ipIn(t, h, "link", "set", "dev", h.Link, "mtu", strconv.Itoa(mtu)) }
	// Connections opened at MTU 1500 on both links, their segments full.
	var early []net.Conn
	for _, b := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		c := kernelDial(t, rig.A, netip.AddrPortFrom(b, port))
		defer c.Close()
		early = append(early, c)
	}
	earlyEcho := func(what string) {
		t.Helper()
		for _, c := range early {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			data := pattern(2, 256<<10)
			go c.Write(data)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("256 KiB echoed over %s (%v): %v (equal %v)", what, c.RemoteAddr(), err, bytes.Equal(got, data))
			}
		}
	}
	earlyEcho("a connection opened at MTU 1500")

	// B's link alone smaller: A learns the MSS from B's SYN-ACK.
	setMTU(rig.B, 1280)
	time.Sleep(200 * time.Millisecond) // the netlink event's way to the daemon
	c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	data := pattern(0, 256<<10)
	go c.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("256 KiB echoed over a connection opened after the MTU change: %v (equal %v)", err, bytes.Equal(got, data))
	}
	if mss, err := rawTCPMaxSeg(c.(*net.TCPConn)); err != nil || mss > 1280-40 {
		t.Errorf("host A's MSS toward B: %d, %v; want at most %d", mss, err, 1280-40)
	}

	// Both links smaller: a datagram larger than them reaches A in
	// fragments.
	setMTU(rig.A, 1280)
	time.Sleep(200 * time.Millisecond)
	uc, err := rig.A.ListenUDP(netip.AddrPortFrom(rig.A.IPv4, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dgram := pattern(1, 1400)
	if _, err := pc.WriteTo(dgram, uc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := uc.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], dgram) {
		t.Fatalf("a 1,400-byte datagram over links of MTU 1280: %d bytes, %v", n, err)
	}

	// The connection opened before: A's kernel sizes its segments by its
	// link's new MTU, and B's by B's. Without segmentation offload on B's
	// link, as on a wire, the kernel cuts the daemon's large TCP packets
	// into frames before they leave B, and a frame too large for A's link
	// is dropped (with it, veth hands A the whole packet).
	if out, err := exec.Command("ip", "netns", "exec", rig.B.Name, "ethtool", "-K", rig.B.Link, "tso", "off").CombinedOutput(); err != nil {
		t.Fatalf("ethtool -K %s tso off: %v %s", rig.B.Link, err, out)
	}
	earlyEcho("a connection opened before both links took MTU 1280")
}

// TestPathMTUFollowsTheInterface: the path MTU the daemon gives apps (for
// their don't-fragment datagrams, api.PathMTU) and a capture's snap
// length follow a change of the interface's MTU, as the workers and the
// TCP stack do; they kept the MTU the daemon started with, so an app sized
// its datagrams for 1,500 bytes on a link of 1,280 and lost them all.
func TestPathMTUFollowsTheInterface(t *testing.T) {
	rig, d := tcpRig(t)
	e := d.Engine()
	pmtu := func() int {
		t.Helper()
		m, err := e.PathMTU(netip.Addr{}, rig.A.IPv4)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := pmtu(); m != 1500 {
		t.Fatalf("path MTU %d at start, want 1500", m)
	}
	for _, mtu := range []int{1280, 4000} {
		ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "mtu", strconv.Itoa(mtu))
		end := time.Now().Add(3 * time.Second)
		for pmtu() != mtu && time.Now().Before(end) {
			time.Sleep(20 * time.Millisecond)
		}
		if m := pmtu(); m != mtu {
			t.Errorf("path MTU %d after the interface's MTU became %d", m, mtu)
		}
	}
}

// TestRemovedAddressGetsNothing: a UDP listener bound to an address of
// host B gets nothing once the address is
// removed (a service address moved to another host), as a Linux socket
// bound to it gets nothing, though peers with a stale neighbour entry
// still send to B; the XDP program steered them on, and the app read
// requests it could never answer (its replies refused as from an address
// not the host's). A listener on an address B keeps goes on receiving.
func TestRemovedAddressGetsNothing(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "server"})
	const moved = "10.77.0.60"
	ipIn(t, rig.B, "addr", "add", moved+"/24", "dev", rig.B.Link)
	// Host A keeps B's MAC for the address, as a peer that has not
	// heard it moved.
	ipIn(t, rig.A, "neigh", "replace", moved, "lladdr", rig.B.MAC.String(), "dev", rig.A.Link, "nud", "permanent")
	gone, err := a.ListenPacket("udp://" + moved + ":7340")
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	kept, err := a.ListenPacket("udp://" + rig.B.IPv4.String() + ":7341")
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	uc, err := rig.A.ListenUDP(netip.AddrPortFrom(rig.A.IPv4, 7342), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	// received reports whether pc gets one of several datagrams sent to
	// dst from host A within d.
	received := func(pc interface {
		SetReadDeadline(time.Time) error
		ReadFrom([]byte) (int, net.Addr, error)
	}, dst netip.AddrPort, d time.Duration) bool {
		t.Helper()
		for range 5 {
			if _, err := uc.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(dst)); err != nil {
				t.Fatal(err)
			}
		}
		pc.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 64)
		_, _, err := pc.ReadFrom(buf)
		return err == nil
	}
	movedAt := netip.AddrPortFrom(netip.MustParseAddr(moved), 7340)
	keptAt := netip.AddrPortFrom(rig.B.IPv4, 7341)
	if !received(gone, movedAt, 3*time.Second) || !received(kept, keptAt, 3*time.Second) {
		t.Fatal("no datagram before the address was removed")
	}
	ipIn(t, rig.B, "addr", "del", moved+"/24", "dev", rig.B.Link)
	time.Sleep(500 * time.Millisecond) // the netlink event's way to the daemon
	// What came in the meantime.
	gone.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	for buf := make([]byte, 64); ; {
		if _, _, err := gone.ReadFrom(buf); err != nil {
			break
		}
	}
	if received(gone, movedAt, time.Second) {
		t.Error("the listener bound to the removed address still receives")
	}
	if !received(kept, keptAt, 3*time.Second) {
		t.Error("the listener on the address B keeps receives nothing")
	}
}

// rawTCPMaxSeg returns TCP_MAXSEG of c.
func rawTCPMaxSeg(c *net.TCPConn) (mss int, err error) {
	err = rawControl(c, func(fd int) (err error) {
		mss, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
		return err
	})
	return mss, err
}

// ipIn runs ip(8) with args in host h's namespace and fails the test on an
// error.
func ipIn(t *testing.T, h *nstest.Host, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", h.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v in %s: %v: %s", args, h.Name, err, out)
	}
}

// echoRig starts a daemon on host B of a new rig and an app there whose
// TCP listener on uri echoes what each connection sends.
func echoRig(t *testing.T, uri string) (*nstest.Pair, *app.App) {
	t.Helper()
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "echo"})
	ln := listenApp(t, a, uri)
	go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
	return rig, a
}

// TestNextHopChangeFollowed: when the MAC of a neighbour of host B
// changes (host A's, here: a new address on A's link, which B's
// neighbour table learns, as after a gateway's failover announced by a
// gratuitous ARP), an app's datagrams and its TCP connection's segments
// go to the new MAC at once, as the kernel's do. Before, the daemon used
// what it had resolved for up to six seconds, and host A dropped the
// frames as another host's.
func TestNextHopChangeFollowed(t *testing.T) {
	const port = 7390
	rig, a := echoRig(t, "tcp://0.0.0.0:"+strconv.Itoa(port))
	pc, err := a.ListenPacket("udp://0.0.0.0:" + strconv.Itoa(port+1))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uc, err := rig.A.ListenUDP(netip.AddrPortFrom(rig.A.IPv4, 0), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	c := kernelDial(t, rig.A, netip.AddrPortFrom(rig.B.IPv4, port))
	defer c.Close()
	echo := func(what string, within time.Duration) {
		t.Helper()
		c.SetDeadline(time.Now().Add(within))
		if _, err := c.Write([]byte(what)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := make([]byte, len(what))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("%s: echo within %v: %v", what, within, err)
		}
	}
	// receive waits for a datagram from the app on A's socket, the app
	// sending one every 10 ms meanwhile.
	receive := func(what string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		buf := make([]byte, 64)
		for time.Since(start) < within {
			if _, err := pc.WriteTo([]byte(what), uc.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			uc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if n, _, err := uc.ReadFrom(buf); err == nil && string(buf[:n]) == what {
				return time.Since(start)
			}
		}
		t.Fatalf("%s: no datagram from the app within %v", what, within)
		return 0
	}
	receive("before", 2*time.Second)
	echo("before", 2*time.Second)

	newMAC := "02:77:00:00:00:51"
	ipIn(t, rig.A, "link", "set", "dev", rig.A.Link, "address", newMAC)
	ipIn(t, rig.B, "neigh", "replace", rig.A.IPv4.String(), "lladdr", newMAC, "dev", rig.B.Link, "nud", "reachable")
	took := receive("after", 3*time.Second)
	t.Logf("the first datagram to A's new MAC arrived %v after the change", took)
	if took > 300*time.Millisecond {
		t.Errorf("the app's datagrams reached A's new MAC %v after B's neighbour table had it: want at once", took)
	}
	echo("after", time.Second)
}

// TestRenamedInterfaceFollowed: an interface renamed while the daemon
// runs is still followed, as the kernel knows it by its index: an address
// added after the rename reaches the app's wildcard listener. Before, the
// daemon looked its interface up by the name it started with, and gVisor
// never got the address: connections to it timed out.
func TestRenamedInterfaceFollowed(t *testing.T) {
	const port = 7400
	rig, d := tcpRig(t)
	ln := listenApp(t, attach(t, d, app.Options{Name: "echo"}), "tcp://0.0.0.0:"+strconv.Itoa(port))
	go serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
	ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "down")
	ipIn(t, rig.B, "link", "set", "dev", rig.B.Link, "name", "xsrenamed0")
	ipIn(t, rig.B, "link", "set", "dev", "xsrenamed0", "up")
	added := netip.MustParseAddr("10.77.0.60")
	ipIn(t, rig.B, "addr", "add", added.String()+"/24", "dev", "xsrenamed0")
	time.Sleep(250 * time.Millisecond) // the netlink events' way to the daemon
	for _, to := range []netip.Addr{rig.B.IPv4, added} {
		c := kernelDial(t, rig.A, netip.AddrPortFrom(to, port))
		c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := []byte("after the rename")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("echo from %v after the rename: %v", to, err)
		}
		c.Close()
	}
	if name := d.Stats().Interface; name != "xsrenamed0" {
		t.Errorf("show stats names the interface %q after the rename, want xsrenamed0", name)
	}
}

// TestServiceAddressOnLo: an address on host B's lo (a service address
// that host A routes to B, as load balancers and anycast use them) takes
// connections to an app's wildcard TCP listener, as a kernel listener
// does (the weak host model). Before, gVisor had only the interface's
// addresses, and the connections timed out.
func TestServiceAddressOnLo(t *testing.T) {
	const port = 7430
	vip := netip.MustParseAddr("10.99.9.9")
	rig, _ := echoRig(t, "tcp://0.0.0.0:"+strconv.Itoa(port))
	ipIn(t, rig.B, "addr", "add", vip.String()+"/32", "dev", "lo")
	ipIn(t, rig.A, "route", "add", vip.String()+"/32", "via", rig.B.IPv4.String())
	time.Sleep(250 * time.Millisecond) // the netlink event's way to the daemon
	c := kernelDial(t, rig.A, netip.AddrPortFrom(vip, port))
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("tcp")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "tcp" {
		t.Fatalf("tcp echo from the service address: %q, %v", got, err)
	}
	if la := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); la != rig.A.IPv4 {
		t.Errorf("host A's end is %v", la)
	}
	if ra := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); ra != vip {
		t.Errorf("host A's peer is %v, want the service address", ra)
	}
}
