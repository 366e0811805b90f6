package daemon

import (
	"net"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/app"
)

// TestListenErrorFieldsMatchKernel: a failed Listen or ListenPacket's
// error is a *net.OpError with the fields a kernel net.Listen's has: Op
// "listen", Net the network, no Source, Addr the address asked for; a
// port a kernel socket of the host holds is EADDRINUSE for both.
func TestListenErrorFieldsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "listener"})
	tcpHeld := netip.AddrPortFrom(rig.B.IPv4, 7400)
	udpHeld := netip.AddrPortFrom(rig.B.IPv4, 7401)
	elsewhere := netip.MustParseAddrPort("192.0.2.9:7402")
	var kl net.Listener
	var kp net.PacketConn
	if err := rig.B.Do(func() (err error) {
		if kl, err = net.Listen("tcp", tcpHeld.String()); err != nil {
			return err
		}
		kp, err = net.ListenPacket("udp", udpHeld.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	defer kp.Close()
	for _, c := range []struct {
		name, network string
		addr          netip.AddrPort
		classes       bool // errno classes too: the address's refusal is a namespace error in the app
	}{
		{"tcp port held", "tcp", tcpHeld, true},
		{"udp port held", "udp", udpHeld, true},
		{"tcp address elsewhere", "tcp", elsewhere, false},
		{"udp address elsewhere", "udp", elsewhere, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var kerr error
			if err := rig.B.Do(func() error {
				if c.network == "tcp" {
					var l net.Listener
					if l, kerr = net.Listen("tcp", c.addr.String()); l != nil {
						l.Close()
					}
				} else {
					var p net.PacketConn
					if p, kerr = net.ListenPacket("udp", c.addr.String()); p != nil {
						p.Close()
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			uri := c.network + "://" + c.addr.String()
			var aerr error
			if c.network == "tcp" {
				var l net.Listener
				if l, aerr = a.Listen(uri); l != nil {
					l.Close()
				}
			} else {
				var p net.PacketConn
				if p, aerr = a.ListenPacket(uri); p != nil {
					p.Close()
				}
			}
			want, got := dialFields(kerr, c.addr, c.classes), dialFields(aerr, c.addr, c.classes)
			if kerr == nil || got != want {
				t.Errorf("%s:\n kernel %s (%v)\n app    %s (%v)", uri, want, kerr, got, aerr)
			}
		})
	}
}
