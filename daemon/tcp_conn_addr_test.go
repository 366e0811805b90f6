package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPAcceptedLocalAddrMatchesKernel: a session accepted on a wildcard
// TCP listener (tcp://:PORT, tcp://0.0.0.0:PORT, tcp://[::]:PORT) has the
// address its client reached as its LocalAddr, as a kernel listener's
// connection has: a client on the host (cut-through for the app's) and one
// on host A (on the wire) alike, never the listener's unspecified address.
func TestTCPAcceptedLocalAddrMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli"})
	loopback := netip.MustParseAddr("127.0.0.1")
	kernelDialFrom := func(h string) func(to netip.AddrPort) (net.Conn, error) {
		host := rig.A
		if h == "B" {
			host = rig.B
		}
		return func(to netip.AddrPort) (c net.Conn, err error) {
			err = host.Do(func() error {
				c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
				return err
			})
			return c, err
		}
	}
	kinds := []struct {
		name   string
		port   uint16
		listen func(addr string) (net.Listener, error)
		local  func(to netip.AddrPort) (net.Conn, error) // a client on host B
	}{
		{"kernel", 7630, func(addr string) (l net.Listener, err error) {
			err = rig.B.Do(func() error {
				l, err = net.Listen("tcp", addr)
				return err
			})
			return l, err
		}, kernelDialFrom("B")},
		{"app", 7640, func(addr string) (net.Listener, error) { return srv.Listen("tcp://" + addr) },
			func(to netip.AddrPort) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return cli.Dial(ctx, "tcp://"+to.String())
			}},
	}
	listeners := []struct {
		addr string       // without the port
		to   []netip.Addr // the addresses its clients dial
	}{
		{"", []netip.Addr{loopback, rig.B.IPv4, rig.B.IPv6}},
		{"0.0.0.0", []netip.Addr{loopback, rig.B.IPv4}},
		{"[::]", []netip.Addr{rig.B.IPv6}},
	}
	var ref semTrace
	for i, k := range kinds {
		var tr semTrace
		for j, l := range listeners {
			port := k.port + uint16(j)
			ln, err := k.listen(fmt.Sprintf("%s:%d", l.addr, port))
			if err != nil {
				t.Fatalf("%s: listen %s:%d: %v", k.name, l.addr, port, err)
			}
			for _, to := range l.to {
				for _, from := range []string{"B", "A"} {
					if from == "A" && to == loopback {
						continue
					}
					dial := k.local
					if from == "A" {
						dial = kernelDialFrom("A")
					}
					what := fmt.Sprintf("listen %q, a client on host %s dials %v", l.addr, from, to)
					dst := netip.AddrPortFrom(to, port)
					c, err := dial(dst)
					if err != nil {
						tr.err(what, err)
						continue
					}
					sc := acceptWithin(t, ln)
					la := sc.LocalAddr()
					got := strings.Replace(la.String(), fmt.Sprint(port), "PORT", 1)
					tr.note(what, fmt.Sprintf("LocalAddr %T %s, the address dialed %v", la, got, la.String() == dst.String()))
					sc.Close()
					c.Close()
				}
			}
			ln.Close()
		}
		if i == 0 {
			ref = tr
			t.Logf("%s:%v", k.name, tr)
			continue
		}
		compareSem(t, k.name, ref, tr, nil)
	}
}

// TestTCPBothFamiliesListenerAddrsMatchKernel: a session accepted from an
// IPv4 peer on a listener of both families (tcp://:PORT) names both ends
// in the IPv4-mapped form, as a kernel listener of net.Listen("tcp",
// ":PORT") names them: AddrPort gives ::ffff:a.b.c.d for each.
func TestTCPBothFamiliesListenerAddrsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "dual"})
	ln, err := a.Listen("tcp://:7700")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var kl net.Listener
	if err := rig.B.Do(func() (err error) { kl, err = net.Listen("tcp", ":7701"); return }); err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	form := func(c net.Conn) string {
		l, r := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		return fmt.Sprintf("local %v (4in6 %v) remote %v (4in6 %v)", l.Unmap(), l.Is4In6(), r.Unmap(), r.Is4In6())
	}
	// The clients end before the test does: the rig's cleanup closes
	// the namespace their goroutines enter.
	var clients sync.WaitGroup
	defer clients.Wait()
	for _, port := range []uint16{7700, 7701} {
		clients.Go(func() {
			rig.A.Do(func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, port).String(), 5*time.Second)
				if err == nil {
					time.Sleep(time.Second)
					c.Close()
				}
				return nil
			})
		})
	}
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	kc, err := kl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if got, want := form(ac), form(kc); got[strings.Index(got, "remote"):] != want[strings.Index(want, "remote"):] ||
		!strings.Contains(got, "local "+rig.B.IPv4.String()+" (4in6 true)") || !strings.Contains(want, "(4in6 true)") {
		t.Errorf("accepted from A: %s; the kernel's %s", got, want)
	}
}
