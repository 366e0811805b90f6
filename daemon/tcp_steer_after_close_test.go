package daemon

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPSteerAfterClose: once an app's TCP connection and listener are
// closed, the 5-tuple the connection had is the kernel's again at once: a
// kernel client on host A bound to the port the connection came from,
// reconnecting to a kernel listener on host B on the port the app used,
// reaches that listener (its SYN is not steered to the app's connection,
// which waits in TIME-WAIT).
func TestTCPSteerAfterClose(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "steer"})
	for _, tc := range []struct {
		name string
		b    netip.Addr
		uri  string
	}{
		{"ipv4", rig.B.IPv4, "tcp://0.0.0.0:7520"},
		{"ipv6", rig.B.IPv6, "tcp://[::]:7521"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := a.Listen(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			to := netip.AddrPortFrom(tc.b, ln.Addr().(*net.TCPAddr).AddrPort().Port())
			kc, err := churnKernelDial(rig, netip.AddrPort{}, to)
			if err != nil {
				t.Fatal(err)
			}
			from := kc.LocalAddr().(*net.TCPAddr).AddrPort()
			ac, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			// The app closes first: TIME-WAIT on B, none on A.
			ac.Write([]byte("bye"))
			ac.Close()
			kc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if b, err := io.ReadAll(kc); err != nil || string(b) != "bye" {
				t.Fatalf("read %q, %v", b, err)
			}
			kc.Close()
			ln.Close()
			waitFor(t, "the app's listener gone", 2*time.Second, func() bool { return len(d.layer.Listeners()) == 0 })
			kl := kernelListen(t, rig.B, to.String())
			got := make(chan string, 1)
			go func() {
				c, err := kl.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				got <- c.RemoteAddr().String()
				c.Write([]byte("kernel"))
			}()
			start := time.Now()
			var kc2 net.Conn
			for {
				// A's end of the first connection leaves LAST-ACK
				// with B's last ACK: until then, its port is taken.
				kc2, err = churnKernelDial(rig, from, to)
				if !errors.Is(err, syscall.EADDRINUSE) || time.Since(start) > 2*time.Second {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("kernel client from %v to the kernel listener on %v: %v (after %v)", from, to, err, time.Since(start).Round(time.Millisecond))
			}
			defer kc2.Close()
			kc2.SetReadDeadline(time.Now().Add(3 * time.Second))
			b := make([]byte, 6)
			if _, err := io.ReadFull(kc2, b); err != nil || string(b) != "kernel" {
				t.Fatalf("from %v to %v: read %q, %v; want the kernel listener's greeting", from, to, b, err)
			}
			select {
			case r := <-got:
				t.Logf("the kernel listener accepted %s", r)
			case <-time.After(2 * time.Second):
				t.Fatal("the kernel listener accepted nothing")
			}
		})
	}
}
