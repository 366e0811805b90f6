package daemon

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
	"time"

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
