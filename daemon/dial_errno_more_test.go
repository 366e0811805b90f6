package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// errnoOf names the errno under err ("none" when there is none, "ok" for
// no error), and the system call of its *os.SyscallError, as a program
// that asks errors.As for them sees it: "connect ECONNREFUSED".
func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "none"
	}
	name := errnoNames[errno]
	if name == "" {
		name = fmt.Sprintf("errno %d", int(errno))
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		return "no syscall " + name
	}
	return se.Syscall + " " + name
}

var errnoNames = map[syscall.Errno]string{
	syscall.ECONNREFUSED: "ECONNREFUSED", syscall.EINVAL: "EINVAL", syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL",
	syscall.ENETUNREACH: "ENETUNREACH", syscall.EHOSTUNREACH: "EHOSTUNREACH", syscall.ETIMEDOUT: "ETIMEDOUT",
	syscall.EADDRINUSE: "EADDRINUSE", syscall.EACCES: "EACCES",
}

// dialOutcome is what a dial of network addr came to, as a program sees
// it: the dial's errno, or, for a dial that succeeded, "connected" and the
// errno of the read that follows a write (a connected UDP socket learns
// of the peer's refusal from its ICMP error).
func dialOutcome(c net.Conn, err error) string {
	if err != nil {
		return "dial: " + errnoOf(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		return "connected, write: " + errnoOf(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 16))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "connected, read: timeout"
	}
	return "connected, read: " + errnoOf(err)
}

// kernelDialOutcome is dialOutcome of a kernel socket of host h.
func kernelDialOutcome(t *testing.T, h *nstest.Host, network, addr string) (outcome string, err error) {
	t.Helper()
	if derr := h.Do(func() error {
		var c net.Conn
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		outcome = dialOutcome(c, err)
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	return outcome, err
}

// appDialOutcome is dialOutcome of app a's Dial.
func appDialOutcome(a *app.App, network, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, network+"://"+addr)
	return dialOutcome(c, err), err
}

// TestDialPortZeroMatchesKernel: Dial of port 0 goes where net.Dial's
// goes from host B. TCP is refused (ECONNREFUSED in an *os.SyscallError
// "connect", the peer on the wire, the loopback address and the host's
// own alike); UDP to the wire connects, and the read after a write
// reports the peer's refusal (ECONNREFUSED), as a connected kernel UDP
// socket's does. UDP to the loopback address or the host's own, where
// a kernel socket's connect succeeds and its read is refused, is refused
// at the Dial, with the same errno, as every UDP Dial there that no app
// listens on.
func TestDialPortZeroMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "port0"})
	for _, network := range []string{"tcp", "udp"} {
		for _, dst := range []struct {
			name string
			addr netip.Addr
			here bool // the loopback address or the host's own
		}{
			{"peer", rig.A.IPv4, false}, {"peer IPv6", rig.A.IPv6, false},
			{"loopback", netip.MustParseAddr("127.0.0.1"), true}, {"loopback IPv6", netip.IPv6Loopback(), true},
			{"own address", rig.B.IPv4, true}, {"own address IPv6", rig.B.IPv6, true},
		} {
			addr := netip.AddrPortFrom(dst.addr, 0).String()
			kout, kerr := kernelDialOutcome(t, rig.B, network, addr)
			aout, aerr := appDialOutcome(a, network, addr)
			want := kout
			if network == "udp" && dst.here && kout == "connected, read: read ECONNREFUSED" {
				want = "dial: connect ECONNREFUSED"
			}
			if aout != want {
				t.Errorf("%s %s %s: app %s (%v), want %s; kernel %s (%v)", network, dst.name, addr, aout, aerr, want, kout, kerr)
				continue
			}
			if kerr != nil && aerr != nil {
				p := netip.AddrPortFrom(dst.addr, 0)
				if k, got := dialFields(kerr, p, true), dialFields(aerr, p, true); k != got {
					t.Errorf("%s %s %s:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", network, dst.name, addr, k, kerr, got, aerr)
				}
			}
			if testing.Verbose() {
				t.Logf("%s %s %s: kernel %s, app %s (%v)", network, dst.name, addr, kout, aout, aerr)
			}
		}
	}
}

