package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"golang.org/x/sys/unix"
)

// linger is the part of net.TCPConn an app's Conn shares for SetLinger.
type linger interface{ SetLinger(sec int) error }

// TestTCPSetLingerZero: after SetLinger(0), Close resets a TCP session as
// close(2) of a kernel socket with a zero SO_LINGER does: a kernel peer on
// host A, on a connection the app dialed and on one it accepted, reads
// ECONNRESET where a plain Close gives it EOF; a cut-through peer reads
// what was queued for it, then ECONNRESET. A second Close fails with
// net.ErrClosed, as do the setters after Close; SetLinger of a UDP
// session is not supported; another app's Abort of the session is
// refused.
func TestTCPSetLingerZero(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "linger"})

	// readEnd reads c until it fails and returns the error (io.EOF for an
	// orderly end).
	readEnd := func(c net.Conn) error {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		return err
	}

	// The app dials a kernel server on host A, which reports how its
	// connection ended once it read the greeting.
	kl := kernelListen(t, rig.A, ":7210")
	ends := make(chan error, 2)
	go serveEach(kl, func(c net.Conn) {
		var hello [5]byte
		if _, err := io.ReadFull(c, hello[:]); err != nil {
			ends <- err
			return
		}
		ends <- readEnd(c)
	})
	for _, reset := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7210).String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if reset {
			if err := c.(linger).SetLinger(0); err != nil {
				t.Fatalf("set linger: %v", err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second close: %v, want net.ErrClosed", err)
		}
		if err := c.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("set deadline after close: %v, want net.ErrClosed", err)
		}
		if err := c.(linger).SetLinger(0); !errors.Is(err, net.ErrClosed) {
			t.Errorf("set linger after close: %v, want net.ErrClosed", err)
		}
		want := io.EOF
		if reset {
			want = syscall.ECONNRESET
		}
		if err := <-ends; !errors.Is(err, want) {
			t.Errorf("reset %v: the kernel server's read ended with %v, want %v", reset, err, want)
		}
	}

	// A kernel client on host A connects to the app, which closes the
	// connection it accepted with a reset.
	ln, err := a.Listen("tcp://" + netip.AddrPortFrom(rig.B.IPv4, 7211).String())
	if err != nil {
		t.Fatal(err)
	}
	go serveEach(ln, func(c net.Conn) {
		var hi [2]byte
		if _, err := io.ReadFull(c, hi[:]); err == nil {
			c.(linger).SetLinger(0)
		}
	})
	err = rig.A.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7211).String(), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		return readEnd(c)
	})
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the kernel client's read ended with %v, want ECONNRESET", err)
	}
	ln.Close()
	if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second close of a listener: %v, want net.ErrClosed", err)
	}

	// Cut-through: the peer reads what was queued, then ECONNRESET.
	local := "tcp://" + netip.AddrPortFrom(rig.B.IPv4, 7212).String()
	cln, err := a.Listen(local)
	if err != nil {
		t.Fatal(err)
	}
	defer cln.Close()
	c, err := a.Dial(t.Context(), local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := cln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	// Another app cannot reset it.
	other := rawApp(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, fds, err := other.Call(ctx, &api.Abort{Handle: sc.(*app.Conn).Handle()})
	cancel()
	api.CloseFDs(fds)
	if !errors.Is(err, flow.ErrNotOwner) {
		t.Errorf("another app's abort of the session: %v, want flow.ErrNotOwner", err)
	}
	sc.(linger).SetLinger(0)
	sc.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if string(got) != "queued" || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("cut-through peer read %q, then %v; want \"queued\", then ECONNRESET", got, err)
	}

	pc, err := a.ListenPacket("udp://" + netip.AddrPortFrom(rig.B.IPv4, 7213).String())
	if err != nil {
		t.Fatal(err)
	}
	u, err := a.Dial(t.Context(), "udp://"+netip.AddrPortFrom(rig.B.IPv4, 7213).String())
	if err != nil {
		t.Fatal(err)
	}
	if err := u.(linger).SetLinger(0); !errors.Is(err, flow.ErrNotSupported) {
		t.Errorf("set linger of a UDP session: %v, want flow.ErrNotSupported", err)
	}
	u.Close()
	pc.Close()
	if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second close of a packet listener: %v, want net.ErrClosed", err)
	}
	if err := pc.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("set deadline of a closed packet listener: %v, want net.ErrClosed", err)
	}
}

