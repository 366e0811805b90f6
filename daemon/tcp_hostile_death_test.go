package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// tcpChildApp is an app with wire TCP sessions in every state an app can
// die in: one whose writes fill its tx fifo and gVisor's send buffer (its
// peer reads nothing), one whose peer's data it leaves unread, one in its
// handshake (to an address nobody answers), and a listener with a session
// accepted and one not taken. It says "listening" once its listener is
// open, "ready" once the rest is under way, and waits to be killed.
func tcpChildApp(sock, peer string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "tcpchild", RxFifoSize: 16 << 10, TxFifoSize: 16 << 10})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	ln, err := a.Listen("tcp://0.0.0.0:7823")
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			select {} // holds it, reads nothing
		}
	}()
	fmt.Println("listening")
	sink, err := a.Dial(ctx, "tcp://"+peer+":7820")
	if err != nil {
		fmt.Println("dial sink:", err)
		return 1
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := sink.Write(buf); err != nil {
				return
			}
		}
	}()
	if _, err := a.Dial(ctx, "tcp://"+peer+":7821"); err != nil { // the peer talks, nobody reads
		fmt.Println("dial talker:", err)
		return 1
	}
	go a.Dial(ctx, "tcp://10.77.0.99:7822") // nobody answers
	time.Sleep(300 * time.Millisecond)      // the writes fill what they can
	fmt.Println("ready")
	select {}
}

// TestTCPHostileAppDeath kills (SIGKILL) an app with wire TCP sessions in
// every state (tcpChildApp): within a second the daemon holds no session,
// connection, listener, gVisor endpoint, port reservation, descriptor or
// goroutine of it, and every kernel peer it had has seen the reset.
func TestTCPHostileAppDeath(t *testing.T) {
	rig, d := tcpRig(t)
	// The sink reads nothing, with a small receive buffer; the talker
	// sends 1 MiB. Each reports how its connection ended, read to its
	// end after the kill.
	ended := make(chan error, 8)
	var sinkLn net.Listener
	if err := rig.A.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		}}
		var err error
		sinkLn, err = lc.Listen(context.Background(), "tcp", ":7820")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sinkLn.Close() })
	killed := make(chan struct{})
	go serveEach(sinkLn, func(c net.Conn) {
		<-killed
		_, err := io.Copy(io.Discard, c)
		ended <- fmt.Errorf("sink: %w", err)
	})
	talker := kernelListen(t, rig.A, ":7821")
	go serveEach(talker, func(c net.Conn) {
		// A write the reset ends takes its error (the kernel reports it
		// once): the read after it ends with EOF then.
		_, err := c.Write(make([]byte, 1<<20))
		if err == nil {
			_, err = io.Copy(io.Discard, c)
		}
		ended <- fmt.Errorf("talker: %w", err)
	})

	// Warm up what the daemon starts once (gVisor's goroutines, the
	// neighbour of A) before the leak check looks: a connect refused
	// holds nothing after.
	warm := attach(t, d, app.Options{Name: "warm"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := warm.Dial(ctx, fmt.Sprintf("tcp://%s:7829", rig.A.IPv4)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("warm-up dial to a closed port: %v", err)
	}
	warm.Close()
	eng := d.Engine()
	waitFor(t, "the warm-up app to go", 5*time.Second, func() bool {
		return len(d.layer.Sessions()) == 0 && eng.TCPStats().Conns == 0 && len(d.layer.Apps()) == 0
	})
	// The resolver's wait for the neighbour nobody answers (up to 5 s,
	// not the app's) ends after the second.
	baseRes := reservations(t)
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 10 * time.Second})
	base := eng.TCPStats()

	// The child app: its argument is host A's address.
	ch := startChildApp(t, "tcp", d.Socket(), rig.A.IPv4.String())
	cmd := ch.cmd
	expect := func(word string) { ch.expect(t, word) }
	expect("listening")
	// Two kernel clients of the child's listener, each sending.
	clients := make([]net.Conn, 2)
	for i := range clients {
		if err := rig.A.Do(func() error {
			var err error
			clients[i], err = net.DialTimeout("tcp", fmt.Sprintf("%s:7823", rig.B.IPv4), 3*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
		clients[i].Write(make([]byte, 64<<10))
	}
	expect("ready")
	waitFor(t, "the child's five sessions", 5*time.Second, func() bool {
		n, half := 0, 0
		for _, s := range d.layer.Sessions() {
			n++
			if s.State == "half-open" {
				half++
			}
		}
		return n == 5 && half == 1
	})
	t.Logf("before the kill: %d connections, %d gVisor endpoints, %d buffer bytes", eng.TCPStats().Conns, eng.TCPStats().Endpoints, eng.TCPStats().Buffers.Bytes)

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	at := time.Now()
	close(killed)
	for _, c := range clients {
		go func() {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := io.Copy(io.Discard, c)
			c.Close() // not to be counted among the reservations
			ended <- fmt.Errorf("client of the listener: %w", err)
		}()
	}
	for range 4 {
		select {
		case err := <-ended:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%v, want a reset", err)
			}
		case <-time.After(time.Until(at.Add(time.Second))):
			t.Fatal("a peer of the killed app did not see its end within a second of the kill")
		}
	}
	deadline := at.Add(time.Second)
	for {
		st := eng.TCPStats()
		apps, ss, res := len(d.layer.Apps()), len(d.layer.Sessions()), reservations(t)
		clean := apps == 0 && ss == 0 && st.Conns == 0 && st.Listeners == base.Listeners && st.Orphans == 0 &&
			st.Lingering == 0 && st.Endpoints == base.Endpoints && st.Buffers.Bytes == 0 && res <= baseRes
		if clean {
			t.Logf("reclaimed %v after the kill", time.Since(at).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a second after the kill: %d apps, %d sessions, %d port reservations (before: %d), tcp %+v (before: %d listeners, %d endpoints)",
				apps, ss, res, baseRes, st, base.Listeners, base.Endpoints)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := leaks.Wait(); err != nil {
		t.Fatal(err)
	}
}

// reservations counts the process's TCP sockets that are bound to a port,
// neither listening nor connected: the daemon's holds of ports in the
// kernel (tcpReservation), when the test closed its own sockets that a
// reset left unconnected.
func reservations(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l != 0 {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if _, err := unix.Getpeername(fd); err == nil {
			continue // connected: a kernel peer of the test's
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			if a.Port != 0 {
				n++
			}
		case *unix.SockaddrInet6:
			if a.Port != 0 {
				n++
			}
		}
	}
	return n
}