// TestDialOwnAddressMatchesKernel: a Dial to host B's own address on a
// port no app listens on is refused with ECONNREFUSED, as net.Dial from
// host B is for TCP (for UDP a kernel socket connects and its read is
// refused: the Dial is refused at once, with that errno), and the error
// still says that the address is the host's own. Where a kernel socket
// of host B takes the port (a TCP listener, a UDP socket), the kernel
// connects, which the daemon's sessions cannot: the Dial of this test's
// app, which runs outside B's namespace, fails, but not as refused (from
// B's namespace it connects with a kernel socket: TestDialHostKernelSocket).
func TestDialOwnAddressMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "own"})
	const port = 7531
	for _, own := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		dst := netip.AddrPortFrom(own, port)
		for _, network := range []string{"tcp", "udp"} {
			kout, kerr := kernelDialOutcome(t, rig.B, network, dst.String())
			aout, aerr := appDialOutcome(a, network, dst.String())
			want := kout
			if network == "udp" && kout == "connected, read: read ECONNREFUSED" {
				want = "dial: connect ECONNREFUSED"
			}
			if aout != want {
				t.Errorf("%s %s, nobody listening: app %s (%v), want %s; kernel %s (%v)", network, dst, aout, aerr, want, kout, kerr)
			}
			if aerr != nil && !strings.Contains(aerr.Error(), own.String()+" is an address of this host") {
				t.Errorf("%s %s: %q does not say the address is the host's", network, dst, aerr)
			}
			if kerr != nil && aerr != nil {
				if k, got := dialFields(kerr, dst, true), dialFields(aerr, dst, true); k != got {
					t.Errorf("%s %s:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", network, dst, k, kerr, got, aerr)
				}
			}
		}
	}
	// A kernel socket of host B on the port: the kernel connects to it;
	// the Dial fails, not refused.
	kl := kernelListen(t, rig.B, "[::]:"+strconv.Itoa(port+1))
	defer kl.Close()
	ku, err := rig.B.ListenUDP(netip.AddrPortFrom(rig.B.IPv4, port+1), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ku.Close()
	for _, c := range []struct {
		network string
		dst     netip.AddrPort
	}{
		{"tcp", netip.AddrPortFrom(rig.B.IPv4, port+1)}, {"tcp", netip.AddrPortFrom(rig.B.IPv6, port+1)},
		{"udp", netip.AddrPortFrom(rig.B.IPv4, port+1)},
	} {
		if err := rig.B.Do(func() error {
			c, err := net.DialTimeout(c.network, c.dst.String(), 5*time.Second)
			if c != nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("%s %s: the kernel's dial to its own socket: %v", c.network, c.dst, err)
		}
		_, aerr := appDialOutcome(a, c.network, c.dst.String())
		if aerr == nil || errors.Is(aerr, syscall.ECONNREFUSED) || !strings.Contains(aerr.Error(), "is an address of this host") {
			t.Errorf("%s %s, a kernel socket there: %v; want a failure that is not ECONNREFUSED, saying the address is the host's", c.network, c.dst, aerr)
		}
	}
	// An app's listener on the host's own address is still reached,
	// cut-through.
	ln := listenEcho(t, a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, port+2).String())
	defer ln.Close()
	if err := appEcho(a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, port+2).String(), []byte("own")); err != nil {
		t.Errorf("dial an app's listener on the host's own address: %v", err)
	}
}

// TestListenLinkLocalNoZoneMatchesKernel: Listen and ListenPacket of an
// IPv6 link-local address that names no link (no zone) and is not one of
// the namespace's fail as net.Listen and net.ListenPacket do, with EINVAL
// in an *os.SyscallError "bind" (bind(2) wants the link's scope id before
// it looks at the address); zoned with the namespace's link, such an
// address is EADDRNOTAVAIL, as the kernel's.
func TestListenLinkLocalNoZoneMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "linklocal"})
	const port = 7541
	kernelListenErr := func(network, addr string) (err error) {
		if derr := rig.B.Do(func() error {
			if network == "tcp" {
				var l net.Listener
				if l, err = net.Listen(network, addr); l != nil {
					l.Close()
				}
			} else {
				var l net.PacketConn
				if l, err = net.ListenPacket(network, addr); l != nil {
					l.Close()
				}
			}
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	appListenErr := func(network, addr string) (err error) {
		if network == "tcp" {
			var l net.Listener
			if l, err = a.Listen(network + "://" + addr); l != nil {
				l.Close()
			}
		} else {
			var l net.PacketConn
			if l, err = a.ListenPacket(network + "://" + addr); l != nil {
				l.Close()
			}
		}
		return err
	}
	for i, addr := range []string{
		"[fe80::1]:" + strconv.Itoa(port), "[fe80::1%" + rig.B.Link + "]:" + strconv.Itoa(port+1),
	} {
		for _, network := range []string{"tcp", "udp"} {
			kerr, aerr := kernelListenErr(network, addr), appListenErr(network, addr)
			k, got := errnoOf(kerr), errnoOf(aerr)
			if want := []string{"bind EINVAL", "bind EADDRNOTAVAIL"}[i]; k != want {
				t.Fatalf("%s %s: the kernel's listen: %s (%v), want %s", network, addr, k, kerr, want)
			}
			if got != k {
				t.Errorf("%s %s: app %s (%v), kernel %s (%v)", network, addr, got, aerr, k, kerr)
			}
			var oe *net.OpError
			if !errors.As(aerr, &oe) || oe.Op != "listen" || oe.Net != network {
				t.Errorf("%s %s: %v is not a *net.OpError of listen %s", network, addr, aerr, network)
			}
		}
	}
}
