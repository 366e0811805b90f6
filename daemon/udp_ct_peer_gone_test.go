package daemon

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestUDPCutThroughPeerGoneMatchesKernel: a UDP session an app dialed to
// a local app's listener (cut-through) behaves, once that listener is
// closed or its app goes away, as a kernel UDP socket connected to a
// loopback port whose socket was closed: a datagram queued before is
// still read; a read waits (until its deadline: nothing tells a UDP
// socket its peer is gone); a write succeeds and the port unreachable it
// draws makes the next read or write fail with ECONNREFUSED, once, so
// that writes alternate between success and ECONNREFUSED; a read waiting
// is woken with ECONNREFUSED by a write of another goroutine; never
// io.EOF nor EPIPE. Before, reads returned io.EOF and writes EPIPE.
func TestUDPCutThroughPeerGoneMatchesKernel(t *testing.T) {
	d := startDaemon(t)
	for _, how := range []string{"listener closed", "listener's app closed"} {
		t.Run(how, func(t *testing.T) {
			var obs [2]*udpObs
			for i, side := range []string{"kernel", "app"} {
				o := newUDPObs()
				var pc net.PacketConn
				var c net.Conn
				goAway := func() { pc.Close() }
				if side == "kernel" {
					l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
					if err != nil {
						t.Fatal(err)
					}
					pc = l
					if c, err = net.Dial("udp", l.LocalAddr().String()); err != nil {
						t.Fatal(err)
					}
				} else {
					srv := attach(t, d, app.Options{Name: "listener"})
					cli := attach(t, d, app.Options{Name: "dialer"})
					var err error
					if pc, err = srv.ListenPacket("udp://127.0.0.1:7941"); err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					c, err = cli.Dial(ctx, "udp://127.0.0.1:7941")
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					if how == "listener's app closed" {
						goAway = func() { srv.Close() }
					}
				}
				defer c.Close()
				buf := make([]byte, 64)
				n, err := c.Write([]byte("hello"))
				o.write("write to the listener", n, err)
				pc.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, from, err := pc.ReadFrom(buf)
				o.add("the listener's read", "n=%d err=%s", n, udpErrClass(err))
				if err == nil {
					n, err = pc.WriteTo([]byte("queued"), from)
					o.write("the listener's answer", n, err)
				}
				time.Sleep(50 * time.Millisecond)
				goAway()
				time.Sleep(100 * time.Millisecond)
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err = c.Read(buf)
				o.read("the read of what was queued", buf, n, nil, err)
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, err = c.Read(buf)
				o.read("a read with nothing queued", buf, n, nil, err)
				for i := range 4 {
					n, err = c.Write([]byte("anyone?"))
					o.write("write "+string(rune('1'+i)), n, err)
					time.Sleep(20 * time.Millisecond)
				}
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err = c.Read(buf)
				o.read("a read after an even number of writes", buf, n, nil, err)
				n, err = c.Write([]byte("anyone?"))
				o.write("one more write", n, err)
				time.Sleep(20 * time.Millisecond)
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err = c.Read(buf)
				o.read("the read after it", buf, n, nil, err)
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err = c.Read(buf)
				o.read("the next read", buf, n, nil, err)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				o.add("a read waiting while another goroutine writes", "%s", blockedCall(func() error {
					_, err := c.Read(make([]byte, 64))
					return err
				}, func() { c.Write([]byte("anyone?")) }))
				obs[i] = o
			}
			compareUDPObs(t, obs[0], obs[1])
		})
	}
}
