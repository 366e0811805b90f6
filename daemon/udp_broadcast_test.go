package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestUDPBroadcast: datagrams to the link's broadcast addresses go both
// ways as a kernel UDP socket's (Go sets SO_BROADCAST): the subnet's and
// 255.255.255.255 (with a default route through the link, which the
// kernel's sockets need for it too) reach a kernel socket on the other host, one larger than
// a frame too (through the kernel path), and the other host's broadcast
// reaches the app's listener. A TCP connect to a broadcast address fails
// at once, unreachable, as the kernel's does (ENETUNREACH there).
func TestUDPBroadcast(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "broadcast"})
	pc, err := a.ListenPacket("udp://0.0.0.0:7600")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	subnet := netip.AddrFrom4([4]byte{10, 77, 0, 255})
	if p := rig.A.IPv4.As4(); p[0] != 10 || p[1] != 77 || p[2] != 0 {
		t.Fatalf("the rig's subnet is not 10.77.0.0/24 (A is %v)", rig.A.IPv4)
	}
	kc := kernelUDP4(t, rig.A, 7601)
	// A kernel socket of B's on the port: the kernel gives a host's own
	// sockets a copy of each broadcast it sends, as it gives this one a
	// copy of those of B's kernel below.
	local := kernelUDP4(t, rig.B, 7601)

	// From A's kernel to the subnet's broadcast address.
	if err := rig.A.Do(func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo([]byte("to all of B's link"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(subnet, 7600)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "to all of B's link" || from.(*net.UDPAddr).AddrPort().Addr() != rig.A.IPv4 {
		t.Fatalf("the app's listener read %q from %v: %v", buf[:n], from, err)
	}

	// From the app to the broadcast addresses. 255.255.255.255 takes the
	// interface of the default route, for the kernel's sockets as for the
	// datapath: B's kernel sends it so too (the reference).
	ipIn(t, rig.B, "route", "add", "default", "via", rig.A.IPv4.String())
	if err := rig.B.Do(func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo([]byte("limited"), &net.UDPAddr{IP: net.IPv4bcast, Port: 7601})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	kc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := kc.ReadFrom(buf); err != nil || string(buf[:n]) != "limited" {
		t.Fatalf("B's kernel to 255.255.255.255: A read %q: %v", buf[:n], err)
	}
	local.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := local.ReadFrom(buf); err != nil || string(buf[:n]) != "limited" {
		t.Fatalf("B's kernel to 255.255.255.255: B's own socket read %q: %v (the reference)", buf[:n], err)
	}
	for _, c := range []struct {
		name string
		to   netip.Addr
		size int
	}{
		{"subnet", subnet, 100},
		{"limited", netip.AddrFrom4([4]byte{255, 255, 255, 255}), 100},
		{"subnet, larger than a frame", subnet, 3000},
	} {
		msg := bytes.Repeat([]byte{byte(c.size)}, c.size)
		if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.to, 7601))); err != nil {
			t.Fatalf("%s: WriteTo %v: %v", c.name, c.to, err)
		}
		kc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := kc.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) || from.(*net.UDPAddr).AddrPort() != netip.AddrPortFrom(rig.B.IPv4, 7600) {
			t.Fatalf("%s: A's kernel socket read %d bytes from %v: %v", c.name, n, from, err)
		}
		local.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err = local.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) || from.(*net.UDPAddr).AddrPort().Port() != 7600 {
			t.Fatalf("%s: B's own kernel socket read %d bytes from %v: %v (no copy of the host's broadcast)", c.name, n, from, err)
		}
	}
	if drops := d.EngineStats().Totals.Drops; len(drops) > 0 {
		t.Errorf("drops %v", drops)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(subnet, 7602).String())
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, syscall.ENETUNREACH) || time.Since(start) > time.Second {
		t.Fatalf("TCP to the broadcast address: %v after %v, want unreachable at once", err, time.Since(start))
	}
}
