package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// farHost puts a third host behind host A: a namespace joined to A by a
// veth pair whose end in A has MTU 1280 and whose end in the far host
// 1500, A routing between B and it (10.78.9.0/24, fd78:9::/64), and B's
// routes to it through A. A router with a smaller link onward, then: a
// segment from B larger than 1280 bytes makes A answer with ICMP
// "fragmentation needed" (IPv4) or "packet too big" (IPv6), while the far
// host's SYN says MSS 1460. It returns the far host's namespace and
// addresses.
func farHost(t *testing.T, rig *nstest.Pair) (netns.NsHandle, netip.Addr, netip.Addr) {
	t.Helper()
	name := rig.A.Name + "-far"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	run("ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	far4, far6 := netip.MustParseAddr("10.78.9.2"), netip.MustParseAddr("fd78:9::2")
	for _, args := range [][]string{
		{"link", "add", "xsfar", "mtu", "1280", "type", "veth", "peer", "name", "xsfar-p", "mtu", "1500", "netns", name},
		{"addr", "add", "10.78.9.1/24", "dev", "xsfar"},
		{"addr", "add", "fd78:9::1/64", "dev", "xsfar", "nodad"},
		{"link", "set", "xsfar", "up"},
	} {
		ipIn(t, rig.A, args...)
	}
	run("ip", "netns", "exec", rig.A.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for _, args := range [][]string{
		{"addr", "add", far4.String() + "/24", "dev", "xsfar-p"},
		{"addr", "add", far6.String() + "/64", "dev", "xsfar-p", "nodad"},
		{"link", "set", "xsfar-p", "up"},
		{"link", "set", "lo", "up"},
		{"route", "add", "default", "via", "10.78.9.1"},
		{"-6", "route", "add", "default", "via", "fd78:9::1"},
	} {
		run(append([]string{"ip", "-n", name}, args...)...)
	}
	ipIn(t, rig.B, "route", "add", "10.78.9.0/24", "via", rig.A.IPv4.String())
	ipIn(t, rig.B, "-6", "route", "add", "fd78:9::/64", "via", rig.A.IPv6.String())
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, far4, far6
}

// farRoutesMTU1280 makes host B's routes to the far host's networks say
// MTU 1280 (an mtu metric, as for a tunnel).
func farRoutesMTU1280(t *testing.T, rig *nstest.Pair) {
	t.Helper()
	ipIn(t, rig.B, "route", "replace", "10.78.9.0/24", "via", rig.A.IPv4.String(), "mtu", "1280")
	ipIn(t, rig.B, "-6", "route", "replace", "fd78:9::/64", "via", rig.A.IPv6.String(), "mtu", "1280")
}

// mssIn1280 is the largest MSS whose segments to or from a (no IP or TCP
// options) fit a route of MTU 1280.
func mssIn1280(a netip.Addr) int {
	if a.Is6() {
		return 1280 - 40 - 20
	}
	return 1280 - 20 - 20
}

// serveData has the app on B and a kernel server on B beside it (the same
// program on a kernel socket: what a user gets without the daemon) each
// answer a one-byte request with data, the app on port and the kernel on
// port+1; it returns the app.
func serveData(t *testing.T, rig *nstest.Pair, d *Daemon, port uint16, data []byte) *app.App {
	t.Helper()
	serve := func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
			_, _ = c.Write(data)
		}
	}
	a := attach(t, d, app.Options{Name: "data"})
	go serveEach(listenApp(t, a, "tcp://:"+strconv.Itoa(int(port))), serve)
	var kln net.Listener
	if err := rig.B.Do(func() (err error) {
		kln, err = net.Listen("tcp", ":"+strconv.Itoa(int(port)+1))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kln.Close() })
	go serveEach(kln, serve)
	return a
}

// fetchFar has a kernel client on the far host send to a one-byte request
// and read n bytes back.
func fetchFar(far netns.NsHandle, to netip.AddrPort, n int) (got []byte, err error) {
	got, _, err = fetchFarMSS(far, to, n)
	return got, err
}

// fetchFarMSS is fetchFar, also returning the client's MSS once
// connected (TCP_MAXSEG): what the server's SYN-ACK allowed it.
func fetchFarMSS(far netns.NsHandle, to netip.AddrPort, n int) (got []byte, mss int, err error) {
	err = nstest.DoIn(far, func() error {
		c, err := net.DialTimeout("tcp", to.String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		mss = tcpMaxSeg(c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{1}); err != nil {
			return err
		}
		got, err = io.ReadAll(io.LimitReader(c, int64(n)))
		return err
	})
	return got, mss, err
}

// tcpMaxSeg returns a kernel TCP socket's TCP_MAXSEG, -1 if it cannot be
// read.
func tcpMaxSeg(c net.Conn) int {
	m := -1
	if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { m, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) })
	}
	return m
}

