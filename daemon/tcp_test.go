package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// tcpRig is a two-host rig with the daemon on host B's veth.
func tcpRig(t testing.TB, mod ...func(*Config)) (*nstest.Pair, *Daemon) {
	t.Helper()
	return tcpRigWith(t, nstest.Options{}, mod...)
}

// tcpRigWith is tcpRig on a rig built with opts.
func tcpRigWith(t testing.TB, opts nstest.Options, mod ...func(*Config)) (*nstest.Pair, *Daemon) {
	t.Helper()
	rig := nstest.NewPair(t, opts)
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, append([]func(*Config){func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	}}, mod...)...)
	return rig, d
}

// kernelListen opens a kernel TCP listener on addr inside host h and
// closes it when the test ends.
func kernelListen(t *testing.T, h *nstest.Host, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := h.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveEach runs serve on a goroutine of its own for every connection of
// ln until ln is closed, and closes the connection after it.
func serveEach(ln net.Listener, serve func(c net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

// echoServe echoes every connection of ln until it is closed.
func echoServe(ln net.Listener) {
	serveEach(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// dialApp dials uri from app a within 10 s and closes the connection at
// the test's end.
func dialApp(t testing.TB, a *app.App, uri string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, uri)
	if err != nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// listenApp listens on uri for app a; the listener is closed when the
// test ends, if the test did not close it before.
func listenApp(t testing.TB, a *app.App, uri string) net.Listener {
	t.Helper()
	ln, err := a.Listen(uri)
	if err != nil {
		t.Fatalf("listen %s: %v", uri, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenEcho listens on uri for app a and echoes every connection
// (echoServe); the caller may close the listener (listenApp).
func listenEcho(t testing.TB, a *app.App, uri string) net.Listener {
	t.Helper()
	ln := listenApp(t, a, uri)
	go echoServe(ln)
	return ln
}

// kernelEchoStall is how long a kernelEcho connection may move no byte
// in one direction before it fails.
const kernelEchoStall = 30 * time.Second

// kernelEcho sends data over a kernel TCP connection from host A to dst
// and checks that exactly the same bytes come back.
func kernelEcho(rig *nstest.Pair, dst netip.AddrPort, data []byte) error {
	return kernelEchoWatched(rig, dst, data, nil)
}

// kernelEchoWatched is kernelEcho that calls stalled (when not nil) as
// soon as its connection stalls, before it is closed: where the daemon
// and the app stand can be looked at then.
func kernelEchoWatched(rig *nstest.Pair, dst netip.AddrPort, data []byte, stalled func()) error {
	return rig.A.Do(func() error {
		// A SYN lost to a full backlog or ring is sent again after 1s,
		// 3s, 7s: allow a few.
		c, err := net.DialTimeout("tcp", dst.String(), 15*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		// A connection fails when it stalls: no byte moved for
		// kernelEchoStall in that direction. A slow one (the race
		// detector, a busy machine, a thousand connections sharing two
		// cores) goes on as long as it moves.
		errc := make(chan error, 1)
		go func() {
			for off := 0; off < len(data); {
				_ = c.SetWriteDeadline(time.Now().Add(kernelEchoStall))
				n, err := c.Write(data[off:min(off+16<<10, len(data))])
				off += n
				if err != nil {
					errc <- fmt.Errorf("after %d bytes: %w", off, err)
					return
				}
			}
			errc <- nil
		}()
		got := make([]byte, len(data))
		for off := 0; off < len(got); {
			_ = c.SetReadDeadline(time.Now().Add(kernelEchoStall))
			n, err := c.Read(got[off:])
			off += n
			if err != nil {
				if stalled != nil && errors.Is(err, os.ErrDeadlineExceeded) {
					stalled()
				}
				return fmt.Errorf("read back after %d bytes: %w", off, err)
			}
		}
		if err := <-errc; err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if !bytes.Equal(got, data) {
			return errEcho
		}
		return nil
	})
}

// TestTCPWireEcho: a kernel TCP client on host A against an app's TCP
// listener on host B, over IPv4 and IPv6, every byte checked; a port no app
// bound still reaches a kernel listener on B.
func TestTCPWireEcho(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "tcpecho"})
	for _, uri := range []string{"tcp://0.0.0.0:7000", "tcp://[::]:7000"} {
		defer listenEcho(t, a, uri).Close()
	}
	data := make([]byte, 4<<20)
	rand.Read(data)
	for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		start := time.Now()
		if err := kernelEcho(rig, netip.AddrPortFrom(dst, 7000), data); err != nil {
			t.Fatalf("echo through %v:7000: %v", dst, err)
		}
		t.Logf("%v: %d bytes echoed in %v", dst, len(data), time.Since(start))
	}

	// A port nobody bound stays with the kernel.
	kl := kernelListen(t, rig.B, ":7001")
	go echoServe(kl)
	for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		if err := kernelEcho(rig, netip.AddrPortFrom(dst, 7001), data[:64<<10]); err != nil {
			t.Fatalf("kernel listener %v:7001: %v", dst, err)
		}
	}
}

// TestTCPDialKernel: an app on host B dials a kernel TCP server on host A:
// data each way exact; a port with no listener is refused quickly with
// ECONNREFUSED.
func TestTCPDialKernel(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, ":7100")
	go echoServe(kl)
	a := attach(t, d, app.Options{Name: "dialer"})
	data := make([]byte, 2<<20)
	rand.Read(data)
	for _, dst := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(dst, 7100).String())
		cancel()
		if err != nil {
			t.Fatalf("dial %v: %v", dst, err)
		}
		if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
			t.Errorf("remote address %T %v, want *net.TCPAddr", c.RemoteAddr(), c.RemoteAddr())
		}
		if _, ok := c.LocalAddr().(*net.TCPAddr); !ok {
			t.Errorf("local address %T %v, want *net.TCPAddr", c.LocalAddr(), c.LocalAddr())
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		var wg sync.WaitGroup
		var werr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, werr = c.Write(data)
		}()
		got := make([]byte, len(data))
		_, rerr := io.ReadFull(c, got)
		wg.Wait()
		if werr != nil || rerr != nil {
			t.Fatalf("%v: write %v, read %v", dst, werr, rerr)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%v: %v", dst, errEcho)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}

	// Refused: a port nobody listens on, answered by the kernel's reset.
	// The first dial may wait for the neighbour; time the second.
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7101).String())
		took := time.Since(start)
		cancel()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial a closed port: %v, want ECONNREFUSED", err)
		}
		if i == 1 && took > 100*time.Millisecond {
			t.Fatalf("refused after %v, want within 100ms", took)
		}
		t.Logf("refused in %v", took)
	}
}

