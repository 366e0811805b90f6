package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// dialFields describes the *net.OpError of a failed dial as a program
// sees its fields: Op, Net, Source, and Addr: nil, the address dialed
// (with its type) or another; then errClass's classes when classes is
// set.
func dialFields(err error, dialed netip.AddrPort, classes bool) string {
	if err == nil {
		return "nil"
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("no *net.OpError (%T) %s", err, errClass(err))
	}
	addr := "nil"
	if oe.Addr != nil {
		var got netip.AddrPort
		switch a := oe.Addr.(type) {
		case *net.TCPAddr:
			got = a.AddrPort()
		case *net.UDPAddr:
			got = a.AddrPort()
		}
		got = netip.AddrPortFrom(got.Addr().Unmap(), got.Port())
		if got == dialed {
			addr = fmt.Sprintf("%T dialed", oe.Addr)
		} else {
			addr = fmt.Sprintf("%T other %v", oe.Addr, oe.Addr)
		}
	}
	s := fmt.Sprintf("op=%q net=%q source=%v addr=%s", oe.Op, oe.Net, oe.Source, addr)
	if classes {
		s += " " + errClass(err)
	}
	return s
}

// TestDialErrorFieldsMatchKernel: a failed Dial's error is a
// *net.OpError with the fields a kernel net.Dial's has: Op "dial", Net
// the network, no Source, and Addr the address dialed, as a
// *net.TCPAddr (nil for a name that does not resolve and an address
// without a port); errors.Is finds the same errno, and the library's
// *app.Error is still under it. The kernel dials from host B, as the
// app does through the daemon on B's link.
func TestDialErrorFieldsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "dialer"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kernelDial := func(network, addr string) (err error) {
		if derr := rig.B.Do(func() error {
			var c net.Conn
			c, err = net.DialTimeout(network, addr, 5*time.Second)
			if c != nil {
				c.Close()
			}
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	cases := []struct {
		name    string
		network string
		dst     netip.AddrPort
		addr    string // the address net.Dial takes, when not dst's
		uri     string // the URI Dial takes, when not network://dst
		classes bool   // compare errClass's classes too
		inB     bool   // the kernel dials from host B
	}{
		{name: "refused by a peer on the wire", network: "tcp", dst: netip.AddrPortFrom(rig.A.IPv4, 9), classes: true, inB: true},
		{name: "refused by a peer on the wire, IPv6", network: "tcp", dst: netip.AddrPortFrom(rig.A.IPv6, 9), classes: true, inB: true},
		{name: "refused on the loopback address", network: "tcp", dst: netip.MustParseAddrPort("127.0.0.1:9"), classes: true, inB: true},
		{name: "refused on the IPv6 loopback address", network: "tcp", dst: netip.MustParseAddrPort("[::1]:9"), classes: true, inB: true},
		{name: "a name that does not resolve", network: "tcp", addr: "no-such-host.invalid:80", uri: "tcp://no-such-host.invalid:80", classes: true},
		{name: "no port", network: "udp", addr: "192.0.2.1", uri: "udp://192.0.2.1", inB: true},
		{name: "no route", network: "tcp", dst: netip.MustParseAddrPort("192.0.2.1:80"), classes: true, inB: true},
		{name: "no route, UDP", network: "udp", dst: netip.MustParseAddrPort("192.0.2.1:80"), classes: true, inB: true},
		{name: "no route, IPv6", network: "tcp", dst: netip.MustParseAddrPort("[2001:db8::1]:80"), classes: true, inB: true},
	}
	for _, c := range cases {
		addr, uri := c.addr, c.uri
		if addr == "" {
			addr = c.dst.String()
		}
		if uri == "" {
			uri = c.network + "://" + c.dst.String()
		}
		var kerr error
		if c.inB {
			kerr = kernelDial(c.network, addr)
		} else {
			kerr = func() error {
				c, err := net.DialTimeout(c.network, addr, 5*time.Second)
				if c != nil {
					c.Close()
				}
				return err
			}()
		}
		_, aerr := a.Dial(ctx, uri)
		if kerr == nil || aerr == nil {
			t.Fatalf("%s: kernel %v, app %v; want both to fail", c.name, kerr, aerr)
		}
		k, got := dialFields(kerr, c.dst, c.classes), dialFields(aerr, c.dst, c.classes)
		if k != got {
			t.Errorf("%s:\n\tkernel: %s (%v)\n\tapp:    %s (%v)", c.name, k, kerr, got, aerr)
		} else if testing.Verbose() {
			t.Logf("%s: %s\n\tkernel: %v\n\tapp:    %v", c.name, k, kerr, aerr)
		}
		var ae *app.Error
		if !errors.As(aerr, &ae) {
			t.Errorf("%s: %v has no *app.Error under it", c.name, aerr)
		}
	}
	// A program that asks net.Error learns a dial's timeout.
	short, stop := context.WithTimeout(ctx, time.Millisecond)
	defer stop()
	<-short.Done()
	_, err := a.Dial(short, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 9).String())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial past its context's deadline: %v; want a net.Error timeout wrapping context.DeadlineExceeded", err)
	}
	if got := dialFields(err, netip.AddrPortFrom(rig.A.IPv4, 9), false); got != `op="dial" net="tcp" source=<nil> addr=*net.TCPAddr dialed` {
		t.Errorf("dial past its context's deadline: %s", got)
	}
}

// TestPacketConnErrorFieldsMatchKernel: the *net.OpError of every call
// of a closed PacketConn has the fields a kernel *net.UDPConn's has: a
// deadline setter's the local address in Addr and no Source; ReadFrom,
// WriteTo and a second Close the local address in Source (and WriteTo
// the destination in Addr).
func TestPacketConnErrorFieldsMatchKernel(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "errors"})
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	kinds := []struct {
		name   string
		listen func() (net.PacketConn, error)
	}{
		{"kernel", func() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }},
		{"loopback", func() (net.PacketConn, error) { return a.ListenPacket("udp://127.0.0.1:0") }},
		{"unspecified", func() (net.PacketConn, error) { return a.ListenPacket("udp://0.0.0.0:0") }},
	}
	var ref semTrace
	for i, k := range kinds {
		pc, err := k.listen()
		if err != nil {
			t.Fatalf("%s: listen: %v", k.name, err)
		}
		own := pc.LocalAddr()
		var tr semTrace
		note := func(what string, err error) { tr.note(what, opFields(err, own, dst)) }
		note("Close", pc.Close())
		note("SetDeadline", pc.SetDeadline(time.Now()))
		note("SetReadDeadline", pc.SetReadDeadline(time.Now()))
		note("SetWriteDeadline", pc.SetWriteDeadline(time.Now()))
		_, _, err = pc.ReadFrom(make([]byte, 16))
		note("ReadFrom", err)
		_, err = pc.WriteTo([]byte("x"), dst)
		note("WriteTo", err)
		note("Close again", pc.Close())
		if i == 0 {
			ref = tr
			t.Logf("%s:%v", k.name, tr)
			continue
		}
		compareSem(t, k.name, ref, tr, nil)
	}
}
