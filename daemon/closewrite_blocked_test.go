package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// TestCloseUnblocksWrite: closing a Conn, a PacketConn, the App or the
// daemon while another goroutine is blocked writing (its tx fifo full, the
// peer not reading) wakes that writer with an error wrapping net.ErrClosed,
// as closing a net.Conn does, and the writer touches no fifo after the
// close unmapped it (it did: a fault that killed the process).
func TestCloseUnblocksWrite(t *testing.T) {
	// blocked starts write in a goroutine, waits until it sleeps for room,
	// runs stop, and checks what write returned.
	blocked := func(t *testing.T, write func() error, stop func()) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- write() }()
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("the write did not block: %v", err)
		default:
		}
		stop()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked write: %v, want an error wrapping net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the close did not wake the blocked write")
		}
	}
	// stream returns a cut-through TCP session of 4 KiB fifos whose peer
	// never reads.
	stream := func(t *testing.T) (*Daemon, *app.App, net.Conn) {
		d, cli, ln := streamCutThroughApps(t)
		c, sc := ctStream(t, cli, ln)
		t.Cleanup(func() { sc.Close() })
		return d, cli, c
	}
	big := make([]byte, 1<<20)
	writeAll := func(c net.Conn) func() error {
		return func() error { _, err := c.Write(big); return err }
	}

	t.Run("tcp-conn", func(t *testing.T) {
		_, _, c := stream(t)
		blocked(t, writeAll(c), func() { c.Close() })
	})
	t.Run("app", func(t *testing.T) {
		_, cli, c := stream(t)
		blocked(t, writeAll(c), func() { cli.Close() })
	})
	t.Run("daemon", func(t *testing.T) {
		d, cli, c := stream(t)
		blocked(t, writeAll(c), func() {
			d.Close()
			<-cli.Done()
			cli.Close() // unmaps the segments, as an app that lost its daemon does
		})
	})

	// A UDP listener that never reads, and a client's cut-through session
	// to it.
	dgram := func(t *testing.T) (net.PacketConn, net.Conn) {
		d := startDaemon(t)
		srv := attach(t, d, app.Options{Name: "srv", RxFifoSize: 4096, TxFifoSize: 4096})
		cli := attach(t, d, app.Options{Name: "cli", RxFifoSize: 4096, TxFifoSize: 4096})
		pc, err := srv.ListenPacket("udp://0.0.0.0:9000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		c, err := cli.Dial(t.Context(), "udp://127.0.0.1:9000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return pc, c
	}
	t.Run("udp-conn", func(t *testing.T) {
		_, c := dgram(t)
		blocked(t, func() error {
			for {
				if _, err := c.Write(make([]byte, 500)); err != nil {
					return err
				}
			}
		}, func() { c.Close() })
	})
	t.Run("packetconn", func(t *testing.T) {
		pc, c := dgram(t)
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := pc.ReadFrom(make([]byte, 16))
		if err != nil {
			t.Fatal(err)
		}
		blocked(t, func() error {
			for {
				if _, err := pc.WriteTo(make([]byte, 500), from); err != nil {
					return err
				}
			}
		}, func() { pc.Close() })
	})
}

// ctStream dials cli's cut-through TCP session to the listener ln of
// streamCutThroughApps and accepts it: the client's end and the server's.
func ctStream(t *testing.T, cli *app.App, ln net.Listener) (c, sc net.Conn) {
	t.Helper()
	c, err := cli.Dial(t.Context(), "tcp://127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	if sc, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return c, sc
}

// churn dials with dial until ctx ends or a dial fails; it reads and
// writes each connection from two goroutines until the connection ends,
// half-closes it first at random when halfClose, and closes it after up to
// maxLife.
func churn(ctx context.Context, dial func(context.Context) (net.Conn, error), maxLife time.Duration, halfClose bool) {
	for ctx.Err() == nil {
		c, err := dial(ctx)
		if err != nil {
			return
		}
		var rw sync.WaitGroup
		rw.Add(2)
		go func() {
			defer rw.Done()
			b := make([]byte, 5000)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
			}
		}()
		go func() {
			defer rw.Done()
			b := make([]byte, 1400)
			for {
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}()
		time.Sleep(rand.N(maxLife))
		if cw, ok := c.(interface{ CloseWrite() error }); ok && halfClose && rand.IntN(2) == 0 {
			cw.CloseWrite()
			time.Sleep(time.Millisecond)
		}
		c.Close()
		rw.Wait()
	}
}

// waitReturned waits for wg, failing t if that takes more than 10 s.
func waitReturned(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: calls still blocked 10 s after the close", what)
	}
}