// TestTCPHalfCloseReset: an app's CloseWrite reaches a kernel server as
// EOF while the app goes on reading its answer to the server's FIN; a
// kernel server's reset mid-transfer ends the app's reads with
// ECONNRESET.
func TestTCPHalfCloseReset(t *testing.T) {
	rig, d := tcpRig(t)
	kl := kernelListen(t, rig.A, ":7200")
	go func() {
		for {
			c, err := kl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var first [5]byte
				if _, err := io.ReadFull(c, first[:]); err != nil {
					return
				}
				if string(first[:]) == "reset" {
					// Send some, then a reset (linger 0).
					c.Write(make([]byte, 64<<10))
					c.(*net.TCPConn).SetLinger(0)
					return
				}
				// Count to EOF, answer, close.
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes", n+5)
			}()
		}
	}()
	a := attach(t, d, app.Options{Name: "halfclose"})
	dial := func() net.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7200).String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c
	}
	c := dial()
	defer c.Close()
	msg := make([]byte, 300000)
	copy(msg, "hello")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write after CloseWrite: %v, want EPIPE", err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != fmt.Sprintf("got %d bytes", len(msg)) {
		t.Fatalf("answer after the half close: %q, %v", got, err)
	}

	r := dial()
	defer r.Close()
	if _, err := r.Write([]byte("reset")); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, r)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read through the peer's reset: %v, want ECONNRESET", err)
	}
}

