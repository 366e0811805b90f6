package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/sessions"
)

// churnState is what the daemon keeps for an app once a churn settled.
// (What the process holds, its descriptors and goroutines, is a
// leakcheck snapshot of the test's.)
type churnState struct {
	mem     int64 // the app's fifo memory
	raw     int   // fifo pairs in the daemon's books before a readout
	tracked int   // fifo pairs in the daemon's books after a readout
	ended   int   // ended sessions the app has not closed
	fds     int   // the process's descriptors, for the log
	steered int   // entries of the XDP program's established and ports maps
}

// settledState waits until the layer has no session of app id left and
// its fifo memory stops falling, and returns the state then.
func settledState(t *testing.T, d *Daemon, bm *bpfMaps, id sessions.AppID) churnState {
	t.Helper()
	waitFor(t, "the app's sessions to end", 15*time.Second, func() bool {
		for _, s := range d.layer.Sessions() {
			if s.App == id {
				return false
			}
		}
		return true
	})
	// Ports held for TIME-WAIT go on the datapath's next sweep, each
	// second: the descriptors are looked at once they stopped falling.
	last, fds, since := d.appFifoMemory(id), openFDs(t), time.Now()
	for time.Since(since) < 1500*time.Millisecond {
		time.Sleep(20 * time.Millisecond)
		if m, n := d.appFifoMemory(id), openFDs(t); m != last || n != fds {
			last, fds, since = m, n, time.Now()
		}
	}
	raw := d.trackedFifos(id)
	c := bm.counts(t)
	d.fifoFill()
	st := churnState{mem: last, raw: raw, tracked: d.trackedFifos(id), fds: fds, steered: c["established"] + c["ports"]}
	for _, a := range d.layer.Apps() {
		if a.ID == id {
			st.ended = a.Ended
		}
	}
	return st
}

