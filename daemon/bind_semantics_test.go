package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The tests of this file bind an address with the app library's Listen
// and ListenPacket and with net.Listen and net.ListenPacket on kernel
// sockets of host B (where the daemon serves), and compare what a Go
// program sees of each: the error's *net.OpError (Op, Net, Source,
// Addr), whether OpError.Err is an *os.SyscallError and the call it
// names, the errno under it, a *net.AddrError or *net.DNSError under it;
// or, when the bind succeeds, the address the listener reports.

// bindShape describes the result of a bind as a program that takes it
// apart sees it. asked is the address bound ("" for none): the OpError's
// Addr is named "asked" when it is that address (an IPv4-mapped one
// unmapped), and so is a listener's address.
func bindShape(addr net.Addr, err error, asked string) string {
	name := func(a net.Addr) string {
		if a == nil {
			return "nil"
		}
		var ap netip.AddrPort
		switch x := a.(type) {
		case *net.TCPAddr:
			ap = x.AddrPort()
		case *net.UDPAddr:
			ap = x.AddrPort()
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if asked != "" && ap.String() == asked {
			return fmt.Sprintf("%T asked", a)
		}
		return fmt.Sprintf("%T %v", a, ap)
	}
	if err == nil {
		return "ok addr=" + name(addr)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("no *net.OpError (%T)", err)
	}
	s := fmt.Sprintf("op=%s net=%s source=%v addr=%s", oe.Op, oe.Net, oe.Source, name(oe.Addr))
	var se *os.SyscallError
	if x, ok := oe.Err.(*os.SyscallError); ok {
		s += " Err is *os.SyscallError " + x.Syscall
	} else if errors.As(err, &se) {
		s += " *os.SyscallError " + se.Syscall + " deeper than Err"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s += " errno=" + unix.ErrnoName(errno)
		if !errors.Is(err, errno) {
			s += " (errors.Is does not find it)"
		}
	}
	var ae *net.AddrError
	if errors.As(err, &ae) {
		s += fmt.Sprintf(" *net.AddrError %q %q", ae.Err, ae.Addr)
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		s += fmt.Sprintf(" *net.DNSError name=%q notfound=%v", de.Name, de.IsNotFound)
	}
	return s
}

// kernelBind binds network addr on a kernel socket of host h with
// net.Listen ("tcp") or net.ListenPacket ("udp"); keep leaves the socket
// open until the test ends.
func kernelBind(t *testing.T, h *nstest.Host, network, addr string, keep bool) (net.Addr, error) {
	t.Helper()
	var la net.Addr
	var berr error
	if err := h.Do(func() error {
		la, berr = bindWith(t, network, keep,
			func() (net.Listener, error) { return net.Listen(network, addr) },
			func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return la, berr
}

// appBind binds network://addr with a's Listen ("tcp") or ListenPacket
// ("udp"); keep leaves the listener open until the test ends.
func appBind(t *testing.T, a *app.App, network, addr string, keep bool) (net.Addr, error) {
	t.Helper()
	uri := network + "://" + addr
	return bindWith(t, network, keep,
		func() (net.Listener, error) { return a.Listen(uri) },
		func() (net.PacketConn, error) { return a.ListenPacket(uri) })
}

// bindWith binds with listen ("tcp") or listenPacket (otherwise) and
// returns the listener's address and the error; keep leaves the listener
// open until the test ends, else it is closed at once.
func bindWith(t *testing.T, network string, keep bool, listen func() (net.Listener, error), listenPacket func() (net.PacketConn, error)) (net.Addr, error) {
	var la net.Addr
	var c interface{ Close() error }
	var err error
	if network == "tcp" {
		var l net.Listener
		if l, err = listen(); l != nil {
			la, c = l.Addr(), l
		}
	} else {
		var p net.PacketConn
		if p, err = listenPacket(); p != nil {
			la, c = p.LocalAddr(), p
		}
	}
	if c != nil {
		if keep {
			t.Cleanup(func() { c.Close() })
		} else {
			c.Close()
		}
	}
	return la, err
}

// TestBindMatchesKernel: a bind through the app library fails or
// succeeds as net.Listen or net.ListenPacket of a kernel socket of host B
// does: a port a kernel socket holds and a port another app holds are
// EADDRINUSE, an address that is not B's EADDRNOTAVAIL, a TCP listener
// on an IPv6 multicast address EINVAL, each in an *os.SyscallError
// naming "bind" that OpError.Err is; a port out of range is a
// *net.AddrError "invalid port", with a host name too; a name that does
// not resolve a *net.DNSError; a UDP multicast address binds the
// wildcard of its family on that port; an IPv4-mapped IPv6 address binds
// the IPv4 address.
func TestBindMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "first"})
	b := attach(t, d, app.Options{Name: "second"})
	b4 := rig.B.IPv4.String()
	at := func(host string, port int) string {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	// Ports kernel sockets of B hold, for both to be refused.
	kernelBind(t, rig.B, "tcp", at(b4, 7600), true)
	kernelBind(t, rig.B, "udp", at(b4, 7601), true)
	cases := []struct {
		name, network, addr string
		asked               string // the address the error or listener names, when not addr
	}{
		{"tcp port a kernel socket holds", "tcp", at(b4, 7600), ""},
		{"udp port a kernel socket holds", "udp", at(b4, 7601), ""},
		{"tcp mapped port a kernel socket holds", "tcp", at("::ffff:"+b4, 7600), at(b4, 7600)},
		{"tcp address not B's", "tcp", "192.0.2.9:7602", ""},
		{"udp address not B's", "udp", "192.0.2.9:7602", ""},
		{"tcp mapped address not B's", "tcp", "[::ffff:192.0.2.9]:7602", "192.0.2.9:7602"},
		{"udp IPv6 address not B's", "udp", "[fd77::99]:7602", ""},
		{"tcp IPv6 multicast link-local", "tcp", "[ff02::fb]:7603", ""},
		{"tcp IPv6 multicast site", "tcp", "[ff05::3]:7603", ""},
		{"udp IPv4 multicast", "udp", "224.0.0.251:7604", ""},
		{"udp IPv4 multicast admin", "udp", "239.1.2.3:7605", ""},
		{"udp IPv6 multicast", "udp", "[ff05::3]:7606", ""},
		{"tcp mapped", "tcp", at("::ffff:"+b4, 7607), at(b4, 7607)},
		{"udp mapped", "udp", at("::ffff:"+b4, 7608), at(b4, 7608)},
		{"tcp port 65536", "tcp", b4 + ":65536", ""},
		{"tcp port -1", "tcp", b4 + ":-1", ""},
		{"udp port 70000", "udp", b4 + ":70000", ""},
		{"udp port -5", "udp", b4 + ":-5", ""},
		{"tcp both families port 99999", "tcp", ":99999", ""},
		{"tcp IPv6 port 65536", "tcp", "[::]:65536", ""},
		{"tcp name port 70000", "tcp", "localhost:70000", ""},
		{"udp name port -1", "udp", "localhost:-1", ""},
		{"tcp name", "tcp", "localhost:7609", "127.0.0.1:7609"},
		{"udp name", "udp", "localhost:7610", "127.0.0.1:7610"},
		{"tcp name not found", "tcp", "nonexistent.invalid:7611", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			asked := c.asked
			if asked == "" {
				asked = c.addr
			}
			ka, kerr := kernelBind(t, rig.B, c.network, c.addr, false)
			aa, aerr := appBind(t, a, c.network, c.addr, false)
			want, got := bindShape(ka, kerr, asked), bindShape(aa, aerr, asked)
			if got != want {
				t.Errorf("%s://%s:\n kernel %s (%v)\n app    %s (%v)", c.network, c.addr, want, kerr, got, aerr)
			}
		})
	}
	// A second bind of an address:port bound already: a second kernel
	// socket beside a first, a second app beside a first app.
	for _, c := range []struct{ network, host string }{{"tcp", b4}, {"udp", b4}, {"tcp", "fd77::2"}, {"udp", "fd77::2"}} {
		t.Run("second bind "+c.network+" "+c.host, func(t *testing.T) {
			kaddr, aaddr := at(c.host, 7620), at(c.host, 7621)
			if _, err := kernelBind(t, rig.B, c.network, kaddr, true); err != nil {
				t.Fatal(err)
			}
			if _, err := appBind(t, a, c.network, aaddr, true); err != nil {
				t.Fatal(err)
			}
			_, kerr := kernelBind(t, rig.B, c.network, kaddr, false)
			_, aerr := appBind(t, b, c.network, aaddr, false)
			want := strings.ReplaceAll(bindShape(nil, kerr, kaddr), kaddr, "ADDR")
			got := strings.ReplaceAll(bindShape(nil, aerr, aaddr), aaddr, "ADDR")
			if kerr == nil || got != want {
				t.Errorf("second bind:\n kernel %s (%v)\n app    %s (%v)", want, kerr, got, aerr)
			}
		})
	}
}

// TestBindPortZeroFromLocalRange: port 0 binds a port of B's
// ip_local_port_range that is none of its ip_local_reserved_ports, as a
// kernel socket's bind does, and the listener's address names it.
func TestBindPortZeroFromLocalRange(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "ephemeral"})
	// A range of 100 ports, 90 of them reserved: 10 to pick from.
	const lo, hi, reservedTo = 40100, 40199, 40189
	if err := rig.B.Do(func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", fmt.Appendf(nil, "%d %d", lo, hi), 0o644); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_reserved_ports", fmt.Appendf(nil, "%d-%d", lo, reservedTo), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	port := func(x net.Addr) int {
		switch v := x.(type) {
		case *net.TCPAddr:
			return v.Port
		case *net.UDPAddr:
			return v.Port
		}
		return -1
	}
	for _, c := range []struct{ network, addr string }{
		{"tcp", rig.B.IPv4.String() + ":0"}, {"udp", rig.B.IPv4.String() + ":0"},
		{"tcp", "[fd77::2]:0"}, {"udp", "[::]:0"}, {"tcp", ":0"},
	} {
		for range 3 {
			ka, kerr := kernelBind(t, rig.B, c.network, c.addr, false)
			aa, aerr := appBind(t, a, c.network, c.addr, false)
			if kerr != nil || aerr != nil {
				t.Fatalf("%s %s: kernel %v, app %v", c.network, c.addr, kerr, aerr)
			}
			kp, ap := port(ka), port(aa)
			if kp <= reservedTo || kp > hi {
				t.Fatalf("%s %s: the kernel's port %d is outside %d-%d", c.network, c.addr, kp, reservedTo+1, hi)
			}
			if ap <= reservedTo || ap > hi {
				t.Errorf("%s %s: app's address %v, its port outside %d-%d (the range %d-%d less the reserved %d-%d), as the kernel's %v is not", c.network, c.addr, aa, reservedTo+1, hi, lo, hi, lo, reservedTo, ka)
			}
			if fmt.Sprintf("%T", aa) != fmt.Sprintf("%T", ka) {
				t.Errorf("%s %s: app's address %T, kernel's %T", c.network, c.addr, aa, ka)
			}
		}
	}
}
