package daemon

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// multiBufferRig is a rig built with opts (host A's offloads left on) and
// the daemon on host B's veth in xdpMode ("" = the default), with an app
// attached.
func multiBufferRig(t *testing.T, opts nstest.Options, xdpMode string) (*nstest.Pair, *Daemon, *app.App) {
	t.Helper()
	rig := nstest.NewPair(t, opts)
	d := startDaemon(t, onB(rig), func(o *Config) { o.Datapath.XDPMode = xdpMode })
	return rig, d, attach(t, d, app.Options{Name: "multi-buffer"})
}

// appTCPEcho has a kernel client on host A send n random bytes through an
// echo on app a's TCP listener on port, every byte checked.
func appTCPEcho(t *testing.T, rig *nstest.Pair, d *Daemon, a *app.App, port uint16, n int) {
	t.Helper()
	ln := listenEcho(t, a, "tcp://0.0.0.0:"+strconv.Itoa(int(port)))
	defer ln.Close()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	if err := kernelEcho(rig, netip.AddrPortFrom(rig.B.IPv4, port), data); err != nil {
		t.Fatalf("tcp echo: %v (%+v)", err, d.EngineStats().Totals)
	}
}

// sendUDPFromA writes each of dgrams to dst from one kernel UDP socket on
// host A; setup, when not nil, is applied to its fd first.
func sendUDPFromA(t *testing.T, rig *nstest.Pair, dst netip.AddrPort, setup func(fd int) error, dgrams ...[]byte) {
	t.Helper()
	if err := rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		if setup != nil {
			rc, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setup(int(fd)) }); err != nil {
				return err
			}
			if serr != nil {
				return serr
			}
		}
		for _, g := range dgrams {
			if _, err := c.Write(g); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// readDgrams reads n datagrams from pc within 5 s and returns copies.
func readDgrams(t *testing.T, d *Daemon, pc net.PacketConn, n int) [][]byte {
	t.Helper()
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	out := make([][]byte, 0, n)
	for range n {
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v (%+v)", len(out)+1, n, err, d.EngineStats())
		}
		out = append(out, bytes.Clone(buf[:m]))
	}
	return out
}

// statsWhen returns d's engine stats once cond holds of them, or after
// 2 s: a worker publishes its counters every few loops and before it
// sleeps, so they can trail what an app has already read.
func statsWhen(d *Daemon, cond func(EngineStats) bool) EngineStats {
	s := d.EngineStats()
	for end := time.Now().Add(2 * time.Second); !cond(s) && time.Now().Before(end); s = d.EngineStats() {
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// TestTCPGenericVeth: with XDP in generic mode on a veth, the peer keeps
// its segmentation offload (native mode turns it off), so A's kernel sends
// TCP segments of up to 64 KiB; they reach the worker as chains of
// descriptors (datapath/chain.go) and gVisor takes them whole. 4 MiB go
// each way exact, segments larger than a frame were joined, and none was
// dropped at the AF_XDP socket.
func TestTCPGenericVeth(t *testing.T) {
	rig, d, a := multiBufferRig(t, nstest.Options{}, "generic")
	if m := d.EngineStats().XDPMode; m != "generic" {
		t.Fatalf("xdp mode %q", m)
	}
	appTCPEcho(t, rig, d, a, 7300, 4<<20)
	s := statsWhen(d, func(s EngineStats) bool { return s.Totals.Chained > 0 }).Totals
	if s.Chained == 0 {
		t.Errorf("no segment larger than a frame joined: %+v", s)
	}
	if n := s.Drops["xsk_rx_dropped"] + s.Drops["chain_broken"] + s.Drops["chain_not_tcp"]; n != 0 {
		t.Errorf("drops %v", s.Drops)
	}
	t.Logf("%d segments joined of %d received", s.Chained, s.RxPackets)
}

// TestUDPGSOGenericVeth: in generic mode on a veth a kernel sender's UDP
// segmentation offload burst (UDP_SEGMENT) reaches the XDP program as one
// multi-buffer frame under one UDP header; the program gives it to the
// kernel, which cuts it into its datagrams and delivers them to the
// port's reservation, and the daemon's kernel path puts each in the app's
// rx fifo: ten datagrams of 1,000 bytes, in order, exact, and the
// program's udp_multi_buffer counted the burst.
func TestUDPGSOGenericVeth(t *testing.T) {
	rig, d, a := multiBufferRig(t, nstest.Options{}, "generic")
	// The daemon turned the peer's UDP segmentation offload off (see
	// TestUDPGSOSmallBurstsGenericVeth); on again, as where it could
	// not, the burst comes whole.
	peerUDPSegmentation(t, rig, "on")
	pc, err := a.ListenPacket("udp://0.0.0.0:9100")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const seg, n = 1000, 10
	want := make([]byte, seg*n)
	_, _ = rand.Read(want)
	sendBurstFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, 9100), seg, want)
	for i, g := range readDgrams(t, d, pc, n) {
		if !bytes.Equal(g, want[i*seg:(i+1)*seg]) {
			t.Fatalf("datagram %d: %d bytes, not the %d sent", i, len(g), seg)
		}
	}
	s := statsWhen(d, func(s EngineStats) bool { return s.KernelRx >= n && s.XDP["udp_multi_buffer"] > 0 })
	if s.KernelRx < n {
		t.Errorf("kernel path delivered %d datagrams, want %d: %+v", s.KernelRx, n, s)
	}
	// The burst came whole: the program counted it (show stats' xdp).
	if s.XDP["udp_multi_buffer"] == 0 {
		t.Errorf("udp_multi_buffer 0: the burst did not reach the program whole: %v", s.XDP)
	}
}

