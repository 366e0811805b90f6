package daemon

import (
	"bytes"
	"crypto/rand"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPGenericVeth checks what the daemon's warning about generic XDP on
// a veth says: while the peer's segmentation offload is on, its TCP
// segments reach the program whole and the kernel drops them at the AF_XDP
// socket (xsk_rx_dropped); with it off (ethtool -K PEER tso off),
// a megabyte goes each way exact.
func TestTCPGenericVeth(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
		o.Datapath.XDPMode = "generic"
	})
	a := attach(t, d, app.Options{Name: "generic"})
	dropped := func() uint64 { return d.EngineStats().Totals.Drops["xsk_rx_dropped"] }

	// Offload on: a 256 KiB write goes out in segments larger than a frame.
	kc, _ := kernelToApp(t, rig, a, 7300)
	go func() { _, _ = kc.Write(make([]byte, 256<<10)) }()
	waitFor(t, "segments larger than a frame dropped at the AF_XDP socket", 10*time.Second, func() bool { return dropped() > 0 })
	kc.Close()

	// TSO off on A's veth: A's kernel segments in software before the
	// veth, and every segment fits a frame.
	if out, err := exec.Command("ip", "netns", "exec", rig.A.Name, "ethtool", "-K", rig.A.Link, "tso", "off").CombinedOutput(); err != nil {
		t.Fatalf("ethtool -K %s tso off: %v: %s", rig.A.Link, err, out)
	}
	before := dropped()
	kc, ac := kernelToApp(t, rig, a, 7301)
	_ = kc.SetDeadline(time.Now().Add(20 * time.Second))
	_ = ac.SetDeadline(time.Now().Add(20 * time.Second))
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	go func() { _, _ = io.Copy(ac, io.LimitReader(ac, int64(len(want)))) }()
	errc := make(chan error, 1)
	go func() {
		_, err := kc.Write(want)
		errc <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(kc, got); err != nil {
		t.Fatalf("echo with offload off: %v (xsk_rx_dropped %d)", err, dropped()-before)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ")
	}
	if n := dropped() - before; n != 0 {
		t.Errorf("%d frames dropped at the AF_XDP socket with offload off", n)
	}
}
