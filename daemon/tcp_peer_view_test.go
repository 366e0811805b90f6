package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// The tests of tcp_semantics_test.go compare the app's API with the
// kernel's. The test of this file looks from the other end: one server
// program runs on a kernel listener of host B and on an app's listener on
// the daemon of host B, a client of plain kernel sockets on host A runs
// one script against each and notes what it sees (and what the server
// read), and the two records are compared. What a program talking to a
// Linux server sees, it must see talking to xsessiond's.

// peerViewBacklog is the backlog of the listeners of TestTCPPeerViewMatchesKernel:
// listen(2)'s for the kernel's, the daemon's TCPConfig.Backlog for the app's.
const peerViewBacklog = 4

// peerViewServer makes the listeners of one kind of server on host B.
type peerViewServer struct {
	name string
	app  bool
	// listen listens on wildcard, 0.0.0.0 or [::] and a port.
	listen func(t *testing.T, wildcard netip.AddrPort) net.Listener
}

// peerView is what a script works with: the server's listener, and a
// client dialing it from host A.
type peerView struct {
	ln   net.Listener
	addr netip.AddrPort // the listener's address as host A reaches it
	dial func(timeout time.Duration) (*net.TCPConn, error)
}

// connect dials the server and accepts the connection: the client's end
// and the server's, closed when the test ends.
func (p *peerView) connect(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	c, err := p.dial(5 * time.Second)
	if err != nil {
		t.Fatalf("dial %v: %v", p.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	s := acceptWithin(t, p.ln)
	t.Cleanup(func() { s.Close() })
	return c, s
}

// kernelListenBacklog opens a kernel TCP listener of host h on wildcard
// (0.0.0.0 or [::], one family alone) and its port, with backlog given to
// listen(2) (net.Listen gives somaxconn).
func kernelListenBacklog(t *testing.T, h *nstest.Host, wildcard netip.AddrPort, backlog int) net.Listener {
	t.Helper()
	var l net.Listener
	if err := h.Do(func() error {
		family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(wildcard.Port())})
		if wildcard.Addr().Is6() {
			family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(wildcard.Port())}
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		if err := unix.Listen(fd, backlog); err != nil {
			return err
		}
		l, err = net.FileListener(f)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// rawControl runs fn on c's descriptor.
func rawControl(c *net.TCPConn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// peerTCPInfo is what TCP_INFO tells of c: the struct, and the window
// scales (tcpi_snd_wscale and tcpi_rcv_wscale, a byte of bit fields that
// unix.TCPInfo leaves as padding).
func peerTCPInfo(c *net.TCPConn) (info *unix.TCPInfo, sndWscale, rcvWscale uint8, err error) {
	err = rawControl(c, func(fd int) error {
		var err error
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	})
	if err != nil {
		return nil, 0, 0, err
	}
	b := (*[8]byte)(unsafe.Pointer(info))[6]
	return info, b & 0xf, b >> 4, nil
}

// tcpiOptions names the bits of tcpi_options.
func tcpiOptions(o uint8) string {
	var s []string
	for _, b := range []struct {
		bit  uint8
		name string
	}{{1, "timestamps"}, {2, "sack"}, {4, "wscale"}, {8, "ecn"}, {16, "ecn-seen"}, {32, "syn-data"}} {
		if o&b.bit != 0 {
			s = append(s, b.name)
		}
	}
	return strings.Join(s, ",")
}

// pattern is n bytes of a stream from offset off, each telling its place.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) % 251)
	}
	return b
}

// readAllWithin reads c to its end, waiting at most d.
func readAllWithin(c net.Conn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}

// peerViewScript is one script: the server's part and the client's, run
// by run, which notes what the client saw and the server read.
type peerViewScript struct {
	name string
	v6   bool // over IPv6 (else IPv4)
	run  func(t *testing.T, p *peerView, tr *semTrace)
	// differs gives the steps whose result on the app's server differs
	// from the kernel's server's for a reason its comment gives, and that
	// result.
	differs map[string]string
}

// TestTCPPeerViewMatchesKernel: a kernel TCP client on host A sees the
// same from an app's listener on the daemon of host B as from a kernel
// listener there, script for script: a server that accepts and closes
// gives EOF, then EPIPE once its RST came; one that closes with data
// unread resets (ECONNRESET); after the server's CloseWrite the client
// reads EOF and still sends, and the server reads it; a client's
// shutdown(SHUT_WR) ends the server's read and the server's echo and
// close reach it; a connect after the listener closed is refused at once,
// while the connection it accepted goes on; clients past a backlog the
// server does not accept have their SYNs dropped, those within it connect
// and what they sent is read once the server accepts (the app's listener
// holds up to twice its backlog, README.md); a client's SO_LINGER 0 close
// resets the server's read; a server that does not read closes its
// window, the client's writes stall and resume as soon as it reads, every
// byte in order; small writes with TCP_NODELAY all arrive; the server
// answers the client's keepalive probes; and the options the handshake
// agreed (timestamps, SACK, window scaling, the MSS, over IPv4 and IPv6)
// as the client's TCP_INFO tells them. Urgent data (MSG_OOB) differs: the
// app's server reads the byte in the stream, as with SO_OOBINLINE.
func TestTCPPeerViewMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.Backlog = peerViewBacklog })
	// Small rx fifos: a server that does not read fills them soon.
	a := attach(t, d, app.Options{Name: "server", RxFifoSize: 64 << 10, TxFifoSize: 64 << 10})
	servers := []peerViewServer{
		{name: "kernel", listen: func(t *testing.T, wildcard netip.AddrPort) net.Listener {
			return kernelListenBacklog(t, rig.B, wildcard, peerViewBacklog)
		}},
		{name: "xsessiond", app: true, listen: func(t *testing.T, wildcard netip.AddrPort) net.Listener {
			return listenApp(t, a, "tcp://"+wildcard.String())
		}},
	}
	dialer := func(to netip.AddrPort) func(time.Duration) (*net.TCPConn, error) {
		return func(timeout time.Duration) (c *net.TCPConn, err error) {
			err = rig.A.Do(func() error {
				nc, err := net.DialTimeout("tcp", to.String(), timeout)
				if err == nil {
					c = nc.(*net.TCPConn)
				}
				return err
			})
			return c, err
		}
	}
	scripts := []peerViewScript{
		{name: "server closes at once", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			tr.err("server Close", s.Close())
			buf := make([]byte, 16)
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(buf)
			tr.call("client Read", n, err)
			n, err = c.Write([]byte("after the FIN"))
			tr.call("client Write (the server answers RST)", n, err)
			time.Sleep(200 * time.Millisecond)
			n, err = c.Write([]byte("after the RST"))
			tr.call("client Write after the RST", n, err)
			n, err = c.Read(buf)
			tr.call("client Read after the RST", n, err)
		}},
		{name: "server closes with data unread", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			n, err := c.Write(pattern(0, 1000))
			tr.call("client Write", n, err)
			time.Sleep(100 * time.Millisecond) // with the server, unread
			tr.err("server Close", s.Close())
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err = c.Read(make([]byte, 16))
			tr.call("client Read", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("client Write after the RST", n, err)
		}},
		{name: "server CloseWrite and reads on", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			n, err := s.Write([]byte("hello"))
			tr.call("server Write", n, err)
			tr.err("server CloseWrite", callMethod(s, closeWriter.CloseWrite))
			got, err := readAllWithin(c, 3*time.Second)
			tr.note("client reads to the end", fmt.Sprintf("%q %s", got, errClass(err)))
			for i := range 2 {
				n, err = c.Write([]byte("more data"))
				tr.call(fmt.Sprintf("client Write %d", i+1), n, err)
			}
			tr.err("client Close", c.Close())
			got, err = readAllWithin(s, 3*time.Second)
			tr.note("server reads to the end", fmt.Sprintf("%q %s", got, errClass(err)))
		}},
		{name: "client half-closes, server echoes and closes", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			echoed := goCall(func() (int, error) {
				s.SetDeadline(time.Now().Add(5 * time.Second))
				n, err := io.Copy(s, s)
				s.Close()
				return int(n), err
			})
			data := pattern(0, 100<<10)
			n, err := c.Write(data)
			tr.call("client Write", n, err)
			tr.err("client CloseWrite", c.CloseWrite())
			got, err := readAllWithin(c, 5*time.Second)
			tr.call("client reads to the end", len(got), err)
			tr.note("the echo is what was sent", fmt.Sprint(bytes.Equal(got, data)))
			tr.awaitCall("server echoes to its read's end", echoed)
		}},
		{name: "connect after the listener closed", run: func(t *testing.T, p *peerView, tr *semTrace) {
			// A connection the server accepted stays open.
			c, s := p.connect(t)
			tr.err("listener Close", p.ln.Close())
			start := time.Now()
			_, err := p.dial(3 * time.Second)
			took := time.Since(start)
			tr.err("client connects", err)
			tr.note("refused within 100 ms", fmt.Sprint(took < 100*time.Millisecond))
			t.Logf("refused after %v", took.Round(time.Microsecond))
			n, err := s.Write([]byte("still here"))
			tr.call("server Write on the accepted connection", n, err)
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err = io.ReadFull(c, make([]byte, n))
			tr.call("client reads it", n, err)
		}},
		{name: "backlog full", run: func(t *testing.T, p *peerView, tr *semTrace) {
			// The server accepts nothing while 10 clients try in turn,
			// each for 250 ms, and each that connects sends a line.
			var held []*net.TCPConn
			var lastErr error
			for i := range 10 {
				c, err := p.dial(250 * time.Millisecond)
				if err != nil {
					lastErr = err
					continue
				}
				t.Cleanup(func() { c.Close() })
				held = append(held, c)
				c.Write([]byte(fmt.Sprintf("client %d\n", i)))
			}
			// Linux queues backlog+1; the daemon the backlog in its
			// hands and as many in gVisor's accept queue (README.md).
			t.Logf("%d of 10 clients connected", len(held))
			tr.note("clients that connect", fmt.Sprint(len(held) >= peerViewBacklog && len(held) <= 2*peerViewBacklog+1))
			// The dial ends with its context's deadline or the
			// connect's own, whichever fires first: either is the
			// timeout looked for.
			timedOut := errors.Is(lastErr, context.DeadlineExceeded) || errors.Is(lastErr, os.ErrDeadlineExceeded)
			tr.note("a client past the backlog connects (250 ms)", fmt.Sprintf("times out %v", timedOut))
			lines := 0
			for range held {
				s := acceptWithin(t, p.ln)
				t.Cleanup(func() { s.Close() })
				s.SetReadDeadline(time.Now().Add(3 * time.Second))
				b := make([]byte, 64)
				n, _ := s.Read(b)
				if strings.HasPrefix(string(b[:n]), "client ") {
					lines++
				}
			}
			tr.note("each connected client's line is read once accepted", fmt.Sprint(lines == len(held)))
			c, err := p.dial(5 * time.Second)
			tr.err("a client connects once the server accepted", err)
			if err == nil {
				c.Close()
			}
		}},
		{name: "urgent data", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			c.Write([]byte("ab"))
			time.Sleep(20 * time.Millisecond)
			tr.err("client sends U with MSG_OOB", rawControl(c, func(fd int) error {
				return unix.Sendto(fd, []byte("U"), unix.MSG_OOB, nil)
			}))
			time.Sleep(20 * time.Millisecond)
			c.Write([]byte("cd"))
			c.CloseWrite()
			got, err := readAllWithin(s, 3*time.Second)
			tr.note("server reads to the end", fmt.Sprintf("%q %s", got, errClass(err)))
		}, differs: map[string]string{
			// gVisor's TCP has no urgent mode: it ignores the urgent
			// pointer and keeps the byte in the stream, as a Linux
			// socket with SO_OOBINLINE set does, where a Linux server
			// by default takes it out of the stream (RFC 6093 asks
			// new programs not to use urgent data, and those that do
			// to read it inline). app/doc.go and the README say so.
			"server reads to the end": `"abUcd" nil`,
		}},
		{name: "client SO_LINGER 0 close", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			c.Write([]byte("x"))
			n, err := readOne(s)
			tr.call("server reads the client's byte", n, err)
			tr.err("client SetLinger(0)", c.SetLinger(0))
			tr.err("client Close", c.Close())
			s.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err = s.Read(make([]byte, 16))
			tr.call("server Read", n, err)
		}},
		{name: "zero window", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			c.SetWriteBuffer(32 << 10)
			// The server reads nothing: the client writes until a write
			// makes no progress for 500 ms.
			sent := 0
			var err error
			for sent < 64<<20 && err == nil {
				c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
				var n int
				n, err = c.Write(pattern(sent, 16<<10))
				sent += n
			}
			tr.err("client writes until they stall", err)
			info, _, _, ierr := peerTCPInfo(c)
			if ierr != nil {
				t.Fatal(ierr)
			}
			t.Logf("stalled after %d bytes; the server's window %d, %d probes, backoff %d", sent, info.Snd_wnd, info.Probes, info.Backoff)
			tr.note("the server's window while stalled", fmt.Sprint(info.Snd_wnd))
			// The server reads; the client resumes and sends as much
			// again, then closes.
			got := goCall(func() (int, error) {
				b, err := readAllWithin(s, 10*time.Second)
				if !bytes.Equal(b, pattern(0, len(b))) {
					return len(b), errEcho
				}
				return len(b), err
			})
			more, err := sent, error(nil)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			for off := sent; off < sent+more && err == nil; {
				var n int
				n, err = c.Write(pattern(off, min(16<<10, sent+more-off)))
				if off == sent {
					// The server's window update, not the client's
					// next zero-window probe (200 ms at least).
					took := time.Since(start)
					t.Logf("the first write after the server reads took %v", took.Round(time.Microsecond))
					tr.note("the client's first write after it completes within 100 ms", fmt.Sprint(took < 100*time.Millisecond))
				}
				off += n
			}
			tr.err("client writes as much again once the server reads", err)
			c.CloseWrite()
			r := <-got
			tr.note("the server reads every byte in order", fmt.Sprint(r.n == 2*sent && r.err == nil))
		}},
		{name: "small writes with TCP_NODELAY", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			tr.err("client SetNoDelay", c.SetNoDelay(true))
			var want []byte
			for i := range 500 {
				b := []byte{byte(i), byte(i >> 8), '.'}
				want = append(want, b...)
				if _, err := c.Write(b); err != nil {
					tr.err(fmt.Sprintf("client write %d", i), err)
					break
				}
			}
			c.CloseWrite()
			got, err := readAllWithin(s, 5*time.Second)
			tr.call("server reads to the end", len(got), err)
			tr.note("what it read is what was written", fmt.Sprint(bytes.Equal(got, want)))
		}},
		{name: "client keepalive", run: func(t *testing.T, p *peerView, tr *semTrace) {
			c, s := p.connect(t)
			go io.Copy(s, s)
			// A probe after 1 s idle and every second; one unanswered
			// ends the connection.
			tr.err("client SetKeepAliveConfig", c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 1}))
			before, _, _, err := peerTCPInfo(c)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(3500 * time.Millisecond)
			after, _, _, err := peerTCPInfo(c)
			if err != nil {
				t.Fatal(err)
			}
			out, in := after.Segs_out-before.Segs_out, after.Segs_in-before.Segs_in
			t.Logf("idle 3.5 s: %d segments out, %d in", out, in)
			tr.note("probes sent while idle (at least 2)", fmt.Sprint(out >= 2))
			tr.note("each answered", fmt.Sprint(in >= out))
			n, err := c.Write([]byte("ping"))
			tr.call("client Write", n, err)
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err = io.ReadFull(c, make([]byte, 4))
			tr.call("client reads the echo", n, err)
		}},
		{name: "options agreed", run: optionsAgreed},
		{name: "options agreed over IPv6", v6: true, run: optionsAgreed},
	}
	for i, sc := range scripts {
		t.Run(strings.ReplaceAll(sc.name, " ", "_"), func(t *testing.T) {
			var ref semTrace
			for j, srv := range servers {
				port := uint16(7900 + 2*i + j)
				wildcard, addr := netip.AddrPortFrom(netip.IPv4Unspecified(), port), netip.AddrPortFrom(rig.B.IPv4, port)
				if sc.v6 {
					wildcard, addr = netip.AddrPortFrom(netip.IPv6Unspecified(), port), netip.AddrPortFrom(rig.B.IPv6, port)
				}
				p := &peerView{ln: srv.listen(t, wildcard), addr: addr}
				p.dial = dialer(p.addr)
				var tr semTrace
				t.Run(srv.name, func(t *testing.T) { sc.run(t, p, &tr) })
				if !srv.app {
					ref = tr
					t.Logf("%s:%v", srv.name, tr)
					continue
				}
				t.Logf("%s:%v", srv.name, tr)
				compareSem(t, srv.name, ref, tr, sc.differs)
			}
		})
	}
}

// optionsAgreed notes the options of a connection's handshake as its
// client's TCP_INFO tells them: tcpi_options (timestamps, SACK, window
// scaling), the MSS it sends with, and whether the server scales its
// window.
func optionsAgreed(t *testing.T, p *peerView, tr *semTrace) {
	c, s := p.connect(t)
	// One exchange, so that both ends have spoken.
	go io.Copy(s, s)
	c.Write([]byte("x"))
	readOne(c)
	info, snd, rcv, err := peerTCPInfo(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tcpi_options %s, snd_mss %d, rcv_mss %d, snd_wscale %d, rcv_wscale %d, the server's window %d", tcpiOptions(info.Options), info.Snd_mss, info.Rcv_mss, snd, rcv, info.Snd_wnd)
	tr.note("tcpi_options", tcpiOptions(info.Options))
	tr.note("tcpi_snd_mss", fmt.Sprint(info.Snd_mss))
	tr.note("the server scales its window (tcpi_snd_wscale > 0)", fmt.Sprint(snd > 0))
}