// peerUDPSegmentation sets host A's veth end's UDP segmentation offload
// (tx-udp-segmentation) on or off.
func peerUDPSegmentation(t *testing.T, rig *nstest.Pair, onOff string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", rig.A.Name, "ethtool", "-K", rig.A.Link, "tx-udp-segmentation", onOff).CombinedOutput(); err != nil {
		t.Fatalf("ethtool -K %s tx-udp-segmentation %s in %s: %v: %s", rig.A.Link, onOff, rig.A.Name, err, out)
	}
}

// peerUDPSegmentationOn reports whether host A's veth end's UDP
// segmentation offload is on.
func peerUDPSegmentationOn(t *testing.T, rig *nstest.Pair) bool {
	t.Helper()
	return rig.A.FeatureOn(t, "tx-udp-segmentation")
}

// TestUDPGSOSmallBurstsGenericVeth: in generic mode on a veth, a peer's
// UDP segmentation bursts shorter than a page (UDP_SEGMENT: several
// datagrams under one header, their size in the socket buffer's metadata
// alone, which the XDP program does not see) reach the app as their
// datagrams: the daemon turns the peer's tx-udp-segmentation off while it
// runs (as native XDP's attach turns the peer's segmentation offload
// off), so the peer's kernel cuts them before they cross, and back on as
// it stops. Before, a burst of 2 × 500 bytes reached the app as one
// datagram of 1,000, and one of 3 × 1,000 was dropped (chain_not_tcp).
func TestUDPGSOSmallBurstsGenericVeth(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if !peerUDPSegmentationOn(t, rig) {
		t.Fatalf("the peer's tx-udp-segmentation is off before the daemon starts")
	}
	d := startDaemon(t, onB(rig), func(o *Config) { o.Datapath.XDPMode = "generic" })
	a := attach(t, d, app.Options{Name: "bursts"})
	if peerUDPSegmentationOn(t, rig) {
		t.Errorf("the peer's tx-udp-segmentation is on while the daemon runs in generic mode")
	}
	pc, err := a.ListenPacket("udp://0.0.0.0:9101")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, c := range []struct{ seg, n int }{{500, 2}, {1000, 3}} {
		want := make([]byte, c.seg*c.n)
		_, _ = rand.Read(want)
		sendBurstFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, 9101), c.seg, want)
		for i, g := range readDgrams(t, d, pc, c.n) {
			if !bytes.Equal(g, want[i*c.seg:(i+1)*c.seg]) {
				t.Fatalf("a burst of %d × %d bytes: datagram %d has %d bytes, not the %d sent", c.n, c.seg, i, len(g), c.seg)
			}
		}
	}
	if drops := d.EngineStats().Totals.Drops; len(drops) > 0 {
		t.Errorf("drops %v", drops)
	}
	d.Close()
	if !peerUDPSegmentationOn(t, rig) {
		t.Errorf("the peer's tx-udp-segmentation stayed off after the daemon stopped")
	}
}

// TestJumboMTU: behind a veth peer with a 9,000-byte MTU (which a page
// does not hold: every such frame is multi-buffer), in the default mode, a
// UDP datagram of 8,000 bytes goes through the kernel to the app
// (udp_multi_buffer), one of 20,000 bytes in three fragments through the
// worker's chains and reassembly, and TCP 1 MiB each way as chains.
func TestJumboMTU(t *testing.T) {
	rig, d, a := multiBufferRig(t, nstest.Options{MTU: 9000}, "")
	pc, err := a.ListenPacket("udp://0.0.0.0:9200")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dgrams := [][]byte{make([]byte, 8000), make([]byte, 20000)}
	for _, g := range dgrams {
		_, _ = rand.Read(g)
	}
	sendUDPFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, 9200), nil, dgrams...)
	for _, g := range readDgrams(t, d, pc, len(dgrams)) {
		if !bytes.Equal(g, dgrams[0]) && !bytes.Equal(g, dgrams[1]) {
			t.Fatalf("a datagram of %d bytes, not one of those sent", len(g))
		}
	}
	s := statsWhen(d, func(s EngineStats) bool {
		return s.XDP["udp_multi_buffer"] > 0 && s.Totals.Reassembled > 0 && s.Totals.Chained > 0
	})
	if s.XDP["udp_multi_buffer"] == 0 || s.Totals.Reassembled == 0 || s.Totals.Chained == 0 {
		t.Errorf("udp_multi_buffer %d, reassembled %d, chained %d: want each > 0\nxdp %v\nqueues %+v", s.XDP["udp_multi_buffer"], s.Totals.Reassembled, s.Totals.Chained, s.XDP, s.Totals)
	}
	appTCPEcho(t, rig, d, a, 7400, 1<<20)
	if n := d.EngineStats().Totals.Dropped; n != 0 {
		t.Errorf("drops %v", d.EngineStats().Totals.Drops)
	}
}
