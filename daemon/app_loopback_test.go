package daemon

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/app"
)

// TestListenLoopbackTCPBothFamilies: on a daemon serving host B's link,
// an app's TCP listener on either loopback address (tcp://127.0.0.1:0,
// tcp://[::1]:0) binds as a kernel listener on it in host B does, and
// another app of the host reaches it cut-through; while it listens, a
// kernel socket of host B cannot take its port, and after its Close one
// can.
func TestListenLoopbackTCPBothFamilies(t *testing.T) {
	rig, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "lo-srv"})
	cli := attach(t, d, app.Options{Name: "lo-cli"})
	kernelBind := func(ap netip.AddrPort) error {
		return rig.B.Do(func() error {
			l, err := net.Listen("tcp", ap.String())
			if err == nil {
				l.Close()
			}
			return err
		})
	}
	for _, lo := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		if err := kernelBind(netip.AddrPortFrom(lo, 0)); err != nil {
			t.Fatalf("a kernel listener on %v in host B: %v", lo, err)
		}
		uri := "tcp://" + netip.AddrPortFrom(lo, 0).String()
		ln, err := srv.Listen(uri)
		if err != nil {
			t.Errorf("listen %s: %v; want it bound, as a kernel listener on %v in host B is", uri, err, lo)
			continue
		}
		go echoServe(ln)
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		if ap.Addr() != lo || ap.Port() == 0 {
			t.Errorf("listen %s: Addr %v", uri, ap)
		}
		dialEcho(t, cli, "tcp://"+ap.String(), "loopback")
		if err := kernelBind(ap); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("a kernel listener on %v in host B while the app listens there: %v, want EADDRINUSE", ap, err)
		}
		ln.Close()
		if err := kernelBind(ap); err != nil {
			t.Errorf("a kernel listener on %v in host B after the app's Close: %v", ap, err)
		}
	}
}