// TestChurnGivesFifoMemoryBack: the wire and cut-through sessions of an
// app attached for long come and go in every way a server sees (reset
// by the peer after and before Accept, closed by the peer before
// Accept, queued when the listener closes, dials cancelled at random
// points, dials refused, orphaned closes, cut-through sessions closed
// by either end); the fifo memory of the app's segments, the daemon's
// books of its sessions, the process's goroutines and descriptors come
// back to where they were after a warm-up: the very ones (leakcheck's
// sets), polled for a while, as what closes late (the ports held for
// TIME-WAIT, released by the datapath's sweep each second; a handler's
// goroutine returning) goes.
func TestChurnGivesFifoMemoryBack(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.Stack.TimeWait = 200 * time.Millisecond })
	bm := openBPFMaps(t, rig)
	const warmup, rounds = 10, 60
	kernelDial := func(port uint16) (net.Conn, error) {
		var c net.Conn
		err := rig.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, port).String(), 5*time.Second)
			return err
		})
		return c, err
	}
	resetConn := func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	readToEnd := func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	}
	serve := func(ln net.Listener, fn func(c net.Conn)) {
		serveEach(ln, fn)
	}
	echo := kernelListen(t, rig.A, ":7614")
	go echoServe(echo)
	run := func(t *testing.T, a *app.App, round func(i int) error) {
		t.Helper()
		id := appIDOf(a)
		for i := range warmup {
			if err := round(i); err != nil {
				t.Fatalf("warm-up round %d: %v", i, err)
			}
		}
		// The daemon keeps its copies of the descriptors of its last
		// reply to the app (a cut-through session's segment and
		// eventfd) until the app's next request: a listener opened and
		// closed, whose replies carry none, lets go of them before each
		// look.
		nextRequest := func() {
			t.Helper()
			ln, err := a.Listen("tcp://127.0.0.1:7619")
			if err != nil {
				t.Fatal(err)
			}
			if err := ln.Close(); err != nil {
				t.Fatal(err)
			}
		}
		nextRequest()
		before := settledState(t, d, bm, id)
		leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 15 * time.Second})
		for i := range rounds {
			if err := round(i); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
		nextRequest()
		after := settledState(t, d, bm, id)
		t.Logf("after warm-up %+v; after %d more rounds %+v", before, rounds, after)
		// The books before a readout may hold more: the pairs of
		// sessions that ended without an event to take them out are
		// forgotten at the next readout (tracked).
		if after.mem > before.mem || after.tracked > before.tracked || after.ended > before.ended || after.raw > before.raw+rounds/10 || after.steered > before.steered {
			t.Errorf("the app's fifo memory went from %d to %d bytes, its books from %d to %d pairs (%d to %d before a readout), its ended sessions from %d to %d, the entries steered from %d to %d",
				before.mem, after.mem, before.tracked, after.tracked, before.raw, after.raw, before.ended, after.ended, before.steered, after.steered)
		}
		if err := leaks.Wait(); err != nil {
			t.Errorf("after %d rounds: %v", rounds, err)
		}
	}

	t.Run("accepted, reset by peer", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "srv"})
		ln := listenApp(t, a, "tcp://0.0.0.0:7611")
		got := make(chan struct{}, 1)
		go serve(ln, func(c net.Conn) {
			got <- struct{}{}
			readToEnd(c)
		})
		run(t, a, func(int) error {
			k, err := kernelDial(7611)
			if err != nil {
				return err
			}
			<-got
			resetConn(k)
			return nil
		})
	})
	t.Run("reset or closed before Accept", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "srv"})
		ln := listenApp(t, a, "tcp://0.0.0.0:7612")
		done := make(chan struct{}, 1)
		go serve(ln, func(c net.Conn) {
			readToEnd(c)
			done <- struct{}{}
		})
		run(t, a, func(i int) error {
			k, err := kernelDial(7612)
			if err != nil {
				return err
			}
			if i%2 == 0 {
				resetConn(k)
			} else {
				k.Close()
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				return errors.New("no accept")
			}
			return nil
		})
	})
	t.Run("queued when the listener closes", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "srv"})
		run(t, a, func(i int) error {
			ln, err := a.Listen("tcp://0.0.0.0:7613")
			if err != nil {
				return err
			}
			var ks []net.Conn
			for j := range 3 {
				k, err := kernelDial(7613)
				if err != nil {
					ln.Close()
					return err
				}
				switch j {
				case 1:
					resetConn(k)
				case 2:
					k.Close()
				default:
					ks = append(ks, k)
				}
			}
			time.Sleep(time.Duration(i%4) * time.Millisecond)
			ln.Close()
			for _, k := range ks {
				k.Close()
			}
			return nil
		})
	})
	t.Run("dial cancelled", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "cli"})
		rnd := rand.New(rand.NewPCG(1, 2))
		uri := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7614).String()
		// The dials of the rounds after the warm-up, and those of them
		// cancelled.
		var calls, dials, cancelled int
		run(t, a, func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rnd.IntN(1500))*time.Microsecond)
			defer cancel()
			c, err := a.Dial(ctx, uri)
			if calls++; calls > warmup {
				dials++
			}
			switch {
			case err == nil:
				c.Close()
			case errors.Is(err, context.DeadlineExceeded):
				if calls > warmup {
					cancelled++
				}
			default:
				return fmt.Errorf("dial: %w; want it connected or cancelled", err)
			}
			return nil
		})
		// A dial given 1.5 ms at most is cancelled now and then (a
		// third of them here, more on a slower machine).
		t.Logf("%d of %d dials cancelled", cancelled, dials)
		if cancelled == 0 {
			t.Errorf("none of %d dials cancelled: the rounds did not churn what they are for", dials)
		}
	})
	t.Run("dial refused", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "cli"})
		uri := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7615).String()
		run(t, a, func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c, err := a.Dial(ctx, uri); err == nil {
				c.Close()
				return errors.New("dial of a closed port succeeded")
			}
			return nil
		})
	})
	t.Run("orphaned close and peer closes first", func(t *testing.T) {
		a := attach(t, d, app.Options{Name: "cli"})
		uri := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7614).String()
		run(t, a, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := a.Dial(ctx, uri)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
				return err
			}
			if i%2 == 1 {
				c.(*app.Conn).CloseWrite()
				io.Copy(io.Discard, c)
			}
			return c.Close()
		})
	})
	t.Run("cut-through", func(t *testing.T) {
		srv := attach(t, d, app.Options{Name: "srv"})
		a := attach(t, d, app.Options{Name: "cli"})
		ln := listenApp(t, srv, "tcp://127.0.0.1:7616")
		accepted := make(chan net.Conn, 1)
		go serve(ln, func(c net.Conn) {
			accepted <- c
			readToEnd(c)
		})
		run(t, a, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := a.Dial(ctx, "tcp://127.0.0.1:7616")
			if err != nil {
				return err
			}
			s := <-accepted
			switch i % 3 {
			case 0:
				c.Close()
			case 1:
				c.(*app.Conn).SetLinger(0)
				c.Close()
			case 2:
				s.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}
			return nil
		})
	})
	t.Run("cut-through udp", func(t *testing.T) {
		srv := attach(t, d, app.Options{Name: "srv"})
		a := attach(t, d, app.Options{Name: "cli"})
		pc, err := srv.ListenPacket("udp://127.0.0.1:7617")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go echoPackets(pc)
		ul, err := srv.Listen("udp://127.0.0.1:7618")
		if err != nil {
			t.Fatal(err)
		}
		defer ul.Close()
		// A UDP session's reads do not end when its peer goes, as a
		// kernel UDP socket's do not: one datagram each.
		go serve(ul, func(c net.Conn) {
			b := make([]byte, 100)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(b); err == nil {
				c.Write(b[:n])
			}
		})
		run(t, a, func(i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			port := 7617 + i%2
			c, err := a.Dial(ctx, "udp://127.0.0.1:"+fmt.Sprint(port))
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			_, err = c.Read(make([]byte, 10))
			return err
		})
		t.Logf("server: %+v", settledState(t, d, bm, appIDOf(srv)))
	})
}
