package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// afterReset is what a server did with a connection its client reset
// (or that timed out) while the server's write was blocked.
type afterReset struct {
	writeErr      error   // the blocked write's
	closeWriteErr error   // of the CloseWrite after it, when asked
	read          int64   // bytes read in all
	ends          []error // the results of the reads past the data (two)
}

func (r afterReset) String() string {
	return fmt.Sprintf("write %v, closewrite %v, read %d bytes, then %v", r.writeErr, r.closeWriteErr, r.read, r.ends)
}

// checkData checks that the reads kept in got gave data whole.
func checkData(t *testing.T, got *bytes.Buffer, data []byte) {
	t.Helper()
	if !bytes.Equal(got.Bytes(), data) {
		n := len(data)
		t.Errorf("read %d of %d bytes (equal %v)", got.Len(), n, bytes.Equal(got.Bytes(), data[:min(got.Len(), n)]))
	}
}

// checkEnds checks the reads past the data against want: io.EOF itself
// where want has io.EOF, else an error that wraps want's.
func (r afterReset) checkEnds(t *testing.T, want ...error) {
	t.Helper()
	ok := len(r.ends) == len(want)
	for i := 0; ok && i < len(want); i++ {
		if want[i] == io.EOF {
			ok = r.ends[i] == io.EOF
		} else {
			ok = errors.Is(r.ends[i], want[i])
		}
	}
	if !ok {
		t.Errorf("reads past the data: %v, want %v", r.ends, want)
	}
}

// readEnds reads c until two reads failed, counting into r.read and,
// when got is not nil, keeping what it read there.
func readEnds(c net.Conn, r *afterReset, got *bytes.Buffer) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16<<10)
	for len(r.ends) < 2 {
		n, err := c.Read(buf)
		r.read += int64(n)
		if got != nil {
			got.Write(buf[:n])
		}
		if err != nil {
			r.ends = append(r.ends, err)
		}
	}
}

// echoUntilWriteFails echoes c (reads of 16 KiB, each written back) until
// a write fails, then CloseWrites c if closeWrite is set and reads the
// rest.
func echoUntilWriteFails(c net.Conn, closeWrite bool) afterReset {
	var r afterReset
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		r.read += int64(n)
		if err != nil {
			r.ends = append(r.ends, err)
			return r
		}
		if _, err := c.Write(buf[:n]); err != nil {
			r.writeErr = err
			break
		}
	}
	if closeWrite {
		r.closeWriteErr = c.(interface{ CloseWrite() error }).CloseWrite()
	}
	readEnds(c, &r, nil)
	return r
}

// writeWatch is a server's net.Conn whose Write says while it runs, so
// that a test can tell the server is blocked in one (stallSending).
type writeWatch struct {
	net.Conn
	in atomic.Int32
}

func (w *writeWatch) Write(p []byte) (int, error) {
	w.in.Add(1)
	defer w.in.Add(-1)
	return w.Conn.Write(p)
}

func (w *writeWatch) CloseWrite() error { return w.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// writing reports whether a Write of the server is in progress.
func (w *writeWatch) writing() bool { return w.in.Load() > 0 }

// stallSending has kc send without reading until its writes stall, what
// the server acknowledged stays the same a second and server (if not nil)
// is in a write all that time, and returns that count (TCP_INFO's
// bytes_acked, less the SYN's one: what the server's TCP received). A
// spell in which the VM ran neither side looks like a stall but for the
// server's write: its reads then go on after it.
func stallSending(t *testing.T, kc *net.TCPConn, server *writeWatch) int64 {
	t.Helper()
	kc.SetReadBuffer(4096)
	var sent atomic.Int64
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := kc.Write(buf)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	// Stalled: neither what the server acknowledged nor what the client's
	// writes took moved for a second. (Half a second of the first alone
	// was once a spell in which this VM, running other test packages,
	// ran neither side: the server read on after it.)
	last, lastSent, since := int64(-1), int64(-1), time.Now()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := tcpInfoOf(kc)
		if err != nil {
			t.Fatal(err)
		}
		if n, s := int64(info.Bytes_acked), sent.Load(); n != last || s != lastSent || server != nil && !server.writing() {
			last, lastSent, since = n, s, time.Now()
		} else if time.Since(since) > time.Second {
			return last - 1
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client's writes never stalled (%d bytes sent)", sent.Load())
		}
	}
}