// TestTCPCloseRead: CloseRead ends a waiting Read with io.EOF, and later
// reads return what comes, then io.EOF where they would wait, as after
// shutdown(SHUT_RD) of a kernel socket on Linux, while the session goes
// on sending: on the wire to a kernel server on host A and cut-through.
func TestTCPCloseRead(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "closeread"})
	kl := kernelListen(t, rig.A, ":7220")
	go echoServe(kl)
	local := "tcp://" + netip.AddrPortFrom(rig.B.IPv4, 7221).String()
	ln, err := a.Listen(local)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServe(ln)
	for _, uri := range []string{"tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7220).String(), local} {
		c, err := a.Dial(t.Context(), uri)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "ping" {
			t.Fatalf("%s: echo %q, %v", uri, b, err)
		}
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(b[:])
			read <- err
		}()
		time.Sleep(50 * time.Millisecond) // the Read waits
		if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatalf("%s: close read: %v", uri, err)
		}
		select {
		case err := <-read:
			if err != io.EOF {
				t.Errorf("%s: waiting read after CloseRead: %v, want io.EOF", uri, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: a waiting Read did not return after CloseRead", uri)
		}
		if n, err := c.Read(b[:]); n != 0 || err != io.EOF {
			t.Errorf("%s: read of nothing after CloseRead: %d, %v; want 0, io.EOF at once", uri, n, err)
		}
		if _, err := c.Write([]byte("more")); err != nil {
			t.Errorf("%s: write after CloseRead: %v", uri, err)
		}
		// What comes after is read as on Linux: the echo, then io.EOF
		// where a read would wait.
		var got []byte
		for deadline := time.Now().Add(5 * time.Second); len(got) < 4 && time.Now().Before(deadline); {
			n, _ := c.Read(b[:])
			got = append(got, b[:n]...)
			if n == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if string(got) != "more" {
			t.Errorf("%s: read after CloseRead: %q, want the echo \"more\"", uri, got)
		}
		if n, err := c.Read(b[:]); n != 0 || err != io.EOF {
			t.Errorf("%s: read after the echo: %d, %v; want 0, io.EOF", uri, n, err)
		}
		c.Close()
	}
}

// TestListenerDeadline: SetDeadline bounds Accept as a net.TCPListener's
// does: a waiting Accept fails at the deadline with a timeout error
// (os.ErrDeadlineExceeded), one after it at once, even with a session
// waiting; the zero time lifts it and Accept takes that session.
func TestListenerDeadline(t *testing.T) {
	_, cli, ln := streamCutThroughApps(t)
	dl := ln.(interface{ SetDeadline(time.Time) error })
	if err := dl.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := ln.Accept()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("accept past the deadline: %v, want a timeout", err)
	}
	if took := time.Since(start); took < 90*time.Millisecond || took > 5*time.Second {
		t.Errorf("accept returned after %v, want about 100ms", took)
	}
	if _, err := ln.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("accept after the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	// A session waiting does not get past the deadline either.
	c, err := cli.Dial(t.Context(), "tcp://127.0.0.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := ln.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("accept after the deadline, a session waiting: %v, want os.ErrDeadlineExceeded", err)
	}
	if err := dl.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept without a deadline: %v", err)
	}
	sc.Close()
	ln.Close()
	if err := dl.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("set deadline of a closed listener: %v, want net.ErrClosed", err)
	}
}

