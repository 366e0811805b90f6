package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// TestTCPCloseUnreadResets: an app's Close of a wire TCP session behaves as
// close(2) on Linux. With data left unread, or data the peer sends after
// the close, the connection is reset at once (the kernel peer sees
// ECONNRESET, the daemon keeps nothing of it); with everything read, the
// peer reads the app's data and then EOF. (The daemon used to go on
// filling the rx fifo nobody read and hold the connection, its port and
// its buffers until the 60 s close timeout: a peer that writes before it
// reads never saw our FIN.)
func TestTCPCloseUnreadResets(t *testing.T) {
	rig, d := tcpRig(t)
	eng := d.Engine()
	a := attach(t, d, app.Options{Name: "closer"})
	ln, err := a.Listen("tcp://0.0.0.0:7300")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// pair connects a kernel client on host A to the app's listener: the
	// client's end and the app's.
	pair := func(t *testing.T) (k, s net.Conn) {
		t.Helper()
		if err := rig.A.Do(func() error {
			var err error
			k, err = net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7300).String(), 3*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { k.Close() })
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return k, s
	}
	// readEnd reads c until it ends and returns how.
	readEnd := func(c net.Conn) ([]byte, error) {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		return io.ReadAll(c)
	}
	aborted := func() uint64 { return eng.TCPStats().AbortedOnClose }
	noConns := func(what string) {
		t.Helper()
		waitFor(t, what, 2*time.Second, func() bool { return eng.TCPStats().Conns == 0 })
	}

	t.Run("unread", func(t *testing.T) {
		before := aborted()
		k, s := pair(t)
		if _, err := k.Write(make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // in the app's rx fifo, unread
		start := time.Now()
		s.Close()
		if _, err := readEnd(k); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the kernel peer after the app's close with data unread: %v, want ECONNRESET", err)
		}
		t.Logf("reset %v after the close", time.Since(start).Round(time.Millisecond))
		noConns("the connection to end")
		if n := aborted() - before; n != 1 {
			t.Errorf("aborted on close: %d, want 1", n)
		}
	})

	t.Run("data-after", func(t *testing.T) {
		// The peer echoes everything, writing before it reads; the app
		// writes and closes without reading the echo.
		before := aborted()
		k, s := pair(t)
		echoed := make(chan error, 1)
		go func() { _, err := io.Copy(k, k); echoed <- err }()
		if _, err := s.Write(make([]byte, 4<<20)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		select {
		case err := <-echoed:
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Fatalf("the echoing kernel peer: %v, want ECONNRESET or EPIPE", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the echoing kernel peer was neither closed nor reset 5 s after the app's close")
		}
		noConns("the connection to end")
		if n := aborted() - before; n != 1 {
			t.Errorf("aborted on close: %d, want 1", n)
		}
	})

	t.Run("all-read", func(t *testing.T) {
		before := aborted()
		k, s := pair(t)
		data := make([]byte, 64<<10)
		for i := range data {
			data[i] = byte(i % 251)
		}
		if _, err := k.Write(data); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(s, make([]byte, len(data))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(data); err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := readEnd(k)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the kernel peer after the app's close with everything read: %d bytes, %v; want %d and EOF", len(got), err, len(data))
		}
		if n := aborted() - before; n != 0 {
			t.Errorf("aborted on close: %d, want 0", n)
		}
	})
}

// TestTCPCloseStress: rounds of an app dialing TCP and UDP to kernel echo
// servers on host A from eight goroutines, reading and writing each
// connection from two more, half-closing some and closing each after a
// random while, and the app closed under them. Every call returns, nothing
// faults, and once the rounds end every session and connection ends within
// seconds, with no descriptor or goroutine left behind. (It found a
// writer's use of unmapped fifos after the app's Close, and connections
// held for the 60 s close timeout with their app's rx fifo full.)
func TestTCPCloseStress(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.Stack.TimeWait = time.Second })
	kl := kernelListen(t, rig.A, ":7800")
	go serveEach(kl, func(c net.Conn) { io.Copy(c, c) })
	ku, err := rig.A.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7801), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ku.Close()
	go echoUDP(ku)
	eng := d.Engine()
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 20 * time.Second})
	tcpURI := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7800).String()
	udpURI := "udp://" + netip.AddrPortFrom(rig.A.IPv4, 7801).String()
	end := time.Now().Add(5 * time.Second)
	round := 0
	for ; time.Now().Before(end); round++ {
		cli := attach(t, d, app.Options{Name: "cli", RxFifoSize: 8192, TxFifoSize: 8192})
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for i := range 8 {
			uri := tcpURI
			if i%2 == 1 {
				uri = udpURI
			}
			wg.Go(func() {
				churn(ctx, func(ctx context.Context) (net.Conn, error) { return cli.Dial(ctx, uri) }, 5*time.Millisecond, true)
			})
		}
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		cli.Close()
		cancel()
		waitReturned(t, &wg, fmt.Sprintf("round %d", round))
	}
	waitFor(t, "every session and connection to end", 5*time.Second, func() bool {
		return len(d.layer.Sessions()) == 0 && eng.TCPStats().Conns == 0
	})
	if err := leaks.Wait(); err != nil {
		t.Fatal(err)
	}
	st := eng.TCPStats()
	t.Logf("%d rounds; tcp: %d aborted on close, %d resets sent, %d received", round, st.AbortedOnClose, st.ResetsSent, st.ResetsRecv)
}

// TestStreamCutThroughCloseUnread: the same close(2) rule between two apps
// of the host: a cut-through TCP session closed with data its app did not
// read gives the peer what it had queued, then ECONNRESET; closed with
// everything read, then EOF.
func TestStreamCutThroughCloseUnread(t *testing.T) {
	_, cli, ln := streamCutThroughApps(t)
	for _, unread := range []bool{true, false} {
		c, sc := ctStream(t, cli, ln)
		if _, err := sc.Write([]byte("to the client")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("to the server")); err != nil {
			t.Fatal(err)
		}
		if !unread {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, len("to the client"))); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		sc.SetReadDeadline(time.Now().Add(3 * time.Second))
		got, err := io.ReadAll(sc)
		if string(got) != "to the server" {
			t.Errorf("unread %v: the server read %q before the end", unread, got)
		}
		if want := syscall.ECONNRESET; unread && !errors.Is(err, want) {
			t.Errorf("the client closed with data unread: the server's read ended with %v, want %v", err, want)
		}
		if !unread && err != nil {
			t.Errorf("the client closed with everything read: the server's read ended with %v, want EOF", err)
		}
		sc.Close()
	}
}