// TestCloseBlockedWriteBusyApp: the app's event goroutine looks at the fifos
// of every call blocked in it whenever any of its sessions has an event.
// Closing a cut-through session with a Write blocked on it, over and over
// while another session of the app keeps a ping-pong going, must never
// have it look at the closed session's unmapped fifos (it did: a fault
// within the first rounds).
func TestCloseBlockedWriteBusyApp(t *testing.T) {
	_, cli, ln := streamCutThroughApps(t)
	bg, bs := ctStream(t, cli, ln)
	defer bs.Close()
	pong := func(c net.Conn, first bool) {
		b := make([]byte, 1)
		for {
			if first {
				if _, err := c.Write(b); err != nil {
					return
				}
			}
			first = true
			if _, err := c.Read(b); err != nil {
				return
			}
		}
	}
	go pong(bs, true)
	go pong(bg, false)
	stop := time.Now().Add(2 * time.Second)
	for round := 0; round < 150 && time.Now().Before(stop); round++ {
		c, sc := ctStream(t, cli, ln)
		errc := make(chan error, 1)
		go func() { _, err := c.Write(make([]byte, 1<<16)); errc <- err }()
		time.Sleep(2 * time.Millisecond)
		c.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("round %d: blocked write: %v, want net.ErrClosed", round, err)
		}
		sc.Close()
	}
	bg.Close()
}

// TestCloseStress: rounds of two apps, eight clients dialing TCP and UDP
// cut-through sessions, reading and writing on each from two goroutines and
// closing it after a random while, and then one of the apps closed (or the
// listeners and the client) under them. Every call returns; nothing faults
// (a use of unmapped fifos did within the first round), and the race
// detector, when on, sees no race.
func TestCloseStress(t *testing.T) {
	d := startDaemon(t)
	end := time.Now().Add(3 * time.Second)
	round := 0
	for time.Now().Before(end) {
		round++
		srv := attach(t, d, app.Options{Name: "srv", RxFifoSize: 4096, TxFifoSize: 4096})
		cli := attach(t, d, app.Options{Name: "cli", RxFifoSize: 4096, TxFifoSize: 4096})
		ln, err := srv.Listen("tcp://0.0.0.0:7000")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := srv.ListenPacket("udp://0.0.0.0:9000")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		go serveEach(ln, func(c net.Conn) {
			b := make([]byte, 3000)
			for {
				n, err := c.Read(b)
				if err != nil {
					return
				}
				if rand.IntN(3) == 0 {
					if _, err := c.Write(b[:n]); err != nil {
						return
					}
				}
			}
		})
		go func() {
			b := make([]byte, 2000)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo(b[:n], from)
			}
		}()
		for i := range 8 {
			uri := "tcp://127.0.0.1:7000"
			if i%2 == 1 {
				uri = "udp://127.0.0.1:9000"
			}
			wg.Go(func() {
				churn(ctx, func(ctx context.Context) (net.Conn, error) { return cli.Dial(ctx, uri) }, 3*time.Millisecond, false)
			})
		}
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		switch rand.IntN(3) {
		case 0:
			cli.Close()
		case 1:
			srv.Close()
		case 2:
			ln.Close()
			pc.Close()
			cli.Close()
		}
		cancel()
		waitReturned(t, &wg, fmt.Sprintf("round %d", round))
		srv.Close()
		cli.Close()
	}
	t.Logf("%d rounds", round)
}
