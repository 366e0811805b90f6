package daemon

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestTCPConnWriteMatchesKernel: writes of an app's TCP Conn, dialed to
// and accepted from a kernel peer on host A and cut-through between two
// apps, return what a kernel connection's return, call for call: a write
// of 0 bytes sends nothing and fails as any write would (past the write
// deadline, after CloseWrite, after the peer's reset, after Close); a
// CloseWrite wakes a Write waiting for room, which returns what it
// queued with EPIPE, and the peer reads exactly that, then io.EOF.
func TestTCPConnWriteMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	big := make([]byte, 64<<20)
	cases := []semCase{
		{name: "write of 0 bytes", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			n, err := c.Write(nil)
			tr.call("Write of 0 bytes", n, err)
			tr.err("SetWriteDeadline in the past", c.SetWriteDeadline(time.Unix(1, 0)))
			n, err = c.Write(nil)
			tr.call("Write of 0 bytes past the deadline", n, err)
			n, err = c.Write([]byte{})
			tr.call("Write of an empty slice past the deadline", n, err)
			tr.err("SetWriteDeadline zero", c.SetWriteDeadline(time.Time{}))
			n, err = c.Write(nil)
			tr.call("Write of 0 bytes after", n, err)
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			n, err = c.Write(nil)
			tr.call("Write of 0 bytes after CloseWrite", n, err)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(peer)
			tr.call("peer reads to the end", len(got), err)
			tr.err("Close", c.Close())
			n, err = c.Write(nil)
			tr.call("Write of 0 bytes after Close", n, err)
		}},
		{name: "write of 0 bytes after the peer reset", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			n, err := c.Write(nil)
			tr.call("Write of 0 bytes", n, err)
		}},
		{name: "CloseWrite wakes a blocked Write", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			var res semResult
			select {
			case res = <-w:
				tr.note("blocked Write", fmt.Sprintf("some written %v, all %v, %s", res.n > 0, res.n == len(big), errClass(res.err)))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked after 5s")
				return
			}
			peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.Copy(io.Discard, peer)
			tr.note("peer reads what the Write took, then io.EOF", fmt.Sprintf("%v %s", got == int64(res.n), errClass(err)))
			n, err := c.Write([]byte("x"))
			tr.call("Write after", n, err)
			peer.Write([]byte("y"))
			n, err = readOne(c)
			tr.call("Read the peer's byte", n, err)
		}},
	}
	runSemCases(t, r.kinds(), cases)
}
