package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
)

// TestUDPCutThroughCorruptFifoReportedOnce: the peer of a UDP session an
// app dialed to a local app's listener (cut-through), which shares the
// session's fifos, breaks the indices of one of them: the one the Conn
// reads, or the one it writes. The call that meets the damage fails with
// ECONNREFUSED (a UDP socket's word for a peer that is no longer there)
// because of flow.ErrFifoCorrupt, in an *os.SyscallError inside a
// *net.OpError, once; the session is then as one whose peer's port
// closed (TestUDPCutThroughPeerGoneMatchesKernel): a read waits until its
// deadline, a write succeeds and the next call fails with a plain
// ECONNREFUSED. The daemon lets the session go before either app closes
// it. Before, every call failed with a bare fifo.ErrCorrupt and the
// session stayed until both ends closed.
func TestUDPCutThroughCorruptFifoReportedOnce(t *testing.T) {
	if raceEnabled {
		// As TestUDPListenerLetsGoOfCorruptPeer: the test writes the
		// session's segment through the daemon's mapping, which the
		// daemon closes when the session ends.
		t.Skip("writes the daemon's mapping of a segment the daemon later closes")
	}
	for _, first := range []string{"read", "write"} {
		t.Run(first, func(t *testing.T) {
			d := startDaemon(t)
			srv := attach(t, d, app.Options{Name: "srv"})
			cli := attach(t, d, app.Options{Name: "cli"})
			pc, err := srv.ListenPacket("udp://127.0.0.1:7942")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := cli.Dial(ctx, "udp://127.0.0.1:7942")
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 64)
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("the listener's first read: %q, %v", buf[:n], err)
			}
			pairs := appSessions(t, d, "cli")
			if len(pairs) != 1 {
				t.Fatalf("%d sessions of the dialing app, want 1", len(pairs))
			}
			for _, p := range pairs {
				if first == "write" {
					// Fill c's tx (the listener reads nothing), so that its
					// next write looks at the shared head.
					for _, size := range []int{1000, 1} {
						c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
						for {
							if _, err := c.Write(make([]byte, size)); err != nil {
								if !errors.Is(err, os.ErrDeadlineExceeded) {
									t.Fatalf("filling the fifo: %v", err)
								}
								break
							}
						}
					}
					c.SetWriteDeadline(time.Time{})
					// The listener's head past the tail.
					fifotest.SetHead(p.Tx, fifotest.Tail(p.Tx)+1)
				} else {
					// The listener's tail past the size.
					fifotest.SetTail(p.Rx, fifotest.Head(p.Rx)+p.Rx.Size()+1)
				}
			}
			var n int
			if first == "read" {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err = c.Read(buf)
			} else {
				n, err = c.Write([]byte("x"))
			}
			var oe *net.OpError
			var se *os.SyscallError
			if n != 0 || !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, flow.ErrFifoCorrupt) ||
				!errors.As(err, &oe) || oe.Op != first || !errors.As(err, &se) || se.Syscall != first {
				t.Fatalf("%s meeting the corrupt fifo: %d, %v (%T); want ECONNREFUSED because of flow.ErrFifoCorrupt in an *os.SyscallError %q inside a *net.OpError", first, n, err, err, first)
			}
			// Reported once; then as a socket whose peer's port closed.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, err := c.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("read after the report: %d, %v; want a timeout", n, err)
			}
			if n, err := c.Write([]byte("x")); n != 1 || err != nil {
				t.Errorf("write after the report: %d, %v; want 1, nil", n, err)
			}
			if n, err := c.Write([]byte("x")); n != 0 || !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, flow.ErrFifoCorrupt) {
				t.Errorf("the write after it: %d, %v; want ECONNREFUSED alone", n, err)
			}
			waitFor(t, "the daemon to let the session go", 2*time.Second, func() bool {
				return len(appSessions(t, d, "cli")) == 0 && len(appSessions(t, d, "srv")) == 0
			})
			if err := c.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}
