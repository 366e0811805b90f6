package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestWireSessionEndsLeaveBooksClean: wire sessions (TCP to and from a
// kernel peer, connected UDP) leave none of their fifos in the daemon's
// books once they ended, however they end: at once when an event or the
// app's request ends them, by the next readout (show, metrics) when the
// app closed a TCP session through its tx fifo, which tells the daemon
// nothing (its fifos go back to the app's memory; the handle is reused),
// and with its app when the app dies.
func TestWireSessionEndsLeaveBooksClean(t *testing.T) {
	const rounds = 10
	rig, d := tcpRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := attach(t, d, app.Options{Name: "wire"})
	id := appIDOf(a)

	// Kernel servers on host A: one resets every connection, one echoes.
	rst := kernelListen(t, rig.A, ":7501")
	go serveEach(rst, func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0)
	})
	echo := kernelListen(t, rig.A, ":7502")
	go echoServe(echo)
	var usrv *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		usrv, err = net.ListenUDP("udp", &net.UDPAddr{Port: 7503})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer usrv.Close()
	go echoUDP(usrv)
	// An app listener on host B.
	ln := listenApp(t, a, "tcp://0.0.0.0:7504")
	accepted := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	listeners := d.trackedFifos(id) // the app listener's datagram fifos, if any
	uri := func(port int) string { return fmt.Sprintf("tcp://%s:%d", rig.A.IPv4, port) }
	exchange := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	ways := []struct {
		name string
		run  func() error
		// lazy: the session may end with no event nor request to the
		// daemon (the app's close through its tx fifo).
		lazy bool
	}{
		{"reset by peer", func() error {
			c, err := a.Dial(ctx, uri(7501))
			if errors.Is(err, syscall.ECONNRESET) {
				// The reset came before the connect was reported, as
				// net.Dial fails when it comes before connect(2)'s
				// caller wakes: the session ended all the same.
				return nil
			}
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				return fmt.Errorf("read: %v, want ECONNRESET", err)
			}
			return nil
		}, false},
		{"app aborts", func() error {
			c, err := a.Dial(ctx, uri(7502))
			if err != nil {
				return err
			}
			if err := exchange(c); err != nil {
				return err
			}
			c.(*app.Conn).SetLinger(0)
			return c.Close()
		}, false},
		{"orphaned close", func() error {
			c, err := a.Dial(ctx, uri(7502))
			if err != nil {
				return err
			}
			if err := exchange(c); err != nil {
				return err
			}
			return c.Close()
		}, true},
		{"peer closes first", func() error {
			c, err := a.Dial(ctx, uri(7502))
			if err != nil {
				return err
			}
			defer c.Close()
			if err := exchange(c); err != nil {
				return err
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			_, err = io.ReadAll(c) // the echo's FIN after ours
			return err
		}, true},
		{"accepted, reset by peer", func() error {
			var k net.Conn
			if err := rig.A.Do(func() (err error) {
				k, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7504).String(), 5*time.Second)
				return err
			}); err != nil {
				return err
			}
			var c net.Conn
			select {
			case c = <-accepted:
			case <-time.After(5 * time.Second):
				k.Close()
				return errors.New("no accept")
			}
			defer c.Close()
			k.(*net.TCPConn).SetLinger(0)
			k.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				return fmt.Errorf("read: %v, want ECONNRESET", err)
			}
			return nil
		}, false},
		{"udp connected", func() error {
			c, err := a.Dial(ctx, fmt.Sprintf("udp://%s:7503", rig.A.IPv4))
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 4)
			for try := 0; ; try++ { // the first may wait for ARP
				c.Write([]byte("ping"))
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(buf); err == nil || try == 3 {
					return err
				}
			}
		}, false},
	}
	for _, w := range ways {
		for i := range rounds {
			if err := w.run(); err != nil {
				t.Fatalf("%s, round %d: %v", w.name, i, err)
			}
		}
		waitFor(t, "every session to end", 10*time.Second, func() bool { return len(d.layer.Sessions()) == 0 })
		time.Sleep(100 * time.Millisecond)
		n := d.trackedFifos(id) - listeners
		d.fifoFill()
		after := d.trackedFifos(id) - listeners
		t.Logf("%s: %d entries of ended sessions before a readout, %d after", w.name, n, after)
		if (n != 0 && !w.lazy) || after != 0 {
			t.Errorf("%s: %d entries of ended sessions before a readout, %d after; want none", w.name, n, after)
		}
	}
	// An app that dies with its sessions open.
	for range rounds {
		b := attach(t, d, app.Options{Name: "dies"})
		c, err := b.Dial(ctx, uri(7502))
		if err != nil {
			t.Fatal(err)
		}
		if err := exchange(c); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Dial(ctx, fmt.Sprintf("udp://%s:7503", rig.A.IPv4)); err != nil {
			t.Fatal(err)
		}
		b.Close()
		waitFor(t, "the app's detach", 5*time.Second, func() bool { return len(d.trackedDetached()) == 0 })
	}
}
