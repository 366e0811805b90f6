package daemon

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// grabPort has a kernel UDP socket of h, without SO_REUSEADDR, try to bind
// local over and over until stop is closed; it returns whether a bind
// succeeded (the socket then holds local until stop).
func grabPort(t *testing.T, h *nstest.Host, local netip.AddrPort, stop <-chan struct{}, started chan<- struct{}) bool {
	var got atomic.Bool
	err := h.Do(func() error {
		fam, sa := syscall.AF_INET, syscall.Sockaddr(nil)
		if local.Addr().Is6() {
			fam, sa = syscall.AF_INET6, &syscall.SockaddrInet6{Addr: local.Addr().As16(), Port: int(local.Port())}
		} else {
			sa = &syscall.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}
		}
		fd, err := syscall.Socket(fam, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		if fam == syscall.AF_INET6 {
			if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1); err != nil {
				return err
			}
		}
		close(started)
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			if !got.Load() && syscall.Bind(fd, sa) == nil {
				got.Store(true)
			}
		}
	})
	if err != nil {
		t.Error(err)
	}
	return got.Load()
}

// TestUDPPortHandoverNoForeignGrab: when the wildcard listener whose
// kernel socket holds a port closes, the listener of a specific address
// beside it keeps the port without a gap: a kernel socket of another
// program that tries to bind that address all the while never does
// (IPv4 and IPv6, many rounds). Before, the daemon closed the wildcard
// socket and then bound the heir's, and a bind in between took the
// address from the app that still held it.
func TestUDPPortHandoverNoForeignGrab(t *testing.T) {
	const rounds = 100
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	wa := attach(t, d, app.Options{Name: "wildcard"})
	sa := attach(t, d, app.Options{Name: "specific"})
	for i, c := range []struct{ wild, spec netip.Addr }{
		{netip.IPv4Unspecified(), rig.B.IPv4},
		{netip.IPv6Unspecified(), rig.B.IPv6},
	} {
		port := uint16(7700 + i)
		grabbed := 0
		for range rounds {
			wild, err := wa.ListenPacket("udp://" + netip.AddrPortFrom(c.wild, port).String())
			if err != nil {
				t.Fatal(err)
			}
			spec, err := sa.ListenPacket("udp://" + netip.AddrPortFrom(c.spec, port).String())
			if err != nil {
				t.Fatal(err)
			}
			stop, started, done := make(chan struct{}), make(chan struct{}), make(chan bool)
			go func() { done <- grabPort(t, rig.B, netip.AddrPortFrom(c.spec, port), stop, started) }()
			<-started
			wild.Close()
			time.Sleep(time.Millisecond)
			close(stop)
			if <-done {
				grabbed++
			}
			spec.Close()
		}
		if grabbed > 0 {
			t.Errorf("%s: a kernel socket of another program bound it while the app's listener held it, in %d of %d rounds",
				fmt.Sprint(netip.AddrPortFrom(c.spec, port)), grabbed, rounds)
		}
	}
}
