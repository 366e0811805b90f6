package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestListenBothFamilies: a listener with no address (tcp://:PORT) takes
// IPv4 and IPv6, from the wire and cut-through, as net.Listen(":PORT")
// does; with port 0 both families get one port; a port taken in one family
// fails the whole listen and leaves nothing bound; Close releases both.
func TestListenBothFamilies(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "both"})
	cli := attach(t, d, app.Options{Name: "cli"})
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i % 251)
	}
	echoBoth := func(port uint16) {
		t.Helper()
		for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
			if err := kernelEcho(rig, netip.AddrPortFrom(dst, port), data); err != nil {
				t.Fatalf("kernel client to %v:%d: %v", dst, port, err)
			}
		}
		for _, dst := range []string{"127.0.0.1", "[::1]"} {
			if err := appEcho(cli, fmt.Sprintf("tcp://%s:%d", dst, port), data[:4096]); err != nil {
				t.Fatalf("cut-through to %s:%d: %v", dst, port, err)
			}
		}
	}

	ln := listenEcho(t, a, "tcp://:7000")
	if got := ln.Addr().String(); got != "[::]:7000" {
		t.Errorf("Addr %s, want [::]:7000", got)
	}
	if hs := ln.(*app.Listener).Handles(); len(hs) != 2 || hs[0] == hs[1] {
		t.Errorf("Handles %v, want two", hs)
	}
	echoBoth(7000)

	ln0 := listenEcho(t, a, "tcp://:0")
	port := uint16(ln0.Addr().(*net.TCPAddr).Port)
	if port == 0 {
		t.Fatalf("tcp://:0 listens on %v", ln0.Addr())
	}
	echoBoth(port)

	other := attach(t, d, app.Options{Name: "other"})
	taken, err := other.Listen("tcp://[::]:7002")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Listen("tcp://:7002"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen on both families with the IPv6 port taken: %v, want EADDRINUSE", err)
	}
	v4, err := a.Listen("tcp://0.0.0.0:7002")
	if err != nil {
		t.Fatalf("the failed listen left its IPv4 bind: %v", err)
	}
	v4.Close()
	taken.Close()

	if err := ln.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	listenFree(t, a, "after Close", "tcp://0.0.0.0:7000", "tcp://[::]:7000")
}

// appEcho dials uri from a and checks that data comes back.
func appEcho(a *app.App, uri string, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, uri)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if string(got) != string(data) {
		return errEcho
	}
	return nil
}