// TestTCPManyConns: 1,000 kernel clients at once, each echoing 64 KiB
// through an app's listener, every byte checked. (It failed with 1,000 at
// once until three causes were fixed: the worker's tx queue dropped the
// Stack's packets when a burst outran it, costing connections retransmit
// timeouts; the app library woke every blocked call of the app on each
// event, a thousand goroutine wake-ups per packet; and it closed accepted
// connections past 256 waiting for Accept.)
//
// Under the race detector it runs 250: with 1,000 the one worker, slowed
// tenfold and sharing two cores with the other packages' tests, got
// through 16 loops a second, its AF_XDP ring overflowed (10,774 frames),
// and the kernel peers' retransmissions backed off past the 30 s stall
// bound. The race detector needs the concurrency, not the volume.
func TestTCPManyConns(t *testing.T) {
	const atOnce, size = 1000, 64 << 10
	conns := 1000
	if raceEnabled {
		conns = 250
	}
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "many", RxFifoSize: 16 << 10, TxFifoSize: 16 << 10, SegmentSize: 64 << 20})
	ln := listenEcho(t, a, "tcp://0.0.0.0:7300")
	defer ln.Close()
	data := make([]byte, size)
	rand.Read(data)
	start := time.Now()
	errc := make(chan error, conns)
	var stallOnce sync.Once
	sem := make(chan struct{}, atOnce)
	for i := 0; i < conns; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errc <- kernelEchoWatched(rig, netip.AddrPortFrom(rig.B.IPv4, 7300), data, func() { stallOnce.Do(func() { logTCPStall(t, d, size) }) })
		}()
	}
	failed := 0
	for i := 0; i < conns; i++ {
		if err := <-errc; err != nil {
			if failed < 5 {
				t.Errorf("connection: %v", err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d connections failed; tcp %+v; engine drops %v", failed, conns, d.Engine().TCPStats(), d.Engine().Stats().Totals.Drops)
	}
	t.Logf("%d connections each echoing %d bytes in %v", conns, size, time.Since(start))
	// The peer's next hop resolves: nothing waits past the resolver's
	// first lookup, so nothing is dropped for want of its MAC (before,
	// the SYN-ACKs sent during that lookup overflowed the packets set
	// aside for it), and the SYNs all fit the worker's queue of them.
	if drops := d.Engine().Stats().Totals.Drops; drops["no-neighbour"] > 0 || drops["syn-backlog"] > 0 {
		t.Errorf("packets dropped: %v", drops)
	}
}

// TestTCPSequentialNoLeak: 10,000 short kernel connections one after the
// other through an app's listener leave no session, connection,
// descriptor or goroutine behind.
func TestTCPSequentialNoLeak(t *testing.T) {
	const conns = 10000
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "short"})
	ln := listenEcho(t, a, "tcp://0.0.0.0:7400")
	defer ln.Close()
	msg := []byte("a short exchange")
	dst := netip.AddrPortFrom(rig.B.IPv4, 7400)
	for range 10 { // warm up: neighbours, pools
		if err := kernelEcho(rig, dst, msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the warm-up sessions to end", 5*time.Second, func() bool { return len(d.layer.Sessions()) == 0 })
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	start := time.Now()
	err := rig.A.Do(func() error {
		for i := range conns {
			c, err := net.DialTimeout("tcp", dst.String(), 3*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Write(msg)
			buf := make([]byte, len(msg))
			if err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.Close()
			if err != nil || !bytes.Equal(buf, msg) {
				return fmt.Errorf("connection %d: %q, %v", i, buf, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sequential connections in %v", conns, time.Since(start))
	eng := d.Engine()
	waitFor(t, "every session and connection to end", 10*time.Second, func() bool {
		return len(d.layer.Sessions()) == 0 && eng.TCPStats().Conns == 0
	})
	if err := leaks.Wait(); err != nil {
		t.Fatal(err)
	}
	st := eng.TCPStats()
	t.Logf("tcp: %+v", st)
	if st.AcceptRefused != 0 || st.Refused != 0 {
		t.Fatalf("refused %d, %d", st.AcceptRefused, st.Refused)
	}
}

// TestTCPDialNoLeak: 1,000 sequential dials of an app to a kernel server
// (and 100 to a closed port) leave no session, connection, port
// reservation, descriptor or goroutine behind, and each exchange is exact.
// (It caught about one dial in a few thousand reset right after its
// handshake: the session layer published the half-open's Del before the
// established session's Add, so the maps lacked the 5-tuple for a moment
// and the peer's ACK reached the kernel, which reset it.
// XSESSIOND_TCP_DIALS sets another count.)
func TestTCPDialNoLeak(t *testing.T) {
	dials := 1000
	if v, err := strconv.Atoi(os.Getenv("XSESSIOND_TCP_DIALS")); err == nil && v > 0 {
		dials = v
	}
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	// The ports of connections this side closed first stay reserved
	// while they are in TIME-WAIT: a short one, so that the leak check
	// sees them go.
	d := startDaemon(t, func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
		o.Datapath.TCP.Stack.TimeWait = time.Second
	})
	kl := kernelListen(t, rig.A, ":7700")
	go echoServe(kl)
	a := attach(t, d, app.Options{Name: "dialer"})
	msg := []byte("one short exchange")
	dial := func(port uint16) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, port).String())
	}
	exchange := func() error {
		c, err := dial(7700)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if !bytes.Equal(buf, msg) {
			return errEcho
		}
		return nil
	}
	for range 5 {
		if err := exchange(); err != nil {
			t.Fatal(err)
		}
	}
	eng := d.Engine()
	waitFor(t, "the warm-up connections to end", 5*time.Second, func() bool {
		return len(d.layer.Sessions()) == 0 && eng.TCPStats().Conns == 0
	})
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 15 * time.Second})
	start := time.Now()
	for i := range dials {
		if err := exchange(); err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	for i := range 100 {
		if _, err := dial(7701); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %d to a closed port: %v", i, err)
		}
	}
	t.Logf("%d dials and 100 refused in %v", dials, time.Since(start))
	waitFor(t, "every session and connection to end", 10*time.Second, func() bool {
		return len(d.layer.Sessions()) == 0 && eng.TCPStats().Conns == 0
	})
	if err := leaks.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("tcp: %+v", eng.TCPStats())
}

// logTCPStall logs where the daemon's TCP sessions and the test process's
// goroutines stand when a connection stalled: the sessions that moved
// less than size bytes either way, grouped by state, fifo fill and bytes
// moved, and the goroutine stacks grouped by count (the app library runs
// in this process).
func logTCPStall(t *testing.T, d *Daemon, size int) {
	type key struct {
		state                  string
		rxUsed, txUsed, rx, tx uint64
		recvQ, sendQ           int
	}
	groups := map[key]int{}
	for _, v := range d.SessionViews() {
		if v.Transport != "tcp" || (v.RxBytes >= uint64(size) && v.TxBytes >= uint64(size)) {
			continue
		}
		groups[key{v.TCPState, v.RxFifoUsed, v.TxFifoUsed, v.RxBytes, v.TxBytes, v.TCPRecvQ, v.TCPSendQ}]++
	}
	for k, n := range groups {
		t.Logf("unfinished: %d sessions %s rx fifo %d tx fifo %d, rx bytes %d tx bytes %d, gVisor recv-q %d send-q %d",
			n, k.state, k.rxUsed, k.txUsed, k.rx, k.tx, k.recvQ, k.sendQ)
	}
	// The workers' loop counts a second apart: a worker that stopped
	// looping has the same count twice.
	if e := d.Engine(); e != nil {
		for i := range 2 {
			for _, q := range e.Stats().Queues {
				t.Logf("sample %d queue %d: loops %d sleeps %d rx %d tx %d xsk %+v", i, q.Queue, q.Counts.Loops, q.Counts.Sleeps, q.Counts.Rx, q.Counts.Tx, q.XSK)
			}
			if i == 0 {
				time.Sleep(time.Second)
			}
		}
	}
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	for _, g := range strings.Split(b.String(), "\n\n") {
		head, stack, _ := strings.Cut(g, "\n")
		var n int
		if _, err := fmt.Sscanf(head, "%d @", &n); err != nil {
			continue
		}
		// The stalled connections' goroutines come by the dozen; the
		// Stack's pumps, the app's reactor and the workers one by one.
		if n < 10 && !strings.Contains(stack, "tcp.(*pump).run") && !strings.Contains(stack, "app.(*App).reactor") &&
			!strings.Contains(stack, "datapath.(*worker).run") {
			continue
		}
		if len(stack) > 2000 {
			stack = stack[:2000]
		}
		t.Logf("%d goroutines:\n%s", n, stack)
	}
}
