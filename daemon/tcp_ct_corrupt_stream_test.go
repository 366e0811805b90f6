package daemon

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
)

// TestTCPCutThroughCorruptStreamIsReset: the peer of a cut-through TCP
// session (another app, which shares the fifos' memory) breaks the
// indices of a fifo of the session: the one this end reads, or the one it
// writes. The call that meets the damage fails as on the wire, where the
// daemon resets such a session: ECONNRESET because of
// flow.ErrFifoCorrupt, in an *os.SyscallError inside a *net.OpError,
// once; the reads after it return io.EOF and the writes EPIPE, as after
// any reset. The reset reaches the daemon: the peer's reads end with
// ECONNRESET, and the daemon has neither end of the session any more,
// before either app closes it. Before, every call failed with a bare
// fifo.ErrCorrupt, and the session stayed until both ends closed.
func TestTCPCutThroughCorruptStreamIsReset(t *testing.T) {
	if raceEnabled {
		// As TestUDPListenerLetsGoOfCorruptPeer: the test writes the
		// session's segment through the daemon's mapping, which the
		// daemon closes when the session ends.
		t.Skip("writes the daemon's mapping of a segment the daemon later closes")
	}
	// first is the call of sc that meets the damage: a read breaks
	// the hostile end's tx (sc's rx), a write its rx (sc's tx).
	for _, first := range []string{"read", "write"} {
		t.Run(first, func(t *testing.T) {
			d, cli, ln := streamCutThroughApps(t)
			hostile, sc := ctStream(t, cli, ln)
			defer hostile.Close()
			defer sc.Close()
			if _, err := hostile.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			sc.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("first read: %q, %v", buf[:n], err)
			}
			pairs := appSessions(t, d, "cli")
			if len(pairs) != 1 {
				t.Fatalf("%d sessions of the dialing app, want 1", len(pairs))
			}
			for _, p := range pairs {
				if first == "write" {
					// Fill sc's tx, so that its next write looks at the
					// shared head (a producer's view of the room it has
					// is its own until it runs out).
					if n, err := sc.Write(make([]byte, p.Rx.Size())); err != nil {
						t.Fatalf("filling the fifo: %d, %v", n, err)
					}
				}
				if first == "read" {
					// The hostile end's tail past the size: sc's reads find
					// more queued than the fifo holds.
					fifotest.SetTail(p.Tx, fifotest.Head(p.Tx)+p.Tx.Size()+1)
				} else {
					// The hostile end's head past the tail: sc's writes
					// find more taken than was queued.
					fifotest.SetHead(p.Rx, fifotest.Tail(p.Rx)+1)
				}
			}
			var n int
			var err error
			if first == "read" {
				n, err = sc.Read(buf)
			} else {
				n, err = sc.Write([]byte("x"))
			}
			var oe *net.OpError
			var se *os.SyscallError
			if n != 0 || !errors.Is(err, syscall.ECONNRESET) || !errors.Is(err, flow.ErrFifoCorrupt) ||
				!errors.As(err, &oe) || oe.Op != first || !errors.As(err, &se) || se.Syscall != first {
				t.Fatalf("%s meeting the corrupt fifo: %d, %v (%T); want ECONNRESET because of flow.ErrFifoCorrupt in an *os.SyscallError %q inside a *net.OpError", first, n, err, err, first)
			}
			// Reported once, then as after any reset.
			if n, err := sc.Read(buf); n != 0 || err != io.EOF {
				t.Errorf("read after the reset: %d, %v; want io.EOF", n, err)
			}
			if n, err := sc.Write([]byte("x")); n != 0 || !errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("write after the reset: %d, %v; want EPIPE", n, err)
			}
			if n, err := sc.Read(buf); n != 0 || err != io.EOF {
				t.Errorf("read again: %d, %v; want io.EOF", n, err)
			}
			// The peer learns of the reset: its reads end with ECONNRESET
			// once they have what was queued for them.
			hostile.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.Copy(io.Discard, hostile); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the peer's reads ended with %v; want ECONNRESET", err)
			}
			// The daemon let the session go, with both apps holding it.
			waitFor(t, "the daemon to let the session go", 2*time.Second, func() bool {
				return len(appSessions(t, d, "cli")) == 0 && len(appSessions(t, d, "srv")) == 0
			})
			if err := sc.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if err := hostile.Close(); err != nil {
				t.Errorf("the peer's close: %v", err)
			}
		})
	}
}