// dialFromA dials dst from host A.
func dialFromA(t *testing.T, rig *nstest.Pair, dst netip.AddrPort) *net.TCPConn {
	t.Helper()
	var kc net.Conn
	if err := rig.A.Do(func() (err error) {
		kc, err = net.DialTimeout("tcp", dst.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Close() })
	return kc.(*net.TCPConn)
}

// serverSide is where a test's server runs: a kernel listener of host B
// or an app's, on port.
type serverSide struct {
	name string
	ln   net.Listener
	port uint16
}

// kernelAndApp opens a kernel listener in host B on port and app a's on
// port+1: the two servers a test compares.
func kernelAndApp(t *testing.T, rig *nstest.Pair, a *app.App, port uint16) []serverSide {
	t.Helper()
	return []serverSide{
		{"kernel", kernelListen(t, rig.B, fmt.Sprintf(":%d", port)), port},
		{"xsessiond", listenApp(t, a, fmt.Sprintf("tcp://0.0.0.0:%d", port+1)), port + 1},
	}
}

// connect dials s from host A and returns the client's end and the
// server's.
func (s serverSide) connect(t *testing.T, rig *nstest.Pair) (*net.TCPConn, net.Conn) {
	t.Helper()
	ch := acceptOne(t, s.ln)
	kc := dialFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, s.port))
	return kc, accepted(t, ch)
}

// acceptOne accepts one connection of ln within 10 s.
func acceptOne(t *testing.T, ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		t.Cleanup(func() { c.Close() })
		ch <- c
	}()
	return ch
}

func accepted(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
	return nil
}

// TestTCPResetAheadEchoReadsMatchKernel: an echo server whose client sends
// without reading and then resets the connection has its blocked write
// fail with ECONNRESET; its reads then return every byte the client's
// TCP had acknowledged and io.EOF, twice (Linux: the data, then 0: the
// write took the error, sk_err); a CloseWrite between fails with
// ENOTCONN (shutdown of a socket in CLOSE) and leaves the reads as they
// are. The app's connection, whose fifos hold 4 KiB, must do as the
// kernel's.
func TestTCPResetAheadEchoReadsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "echo", RxFifoSize: 4096, TxFifoSize: 4096})
	sides := kernelAndApp(t, rig, a, 7651)
	for _, cw := range []bool{false, true} {
		for _, c := range sides {
			t.Run(fmt.Sprintf("%s/closewrite=%v", c.name, cw), func(t *testing.T) {
				kc, conn := c.connect(t, rig)
				sc := &writeWatch{Conn: conn}
				res := make(chan afterReset, 1)
				go func() { res <- echoUntilWriteFails(sc, cw) }()
				acked := stallSending(t, kc, sc)
				kc.SetLinger(0)
				kc.Close()
				var r afterReset
				select {
				case r = <-res:
				case <-time.After(15 * time.Second):
					t.Fatalf("the server still echoes 15 s after the reset")
				}
				t.Logf("%s: %d bytes acknowledged; %v", c.name, acked, r)
				if !errors.Is(r.writeErr, syscall.ECONNRESET) {
					t.Errorf("the blocked write: %v, want ECONNRESET", r.writeErr)
				}
				if cw && !errors.Is(r.closeWriteErr, syscall.ENOTCONN) {
					t.Errorf("CloseWrite after the write's ECONNRESET: %v, want ENOTCONN", r.closeWriteErr)
				}
				if r.read != acked {
					t.Errorf("read %d bytes, the client's TCP had %d acknowledged", r.read, acked)
				}
				r.checkEnds(t, io.EOF, io.EOF)
			})
		}
	}
}

