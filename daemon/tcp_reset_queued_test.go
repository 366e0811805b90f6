package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
)

// TestTCPResetAfterQueuedData: a kernel peer on host A writes 128 KiB,
// waits until all of it is acknowledged, and resets the connection
// (SO_LINGER 0) while the receiver reads nothing; the receiver then reads
// all 128 KiB and gets ECONNRESET next. "kernel" is a kernel socket on host
// B receiving (Linux's behaviour, which the app's must match); "app" is an
// app of the daemon's, whose rx fifo (4 KiB) holds a fraction of it.
func TestTCPResetAfterQueuedData(t *testing.T) {
	rig, d := tcpRig(t)
	const n = 128 << 10
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	a := attach(t, d, app.Options{Name: "resetrecv", RxFifoSize: 4096, TxFifoSize: 4096})

	for _, tc := range []struct {
		name   string
		listen func(t *testing.T) (net.Listener, netip.AddrPort)
		reset  func(c net.Conn) bool // whether the receiving side saw the reset, if it can tell
	}{
		{"kernel", func(t *testing.T) (net.Listener, netip.AddrPort) {
			var ln net.Listener
			lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20) })
				return errors.Join(err, serr)
			}}
			if err := rig.B.Do(func() error {
				var err error
				ln, err = lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(rig.B.IPv4, 7311).String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return ln, netip.AddrPortFrom(rig.B.IPv4, 7311)
		}, func(c net.Conn) bool {
			info, err := tcpInfoOf(c)
			return err == nil && info.State == 7 // TCP_CLOSE
		}},
		{"app", func(t *testing.T) (net.Listener, netip.AddrPort) {
			return listenApp(t, a, "tcp://"+netip.AddrPortFrom(rig.B.IPv4, 7310).String()), netip.AddrPortFrom(rig.B.IPv4, 7310)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, dst := tc.listen(t)
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			sent := make(chan error, 1)
			go func() {
				sent <- rig.A.Do(func() error {
					c, err := net.DialTimeout("tcp", dst.String(), 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					if _, err := c.Write(data); err != nil {
						return err
					}
					for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
						q, err := outq(c)
						if err != nil {
							return err
						}
						if q == 0 {
							break
						}
						if time.Now().After(end) {
							return fmt.Errorf("%d bytes not acknowledged after 10 s", q)
						}
					}
					return c.(*net.TCPConn).SetLinger(0)
				})
			}()
			var c net.Conn
			select {
			case c = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("no connection accepted")
			}
			defer c.Close()
			if err := <-sent; err != nil {
				t.Fatalf("sender: %v", err)
			}
			// The reset is on its way; the receiver reads nothing until it
			// has arrived.
			if tc.reset != nil {
				waitFor(t, "the receiver's socket to see the reset", 5*time.Second, func() bool { return tc.reset(c) })
			} else {
				time.Sleep(300 * time.Millisecond)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if !bytes.Equal(got, data) {
				t.Errorf("read %d of %d bytes before the error (equal %v)", len(got), n, bytes.Equal(got, data[:min(len(got), n)]))
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read after the data: %v, want ECONNRESET", err)
			}
		})
	}
}

// outq returns what c's kernel socket holds unsent or unacknowledged
// (SIOCOUTQ).
func outq(c net.Conn) (int, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var q int
	var qerr error
	if err := rc.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return q, qerr
}

// tcpInfoOf returns c's kernel socket's TCP_INFO.
func tcpInfoOf(c net.Conn) (*unix.TCPInfo, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, err
	}
	return info, ierr
}
