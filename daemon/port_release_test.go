package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestPortHandedBackOnceUnsteered: when an app closes a listener, its
// port goes back to the kernel only once the XDP program no longer steers
// the port, and the app's Close returns after that, as a kernel socket's
// close leaves the port to the next bind at once: a kernel socket that
// binds the port as soon as Close returned gets the first datagram, and
// the first connection, host A sends it. The mirror is slowed
// (testhook.MirrorApplyPause) to widen the window a loaded machine opens
// now and then; before, the port was handed back while the program still
// steered it, so the datagram was lost to the daemon and the connection
// was refused by its TCP stack.
func TestPortHandedBackOnceUnsteered(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "handback"})
	testhook.MirrorApplyPause.Store(int64(300 * time.Millisecond))
	defer testhook.MirrorApplyPause.Store(0)

	t.Run("udp", func(t *testing.T) {
		const port = 7310
		pc, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		if err := pc.Close(); err != nil {
			t.Fatal(err)
		}
		k, err := bindKernel(rig.B, fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			t.Fatalf("kernel bind of the port just closed: %v", err)
		}
		defer k.Close()
		cli := kernelClient(t, rig.A)
		if _, err := cli.WriteTo([]byte("first"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port}); err != nil {
			t.Fatal(err)
		}
		firstToKernel(t, k, "first")
	})

	t.Run("tcp", func(t *testing.T) {
		const port = 7311
		ln, err := a.Listen(fmt.Sprintf("tcp://0.0.0.0:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		var kl net.Listener
		if err := rig.B.Do(func() (err error) {
			kl, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
			return err
		}); err != nil {
			t.Fatalf("kernel listen on the port just closed: %v", err)
		}
		defer kl.Close() // the kernel completes the handshake unaccepted
		var c net.Conn
		err = rig.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, port).String(), 2*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("connect to the kernel listener: %v (the SYN was steered to the daemon after the port went back)", err)
		}
		c.Close()
	})

	// A connected session's port: the peer's next datagram to it goes
	// to the kernel socket that binds it once Close returned.
	t.Run("udp-connected", func(t *testing.T) {
		srv, err := bindKernel(rig.A, "0.0.0.0:7313")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7313", rig.A.IPv4))
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		k, err := bindKernel(rig.B, fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			t.Fatalf("kernel bind of the closed connection's port %d: %v", port, err)
		}
		defer k.Close()
		if _, err := srv.WriteTo([]byte("late"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port}); err != nil {
			t.Fatal(err)
		}
		firstToKernel(t, k, "late")
	})

	// A TCP connection reset by its peer: once its port is the kernel's
	// again, a kernel connection of the same 5-tuple gets the peer's
	// SYN-ACK (before, the program still steered it to the daemon's
	// TCP stack, and the connect waited for its SYN's retransmission).
	t.Run("tcp-connected", func(t *testing.T) {
		const port = 7314
		var srv net.Listener
		if err := rig.A.Do(func() (err error) {
			srv, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		ch := acceptOne(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, fmt.Sprintf("tcp://%s:%d", rig.A.IPv4, port))
		if err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().(*net.TCPAddr).Port
		sc := accepted(t, ch)
		sc.(*net.TCPConn).SetLinger(0)
		sc.Close() // a reset
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after the peer's reset: no error")
		}
		c.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{Port: local}, Timeout: 500 * time.Millisecond}
		deadline := time.Now().Add(5 * time.Second)
		for {
			var kc net.Conn
			err := rig.B.Do(func() (err error) {
				kc, err = d.Dial("tcp", netip.AddrPortFrom(rig.A.IPv4, port).String())
				return err
			})
			if err == nil {
				kc.Close()
				break
			}
			if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
				t.Fatalf("kernel connect from port %d, the reset connection's: %v", local, err)
			}
			time.Sleep(time.Millisecond)
		}
	})

	// Another app binding the port while the first one's Close waits
	// for the mirror gets it, and what host A sends then.
	t.Run("rebind", func(t *testing.T) {
		const port = 7312
		b := attach(t, d, app.Options{Name: "handback-next"})
		pc, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { closed <- pc.Close() }()
		time.Sleep(100 * time.Millisecond) // the Close waits for the slowed mirror
		next, err := b.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
		if err != nil {
			t.Fatalf("bind of the port another app is closing: %v", err)
		}
		defer next.Close()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		cli := kernelClient(t, rig.A)
		buf := make([]byte, 64)
		for try := 0; ; try++ {
			if _, err := cli.WriteTo([]byte("next"), &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port}); err != nil {
				t.Fatal(err)
			}
			next.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := next.ReadFrom(buf)
			if err == nil && string(buf[:n]) == "next" {
				break
			}
			if try == 3 {
				t.Fatalf("the new listener of the port: %q %v", buf[:n], err)
			}
		}
	})
}

// firstToKernel checks that the kernel socket k, bound to a port the
// daemon just gave back, gets the first datagram sent to it, want.
func firstToKernel(t *testing.T, k *net.UDPConn, want string) {
	t.Helper()
	k.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, _, err := k.ReadFrom(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("kernel socket of the port: %q %v (the datagram was steered to the daemon after the port went back)", buf[:n], err)
	}
}
