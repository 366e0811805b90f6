package daemon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestHeldDatagramOutlivesItsApp: a don't-fragment datagram to an on-link
// address whose neighbour B has not resolved is held by its worker; the
// route's MTU to it then shrinks under the datagram, and its app leaves
// (its memory, event queue included, is freed). When the neighbour
// resolves, the worker sends what it held: the datagram is too big, and
// its dead listener is told nothing (the daemon wrote the error into the
// app's freed event queue before, a fault that ended the daemon). It is
// counted as a tx-dont-fragment drop, and the daemon serves on.
func TestHeldDatagramOutlivesItsApp(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "leaves"})
	pc, err := a.ListenPacketConn("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SetDontFragment(true); err != nil {
		t.Fatal(err)
	}
	// An address of the rig's subnet that nobody has: B's kernel probes
	// it, and the datagram waits for the answer.
	far := netip.AddrFrom4([4]byte{10, 77, 0, 123})
	dfDrops := func() uint64 { return d.Engine().Stats().Totals.Drops["tx-dont-fragment"] }
	before := dfDrops()
	if _, err := pc.WriteTo(make([]byte, 1400), &net.UDPAddr{IP: far.AsSlice(), Port: 9}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the worker takes and holds it
	routeMTU(t, rig.B, far, 1280)
	pc.Close()
	a.Close()
	// The app's memory is freed once the workers ran what its detach
	// posted: well within this.
	time.Sleep(100 * time.Millisecond)
	if err := rig.B.Do(func() error {
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: rig.B.IfIndex, Family: netlink.FAMILY_V4, IP: far.AsSlice(),
			HardwareAddr: rig.A.MAC, State: netlink.NUD_PERMANENT})
	}); err != nil {
		t.Fatal(err)
	}
	var got uint64
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = dfDrops(); got > before {
			break
		}
	}
	if got != before+1 {
		t.Fatalf("tx-dont-fragment drops went from %d to %d, want one more: the held datagram was not refused as too big", before, got)
	}
	// The daemon serves on: a new app's datagram reaches A.
	cli, err := bindKernel(rig.A, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	to := &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: cli.LocalAddr().(*net.UDPAddr).Port}
	b := attach(t, d, app.Options{Name: "after"})
	pc2, err := b.ListenPacketConn("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	buf := make([]byte, 64)
	for try := 0; ; try++ {
		if _, err := pc2.WriteTo([]byte("alive"), to); err != nil {
			t.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err := cli.ReadFrom(buf); err == nil && string(buf[:n]) == "alive" {
			break
		} else if try == 2 {
			t.Fatalf("no datagram from the daemon after the held one: %v", err)
		}
	}
}
