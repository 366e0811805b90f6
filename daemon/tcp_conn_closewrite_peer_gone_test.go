package daemon

import (
	"net"
	"testing"
	"time"
)

// TestTCPCloseWriteAfterPeerCloseMatchesKernel: CloseWrite of a
// connection whose peer closed (its FIN read) succeeds, as shutdown(2) of
// a kernel socket in CLOSE_WAIT does, and the connection is then over:
// another CloseWrite and a CloseRead fail with ENOTCONN, a write with
// EPIPE, and Close succeeds; on the wire (the peer a kernel socket) and
// cut-through (the peer another app, whose Close ends the session at
// once). A connection that closed its half first is over once its peer
// closes too. Before, a cut-through session's CloseWrite failed with
// ENOTCONN and the calls after it succeeded, and one whose CloseWrite
// came first took CloseRead after its peer's Close.
func TestTCPCloseWriteAfterPeerCloseMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "peer Close then CloseWrite", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(200 * time.Millisecond) // the FIN arrives
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			time.Sleep(200 * time.Millisecond) // the FIN is acknowledged
			tr.shapeErr("CloseWrite again", callMethod(c, closeWriter.CloseWrite))
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			n, err = c.Write([]byte("x"))
			tr.shapeCall("Write", n, err)
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read again", n, err)
			tr.shapeErr("Close", c.Close())
		}},
		{name: "peer Close then CloseRead", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(200 * time.Millisecond) // the FIN arrives
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseRead again", callMethod(c, closeReader.CloseRead))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			time.Sleep(200 * time.Millisecond) // the FIN is acknowledged
			tr.shapeErr("CloseRead at the end", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("Close", c.Close())
		}},
		{name: "CloseWrite then peer Close", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.shapeErr("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := peer.Read(make([]byte, 4))
			tr.shapeCall("peer Read", n, err)
			tr.shapeErr("peer Close", peer.Close())
			time.Sleep(200 * time.Millisecond) // the FIN arrives
			tr.shapeErr("CloseRead", callMethod(c, closeReader.CloseRead))
			tr.shapeErr("CloseWrite again", callMethod(c, closeWriter.CloseWrite))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = c.Read(make([]byte, 4))
			tr.shapeCall("Read", n, err)
			tr.shapeErr("Close", c.Close())
		}},
	}
	runSemCases(t, r.kinds(), cases)
}