// TestTCPResetAheadCloseWriteMatchesKernel: a server that has written
// nothing and read nothing when its client resets the connection after
// sending 64 KiB (all acknowledged) gets ENOTCONN from CloseWrite, and its
// reads then return the 64 KiB, ECONNRESET and io.EOF, as a kernel
// socket's (shutdown in CLOSE leaves the receive queue and sk_err alone).
// The app's connection, whose rx fifo holds 4 KiB, has most of the data
// still in the daemon's TCP when it calls CloseWrite.
func TestTCPResetAheadCloseWriteMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "cw", RxFifoSize: 4096, TxFifoSize: 4096})
	sides := kernelAndApp(t, rig, a, 7653)
	const n = 64 << 10
	data := pattern(0, n)
	for _, c := range []struct {
		serverSide
		seen func(sc, kc net.Conn) bool // the server's end has the reset
	}{
		{sides[0], func(sc, _ net.Conn) bool {
			info, err := tcpInfoOf(sc)
			return err == nil && info.State == 7 // TCP_CLOSE
		}},
		{sides[1], func(_, kc net.Conn) bool {
			s, ok := tcpSession(d, kc.LocalAddr().String())
			return ok && s.TCPState == "ERROR"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kc, sc := c.connect(t, rig)
			if _, err := kc.Write(data); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the data acknowledged", 10*time.Second, func() bool {
				q, err := outq(kc)
				return err == nil && q == 0
			})
			kc.SetLinger(0)
			kc.Close()
			waitFor(t, "the server's end to have the reset", 5*time.Second, func() bool { return c.seen(sc, kc) })
			time.Sleep(200 * time.Millisecond) // the app hears of it
			var r afterReset
			r.closeWriteErr = sc.(interface{ CloseWrite() error }).CloseWrite()
			got := new(bytes.Buffer)
			readEnds(sc, &r, got)
			t.Logf("%s: %v", c.name, r)
			if !errors.Is(r.closeWriteErr, syscall.ENOTCONN) {
				t.Errorf("CloseWrite after the reset: %v, want ENOTCONN", r.closeWriteErr)
			}
			checkData(t, got, data)
			r.checkEnds(t, syscall.ECONNRESET, io.EOF)
		})
	}
}

// TestTCPResetAfterFINBlockedWriterMatchesKernel: a server writes to a
// client that does not read (the write blocks) and reads nothing; the
// client sends 32 KiB, closes its half (FIN), and resets the connection
// once all of it was acknowledged. Linux's tcp_reset in CLOSE_WAIT fails
// the blocked write with EPIPE, and the reads then return the 32 KiB and
// io.EOF (the FIN came first). The app's rx fifo holds 4 KiB: the rest is
// in the daemon's TCP when the reset comes.
func TestTCPResetAfterFINBlockedWriterMatchesKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "finrst", RxFifoSize: 4096, TxFifoSize: 4096})
	sides := kernelAndApp(t, rig, a, 7655)
	const n = 32 << 10
	data := pattern(0, n)
	for _, c := range sides {
		t.Run(c.name, func(t *testing.T) {
			kc, sc := c.connect(t, rig)
			kc.SetReadBuffer(4096)
			wrote := make(chan error, 1)
			var written atomic.Int64
			go func() {
				buf := make([]byte, 16<<10)
				for {
					k, err := sc.Write(buf)
					written.Add(int64(k))
					if err != nil {
						wrote <- err
						return
					}
				}
			}()
			last, since := int64(-1), time.Now()
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if k := written.Load(); k != last {
					last, since = k, time.Now()
				} else if time.Since(since) > 500*time.Millisecond {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the server's writes never stalled")
				}
			}
			if _, err := kc.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := kc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the data and FIN acknowledged", 10*time.Second, func() bool {
				q, err := outq(kc)
				return err == nil && q == 0
			})
			kc.SetLinger(0)
			kc.Close()
			var werr error
			select {
			case werr = <-wrote:
			case <-time.After(5 * time.Second):
				t.Fatal("the blocked write still waits 5 s after the reset")
			}
			var r afterReset
			r.writeErr = werr
			got := new(bytes.Buffer)
			readEnds(sc, &r, got)
			t.Logf("%s: %v", c.name, r)
			if !errors.Is(r.writeErr, syscall.EPIPE) {
				t.Errorf("the blocked write: %v, want EPIPE", r.writeErr)
			}
			checkData(t, got, data)
			r.checkEnds(t, io.EOF, io.EOF)
		})
	}
}

