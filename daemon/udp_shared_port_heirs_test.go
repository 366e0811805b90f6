package daemon

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestUDPSharedPortEveryHeir: two listeners of two addresses of B share a
// port with another app's wildcard listener of it. When the wildcard
// listener goes, each of them gets a kernel socket of its own address:
// the port stays held in B's kernel for both (a kernel bind of either
// address fails with EADDRINUSE, as it would beside kernel sockets bound
// to them) and both still send datagrams larger than a frame. Before,
// only the first took the port over: the other's address was free for
// any kernel socket to take and its large datagrams were dropped
// (tx_too_long).
func TestUDPSharedPortEveryHeir(t *testing.T) {
	const port = 7650
	rig, d, wa := multiBufferRig(t, nstest.Options{}, "generic")
	other := netip.MustParseAddr("10.77.0.12")
	ipIn(t, rig.B, "addr", "add", other.String()+"/24", "dev", rig.B.Link)
	wild, err := wa.ListenPacket("udp://0.0.0.0:7650")
	if err != nil {
		t.Fatal(err)
	}
	addrs := []netip.AddrPort{netip.AddrPortFrom(rig.B.IPv4, port), netip.AddrPortFrom(other, port)}
	var specs []net.PacketConn
	for _, ap := range addrs {
		a := attach(t, d, app.Options{Name: "specific " + ap.Addr().String()})
		pc, err := a.ListenPacket("udp://" + ap.String())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		specs = append(specs, pc)
	}
	kc := kernelUDP4(t, rig.A, 7651)
	toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, 7651))
	buf := make([]byte, 65536)

	wild.Close()
	for i, pc := range specs {
		big := bytes.Repeat([]byte{byte(i + 1)}, 3000)
		waitFor(t, "a datagram larger than a frame from "+addrs[i].String(), 3*time.Second, func() bool {
			if _, err := pc.WriteTo(big, toA); err != nil {
				t.Fatal(err)
			}
			kc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				n, from, err := kc.ReadFrom(buf)
				if err != nil {
					return false
				}
				if bytes.Equal(buf[:n], big) && from.(*net.UDPAddr).AddrPort() == addrs[i] {
					return true
				}
			}
		})
	}
	for _, ap := range addrs {
		err := rig.B.Do(func() error {
			c, err := net.ListenPacket("udp4", ap.String())
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("a kernel bind of %v in B after the wildcard listener closed: %v, want EADDRINUSE (the port held for its listener)", ap, err)
		}
	}
	if drops := d.EngineStats().Totals.Drops; drops["tx_too_long"] > 0 {
		t.Errorf("drops %v", drops)
	}
}

// TestUDPSharedPortWildcardHeir: a wildcard listener bound beside another
// app's listener of a specific address of the port (the kernel socket
// the specific one's) takes the port over when that one goes, with a
// kernel path of its own: its datagrams larger than a frame leave, and a
// kernel bind of the port's wildcard address fails with EADDRINUSE.
// Before, it held the port but had no kernel path: its large datagrams
// were dropped (tx_too_long).
func TestUDPSharedPortWildcardHeir(t *testing.T) {
	const port = 7655
	rig, d, sa := multiBufferRig(t, nstest.Options{}, "generic")
	spec, err := sa.ListenPacket("udp://" + netip.AddrPortFrom(rig.B.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	wa := attach(t, d, app.Options{Name: "wildcard"})
	wild, err := wa.ListenPacket("udp://0.0.0.0:7655")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	kc := kernelUDP4(t, rig.A, 7656)
	toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, 7656))
	buf := make([]byte, 65536)

	spec.Close()
	big := bytes.Repeat([]byte{9}, 3000)
	waitFor(t, "a datagram larger than a frame from the wildcard listener", 3*time.Second, func() bool {
		if _, err := wild.WriteTo(big, toA); err != nil {
			t.Fatal(err)
		}
		kc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := kc.ReadFrom(buf)
		return err == nil && bytes.Equal(buf[:n], big)
	})
	err = rig.B.Do(func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:7655")
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a kernel bind of 0.0.0.0:%d in B after the specific listener closed: %v, want EADDRINUSE", port, err)
	}
	if drops := d.EngineStats().Totals.Drops; drops["tx_too_long"] > 0 {
		t.Errorf("drops %v", drops)
	}
}

// TestUDPWildcardBesideSpecificKernelPath: a wildcard listener bound after
// another app's listener of a specific address of the same port (the
// daemon lets them bind side by side in either order) has a kernel path
// of its own from the start: its datagrams larger than a frame leave, and
// what B's kernel delivers to the port (a UDP segmentation burst larger
// than a page, which the XDP program leaves to the kernel) reaches the
// listener of its destination: the specific one for its address, the
// wildcard one for B's other addresses. No kernel socket binds the port
// beside them, one with SO_REUSEADDR included. Before, the wildcard
// listener had no kernel path until the specific one closed: its large
// datagrams were dropped (tx_too_long) and the kernel answered the burst
// to another address with port unreachable.
func TestUDPWildcardBesideSpecificKernelPath(t *testing.T) {
	const port, seg = 7657, 1000
	rig, d, sa := multiBufferRig(t, nstest.Options{}, "generic")
	other := netip.MustParseAddr("10.77.0.12")
	ipIn(t, rig.B, "addr", "add", other.String()+"/24", "dev", rig.B.Link)
	spec, err := sa.ListenPacket("udp://" + netip.AddrPortFrom(rig.B.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer spec.Close()
	wa := attach(t, d, app.Options{Name: "wildcard"})
	wild, err := wa.ListenPacket("udp://0.0.0.0:7657")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	kc := kernelUDP4(t, rig.A, 7658)
	toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, 7658))
	buf := make([]byte, 65536)

	big := bytes.Repeat([]byte{5}, 3000)
	if _, err := wild.WriteTo(big, toA); err != nil {
		t.Fatal(err)
	}
	kc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := kc.ReadFrom(buf); err != nil || !bytes.Equal(buf[:n], big) {
		t.Fatalf("the wildcard listener's datagram larger than a frame: A read %d bytes: %v", n, err)
	}
	burst := func(who string, dst netip.Addr, pc net.PacketConn) {
		t.Helper()
		data := bytes.Repeat([]byte{dst.As4()[3]}, 10*seg)
		sendBurstFromA(t, rig, netip.AddrPortFrom(dst, port), seg, data)
		for i, g := range readDgrams(t, d, pc, 10) {
			if !bytes.Equal(g, data[i*seg:(i+1)*seg]) {
				t.Fatalf("%s: datagram %d of the burst to %v: %d bytes, not those sent", who, i, dst, len(g))
			}
		}
	}
	burst("the wildcard listener", other, wild)
	burst("the specific listener", rig.B.IPv4, spec)
	for _, reuse := range []bool{false, true} {
		for _, a := range []netip.Addr{netip.IPv4Unspecified(), other} {
			err := rig.B.Do(func() error {
				lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
					if !reuse {
						return nil
					}
					var serr error
					c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
					return serr
				}}
				c, err := lc.ListenPacket(t.Context(), "udp4", netip.AddrPortFrom(a, port).String())
				if err == nil {
					c.Close()
				}
				return err
			})
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("a kernel bind of %v:%d in B (SO_REUSEADDR %v) beside the listeners: %v, want EADDRINUSE", a, port, reuse, err)
			}
		}
	}
	if drops := d.EngineStats().Totals.Drops; drops["tx_too_long"] > 0 {
		t.Errorf("drops %v", drops)
	}
}
