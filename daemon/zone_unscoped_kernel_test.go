package daemon

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestListenZoneOfUnscopedAddressMatchesKernel: a zone on an address that
// needs none (a global or unique-local IPv6 address, the IPv6 wildcard,
// an IPv4-mapped address, a site-scoped group) is ignored by bind(2),
// which reads the scope id of link-scoped addresses alone: net.Listen and
// net.ListenPacket bind such an address whatever its zone names (another
// interface, an index, no interface at all), and the listener's address
// has no zone. Listen and ListenPacket bind it as the kernel does, and
// the listener serves clients on host A.
func TestListenZoneOfUnscopedAddressMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "zoned"})
	cases := []struct {
		network, host string
		dst           netip.Addr // where a client on A reaches the listener
	}{
		{"tcp", "fd77::2%lo", rig.B.IPv6},
		{"udp", "fd77::2%lo", rig.B.IPv6},
		{"tcp", "fd77::2%1", rig.B.IPv6},
		{"udp", "fd77::2%nonexistent", rig.B.IPv6},
		{"tcp", "::%lo", rig.B.IPv6},
		{"udp", "::%lo", rig.B.IPv6},
		{"tcp", "::ffff:10.77.0.2%lo", rig.B.IPv4},
		{"udp", "::ffff:10.77.0.2%lo", rig.B.IPv4},
		{"udp", "ff05::3%lo", rig.B.IPv6},
	}
	for i, c := range cases {
		t.Run(c.network+" "+c.host, func(t *testing.T) {
			kport, aport := 7960+2*i, 7961+2*i
			kaddr := net.JoinHostPort(c.host, fmt.Sprint(kport))
			aaddr := net.JoinHostPort(c.host, fmt.Sprint(aport))
			var ka, aa net.Addr
			var kerr, aerr error
			if err := rig.B.Do(func() error {
				ka, kerr = echoListen(t, c.network,
					func() (net.Listener, error) { return net.Listen(c.network, kaddr) },
					func() (net.PacketConn, error) { return net.ListenPacket(c.network, kaddr) })
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			uri := c.network + "://" + aaddr
			aa, aerr = echoListen(t, c.network,
				func() (net.Listener, error) { return a.Listen(uri) },
				func() (net.PacketConn, error) { return a.ListenPacket(uri) })
			want := strings.ReplaceAll(bindShape(ka, kerr, ""), fmt.Sprint(kport), "PORT")
			got := strings.ReplaceAll(bindShape(aa, aerr, ""), fmt.Sprint(aport), "PORT")
			if kerr != nil || got != want {
				t.Fatalf("%s:\n kernel %s (%v)\n app    %s (%v)", uri, want, kerr, got, aerr)
			}
			for _, port := range []int{kport, aport} {
				to := netip.AddrPortFrom(c.dst, uint16(port))
				if err := echoFromA(rig.A, c.network, to); err != nil {
					t.Errorf("a client on A to %v (the listener of %s): %v", to, net.JoinHostPort(c.host, fmt.Sprint(port)), err)
				}
			}
		})
	}
}

// echoListen binds with listen ("tcp") or listenPacket ("udp"), echoes
// what the listener receives until the test ends and returns its address.
func echoListen(t *testing.T, network string, listen func() (net.Listener, error), listenPacket func() (net.PacketConn, error)) (net.Addr, error) {
	if network == "tcp" {
		l, err := listen()
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { l.Close() })
		go echoServe(l)
		return l.Addr(), nil
	}
	p, err := listenPacket()
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { p.Close() })
	go echoPackets(p)
	return p.LocalAddr(), nil
}

// echoFromA sends a few bytes from a kernel socket of host A to dst over
// network and checks that they come back.
func echoFromA(a *nstest.Host, network string, dst netip.AddrPort) error {
	msg := []byte("zone " + dst.String())
	if network == "tcp" {
		return kernelEcho(&nstest.Pair{A: a}, dst, msg)
	}
	bind := "0.0.0.0:0"
	if dst.Addr().Is6() {
		bind = "[::]:0"
	}
	k, err := bindKernel(a, bind)
	if err != nil {
		return err
	}
	defer k.Close()
	got, from, err := udpRoundTrip(k, dst, msg)
	if err != nil {
		return err
	}
	if string(got) != string(msg) || from != dst {
		return fmt.Errorf("sent %q, got %q from %v", msg, got, from)
	}
	return nil
}

// TestDialZoneOfUnscopedAddressMatchesKernel: connect(2) ignores the
// zone of an address that needs none as bind(2) does: net.Dial of
// [A's address%lo], %1 or %nonexistent reaches host A's listener, and the
// connection's remote address has no zone. Dial does the same.
func TestDialZoneOfUnscopedAddressMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "zoned-dial"})
	kl := kernelListen(t, rig.A, "[::]:7431")
	go echoServe(kl)
	for _, zone := range []string{"lo", "1", "nonexistent", rig.B.Link} {
		addr := "[" + rig.A.IPv6.String() + "%" + zone + "]:7431"
		var kc net.Conn
		if err := rig.B.Do(func() (err error) {
			kc, err = net.Dial("tcp", addr)
			return err
		}); err != nil {
			t.Fatalf("kernel dial %s: %v", addr, err)
		}
		want := kc.RemoteAddr().String()
		kc.Close()
		c := dialApp(t, a, "tcp://"+addr)
		if got := c.RemoteAddr().String(); got != want {
			t.Errorf("dial %s: remote %s, the kernel's %s", addr, got, want)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		back := make([]byte, 5)
		if _, err := c.Write([]byte("zoned")); err != nil {
			t.Errorf("dial %s: write: %v", addr, err)
		} else if _, err := io.ReadFull(c, back); err != nil || string(back) != "zoned" {
			t.Errorf("dial %s: echo %q, %v", addr, back, err)
		}
		c.Close()
	}
}
