package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// BenchmarkTCPDial measures a TCP connect from host B to a kernel server
// on host A, handshake included, until the caller holds the connection:
// an app's Dial through the daemon (xsessiond) beside net.Dial from a
// kernel socket in B's namespace (kernel), the baseline doing the same
// work on the same rig. Each connection is closed with a reset (linger
// 0), outside the timed part, so that no port waits in TIME-WAIT.
//
//	XSESSIOND_PRIVILEGED=require go test -exec sudo -run x -bench TCPDial ./daemon
func BenchmarkTCPDial(b *testing.B) {
	rig := nstest.NewPair(b, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		b.Fatal(err)
	}
	d := startDaemon(b, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	})
	var kl net.Listener
	if err := rig.A.Do(func() error {
		var err error
		kl, err = net.Listen("tcp", ":7240")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer kl.Close()
	go serveEach(kl, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	dst := netip.AddrPortFrom(rig.A.IPv4, 7240)

	b.Run("kernel", func(b *testing.B) {
		if err := rig.B.Do(func() error {
			for b.Loop() {
				c, err := net.Dial("tcp", dst.String())
				if err != nil {
					return err
				}
				b.StopTimer()
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				b.StartTimer()
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("xsessiond", func(b *testing.B) {
		a := attach(b, d, app.Options{Name: "dialbench"})
		uri := "tcp://" + dst.String()
		for b.Loop() {
			c, err := a.Dial(context.Background(), uri)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.(linger).SetLinger(0)
			c.Close()
			b.StartTimer()
		}
	})
}
