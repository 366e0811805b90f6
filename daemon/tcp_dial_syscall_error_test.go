package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

// connectShape describes how a failed dial holds its errno, as a program
// that takes the *net.OpError apart sees it: whether OpError.Err is an
// *os.SyscallError and the call it names, and the errno errors.Is finds.
func connectShape(err error) string {
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("no *net.OpError (%T)", err)
	}
	s := "Err is no *os.SyscallError"
	if se, ok := oe.Err.(*os.SyscallError); ok {
		s = "Err is *os.SyscallError " + se.Syscall
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s += " errno=" + unix.ErrnoName(errno)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s += " timeout"
	}
	return s
}

// TestTCPDialSyscallErrorMatchesKernel: a Dial refused with an errno
// (refused by a peer on the wire or on a loopback address, no route, a
// broadcast or multicast address) holds it as net.Dial's error does: the
// *net.OpError's Err is an *os.SyscallError naming "connect", which a
// program finds with a type assertion on OpError.Err, and the library's
// *app.Error is under it, and its text reads as the kernel's ("dial tcp
// ADDR: connect: connection refused"); a dial its context ended holds
// none, as the kernel's.
func TestTCPDialSyscallErrorMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "dialer"})
	cases := []struct {
		name, addr string
		sameText   bool // the error's text is the kernel's too
	}{
		{"refused by a peer on the wire", netip.AddrPortFrom(rig.A.IPv4, 9).String(), true},
		{"refused by a peer on the wire, IPv6", netip.AddrPortFrom(rig.A.IPv6, 9).String(), true},
		{"refused on the loopback address", "127.0.0.1:9", false},
		{"refused on the IPv6 loopback address", "[::1]:9", false},
		{"no route", "192.0.2.1:80", false},
		{"no route, IPv6", "[2001:db8::1]:80", false},
		{"multicast", "224.0.0.1:80", false},
		{"broadcast", "255.255.255.255:80", false},
	}
	for _, c := range cases {
		var kerr error
		if err := rig.B.Do(func() error {
			conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
			if conn != nil {
				conn.Close()
			}
			kerr = err
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, aerr := a.Dial(ctx, "tcp://"+c.addr)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if kerr == nil || aerr == nil {
			t.Fatalf("%s: kernel %v, app %v; want both to fail", c.name, kerr, aerr)
		}
		if k, got := connectShape(kerr), connectShape(aerr); k != got {
			t.Errorf("%s:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", c.name, k, kerr, got, aerr)
		}
		if !strings.HasPrefix(aerr.Error(), "dial tcp "+c.addr+": connect: ") ||
			(c.sameText && aerr.Error() != kerr.Error()) {
			t.Errorf("%s: the app's error says %q, the kernel's %q", c.name, aerr, kerr)
		}
		var ae *app.Error
		if !errors.As(aerr, &ae) {
			t.Errorf("%s: %v has no *app.Error under it", c.name, aerr)
		}
	}
	// A context that ended: no errno, no *os.SyscallError.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var kerr error
	rig.B.Do(func() error {
		_, kerr = (&net.Dialer{}).DialContext(ctx, "tcp", netip.AddrPortFrom(rig.A.IPv4, 9).String())
		return nil
	})
	_, aerr := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 9).String())
	if k, got := connectShape(kerr), connectShape(aerr); k != got {
		t.Errorf("a cancelled context:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", k, kerr, got, aerr)
	}
}
