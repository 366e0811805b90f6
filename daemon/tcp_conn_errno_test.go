package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// errShape names err as errClass does, with ENOTCONN among the classes,
// and says how an errno under its *net.OpError is held: in an
// *os.SyscallError, with the name of the call (as the net package
// reports what a system call of a kernel socket returned), or bare.
func errShape(err error) string {
	s := errClass(err)
	if errors.Is(err, syscall.ENOTCONN) {
		s += "|ENOTCONN"
	}
	var oe *net.OpError
	var en syscall.Errno
	if !errors.As(err, &oe) || !errors.As(err, &en) {
		return s
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return s + " in *os.SyscallError " + se.Syscall
	}
	return s + " bare errno"
}

// shapeCall notes a data call's n and errShape.
func (tr *semTrace) shapeCall(what string, n int, err error) {
	tr.note(what, fmt.Sprintf("n=%d %s", n, errShape(err)))
}

// shapeErr notes a call's errShape.
func (tr *semTrace) shapeErr(what string, err error) { tr.note(what, errShape(err)) }

// TestTCPConnErrnoMatchesKernel: a TCP Conn's error that carries an errno
// (a read after the peer's reset, a write after CloseWrite or after the
// peer's reset) holds it as a kernel connection's does, in an
// *os.SyscallError naming the call ("read", "write") under the
// *net.OpError, which a program finds with errors.As or a type assertion
// on OpError.Err, and whose text ("read: connection reset by peer") it
// may match.
func TestTCPConnErrnoMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "write after CloseWrite", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			n, err := c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
			n, err = c.Write(nil)
			tr.shapeCall("Write of nothing", n, err)
		}},
		{name: "read after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			peer.Write([]byte("abc"))
			c.Write([]byte("x")) // unread: the peer's Close resets
			time.Sleep(100 * time.Millisecond)
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(300 * time.Millisecond) // the RST arrives
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 2)
			n, err := c.Read(b)
			tr.shapeCall("Read", n, err)
			n, err = c.Read(b)
			tr.shapeCall("Read the rest", n, err)
			n, err = c.Read(b)
			tr.shapeCall("Read at the reset", n, err)
		}},
		{name: "write after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			c.SetDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// TestTCPHalfCloseOfAnEndedConnMatchesKernel: CloseWrite and CloseRead of
// a connection that is over (reset by its peer, or both halves closed
// and acknowledged) fail as shutdown(2) of a kernel socket in CLOSE does,
// with ENOTCONN; while a half is open they succeed, again too.
func TestTCPHalfCloseOfAnEndedConnMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			c.SetDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			tr.shapeErr("Close", c.Close())
		}},
		{name: "after both halves closed", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("peer CloseWrite", callMethod(peer, closeWriter.CloseWrite))
			n, err := readOne(c)
			tr.shapeCall("Read", n, err)
			tr.shapeErr("CloseRead with the write half open", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = peer.Read(make([]byte, 4))
			tr.shapeCall("peer Read", n, err)
			time.Sleep(300 * time.Millisecond) // the FIN is acknowledged
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseWrite again", callMethod(c, closeWriter.CloseWrite))
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read again", n, err)
			tr.shapeErr("Close", c.Close())
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// TestTCPResetAfterFINMatchesKernel: a connection whose peer closed its
// half (FIN) and then reset it (SetLinger(0), Close) reads io.EOF, as a
// kernel connection in CLOSE_WAIT does when the RST comes, and its writes
// fail with EPIPE: on the wire (the peer a kernel socket) and
// cut-through (the peer another app).
func TestTCPResetAfterFINMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "reset after FIN", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.Write([]byte("x"))
			tr.shapeErr("peer CloseWrite", callMethod(peer, closeWriter.CloseWrite))
			n, err := readOne(c)
			tr.shapeCall("Read the FIN", n, err)
			tr.shapeErr("peer SetLinger(0)", callMethod(peer, func(l lingerer) error { return l.SetLinger(0) }))
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(300 * time.Millisecond) // the RST arrives
			c.SetDeadline(time.Now().Add(5 * time.Second))
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read again", n, err)
			n, err = c.Write([]byte("y"))
			tr.shapeCall("Write", n, err)
			n, err = c.Write([]byte("y"))
			tr.shapeCall("Write again", n, err)
			tr.shapeErr("Close", c.Close())
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// TestTCPConnEdgeCallsMatchKernel: calls at the edges of a TCP Conn's
// life return what a kernel connection's return: writes of nothing
// (open, and past the write deadline at the peer's end), reads after
// CloseRead (what was queued, nothing for a buffer of none, then io.EOF,
// then what the peer sends later) with writes going on, a Read waiting
// across the Conn's own CloseWrite, io.Copy both ways to the peer's
// CloseWrite, and calls past a deadline once the peer closed.
func TestTCPConnEdgeCallsMatchKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "write of nothing", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			n, err := c.Write(nil)
			tr.shapeCall("Write of nothing", n, err)
			n, err = c.Write([]byte{})
			tr.shapeCall("Write of an empty slice", n, err)
			n, err = c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
			n, err = readOne(peer)
			tr.shapeCall("peer reads one byte", n, err)
		}},
		{name: "CloseRead", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			peer.Write([]byte("ab"))
			time.Sleep(100 * time.Millisecond)
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseRead again", callMethod(c, closeReader.CloseRead))
			b := make([]byte, 1)
			n, err := c.Read(b)
			tr.shapeCall("Read what was queued", n, err)
			n, err = c.Read(nil)
			tr.shapeCall("Read of 0 bytes", n, err)
			n, err = c.Read(b)
			tr.shapeCall("Read the rest", n, err)
			n, err = c.Read(b)
			tr.shapeCall("Read at the end", n, err)
			n, err = c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
			n, err = readOne(peer)
			tr.shapeCall("peer reads it", n, err)
			peer.Write([]byte("cd"))
			time.Sleep(100 * time.Millisecond)
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read what the peer sent after", n, err)
			tr.shapeErr("Close", c.Close())
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = peer.Read(b)
			tr.shapeCall("peer reads after the Close", n, err)
		}},
		{name: "CloseWrite while a Read waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(50 * time.Millisecond)
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			time.Sleep(50 * time.Millisecond)
			peer.Write([]byte("x"))
			tr.awaitCall("waiting Read", rd)
		}},
		{name: "io.Copy", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			peer.SetDeadline(time.Now().Add(10 * time.Second))
			done := goCall(func() (int, error) {
				n, err := io.Copy(io.Discard, c)
				return int(n), err
			})
			n, err := peer.Write(make([]byte, 1<<20))
			tr.shapeCall("peer Write", n, err)
			tr.shapeErr("peer CloseWrite", callMethod(peer, closeWriter.CloseWrite))
			tr.awaitCall("io.Copy from c to its end", done)
			done = goCall(func() (int, error) {
				n, err := io.Copy(io.Discard, peer)
				return int(n), err
			})
			n64, err := io.Copy(c, io.LimitReader(zeroBytes{}, 1<<20))
			tr.shapeCall("io.Copy into c", int(n64), err)
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			tr.awaitCall("the peer copies to its end", done)
		}},
		{name: "deadline past after the peer closed", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(100 * time.Millisecond)
			c.SetReadDeadline(time.Unix(1, 0))
			n, err := c.Read(make([]byte, 4))
			tr.shapeCall("Read at the end, past the deadline", n, err)
			n, err = c.Read(nil)
			tr.shapeCall("Read of 0 bytes past the deadline", n, err)
			c.SetWriteDeadline(time.Unix(1, 0))
			n, err = c.Write(nil)
			tr.shapeCall("Write of nothing past the deadline", n, err)
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// zeroBytes reads zero bytes without end.
type zeroBytes struct{}

func (zeroBytes) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
