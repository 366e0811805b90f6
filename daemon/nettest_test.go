package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/xsessiond/xsessiond/app"
)

// TestNetConnConformance runs the net.Conn conformance suite of
// golang.org/x/net/nettest (basic I/O, ping-pong, racy reads and writes,
// read and write deadlines in the past, present and future, a Close that
// ends blocked calls, every method called concurrently) on an app's TCP
// sessions: cut-through between two apps, and on the wire with a kernel
// socket on host A as the other end, the app dialing and accepting (the
// suite exercises both ends).
func TestNetConnConformance(t *testing.T) {
	t.Run("cut-through", func(t *testing.T) {
		d := startDaemon(t)
		srv := attach(t, d, app.Options{Name: "srv"})
		cli := attach(t, d, app.Options{Name: "cli"})
		ln, err := srv.Listen("tcp://127.0.0.1:7300")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c1, err = cli.Dial(ctx, "tcp://127.0.0.1:7300"); err != nil {
				return nil, nil, nil, err
			}
			if c2, err = ln.Accept(); err != nil {
				c1.Close()
				return nil, nil, nil, err
			}
			return c1, c2, func() { c1.Close(); c2.Close() }, nil
		})
	})
	t.Run("wire", func(t *testing.T) {
		rig, d := tcpRig(t)
		a := attach(t, d, app.Options{Name: "conformance"})
		kl := kernelListen(t, rig.A, ":7301")
		dst := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7301).String()
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c1, err = a.Dial(ctx, dst); err != nil {
				return nil, nil, nil, err
			}
			if c2, err = kl.Accept(); err != nil {
				c1.Close()
				return nil, nil, nil, err
			}
			return c1, c2, func() { c1.Close(); c2.Close() }, nil
		})
		// The other way round: a kernel client on A, the app accepting.
		ln, err := a.Listen("tcp://" + netip.AddrPortFrom(rig.B.IPv4, 7302).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			if err = rig.A.Do(func() error {
				var err error
				c1, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7302).String(), 10*time.Second)
				return err
			}); err != nil {
				return nil, nil, nil, err
			}
			if c2, err = ln.Accept(); err != nil {
				c1.Close()
				return nil, nil, nil, err
			}
			return c1, c2, func() { c1.Close(); c2.Close() }, nil
		})
	})
}
