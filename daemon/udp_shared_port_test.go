package daemon

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// sendBurstFromA sends one UDP segmentation burst (UDP_SEGMENT) from a
// kernel socket of host A to dst: the datagrams of seg bytes data makes,
// under one header as long as A's veth end takes them so.
func sendBurstFromA(t *testing.T, rig *nstest.Pair, dst netip.AddrPort, seg int, data []byte) {
	t.Helper()
	sendUDPFromA(t, rig, dst, func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, seg) }, data)
}

// TestUDPSharedPortKernelPath: a listener of B's address beside another
// app's wildcard listener of the same port (the daemon lets both bind;
// the port's kernel socket is the wildcard's) has a kernel path of its
// own: its datagrams larger than a frame and to a multicast group leave
// from its address, and what B's kernel delivers to that address on the
// port (a UDP segmentation burst, which the XDP program leaves to the
// kernel) reaches it, not the wildcard listener, which gets what goes to
// B's other addresses. When the wildcard listener goes, its socket's
// successor, bound to the listener's address, carries both directions.
// Before, the specific listener's large datagrams were dropped
// (tx_too_long) and what the kernel delivered to its address went to the
// other app.
func TestUDPSharedPortKernelPath(t *testing.T) {
	const port, seg = 7630, 1000
	rig, d, wa := multiBufferRig(t, nstest.Options{}, "generic")
	sa := attach(t, d, app.Options{Name: "specific"})
	other := netip.MustParseAddr("10.77.0.12")
	ipIn(t, rig.B, "addr", "add", other.String()+"/24", "dev", rig.B.Link)
	wild, err := wa.ListenPacket("udp://0.0.0.0:7630")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := sa.ListenPacket("udp://" + netip.AddrPortFrom(rig.B.IPv4, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer spec.Close()
	kc := kernelUDP4(t, rig.A, 7631)
	toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.A.IPv4, 7631))
	buf := make([]byte, 65536)
	aReads := func(who string, msg []byte) {
		t.Helper()
		kc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := kc.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) || from.(*net.UDPAddr).AddrPort() != netip.AddrPortFrom(rig.B.IPv4, port) {
			t.Fatalf("%s: A read %d bytes from %v: %v; want %d from %v:%d", who, n, from, err, len(msg), rig.B.IPv4, port)
		}
	}
	nothing := func(who string, pc net.PacketConn) {
		t.Helper()
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, from, err := pc.ReadFrom(buf); err == nil {
			t.Fatalf("%s read %d bytes from %v, want nothing", who, n, from)
		}
	}
	burst := func(who string, dst netip.Addr, pc net.PacketConn) {
		t.Helper()
		// Ten datagrams: a burst larger than a page reaches the
		// program as a multi-buffer frame, which it leaves to the kernel.
		data := bytes.Repeat([]byte{dst.As4()[3]}, 10*seg)
		sendBurstFromA(t, rig, netip.AddrPortFrom(dst, port), seg, data)
		for i, g := range readDgrams(t, d, pc, 10) {
			if !bytes.Equal(g, data[i*seg:(i+1)*seg]) {
				t.Fatalf("%s: datagram %d of the burst to %v: %d bytes, not those sent", who, i, dst, len(g))
			}
		}
	}

	for _, size := range []int{100, 3000} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := spec.WriteTo(msg, toA); err != nil {
			t.Fatal(err)
		}
		aReads("the specific listener's "+fmtSize(size), msg)
	}
	burst("the specific listener", rig.B.IPv4, spec)
	nothing("the wildcard listener, after the burst to the specific address", wild)
	burst("the wildcard listener", other, wild)
	nothing("the specific listener, after the burst to another address", spec)

	// The wildcard listener goes: the specific one's own socket now.
	wild.Close()
	waitFor(t, "the specific listener's own kernel socket", 3*time.Second, func() bool {
		big := bytes.Repeat([]byte{7}, 3000)
		if _, err := spec.WriteTo(big, toA); err != nil {
			t.Fatal(err)
		}
		kc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := kc.ReadFrom(buf)
		return err == nil && bytes.Equal(buf[:n], big)
	})
	burst("the specific listener, alone on the port", rig.B.IPv4, spec)
	if drops := d.EngineStats().Totals.Drops; drops["tx_too_long"] > 0 {
		t.Errorf("drops %v", drops)
	}
}

func fmtSize(n int) string {
	if n > 1500 {
		return "datagram larger than a frame"
	}
	return "datagram"
}

// kernelUDP4 opens a kernel UDP socket of h's on 0.0.0.0:port, closed
// when the test ends.
func kernelUDP4(t *testing.T, h *nstest.Host, port uint16) net.PacketConn {
	t.Helper()
	var kc net.PacketConn
	if err := h.Do(func() (err error) { kc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port)); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Close() })
	return kc
}