// TestTCPResetAheadTimeoutMatchesKernel: a server that reads nothing of
// the 64 KiB its client sent (all acknowledged) and has sent nothing has
// keepalive on (1 s idle, 0.5 s interval, 3 probes); the client then goes
// silent (host A drops all it sends). Once the keepalive timed out, the
// server's write fails with ETIMEDOUT and its reads return the 64 KiB,
// then io.EOF twice (the write took the error), as a kernel socket's
// (tcp_write_err: sk_err ETIMEDOUT, which the write takes). The app's rx
// fifo holds 4 KiB: the rest is in the daemon's TCP when it times out.
//
// (A peer going silent while the server's write is blocked times out
// through unanswered zero-window probes, in gVisor as in Linux, where
// neither sends keepalives with data pending: minutes, with no
// TCP_USER_TIMEOUT of the daemon's to shorten them.)
func TestTCPResetAheadTimeoutMatchesKernel(t *testing.T) {
	const n = 64 << 10
	data := pattern(0, n)
	for _, name := range []string{"kernel", "xsessiond"} {
		t.Run(name, func(t *testing.T) {
			rig, d := tcpRig(t)
			var ln net.Listener
			if name == "kernel" {
				ln = kernelListen(t, rig.B, ":7657")
			} else {
				a := attach(t, d, app.Options{Name: "timeout", RxFifoSize: 4096, TxFifoSize: 4096})
				ln = listenApp(t, a, "tcp://0.0.0.0:7657")
			}
			ch := acceptOne(t, ln)
			kc := dialFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, 7657))
			sc := accepted(t, ch)
			ka := net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: 500 * time.Millisecond, Count: 3}
			var timedOut func() bool
			switch c := sc.(type) {
			case *net.TCPConn:
				if err := c.SetKeepAliveConfig(ka); err != nil {
					t.Fatal(err)
				}
				timedOut = func() bool {
					info, err := tcpInfoOf(c)
					return err == nil && info.State == 7 // TCP_CLOSE
				}
			case *app.Conn:
				if err := c.SetKeepAliveConfig(ka); err != nil {
					t.Fatal(err)
				}
				timedOut = func() bool {
					s, ok := tcpSession(d, kc.LocalAddr().String())
					return ok && s.TCPState == "ERROR"
				}
			}
			if _, err := kc.Write(data); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the data acknowledged", 10*time.Second, func() bool {
				q, err := outq(kc)
				return err == nil && q == 0
			})
			dropEgress(t, rig.A)
			start := time.Now()
			waitFor(t, "the server's end to time out", 15*time.Second, timedOut)
			took := time.Since(start)
			time.Sleep(200 * time.Millisecond) // the app hears of it
			var r afterReset
			_, r.writeErr = sc.Write([]byte("late"))
			got := new(bytes.Buffer)
			readEnds(sc, &r, got)
			t.Logf("%s: timed out after %v; %v", name, took.Round(time.Millisecond), r)
			if !errors.Is(r.writeErr, syscall.ETIMEDOUT) {
				t.Errorf("the write after the timeout: %v, want ETIMEDOUT", r.writeErr)
			}
			checkData(t, got, data)
			r.checkEnds(t, io.EOF, io.EOF)
		})
	}
}

// TestTCPResetAheadCloseFreesSession: an app whose blocked write a
// client's reset ended (data received before the reset still held in the
// daemon) closes the connection without reading that data, at once or
// racing with the reset's arrival; the daemon lets the session go (the
// unread data resets it), and the blocked write ends with ECONNRESET or,
// when the Close came first, net.ErrClosed.
func TestTCPResetAheadCloseFreesSession(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "closer", RxFifoSize: 4096, TxFifoSize: 4096})
	ln := listenApp(t, a, "tcp://0.0.0.0:7658")
	for i := range 6 {
		race := i%2 == 1
		ch := acceptOne(t, ln)
		kc := dialFromA(t, rig, netip.AddrPortFrom(rig.B.IPv4, 7658))
		sc := accepted(t, ch)
		wrote := make(chan error, 1)
		go func() {
			buf := make([]byte, 16<<10)
			for {
				n, err := sc.Read(buf)
				if err != nil {
					wrote <- err
					return
				}
				if _, err := sc.Write(buf[:n]); err != nil {
					wrote <- err
					return
				}
			}
		}()
		stallSending(t, kc, nil)
		remote := kc.LocalAddr().String()
		kc.SetLinger(0)
		kc.Close()
		var err error
		if race {
			sc.Close()
			err = <-wrote
		} else {
			err = <-wrote
			sc.Close()
		}
		if !errors.Is(err, syscall.ECONNRESET) && !(race && errors.Is(err, net.ErrClosed)) {
			t.Errorf("round %d (close racing %v): the blocked write ended with %v", i, race, err)
		}
		waitFor(t, fmt.Sprintf("round %d: the session to go", i), 5*time.Second, func() bool {
			_, ok := tcpSession(d, remote)
			return !ok
		})
	}
}