// TestTCPPathMTUDiscovery: a kernel client on a host behind a router
// whose next link is smaller asks an app on host B for 1 MiB, over IPv4
// and IPv6. B's full-sized segments are too large for that link; the
// router says so by ICMP, and the connection's segments shrink to fit,
// as a kernel server's do (Linux's path MTU discovery), and every byte
// arrives. Before, the ICMP message reached only B's kernel, which has no
// socket of such a connection, and the transfer stalled.
func TestTCPPathMTUDiscovery(t *testing.T) {
	const port = 7340
	rig, d := tcpRig(t)
	far, _, _ := farHost(t, rig)
	data := pattern(3, 1<<20)
	serveData(t, rig, d, port, data)
	// The app's first: once the kernel's connections learned the path
	// MTU, the route says it (TestTCPRouteMTU) and no router speaks.
	for _, to := range []netip.AddrPort{
		netip.AddrPortFrom(rig.B.IPv4, port), netip.AddrPortFrom(rig.B.IPv6, port), // the app's
		netip.AddrPortFrom(rig.B.IPv4, port+1), netip.AddrPortFrom(rig.B.IPv6, port+1), // the kernel's
	} {
		start := time.Now()
		got, err := fetchFar(far, to, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("1 MiB from %v through a link of MTU 1280: %d bytes, %v (equal %v)", to, len(got), err, bytes.Equal(got, data))
		}
		t.Logf("1 MiB from %v in %v", to, time.Since(start))
	}
	if st := d.Stats(); st.TCP == nil || st.TCP.PathMTUMessages == 0 {
		t.Errorf("show stats: no ICMP message of a smaller path MTU counted (%+v)", st.TCP)
	}
}

// snmp6 reads counter name of h's /proc/net/snmp6.
func snmp6(t *testing.T, h *nstest.Host, name string) uint64 {
	t.Helper()
	var v uint64
	if err := h.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == name {
				v, _ = strconv.ParseUint(f[1], 10, 64)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTCPRouteMTU: with host B's routes to the far host saying MTU 1280
// (an mtu metric, as for a tunnel), a connection's segments fit it from
// the start, over IPv4 and IPv6, as a kernel server's do: the router in
// host A never has to say "fragmentation needed" or "packet too big",
// and a far client's MSS is one that fits it, as B's SYN-ACK said.
// Before, the daemon's TCP took its MSS from the interface alone and
// learned the path's only from the router's ICMP; its SYN-ACK said the
// link's MSS (1448 and 1428 at the client) until the worker clamped it.
func TestTCPRouteMTU(t *testing.T) {
	// Both ways out: the packet socket, and the workers' AF_XDP tx rings
	// (tcp.no_gso), each of which sends the SYN-ACKs it clamps.
	for _, c := range []struct {
		name  string
		noGSO bool
	}{{"packet-socket", false}, {"af_xdp", true}} {
		t.Run(c.name, func(t *testing.T) { testTCPRouteMTU(t, c.noGSO) })
	}
}

func testTCPRouteMTU(t *testing.T, noGSO bool) {
	const port = 7350
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.NoGSO = noGSO })
	far, far4, far6 := farHost(t, rig)
	farRoutesMTU1280(t, rig)
	data := pattern(4, 1<<20)
	a := serveData(t, rig, d, port, data)
	icmps := func() (uint64, uint64) {
		return snmp(t, rig.A, "Icmp:", "OutDestUnreachs"), snmp6(t, rig.A, "Icmp6OutPktTooBigs")
	}
	for _, to := range []netip.AddrPort{
		netip.AddrPortFrom(rig.B.IPv4, port+1), netip.AddrPortFrom(rig.B.IPv6, port+1), // the kernel's
		netip.AddrPortFrom(rig.B.IPv4, port), netip.AddrPortFrom(rig.B.IPv6, port), // the app's
	} {
		u4, u6 := icmps()
		got, m, err := fetchFarMSS(far, to, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("1 MiB from %v over a route of MTU 1280: %d bytes, %v (equal %v)", to, len(got), err, bytes.Equal(got, data))
		}
		// The client's MSS is what B's SYN-ACK said: one that fits B's
		// route back to it, as Linux's SYN-ACK over that route says.
		if want := mssIn1280(to.Addr()); m <= 0 || m > want {
			t.Errorf("connect to %v from behind a route of MTU 1280: the client's MSS is %d, want at most %d (B's SYN-ACK advertised more than fits)", to, m, want)
		}
		if v4, v6 := icmps(); v4 != u4 || v6 != u6 {
			t.Errorf("1 MiB from %v over a route of MTU 1280: the router sent %d destination unreachable and %d packet too big", to, v4-u4, v6-u6)
		}
	}

	// The app dials a kernel server on the far host and sends it 1 MiB;
	// the server answers with the count it read. The server's MSS is the
	// one the app's SYN advertised: one that fits the route, as Linux's
	// SYN over that route advertises, before any data went.
	var fln net.Listener
	mss := make(chan int, 2)
	if err := nstest.DoIn(far, func() (err error) {
		fln, err = net.Listen("tcp", ":"+strconv.Itoa(port+2))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer fln.Close()
	go serveEach(fln, func(c net.Conn) {
		select {
		case mss <- tcpMaxSeg(c):
		default:
		}
		n, _ := io.Copy(io.Discard, c)
		_, _ = c.Write([]byte(strconv.FormatInt(n, 10)))
	})
	for _, to := range []netip.Addr{far4, far6} {
		u4, u6 := icmps()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(to, port+2).String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != strconv.Itoa(len(data)) {
			t.Fatalf("1 MiB to %v over a route of MTU 1280: the server read %q, %v", to, got, err)
		}
		if m, want := <-mss, mssIn1280(to); m <= 0 || m > want {
			t.Errorf("dial to %v over a route of MTU 1280: the server's MSS is %d, want at most %d (the app's SYN advertised more than fits)", to, m, want)
		}
		if v4, v6 := icmps(); v4 != u4 || v6 != u6 {
			t.Errorf("1 MiB to %v over a route of MTU 1280: the router sent %d destination unreachable and %d packet too big", to, v4-u4, v6-u6)
		}
	}
}

// TestTCPConnectUnreachableRouter: an app's dial to an address of the far
// host's network that nobody owns fails with EHOSTUNREACH as soon as the
// router in host A, whose ARP or ND for it got no answer, says "host
// unreachable" ("address unreachable" over IPv6), as a kernel socket's
// connect on host B does, long before the connect timeout. Before, the
// daemon's TCP never heard of the router's message and waited out its
// timeout (ETIMEDOUT).
func TestTCPConnectUnreachableRouter(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.Stack.ConnectTimeout = time.Minute })
	farHost(t, rig)
	a := attach(t, d, app.Options{Name: "unreachable"})
	type result struct {
		who string
		err error
	}
	res := make(chan result, 4)
	for _, dst := range []netip.AddrPort{netip.MustParseAddrPort("10.78.9.99:7360"), netip.MustParseAddrPort("[fd78:9::99]:7360")} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := a.Dial(ctx, "tcp://"+dst.String())
			if err == nil {
				c.Close()
			}
			res <- result{"the app's dial to " + dst.String(), err}
		}()
		go func() {
			var err error
			_ = rig.B.Do(func() error {
				var c net.Conn
				c, err = net.DialTimeout("tcp", dst.String(), 30*time.Second)
				if err == nil {
					c.Close()
				}
				return nil
			})
			res <- result{"a kernel socket's connect to " + dst.String(), err}
		}()
	}
	for range 4 {
		r := <-res
		if !errors.Is(r.err, syscall.EHOSTUNREACH) {
			t.Errorf("%s: %v, want EHOSTUNREACH", r.who, r.err)
		}
	}
	if st := d.Stats(); st.TCP == nil || st.TCP.ConnectsUnreachable != 2 {
		t.Errorf("show stats: want 2 connects ended unreachable (%+v)", st.TCP)
	}
}

