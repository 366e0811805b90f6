package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// udpPortSockets returns the local addresses of the UDP sockets of port
// that `ss -uan` lists in the named netns.
func udpPortSockets(t *testing.T, netns string, port uint16) map[netip.AddrPort]int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "ss", "-uanH").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	got := map[netip.AddrPort]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		ap, err := netip.ParseAddrPort(strings.Replace(f[3], "*:", "[::]:", 1))
		if err == nil && ap.Port() == port {
			got[ap]++
		}
	}
	return got
}

// kernelBindErr binds a kernel UDP socket of h to local (with SO_REUSEADDR
// when reuse), closes it and returns the bind's error.
func kernelBindErr(h *nstest.Host, local netip.AddrPort, reuse bool) error {
	fd, err := kernelBindFD(h, local, reuse)
	if err == nil {
		syscall.Close(fd)
	}
	return err
}

// kernelBindFD returns a kernel UDP socket of h bound to local (IPv6
// only for an IPv6 address; with SO_REUSEADDR when reuse).
func kernelBindFD(h *nstest.Host, local netip.AddrPort, reuse bool) (int, error) {
	bound := -1
	err := h.Do(func() error {
		fam := syscall.AF_INET
		if local.Addr().Is6() {
			fam = syscall.AF_INET6
		}
		fd, err := syscall.Socket(fam, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer func() {
			if bound < 0 {
				syscall.Close(fd)
			}
		}()
		if reuse {
			if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
				return err
			}
		}
		var sa syscall.Sockaddr
		if fam == syscall.AF_INET6 {
			if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1); err != nil {
				return err
			}
			sa = &syscall.SockaddrInet6{Addr: local.Addr().As16(), Port: int(local.Port())}
		} else {
			sa = &syscall.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}
		}
		if err := syscall.Bind(fd, sa); err != nil {
			return err
		}
		bound = fd
		return nil
	})
	return bound, err
}

