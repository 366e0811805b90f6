package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/app"
)

// BenchmarkDial measures a connect from host B to a kernel server on host
// A until the caller holds the connection: an app's Dial through the
// daemon (xsessiond) beside net.Dial from a kernel socket in B's namespace
// (kernel), the baseline doing the same work on the same rig. TCP (tcp/)
// includes the handshake; each connection is closed with a reset (linger
// 0), outside the timed part, so that no port waits in TIME-WAIT. A
// connected UDP session (udp/) is a port reserved and the 5-tuple steered
// for the daemon, a connect(2) for the kernel.
//
//	XSESSIOND_PRIVILEGED=require go test -exec sudo -run x -bench Dial ./daemon
func BenchmarkDial(b *testing.B) {
	rig, d := tcpRig(b)
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

	a := attach(b, d, app.Options{Name: "dialbench"})
	for _, transport := range []string{"tcp", "udp"} {
		b.Run(transport+"/kernel", func(b *testing.B) {
			if err := rig.B.Do(func() error {
				for b.Loop() {
					c, err := net.Dial(transport, dst.String())
					if err != nil {
						return err
					}
					b.StopTimer()
					if tc, ok := c.(*net.TCPConn); ok {
						tc.SetLinger(0)
					}
					c.Close()
					b.StartTimer()
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(transport+"/xsessiond", func(b *testing.B) {
			uri := transport + "://" + dst.String()
			for b.Loop() {
				c, err := a.Dial(context.Background(), uri)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if transport == "tcp" {
					c.(linger).SetLinger(0)
				}
				c.Close()
				b.StartTimer()
			}
		})
	}
}
