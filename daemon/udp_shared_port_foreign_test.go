package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestUDPSharedPortForeignHolderRefused: a kernel socket of another
// program holds a specific address of B on a port whose other address a
// listener of the daemon holds. A bind of the kernel socket's address, or
// of the port's wildcard address, is refused with EADDRINUSE, as the
// kernel refuses both beside the kernel socket; the daemon's own listener
// of another address does not make the port the daemon's. Once the kernel
// socket closes, both bind. IPv4 and IPv6. Before, both binds succeeded,
// the listeners "sharing" the daemon's socket of another address, which
// holds neither (the kernel delivered their datagrams to the other
// program's socket).
func TestUDPSharedPortForeignHolderRefused(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	other4, other6 := netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("fd77::12")
	ipIn(t, rig.B, "addr", "add", other4.String()+"/24", "dev", rig.B.Link)
	ipIn(t, rig.B, "addr", "add", other6.String()+"/64", "dev", rig.B.Link, "nodad")
	for i, c := range []struct {
		network      string
		own, foreign netip.Addr
		wild         netip.Addr
	}{
		{"udp4", rig.B.IPv4, other4, netip.IPv4Unspecified()},
		{"udp6", rig.B.IPv6, other6, netip.IPv6Unspecified()},
	} {
		port := uint16(7680 + i)
		at := func(a netip.Addr) string { return netip.AddrPortFrom(a, port).String() }
		var k net.PacketConn
		if err := rig.B.Do(func() (err error) { k, err = net.ListenPacket(c.network, at(c.foreign)); return }); err != nil {
			t.Fatal(err)
		}
		// The reference: the kernel refuses a wildcard bind beside it.
		if err := rig.B.Do(func() error {
			w, err := net.ListenPacket(c.network, at(c.wild))
			if err == nil {
				w.Close()
			}
			return err
		}); !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("the reference: a kernel bind of %s beside a kernel socket of %s: %v, want EADDRINUSE", at(c.wild), at(c.foreign), err)
		}
		own, err := attach(t, d, app.Options{Name: fmt.Sprint("own ", i)}).ListenPacket("udp://" + at(c.own))
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		for _, a := range []netip.Addr{c.foreign, c.wild} {
			pc, err := attach(t, d, app.Options{Name: "beside " + a.String()}).ListenPacket("udp://" + at(a))
			if err == nil {
				pc.Close()
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("a bind of %s while a kernel socket holds %s (the daemon %s): %v, want EADDRINUSE", at(a), at(c.foreign), at(c.own), err)
			}
		}
		k.Close()
		for _, a := range []netip.Addr{c.foreign, c.wild} {
			pc, err := attach(t, d, app.Options{Name: "after " + a.String()}).ListenPacket("udp://" + at(a))
			if err != nil {
				t.Errorf("a bind of %s after the kernel socket closed: %v", at(a), err)
				continue
			}
			defer pc.Close()
		}
	}
}
