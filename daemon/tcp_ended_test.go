package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// appView returns the view of the attached app named name.
func appView(t *testing.T, d *Daemon, name string) AppView {
	t.Helper()
	for _, v := range d.AppViews() {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no app %q attached", name)
	return AppView{}
}

// TestTCPResetHoldsFifos: a wire TCP session the peer resets keeps its
// handle and fifos until its app closes it (they are not given to the
// next session while the app may still write into them), and the close
// frees them. Then many connections reset by their peers while the app
// closes them at once leave nothing held.
func TestTCPResetHoldsFifos(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.MetricsAddr = "127.0.0.1:0" })
	a := attach(t, d, app.Options{Name: "ended"})
	ln, err := a.Listen("tcp://0.0.0.0:7420")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := netip.AddrPortFrom(rig.B.IPv4, 7420)
	idle := appView(t, d, "ended").FifoSize

	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	// A kernel client on host A sends a byte, and once the app has it,
	// resets the connection (linger 0).
	var kc net.Conn
	if err := rig.A.Do(func() error {
		var err error
		kc, err = net.DialTimeout("tcp", dst.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(sc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	kc.(*net.TCPConn).SetLinger(0)
	kc.Close()
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %v, want ECONNRESET", err)
	}
	waitFor(t, "the session to end", 5*time.Second, func() bool { return len(d.layer.Sessions()) == 0 })
	v := appView(t, d, "ended")
	if v.Ended != 1 || v.FifoSize <= idle {
		t.Fatalf("after the reset, before the app's close: %d ended sessions, %d fifo bytes (idle %d); want 1 and the session's fifos held",
			v.Ended, v.FifoSize, idle)
	}
	ended := `xsessiond_sessions{namespace="default",state="ended"}`
	if n := metric(t, scrape(t, d.MetricsAddr()), ended); n != 1 {
		t.Fatalf("%s %v, want 1", ended, n)
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the close to free the fifos", 5*time.Second, func() bool {
		v := appView(t, d, "ended")
		return v.Ended == 0 && v.FifoSize == idle
	})

	// Resets racing the app's closes: the app closes each connection as
	// soon as it read the peer's message, and the peer resets it right
	// after sending, so that either comes first: the app's close (then
	// no reset reaches it) or the reset (then its close is the daemon's
	// cue to free the fifos: a Disconnect, sent when the reset event
	// comes before or after the close).
	const conns = 400
	go serveEach(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadFull(c, make([]byte, len("connection 000")))
	})
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := rig.A.Do(func() error {
				c, err := net.DialTimeout("tcp", dst.String(), 10*time.Second)
				if err != nil {
					return err
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				msg := []byte(fmt.Sprintf("connection %03d", i%1000))
				if _, err := c.Write(msg); err != nil {
					return err
				}
				time.Sleep(time.Duration(i%8) * 50 * time.Microsecond)
				c.(*net.TCPConn).SetLinger(0)
				return c.Close()
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := appView(t, d, "ended")
		if len(d.layer.Sessions()) == 0 && v.Ended == 0 && v.FifoSize == idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still held after the resets: %d sessions, %d ended, %d fifo bytes (idle %d); tcp %+v",
				len(d.layer.Sessions()), v.Ended, v.FifoSize, idle, d.Engine().TCPStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
