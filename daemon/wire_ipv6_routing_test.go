package daemon

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestWireIPv6RoutingHeaderAsKernel: IPv6 datagrams from host A with a
// routing header before UDP, each sent to a kernel UDP socket of host B
// and to an app's PacketConn on the daemon (as TestWireUDPFramesAsKernel
// does). The kernel (ipv6_rthdr_rcv) skips a routing header whose
// segments left is 0, but drops the packet when segments left is not 0
// (it does not forward by source route), for a segment routing (type 4)
// or RPL (type 3) header, which it takes only where seg6_enabled or
// rpl_seg_enabled is set (off by default), and for a frame not to its own
// MAC (broadcast or multicast). The app receives what the kernel socket
// received, and the daemon counts the drops as bad-ext-header.
func TestWireIPv6RoutingHeaderAsKernel(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "routing", RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20})
	const kport, aport = 7330, 7331
	k6 := kernelUDP(t, rig.B, "udp6", fmt.Sprintf("[::]:%d", kport))
	pc, err := a.ListenPacket(fmt.Sprintf("udp://[::]:%d", aport))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	kch, ach := collectDgrams(k6), collectDgrams(pc)
	eng := d.Engine()

	// rt is a routing header of type typ with segleft segments left and
	// n addresses (B's).
	rt := func(typ, segleft byte, n int) wireExt {
		b := []byte{typ, segleft, 0, 0, 0, 0}
		for range n {
			b = append(b, rig.B.IPv6.AsSlice()...)
		}
		return wireExt{unix.IPPROTO_ROUTING, b}
	}
	padN := []byte{1, 4, 0, 0, 0, 0}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast := net.HardwareAddr{0x33, 0x33, 0, 0, 0, 0x99}
	cases := []struct {
		name    string
		f       wireFrame
		deliver bool // what the kernel socket does, checked too
	}{
		{"type 0, segments left 0", wireFrame{ext: []wireExt{rt(0, 0, 0)}}, true},
		{"type 0, segments left 0, an address", wireFrame{ext: []wireExt{rt(0, 0, 1)}}, true},
		{"an unknown type, segments left 0", wireFrame{ext: []wireExt{rt(9, 0, 1)}}, true},
		{"destination options, type 0, destination options", wireFrame{ext: []wireExt{{unix.IPPROTO_DSTOPTS, padN}, rt(0, 0, 0), {unix.IPPROTO_DSTOPTS, padN}}}, true},
		{"type 0, segments left 1", wireFrame{ext: []wireExt{rt(0, 1, 1)}}, false},
		{"type 2, segments left 1", wireFrame{ext: []wireExt{rt(2, 1, 1)}}, false},
		{"type 3 (rpl), segments left 0", wireFrame{ext: []wireExt{rt(3, 0, 1)}}, false},
		{"type 4 (segment routing), segments left 0", wireFrame{ext: []wireExt{rt(4, 0, 1)}}, false},
		{"type 4 (segment routing), segments left 1", wireFrame{ext: []wireExt{rt(4, 1, 1)}}, false},
		{"type 0, segments left 0, to the broadcast mac", wireFrame{dstMAC: bcast, ext: []wireExt{rt(0, 0, 0)}}, false},
		{"type 0, segments left 0, to a multicast mac", wireFrame{dstMAC: mcast, ext: []wireExt{rt(0, 0, 0)}}, false},
	}

	var fd int
	if err := rig.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	send := func(f []byte) {
		t.Helper()
		sa := &unix.SockaddrLinklayer{Ifindex: rig.A.IfIndex, Halen: 6, Protocol: htons(binary.BigEndian.Uint16(f[12:]))}
		copy(sa.Addr[:], f[:6])
		if err := unix.Sendto(fd, f, 0, sa); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	var id uint16 = 2000
	for i, c := range cases {
		c.f.v6 = true
		before := eng.Stats()
		payload := []byte(fmt.Sprintf("rt %02d %s", i, c.name))
		id++
		send(c.f.build(rig, kport, payload, id))
		id++
		send(c.f.build(rig, aport, payload, id))
		// A correct datagram behind it on each side: when both have
		// come, each path has judged the frame before it.
		mark := fmt.Sprintf("mark %02d", i)
		id++
		send(wireFrame{v6: true}.build(rig, kport, []byte(mark), id))
		id++
		send(wireFrame{v6: true}.build(rig, aport, []byte(mark), id))
		var k, ap []string
		kmark, amark := false, false
		for end := time.After(3 * time.Second); !kmark || !amark; {
			select {
			case g := <-kch:
				if kmark = kmark || g.data == mark; !strings.HasPrefix(g.data, "mark ") {
					k = append(k, g.data)
				}
			case g := <-ach:
				if amark = amark || g.data == mark; !strings.HasPrefix(g.data, "mark ") {
					ap = append(ap, g.data)
				}
			case <-end:
				t.Fatalf("%s: the correct datagram behind it did not come (kernel %v, app %v)", c.name, kmark, amark)
			}
		}
		// A datagram the kernel takes may reach the app through the
		// port's reservation (the kernel path), after the marker.
		for end := time.Now().Add(300 * time.Millisecond); len(ap) < len(k) && time.Now().Before(end); {
			select {
			case g := <-ach:
				ap = append(ap, g.data)
			case <-time.After(20 * time.Millisecond):
			}
		}
		after := eng.Stats()
		drops := counterDelta(before.Totals.Drops, after.Totals.Drops)
		// The worker publishes its counters after its batch: a drop may
		// show a moment after the marker behind it came.
		for end := time.Now().Add(2 * time.Second); !c.deliver && len(ap) == 0 && !strings.Contains(drops, "bad-ext-header+1") && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			after = eng.Stats()
			drops = counterDelta(before.Totals.Drops, after.Totals.Drops)
		}
		t.Logf("%-50s kernel %d, app %d; drops %s", c.name, len(k), len(ap), drops)
		if got := len(k) == 1 && k[0] == string(payload); got != c.deliver || len(k) > 1 {
			t.Errorf("%s: the kernel socket received %q; want delivered %v", c.name, k, c.deliver)
		}
		if strings.Join(ap, "|") != strings.Join(k, "|") {
			t.Errorf("%s: the kernel socket received %q, the app %q", c.name, k, ap)
		}
		if !c.deliver && len(ap) == 0 && !strings.Contains(drops, "bad-ext-header+1") {
			t.Errorf("%s: dropped, counted as %s, want bad-ext-header+1", c.name, drops)
		}
	}
}