// TestTCPRouteMTUAtAccept: an app that writes as soon as it accepts (a
// greeting, as an SMTP or SSH server's, then 256 KiB) to clients behind
// a route of MTU 1280 sends no segment larger than the route takes, over
// 200 connections from the far host, IPv4 and IPv6 in turn: the router
// in host A never says "fragmentation needed" or "packet too big", as for
// a kernel server. Before, the connection learned the route's MTU on a
// goroutine of its own after the accept, and in 4 of 800 connections
// (4 of 400 under the race detector) the app's first segments left
// before it did.
func TestTCPRouteMTUAtAccept(t *testing.T) {
	const port = 7390
	rig, d := tcpRig(t)
	far, _, _ := farHost(t, rig)
	farRoutesMTU1280(t, rig)
	a := attach(t, d, app.Options{Name: "greeter"})
	data := pattern(5, 256<<10)
	go serveEach(listenApp(t, a, "tcp://:"+strconv.Itoa(port)), func(c net.Conn) {
		_, _ = c.Write(data)
		c.Close()
	})
	icmps := func() uint64 {
		return snmp(t, rig.A, "Icmp:", "OutDestUnreachs") + snmp6(t, rig.A, "Icmp6OutPktTooBigs")
	}
	spoken := 0
	for i := range 200 {
		to := netip.AddrPortFrom(rig.B.IPv4, port)
		if i%2 == 1 {
			to = netip.AddrPortFrom(rig.B.IPv6, port)
		}
		before := icmps()
		var got []byte
		if err := nstest.DoIn(far, func() error {
			c, err := net.DialTimeout("tcp", to.String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got, err = io.ReadAll(c)
			return err
		}); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("connection %d to %v: %d bytes, %v (equal %v)", i, to, len(got), err, bytes.Equal(got, data))
		}
		if icmps() != before {
			spoken++
		}
	}
	if spoken > 0 {
		t.Errorf("in %d of 200 connections the app sent segments larger than the route of MTU 1280 takes (the router answered with ICMP)", spoken)
	}
}