// TestListenPacketBothFamilies: a UDP listener with no address
// (udp://:PORT) receives from kernel sockets of both families on host A
// and answers each from its own address of that family, receives
// cut-through datagrams over 127.0.0.1 and ::1, and with port 0 gets one
// port for both.
func TestListenPacketBothFamilies(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "both"})
	cli := attach(t, d, app.Options{Name: "cli", Scope: flow.ScopeLocal})
	for _, uri := range []string{"udp://:9000", "udp://:0"} {
		pc, err := a.ListenPacketConn(uri)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		if want := fmt.Sprintf("[::]:%d", port); pc.LocalAddr().String() != want || port == 0 {
			t.Errorf("%s: LocalAddr %v, want %s", uri, pc.LocalAddr(), want)
		}
		go echoPackets(pc)
		echoFromBothFamilies(t, rig, port, uri, func(to netip.AddrPort) []byte { return []byte("to " + to.String()) })
		for _, dst := range []string{"127.0.0.1", "[::1]"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := cli.Dial(ctx, fmt.Sprintf("udp://%s:%d", dst, port))
			cancel()
			if err != nil {
				t.Fatalf("%s: cut-through dial %s: %v", uri, dst, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 64)
			if _, err := c.Write([]byte("hello " + dst)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(b)
			if err != nil || string(b[:n]) != "hello "+dst {
				t.Errorf("%s: cut-through over %s: %q, %v", uri, dst, b[:n], err)
			}
			c.Close()
		}
		if err := pc.Close(); err != nil {
			t.Errorf("%s: close: %v", uri, err)
		}
	}
}

// echoFromBothFamilies sends msg(to) from a kernel UDP socket on host A
// of each family to port on B's address of that family, where an echo
// listens, and checks that the same bytes come back from to; what names
// the case in failures.
func echoFromBothFamilies(t *testing.T, rig *nstest.Pair, port uint16, what string, msg func(to netip.AddrPort) []byte) {
	t.Helper()
	for _, h := range []struct {
		bind string
		dst  netip.Addr
	}{{"0.0.0.0:0", rig.B.IPv4}, {"[::]:0", rig.B.IPv6}} {
		k, err := bindKernel(rig.A, h.bind)
		if err != nil {
			t.Fatal(err)
		}
		to := netip.AddrPortFrom(h.dst, port)
		sent := msg(to)
		got, from, err := udpRoundTrip(k, to, sent)
		k.Close()
		if err != nil {
			t.Fatalf("%s: kernel client to %v: %v", what, to, err)
		}
		if string(got) != string(sent) || from != to {
			t.Errorf("%s: to %v sent %q, got %q from %v", what, to, sent, got, from)
		}
	}
}

// udpRoundTrip sends msg from k to dst until a reply comes (the first
// may wait for the neighbour) and returns it and its source.
func udpRoundTrip(k *net.UDPConn, dst netip.AddrPort, msg []byte) ([]byte, netip.AddrPort, error) {
	b := make([]byte, 2048)
	for try := 0; try < 20; try++ {
		if _, err := k.WriteToUDPAddrPort(msg, dst); err != nil {
			return nil, netip.AddrPort{}, err
		}
		k.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, from, err := k.ReadFromUDPAddrPort(b)
		if err == nil {
			return b[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, netip.AddrPort{}, err
		}
	}
	return nil, netip.AddrPort{}, os.ErrDeadlineExceeded
}

// TestListenBothFamiliesPortTaken: with port 0, a port the IPv4 bind got
// that is taken in IPv6 is given up for another (B's ephemeral range cut
// to two ports, the first taken by a kernel IPv6 listener); with both
// taken the listen fails with EADDRINUSE and leaves no port held.
func TestListenBothFamiliesPortTaken(t *testing.T) {
	rig, d := tcpRig(t)
	setPortRange(t, rig.B, 40000, 40001)
	listen6 := func(port int) net.Listener {
		t.Helper()
		var l net.Listener
		if err := rig.B.Do(func() (err error) {
			l, err = net.Listen("tcp6", fmt.Sprintf("[::]:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	a := attach(t, d, app.Options{Name: "both"})
	listen6(40000)
	for round := range 4 { // the kernel may pick either port first
		ln := listenEcho(t, a, "tcp://:0")
		if port := ln.Addr().(*net.TCPAddr).Port; port != 40001 {
			t.Fatalf("round %d: tcp://:0 listens on %v, want port 40001 (40000 is taken in IPv6)", round, ln.Addr())
		}
		if round == 0 {
			for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
				if err := kernelEcho(rig, netip.AddrPortFrom(dst, 40001), []byte("both")); err != nil {
					t.Fatalf("kernel client to %v:40001: %v", dst, err)
				}
			}
		}
		ln.Close()
	}
	listen6(40001)
	if _, err := a.Listen("tcp://:0"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("tcp://:0 with both ports taken in IPv6: %v, want EADDRINUSE", err)
	}
	listenFree(t, a, "after the failed listen (a port left held?)", "tcp://0.0.0.0:40000", "tcp://0.0.0.0:40001")
}

// listenFree checks that a can listen on each of uris (and closes the
// listeners): nothing holds their ports. when says after what.
func listenFree(t *testing.T, a *app.App, when string, uris ...string) {
	t.Helper()
	for _, uri := range uris {
		l, err := a.Listen(uri)
		if err != nil {
			t.Fatalf("%s %s: %v", uri, when, err)
		}
		l.Close()
	}
}