// TestTCPResetFreesPort: the local port of a connection an app dialed and
// closed with a reset (SetLinger(0)) is free in the kernel at once, as
// after a kernel socket's RST; so is the port of one whose peer closed
// first (no TIME-WAIT on this side, as on Linux); one the app closed first
// stays held while the connection is in TIME-WAIT. (Reset connections,
// and those the peer closed first, used to hold their ports for TIME-WAIT
// too: under a churn of dials, two thirds of them reset, the daemon held
// three descriptors for each connection in TIME-WAIT.)
func TestTCPResetFreesPort(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, ":7230")
	go serveEach(kl, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	// A server that closes first: it reads one byte and closes.
	kc := kernelListen(t, rig.A, ":7231")
	go serveEach(kc, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)) })
	a := attach(t, d, app.Options{Name: "resetport"})
	// bindFree reports whether a kernel socket on host B can bind the
	// address (no SO_REUSEADDR: any socket bound there refuses it).
	bindFree := func(addr netip.AddrPort) bool {
		free := false
		if err := rig.B.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			free = unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}) == nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return free
	}
	// dial connects to port on host A and writes a byte.
	dial := func(port uint16) (net.Conn, netip.AddrPort) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, port).String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		return c, c.LocalAddr().(*net.TCPAddr).AddrPort()
	}
	for _, reset := range []bool{false, true} {
		c, local := dial(7230)
		if bindFree(local) {
			t.Fatalf("%v: the port of an open connection is free in the kernel", local)
		}
		if reset {
			c.(linger).SetLinger(0)
		}
		c.Close()
		if reset {
			waitFor(t, "the port of a reset connection free", 5*time.Second, func() bool { return bindFree(local) })
			continue
		}
		time.Sleep(300 * time.Millisecond) // the FINs exchanged
		if bindFree(local) {
			t.Errorf("%v: the port of a connection in TIME-WAIT is free in the kernel", local)
		}
	}

	c, local := dial(7231)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the server's close: %v, want io.EOF", err)
	}
	c.Close()
	// The port goes once the last acknowledgement is in; the daemon
	// looks for such ports every second.
	waitFor(t, "the port of a connection the peer closed first free", 5*time.Second, func() bool { return bindFree(local) })
}

// TestListenLoopback: on a daemon serving an interface, an app listens on
// loopback addresses (tcp://127.0.0.1, udp://[::1]), as a local-only
// kernel listener does, and another app of the host reaches each
// cut-through; another loopback address finds nothing. (Such a bind was
// refused: the address is not the interface's.)
func TestListenLoopback(t *testing.T) {
	_, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "lo-srv"})
	cli := attach(t, d, app.Options{Name: "lo-cli"})
	ln := listenEcho(t, srv, "tcp://127.0.0.1:7310")
	defer ln.Close()
	pc, err := srv.ListenPacket("udp://[::1]:7311")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPackets(pc)
	for _, uri := range []string{"tcp://127.0.0.1:7310", "udp://[::1]:7311"} {
		dialEcho(t, cli, uri, "loopback")
	}
	if _, err := cli.Dial(t.Context(), "tcp://127.0.0.2:7310"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial another loopback address: %v, want ECONNREFUSED", err)
	}
}

// TestUDPEmptyDatagram: a datagram with no payload is a datagram, as on a
// kernel socket: kernel clients on host A (IPv4 and IPv6) send empty ones
// to an app's PacketConn, which reads them (0 bytes, the sender's
// address) and sends empty ones back; a cut-through session carries one
// too.
func TestUDPEmptyDatagram(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "empty"})
	pc, err := a.ListenPacket("udp://:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPackets(pc)
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	echoFromBothFamilies(t, rig, port, "empty datagram", func(netip.AddrPort) []byte { return nil })
	c, err := a.Dial(t.Context(), "udp://"+netip.AddrPortFrom(netip.IPv6Loopback(), port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("cut-through write of an empty datagram: %d, %v", n, err)
	}
	b := make([]byte, 8)
	if n, err := c.Read(b); n != 0 || err != nil {
		t.Errorf("cut-through read of the empty echo: %d, %v; want 0, nil", n, err)
	}
}

// TestListenHostName: Listen and ListenPacket take a host name, as
// net.Listen does: tcp://localhost:PORT binds 127.0.0.1 (its first IPv4
// address), which another app dials by the same name; a name that does
// not resolve fails with the resolver's error.
func TestListenHostName(t *testing.T) {
	_, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "named-srv"})
	cli := attach(t, d, app.Options{Name: "named-cli"})
	ln := listenEcho(t, srv, "tcp://localhost:7330")
	defer ln.Close()
	if got := ln.Addr().String(); got != "127.0.0.1:7330" {
		t.Errorf("listener address %s, want 127.0.0.1:7330", got)
	}
	pc, err := srv.ListenPacket("udp://localhost:7331")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go echoPackets(pc)
	for _, uri := range []string{"tcp://localhost:7330", "udp://localhost:7331"} {
		dialEcho(t, cli, uri, "named")
	}
	var dnsErr *net.DNSError
	if _, err := srv.Listen("tcp://no-such-host.invalid:7332"); !errors.As(err, &dnsErr) {
		t.Errorf("listen on a name that does not resolve: %v, want a *net.DNSError", err)
	}
}

