package daemon

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPGenericVeth: with XDP in generic mode on a veth, the peer keeps
// its segmentation offload (native mode turns it off), so A's kernel sends
// TCP segments of up to 64 KiB; they reach the worker as chains of
// descriptors (datapath/chain.go) and gVisor takes them whole. 4 MiB go
// each way exact, segments larger than a frame were joined, and none was
// dropped at the AF_XDP socket.
func TestTCPGenericVeth(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
		o.Datapath.XDPMode = "generic"
	})
	if m := d.EngineStats().XDPMode; m != "generic" {
		t.Fatalf("xdp mode %q", m)
	}
	a := attach(t, d, app.Options{Name: "generic"})
	kc, ac := kernelToApp(t, rig, a, 7300)
	_ = kc.SetDeadline(time.Now().Add(30 * time.Second))
	_ = ac.SetDeadline(time.Now().Add(30 * time.Second))
	want := make([]byte, 4<<20)
	_, _ = rand.Read(want)
	go func() { _, _ = io.Copy(ac, io.LimitReader(ac, int64(len(want)))) }()
	errc := make(chan error, 1)
	go func() {
		_, err := kc.Write(want)
		errc <- err
	}()
	got := make([]byte, len(want))
	tot := func() QueueStats { return d.EngineStats().Totals }
	if _, err := io.ReadFull(kc, got); err != nil {
		t.Fatalf("echo: %v (%+v)", err, tot())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ")
	}
	s := tot()
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
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
		o.Datapath.XDPMode = "generic"
	})
	a := attach(t, d, app.Options{Name: "gso"})
	pc, err := a.ListenPacket("udp://0.0.0.0:9100")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const seg, n = 1000, 10
	want := make([]byte, seg*n)
	_, _ = rand.Read(want)
	if err := rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.B.IPv4, 9100)))
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg) }); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		_, err = c.Write(want)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	for i := 0; i < n; i++ {
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v (%+v)", i, err, d.EngineStats())
		}
		if !bytes.Equal(buf[:m], want[i*seg:(i+1)*seg]) {
			t.Fatalf("datagram %d: %d bytes, not the %d sent", i, m, seg)
		}
	}
	s := d.EngineStats()
	if s.KernelRx < n {
		t.Errorf("kernel path delivered %d datagrams, want %d: %+v", s.KernelRx, n, s)
	}
	// The burst came whole: the program counted it (show stats' xdp).
	if s.XDP["udp_multi_buffer"] == 0 {
		t.Errorf("udp_multi_buffer 0: the burst did not reach the program whole: %v", s.XDP)
	}
}

// TestJumboMTU: behind a veth peer with a 9,000-byte MTU (which a page
// does not hold: every such frame is multi-buffer), in the default mode, a
// UDP datagram of 8,000 bytes goes through the kernel to the app
// (udp_multi_buffer), one of 20,000 bytes in three fragments through the
// worker's chains and reassembly, and TCP 1 MiB each way as chains.
func TestJumboMTU(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{MTU: 9000})
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	})
	a := attach(t, d, app.Options{Name: "jumbo"})
	pc, err := a.ListenPacket("udp://0.0.0.0:9200")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dgrams := [][]byte{make([]byte, 8000), make([]byte, 20000)}
	for _, g := range dgrams {
		_, _ = rand.Read(g)
	}
	if err := rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(rig.B.IPv4, 9200)))
		if err != nil {
			return err
		}
		defer c.Close()
		for _, g := range dgrams {
			if _, err := c.Write(g); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	for range dgrams {
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%v (%+v)", err, d.EngineStats())
		}
		if !bytes.Equal(buf[:m], dgrams[0]) && !bytes.Equal(buf[:m], dgrams[1]) {
			t.Fatalf("a datagram of %d bytes, not one of those sent", m)
		}
	}
	s := d.EngineStats()
	if s.XDP["udp_multi_buffer"] == 0 || s.Totals.Reassembled == 0 || s.Totals.Chained == 0 {
		t.Errorf("udp_multi_buffer %d, reassembled %d, chained %d: want each > 0", s.XDP["udp_multi_buffer"], s.Totals.Reassembled, s.Totals.Chained)
	}

	kc, ac := kernelToApp(t, rig, a, 7400)
	_ = kc.SetDeadline(time.Now().Add(20 * time.Second))
	_ = ac.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	go func() { _, _ = io.Copy(ac, io.LimitReader(ac, int64(len(want)))) }()
	go func() { _, _ = kc.Write(want) }()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(kc, got); err != nil {
		t.Fatalf("tcp echo: %v (%+v)", err, d.EngineStats().Totals)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("tcp echo differs")
	}
	if n := d.EngineStats().Totals.Dropped; n != 0 {
		t.Errorf("drops %v", d.EngineStats().Totals.Drops)
	}
}
