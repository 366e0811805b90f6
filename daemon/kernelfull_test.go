package daemon

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestKernelPathSocketFull: datagrams that leave through the kernel path
// (larger than a frame, or larger than the path MTU) wait in the app's tx
// fifo while the port's kernel socket has no room, as a kernel socket's
// sender would wait, instead of being dropped. A token bucket on B's link
// (tbf, 20 Mbit/s) holds what the kernel path sends, charged to the
// socket's send buffer, so a burst fills it at once; every datagram of the
// burst must reach host A, in order, and no tx drop be counted.
func TestKernelPathSocketFull(t *testing.T) {
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("tc (iproute2) not installed")
	}
	rig := nstest.NewPair(t, nstest.Options{})
	// A path MTU of 1,280 to A: 1,400-byte datagrams fit a frame and take
	// the kernel path from the worker's frame (tx.go), 9,000-byte ones
	// from the tx fifo (kernelpath.go).
	if err := rig.B.Do(func() error {
		l, err := netlink.LinkByName(rig.B.Link)
		if err != nil {
			return err
		}
		dst := netip.PrefixFrom(rig.A.IPv4, 32)
		return netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}, MTU: 1280})
	}); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "kernel-full", TxFifoSize: 1 << 20})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := kernelClient(t, rig.A)
	if _, err := cli.WriteTo([]byte("hi"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: pc.LocalAddr().(*net.UDPAddr).Port}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	// The next hop resolved before the wire slows down.
	if _, err := pc.WriteTo([]byte("ready"), from); err != nil {
		t.Fatal(err)
	}
	cli.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := cli.ReadFrom(buf); err != nil {
		t.Fatalf("first reply: %v", err)
	}
	tc := exec.Command("ip", "netns", "exec", rig.B.Name, "tc", "qdisc", "add", "dev", rig.B.Link, "root", "tbf", "rate", "20mbit", "burst", "20kb", "latency", "1s")
	if out, err := tc.CombinedOutput(); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
	for _, size := range []int{9000, 1400} {
		const n = 200
		drops := func() uint64 { return d.Engine().Stats().Totals.Drops["tx-kernel"] }
		waits := func() uint64 { return d.Engine().Stats().Totals.TxKernelWaits }
		k0, d0, w0 := d.Engine().Stats().Totals.TxKernel, drops(), waits()
		errc := make(chan error, 1)
		go func() {
			for i := range n {
				if _, err := pc.WriteTo(fragFill(i, size), from); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		got := 0
		for got < n {
			cli.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := cli.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%d bytes: %d of %d datagrams arrived (tx-kernel drops %d): %v", size, got, n, drops()-d0, err)
			}
			if !bytes.Equal(buf[:m], fragFill(got, size)) {
				t.Fatalf("%d bytes: datagram %d of %d is not the one sent in its place (%d bytes)", size, got, n, m)
			}
			got++
		}
		if err := <-errc; err != nil {
			t.Fatalf("%d bytes: write: %v", size, err)
		}
		var k uint64
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			if k = d.Engine().Stats().Totals.TxKernel - k0; k >= n || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("%d bytes: %d of %d arrived in order; kernel path sent %d, tx-kernel drops %d, socket-full waits %d",
			size, got, n, k, drops()-d0, waits()-w0)
		if k != n || drops() != d0 {
			t.Fatalf("%d bytes: kernel path sent %d of %d, tx-kernel drops %d", size, k, n, drops()-d0)
		}
		if w := waits() - w0; w == 0 || w > n {
			t.Fatalf("%d bytes: %d datagrams waited for the socket, want 1..%d (0: the test did not fill it)", size, w, n)
		}
	}
}
