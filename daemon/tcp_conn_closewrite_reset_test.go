package daemon

import (
	"net"
	"testing"
	"time"
)

// TestTCPCloseWriteThenResetMatchesKernel: a connection whose own half
// was closed (CloseWrite) and which its peer then reset reports the reset
// once, to the first call that looks, as a kernel connection reports its
// pending error (sk_err) before the shut down half's EPIPE: a Write fails
// with ECONNRESET (of nothing too), and the reads after it return io.EOF;
// on the wire (the peer a kernel socket) and cut-through (the peer
// another app).
func TestTCPCloseWriteThenResetMatchesKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "write", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			n, err := c.Write([]byte("x"))
			tr.call("Write", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write again", n, err)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = c.Read(make([]byte, 4))
			tr.call("Read", n, err)
			n, err = c.Read(make([]byte, 4))
			tr.call("Read again", n, err)
		}},
		{name: "write of nothing", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			n, err := c.Write(nil)
			tr.call("Write of nothing", n, err)
			n, err = c.Write(nil)
			tr.call("Write of nothing again", n, err)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err = c.Read(make([]byte, 4))
			tr.call("Read", n, err)
		}},
		{name: "read first", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			tr.err("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			resetConn(t, peer)
			time.Sleep(300 * time.Millisecond) // the RST arrives
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 4))
			tr.call("Read", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write", n, err)
			n, err = c.Read(make([]byte, 4))
			tr.call("Read again", n, err)
		}},
	}
	runSemCases(t, r.kinds(), cases)
}