// TestTCPPeerClosesAtOnce: an app dials, in a loop, a kernel server that
// writes a line and closes at once, as a banner or an HTTP/1.0 server
// does; each connection reads the line, then io.EOF. Each dial reuses the
// handle of the connection closed before it, and the peer's FIN can reach
// the app before its Dial returns: it was taken for an event of the closed
// connection and lost, and the Read waited for good (one connection in
// 10–40 here); or, with dials on several goroutines, while the Close of
// the connection that had the handle was yet to unregister, it went to
// that connection. Then the other way: an app accepts from a kernel client
// that writes a line and shuts its side at once, reads to io.EOF and
// answers (an accept registers its connection as its event is handled,
// so these were not lost).
func TestTCPPeerClosesAtOnce(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, ":7232")
	go serveEach(kl, func(c net.Conn) { _, _ = c.Write([]byte("hello\n")) })
	a := attach(t, d, app.Options{Name: "banner"})
	target := "tcp://" + netip.AddrPortFrom(rig.A.IPv4, 7232).String()
	// open dials and reads the line, then io.EOF.
	open := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Dial(ctx, target)
		cancel()
		if err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "hello\n" {
			c.Close()
			return nil, fmt.Errorf("read %q, %v; want the line, then io.EOF", b, err)
		}
		return c, nil
	}
	for i := range 300 {
		c, err := open()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	// One dialer closes in order, pausing after its mark as a preempted
	// goroutine does; the other dials meanwhile, pausing before it
	// registers each connection (so that the peer's FIN comes first), and
	// keeps its connections open, so that the handle the daemon freed is
	// the next one it gets.
	testhook.CloseMarkPause.Store(int64(100 * time.Millisecond))
	testhook.DialRegisterPause.Store(int64(5 * time.Millisecond))
	t.Cleanup(func() { testhook.CloseMarkPause.Store(0); testhook.DialRegisterPause.Store(0) })
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; !stop.Load(); i++ {
			c, err := open()
			if err != nil {
				errc <- fmt.Errorf("connection %d while another closed: %w", i, err)
				return
			}
			held = append(held, c)
		}
	}()
	for i := range 5 {
		c, err := open()
		if err != nil {
			t.Errorf("connection %d closed in order: %v", i, err)
			continue
		}
		c.Close()
	}
	testhook.CloseMarkPause.Store(0)
	testhook.DialRegisterPause.Store(0)
	stop.Store(true)
	if err := <-errc; err != nil {
		t.Error(err)
	}

	ln, err := a.Listen("tcp://0.0.0.0:7233")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveEach(ln, func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			b = []byte(err.Error())
		}
		_, _ = c.Write(b)
	})
	for i := range 300 {
		if err := rig.A.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7233).String(), 10*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("hello\n")); err != nil {
				return err
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				return err
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "hello\n" {
				return fmt.Errorf("accepted connection %d: the app read %q, %v; want the line, then io.EOF", i, b, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTCPDialResetAtOnce: a kernel server that writes a byte and resets at
// once (SO_LINGER 0), dialed from eight goroutines: each dial fails with
// an error wrapping ECONNRESET, or succeeds and its read does (as a kernel
// socket's connect and read do, as the RST comes before or after the
// connect is reported); none waits. (A dial the RST overtook failed with a
// bare "connect failed".)
func TestTCPDialResetAtOnce(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, ":7234")
	go serveEach(kl, func(c net.Conn) { c.Write([]byte("x")); c.(*net.TCPConn).SetLinger(0) })
	a := attach(t, d, app.Options{Name: "rst"})
	var failed atomic.Int64
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for i := range 150 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7234).String())
				cancel()
				if err != nil {
					if !errors.Is(err, syscall.ECONNRESET) {
						errs <- fmt.Errorf("dial %d: %w, want an error wrapping ECONNRESET", i, err)
						return
					}
					failed.Add(1)
					continue
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = io.ReadAll(c)
				c.Close()
				if !errors.Is(err, syscall.ECONNRESET) {
					errs <- fmt.Errorf("read %d: %w, want ECONNRESET", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 1200 dials failed with ECONNRESET, the rest read it", failed.Load())
}

// dialEcho dials uri from app a, writes msg and checks that it comes back.
func dialEcho(t *testing.T, a *app.App, uri, msg string) {
	t.Helper()
	c, err := a.Dial(t.Context(), uri)
	if err != nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg)+8)
	n, err := io.ReadAtLeast(c, b, len(msg))
	if err != nil || string(b[:n]) != msg {
		t.Errorf("%s: echo %q, %v", uri, b[:n], err)
	}
}
