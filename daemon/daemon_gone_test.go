package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestDaemonStopWakesApps stops a daemon (Close, what SIGTERM does) while
// its apps have a call of every kind blocked on cut-through sessions and
// listeners (Accept of a TCP and of a UDP listener, Read and Write of a
// TCP session, Read of a UDP one, ReadFrom and ReadBatch of a
// PacketConn) and control requests in flight (binds and unbinds, dials):
// each returns within a second with an error wrapping net.ErrClosed that
// says xsessiond is shutting down, and so does every later call, a
// cut-through read of data queued before included: the sessions' fifos
// are still mapped, but their daemon is gone, and a session outliving it
// would hold ports the next daemon gives to others. Every Close returns
// nil. A daemon started next on the socket takes a new app while the old
// one keeps failing; once all is closed nothing of them is left in the
// process.
func TestDaemonStopWakesApps(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	snap := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	attachTo := func(name string) *app.App {
		a, err := app.Attach(ctx, app.Options{Socket: sock, Name: name, Scope: 3})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, b := attachTo("a"), attachTo("b")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ln, err := b.Listen("tcp://0.0.0.0:7300")
	must(err)
	ca, err := a.Dial(ctx, "tcp://127.0.0.1:7300")
	must(err)
	cb, err := ln.Accept()
	must(err)
	ca2, err := a.Dial(ctx, "tcp://127.0.0.1:7300")
	must(err)
	cb2, err := ln.Accept()
	must(err)
	_, err = cb2.Write([]byte("queued"))
	must(err)
	pc, err := b.ListenPacketConn("udp://0.0.0.0:7301")
	must(err)
	pcb, err := b.ListenPacket("udp://0.0.0.0:7302")
	must(err)
	uc, err := a.Dial(ctx, "udp://127.0.0.1:7301")
	must(err)
	uln, err := a.Listen("udp://0.0.0.0:7303")
	must(err)
	tln, err := a.Listen("tcp://0.0.0.0:7304")
	must(err)

	type result struct {
		name string
		err  error
		at   time.Time
	}
	res := make(chan result, 32)
	n := 0
	blocked := func(name string, fn func() error) {
		n++
		go func() { err := fn(); res <- result{name, err, time.Now()} }()
	}
	blocked("TCP Accept", func() error { _, err := tln.Accept(); return err })
	blocked("UDP Accept", func() error { _, err := uln.Accept(); return err })
	blocked("Read", func() error { _, err := ca.Read(make([]byte, 10)); return err })
	blocked("Write", func() error { _, err := ca.Write(make([]byte, 8<<20)); return err })
	blocked("UDP Read", func() error { _, err := uc.Read(make([]byte, 10)); return err })
	blocked("ReadFrom", func() error { _, _, err := pcb.ReadFrom(make([]byte, 10)); return err })
	blocked("ReadBatch", func() error {
		msgs := make([]app.Message, 4)
		_, err := pc.ReadBatch(msgs)
		return err
	})
	for i := range 4 {
		blocked(fmt.Sprintf("bind loop %d", i), func() error {
			for {
				p, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", 7310+i))
				if err != nil {
					return err
				}
				if err := p.Close(); err != nil {
					return errors.New("Close failed: " + err.Error())
				}
			}
		})
		blocked(fmt.Sprintf("dial loop %d", i), func() error {
			for {
				c, err := a.Dial(ctx, "tcp://127.0.0.1:7300")
				if err != nil {
					return err
				}
				if err := c.Close(); err != nil {
					return errors.New("Close failed: " + err.Error())
				}
			}
		})
	}
	// The listener's side of the dial loops: accept and close.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if c != cb && c != cb2 {
				c.Close()
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-res:
		t.Fatalf("%s returned before the daemon stopped: %v", r.name, r.err)
	default:
	}

	gone := make(chan struct{})
	stopped := time.Now()
	go func() { d.Close(); close(gone) }()
	stoppedErr := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "xsessiond is shutting down") {
			t.Errorf("%s: %v, want an error wrapping net.ErrClosed saying xsessiond is shutting down", what, err)
		}
	}
	for range n {
		select {
		case r := <-res:
			if took := r.at.Sub(stopped); took > time.Second {
				t.Errorf("%s returned %v after the daemon stopped", r.name, took)
			}
			stoppedErr(r.name, r.err)
		case <-time.After(3 * time.Second):
			t.Fatalf("calls still blocked 3 s after the daemon stopped:\n%s", goroutines())
		}
	}
	<-gone
	later := func(when string) {
		t.Helper()
		for _, c := range []struct {
			name string
			fn   func() error
		}{
			{"Accept", func() error { _, err := tln.Accept(); return err }},
			{"Read", func() error { _, err := ca.Read(make([]byte, 10)); return err }},
			{"Write", func() error { _, err := ca.Write([]byte("x")); return err }},
			{"Read of queued data", func() error { _, err := ca2.Read(make([]byte, 10)); return err }},
			{"peer's Read", func() error { _, err := cb.Read(make([]byte, 10)); return err }},
			{"peer's Write", func() error { _, err := cb2.Write([]byte("x")); return err }},
			{"UDP Write", func() error { _, err := uc.Write([]byte("x")); return err }},
			{"ReadFrom", func() error { _, _, err := pcb.ReadFrom(make([]byte, 10)); return err }},
			{"Dial", func() error { _, err := a.Dial(ctx, "tcp://127.0.0.1:7300"); return err }},
			{"Listen", func() error { _, err := b.Listen("tcp://0.0.0.0:7305"); return err }},
		} {
			start := time.Now()
			err := c.fn()
			if took := time.Since(start); took > 200*time.Millisecond {
				t.Errorf("%s: %s took %v", when, c.name, took)
			}
			stoppedErr(when+": "+c.name, err)
		}
	}
	later("after the stop")

	// A new daemon on the socket.
	d2 := startDaemon(t, func(c *Config) { c.Socket = sock })
	later("with a new daemon on the socket")
	nu := attachTo("new")
	nln, err := nu.Listen("tcp://0.0.0.0:7300")
	if err != nil {
		t.Fatalf("the new app binds the old one's port: %v", err)
	}
	go func() {
		c, err := nln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	nc, err := nu.Dial(ctx, "tcp://127.0.0.1:7300")
	must(err)
	buf := make([]byte, 2)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(buf); err != nil || string(buf) != "hi" {
		t.Errorf("the new daemon's session: %q %v", buf, err)
	}
	nc.Close()
	later("with a new app attached")

	for i, o := range []interface{ Close() error }{ca, ca2, cb, cb2, uc, pc, pcb, uln, tln, ln} {
		if err := o.Close(); err != nil {
			t.Errorf("Close %d after the daemon stopped: %v", i, err)
		}
	}
	if err := a.Close(); err != nil {
		t.Errorf("App.Close: %v", err)
	}
	b.Close()
	nu.Close()
	d2.Close()
	snap.Check(t)
}