// TestUDPPortHandoverSequence binds and closes UDP listeners of one port
// in a random order (XSESSIOND_SEQ_SEED replays one), each of its own
// app: B's address, another address of B and the wildcard, in IPv4 and
// IPv6, a listener of both families (udp://:PORT) and one of the other
// IPv4 address written as an IPv4-mapped IPv6 address; among them, a
// kernel socket of another program binds and closes the addresses too.
// The model is the kernel's, as if each listener were a kernel socket
// bound beside the daemon's others: the daemon's listeners conflict when
// they have an address in common, a listener and a kernel socket (or two
// kernel sockets) of one family when their addresses are equal or one is
// the wildcard. A bind, the app's or the kernel socket's, fails with
// EADDRINUSE exactly when it conflicts. After every step: a kernel bind
// of each address (with SO_REUSEADDR too) fails with EADDRINUSE exactly
// when it conflicts; ss lists no socket of an address nobody holds, a
// socket of every bound wildcard address and, for a bound specific
// address, its own or its family's wildcard's; every listener sends a
// datagram larger than a frame (through its kernel path) that A
// receives; and a burst the XDP program leaves to the kernel, sent to
// each address, reaches the listener of that address, else the wildcard
// one. At the end nothing of the port is left in B's kernel. Before, a
// listener bound beside another listener's socket while a kernel socket
// held its address or one of its port's addresses, the daemon taking the
// port for its own.
func TestUDPPortHandoverSequence(t *testing.T) {
	const port, steps, seg = 7690, 80, 1000
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("XSESSIOND_SEQ_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("XSESSIOND_SEQ_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (XSESSIOND_SEQ_SEED replays it)", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))

	rig, d, _ := multiBufferRig(t, nstest.Options{}, "generic")
	other4, other6 := netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("fd77::12")
	ipIn(t, rig.B, "addr", "add", other4.String()+"/24", "dev", rig.B.Link)
	ipIn(t, rig.B, "addr", "add", other6.String()+"/64", "dev", rig.B.Link, "nodad")
	addrs := []netip.Addr{rig.B.IPv4, other4, netip.IPv4Unspecified(), rig.B.IPv6, other6, netip.IPv6Unspecified()}
	// The listeners: a URI and the indexes in addrs of what it binds.
	type listener struct {
		uri   string
		addrs []int
		app   *app.App
		pc    net.PacketConn
	}
	var lns []*listener
	for i, a := range addrs {
		lns = append(lns, &listener{uri: "udp://" + netip.AddrPortFrom(a, port).String(), addrs: []int{i}})
	}
	lns = append(lns,
		&listener{uri: fmt.Sprintf("udp://:%d", port), addrs: []int{2, 5}},
		&listener{uri: "udp://" + netip.AddrPortFrom(netip.AddrFrom16(other4.As16()), port).String(), addrs: []int{1}})
	for _, l := range lns {
		l.app = attach(t, d, app.Options{Name: "seq " + l.uri})
	}
	foreign := make([]int, len(addrs)) // the kernel sockets' descriptors, 0: none
	t.Cleanup(func() {
		for _, l := range lns {
			if l.pc != nil {
				l.pc.Close()
			}
		}
		for _, fd := range foreign {
			if fd > 0 {
				syscall.Close(fd)
			}
		}
	})
	k4, k6 := kernelUDP4(t, rig.A, port+1), net.PacketConn(nil)
	if err := rig.A.Do(func() (err error) { k6, err = net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", port+1)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k6.Close() })
	buf := make([]byte, 65536)
	var history []string

	// of returns the listener bound to addrs[i], nil: none.
	of := func(i int) *listener {
		for _, l := range lns {
			if l.pc != nil && slices.Contains(l.addrs, i) {
				return l
			}
		}
		return nil
	}
	wildOf := func(i int) int { return i/3*3 + 2 }
	conflict := func(i, j int) bool { return wildOf(i) == wildOf(j) && (i == j || i == wildOf(i) || j == wildOf(j)) }
	// conflicts reports whether a bind of addrs[i] conflicts with a
	// kernel socket, or, for a kernel socket's (kernel), with a listener
	// too; a listener's bind conflicts with another listener of addrs[i].
	conflicts := func(i int, kernel bool) bool {
		for j := range addrs {
			if conflict(i, j) && (foreign[j] > 0 || kernel && of(j) != nil) {
				return true
			}
		}
		return !kernel && of(i) != nil
	}
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d (%s): %s", step, strings.Join(history, ", "), fmt.Sprintf(format, args...))
	}
	check := func(step int) {
		t.Helper()
		// The kernel's binds.
		for i, a := range addrs {
			want := conflicts(i, true)
			for _, reuse := range []bool{false, true} {
				err := kernelBindErr(rig.B, netip.AddrPortFrom(a, port), reuse)
				if want && !errors.Is(err, syscall.EADDRINUSE) {
					fail(step, "a kernel bind of %v (SO_REUSEADDR %v): %v, want EADDRINUSE", netip.AddrPortFrom(a, port), reuse, err)
				}
				if !want && err != nil {
					fail(step, "a kernel bind of %v (SO_REUSEADDR %v), nothing holding it: %v", netip.AddrPortFrom(a, port), reuse, err)
				}
			}
		}
		// The sockets ss lists.
		socks := udpPortSockets(t, rig.B.Name, port)
		for ap, n := range socks {
			i := slices.Index(addrs, ap.Addr())
			if i < 0 || (of(i) == nil && foreign[i] == 0) || n > 1 {
				fail(step, "ss lists %d sockets of %v, its listener bound: %v", n, ap, i >= 0 && of(i) != nil)
			}
		}
		for i, a := range addrs {
			if of(i) == nil {
				continue
			}
			own := socks[netip.AddrPortFrom(a, port)] > 0
			if !own && (a.IsUnspecified() || of(wildOf(i)) == nil) {
				fail(step, "no socket of the daemon's holds the listener of %v (ss: %v)", netip.AddrPortFrom(a, port), socks)
			}
		}
		// Each listener's kernel path: a datagram larger than a frame
		// (of each family of one of both).
		for n, l := range lns {
			if l.pc == nil {
				continue
			}
			for _, i := range l.addrs {
				kc, to := k4, netip.AddrPortFrom(rig.A.IPv4, port+1)
				if addrs[i].Is6() {
					kc, to = k6, netip.AddrPortFrom(rig.A.IPv6, port+1)
				}
				msg := bytes.Repeat([]byte{byte(step), byte(n), byte(i)}, 1000)
				if _, err := l.pc.WriteTo(msg, net.UDPAddrFromAddrPort(to)); err != nil {
					fail(step, "the listener of %s: write to %v: %v", l.uri, to, err)
				}
				kc.SetReadDeadline(time.Now().Add(2 * time.Second))
				for {
					n, _, err := kc.ReadFrom(buf)
					if err != nil {
						fail(step, "the listener of %s: its datagram larger than a frame did not reach %v: %v (drops %v)", l.uri, to, err, d.EngineStats().Totals.Drops)
					}
					if bytes.Equal(buf[:n], msg) {
						break
					}
				}
			}
		}
		// What B's kernel delivers to each address.
		for i, a := range addrs {
			if a.IsUnspecified() {
				continue
			}
			l := of(i)
			if l == nil {
				l = of(wildOf(i))
			}
			if l == nil {
				continue
			}
			data := bytes.Repeat([]byte{byte(step), byte(i)}, 2*seg)
			sendBurstFromA(t, rig, netip.AddrPortFrom(a, port), seg, data)
			for j, g := range readDgrams(t, d, l.pc, 4) {
				if !bytes.Equal(g, data[j*seg:(j+1)*seg]) {
					fail(step, "the burst to %v: the listener of %s read datagram %d of %d bytes, not the one sent", a, l.uri, j, len(g))
				}
			}
		}
	}

	check(0)
	for step := 1; step <= steps; step++ {
		if rnd.IntN(4) == 0 {
			i := rnd.IntN(len(addrs))
			ap := netip.AddrPortFrom(addrs[i], port)
			if foreign[i] > 0 {
				history = append(history, "kernel close "+ap.String())
				syscall.Close(foreign[i])
				foreign[i] = 0
			} else {
				history = append(history, "kernel bind "+ap.String())
				want := conflicts(i, true)
				fd, err := kernelBindFD(rig.B, ap, false)
				if want != errors.Is(err, syscall.EADDRINUSE) || !want && err != nil {
					fail(step, "a kernel bind: %v, want EADDRINUSE %v", err, want)
				}
				if err == nil {
					foreign[i] = fd
				}
			}
		} else {
			l := lns[rnd.IntN(len(lns))]
			if l.pc != nil {
				history = append(history, "close "+l.uri)
				l.pc.Close()
				l.pc = nil
			} else {
				history = append(history, "bind "+l.uri)
				want := false
				for _, i := range l.addrs {
					want = want || conflicts(i, false)
				}
				pc, err := l.app.ListenPacket(l.uri)
				if want != errors.Is(err, syscall.EADDRINUSE) || !want && err != nil {
					fail(step, "the app's bind: %v, want EADDRINUSE %v", err, want)
				}
				l.pc = pc
			}
		}
		check(step)
	}
	for _, l := range lns {
		if l.pc != nil {
			history = append(history, "close "+l.uri)
			l.pc.Close()
			l.pc = nil
		}
	}
	for i, fd := range foreign {
		if fd > 0 {
			history = append(history, "kernel close "+addrs[i].String())
			syscall.Close(fd)
			foreign[i] = 0
		}
	}
	check(steps + 1)
	if socks := udpPortSockets(t, rig.B.Name, port); len(socks) > 0 {
		t.Errorf("left in B's kernel after everything closed: %v", socks)
	}
	if drops := d.EngineStats().Totals.Drops; drops["tx_too_long"] > 0 {
		t.Errorf("drops %v", drops)
	}
}
