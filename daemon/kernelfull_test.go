package daemon

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestKernelPathSocketFull: datagrams that leave through the kernel path
// (larger than a frame, or larger than the path MTU) wait in the app's tx
// fifo while the port's kernel socket has no room, as a kernel socket's
// sender would wait, instead of being dropped. A token bucket on B's link
// (tbf, 20 Mbit/s) holds what the kernel path sends, charged to the
// socket's send buffer, so a burst fills it at once; every datagram of the
// burst must reach host A, and no tx drop be counted.
//
// Order: a session's datagrams leave in the order it queued them, those
// of the kernel path and those of frames alike. Checked exactly for a
// burst of both kinds on the link as it is (frames queued before a kernel
// path datagram are flushed first) and for bursts of one kind behind the
// shaper. Behind it, a frame may overtake a kernel path datagram the
// shaper still holds (AF_XDP frames do not pass through qdiscs), so a
// mixed burst there is checked for completeness only.
func TestKernelPathSocketFull(t *testing.T) {
	if _, err := exec.LookPath("tc"); err != nil {
		if os.Getenv(nstest.PrivilegedEnv) == "require" {
			t.Fatal("tc (iproute2) not installed; .ci/run installs it")
		}
		t.Skip("tc (iproute2) not installed")
	}
	rig := nstest.NewPair(t, nstest.Options{})
	// A path MTU of 1,280 to A: 1,400-byte datagrams fit a frame and take
	// the kernel path from the worker's frame (tx.go), 9,000-byte ones
	// from the tx fifo (kernelpath.go); 1,000-byte ones go as frames.
	routeMTUToA(t, rig, 1280)
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "kernel-full", TxFifoSize: 1 << 20})
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := kernelClient(t, rig.A)
	// Room for a whole burst: the unshaped one comes faster than the test
	// reads.
	forceRcvBuf(t, cli, 16<<20)
	from := hello(t, rig, cli, pc)
	buf := make([]byte, 65536)
	// The next hop resolved before the bursts.
	if _, err := pc.WriteTo([]byte("ready"), from); err != nil {
		t.Fatal(err)
	}
	cli.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := cli.ReadFrom(buf); err != nil {
		t.Fatalf("first reply: %v", err)
	}

	stats := func() (kernel, drops, waits uint64) {
		s := d.Engine().Stats().Totals
		return s.TxKernel, s.Drops["tx-kernel"], s.TxKernelWaits
	}
	// burst writes n datagrams, sizes taking turns, and reads them on A:
	// in the order written (ordered) or in any; it returns how many of
	// them waited for the kernel socket.
	burst := func(sizes []int, ordered bool) uint64 {
		const n = 200
		name := fmt.Sprint(sizes)
		size := func(i int) int { return sizes[i%len(sizes)] }
		k0, d0, w0 := stats()
		errc := make(chan error, 1)
		go func() {
			for i := range n {
				if _, err := pc.WriteTo(fragFill(i, size(i)), from); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		seen := make([]bool, n)
		for got := 0; got < n; got++ {
			cli.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := cli.ReadFrom(buf)
			if err != nil {
				_, drops, _ := stats()
				t.Fatalf("%s: %d of %d datagrams arrived (tx-kernel drops %d): %v", name, got, n, drops-d0, err)
			}
			i := got
			if !ordered {
				for i = 0; i < n && (seen[i] || !bytes.Equal(buf[:m], fragFill(i, size(i)))); i++ {
				}
			}
			if i == n || !bytes.Equal(buf[:m], fragFill(i, size(i))) {
				t.Fatalf("%s: datagram %d of %d is not one sent in its place (%d bytes)", name, got, n, m)
			}
			seen[i] = true
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		want := uint64(0) // the kernel path's: 1,400 and 9,000 bytes
		for i := range n {
			if size(i) > 1000 {
				want++
			}
		}
		var k, drops, waits uint64
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			if k, drops, waits = stats(); k-k0 >= want || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("%s: %d arrived (in order: %v); kernel path sent %d, tx-kernel drops %d, socket-full waits %d",
			name, n, ordered, k-k0, drops-d0, waits-w0)
		if k-k0 != want || drops != d0 {
			t.Fatalf("%s: kernel path sent %d of %d, tx-kernel drops %d", name, k-k0, want, drops-d0)
		}
		if waits-w0 > want {
			t.Fatalf("%s: %d datagrams waited for the socket, more than the %d it sent", name, waits-w0, want)
		}
		return waits - w0
	}

	burst([]int{1400, 1000}, true)
	tc := exec.Command("ip", "netns", "exec", rig.B.Name, "tc", "qdisc", "add", "dev", rig.B.Link, "root", "tbf", "rate", "20mbit", "burst", "20kb", "latency", "1s")
	if out, err := tc.CombinedOutput(); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
	for _, sizes := range [][]int{{9000}, {1400}} {
		if burst(sizes, true) == 0 {
			t.Fatalf("%v: the kernel socket never refused a datagram: the test did not fill it", sizes)
		}
	}
	burst([]int{1400, 1000}, false)

	// Another session's datagrams do not wait for this one's full socket:
	// while datagrams of 1,400 bytes are held for it (up to a session's
	// share of the hold slots, 64, with the rest in its fifo), 50 of 100
	// bytes from a second listener reach another socket of host A at once,
	// not after the held ones: at 5 Mbit/s each 1,400-byte datagram takes
	// 2.2 ms on the link.
	tc = exec.Command("ip", "netns", "exec", rig.B.Name, "tc", "qdisc", "change", "dev", rig.B.Link, "root", "tbf", "rate", "5mbit", "burst", "20kb", "latency", "1s")
	if out, err := tc.CombinedOutput(); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
	pcY, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pcY.Close()
	cliY := kernelClient(t, rig.A)
	toY := &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: cliY.LocalAddr().(*net.UDPAddr).Port}
	const nX, nY, startY = 300, 50, 20
	_, _, w0 := stats()
	errc := make(chan error, 2)
	go func() {
		for i := range nX {
			if _, err := pc.WriteTo(fragFill(i, 1400), from); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var xGot atomic.Int64
	xAtY := make(chan int64, 1)
	go func() {
		b := make([]byte, 2048)
		for got := 0; got < nY; got++ {
			cliY.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := cliY.ReadFrom(b); err != nil {
				errc <- fmt.Errorf("second session: %d of %d arrived: %w", got, nY, err)
				xAtY <- -1
				return
			}
		}
		xAtY <- xGot.Load()
	}()
	for got := 0; got < nX; got++ {
		if got == startY { // the first session's datagrams are held by now
			for i := range nY {
				if _, err := pcY.WriteTo(fragFill(i, 100), toY); err != nil {
					t.Fatal(err)
				}
			}
		}
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := cli.ReadFrom(buf); err != nil {
			t.Fatalf("first session: %d of %d arrived: %v", got, nX, err)
		}
		xGot.Add(1)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	at := <-xAtY
	_, _, w1 := stats()
	t.Logf("the second session's %d datagrams were through when %d of the first's had arrived (written from the %dth on); %d of the first waited for its socket",
		nY, at, startY, w1-w0)
	if at < 0 {
		t.Fatal(<-errc)
	}
	if w1 == w0 || at >= startY+32 {
		t.Fatalf("the second session was through after %d of the first's datagrams (socket-full waits %d): it waited behind the other's full socket", at, w1-w0)
	}
}
