package daemon

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestTCPConnWaitingCallsMatchKernel: calls of an app's TCP Conn that wait
// (dialed to and accepted from a kernel peer on host A, and cut-through
// between two apps) end as a kernel connection's do when something
// happens meanwhile: a write deadline that passes during a large Write
// returns what it queued (which the peer reads, exactly) with a timeout;
// one moved earlier, or into the past, ends a Write waiting for room, and
// the Write queued behind it; Close ends both; CloseRead ends a waiting
// Read with io.EOF, and later data is still read; the peer's reset ends a
// waiting Read with ECONNRESET and a waiting Write with it too, with what
// was queued, once.
func TestTCPConnWaitingCallsMatchKernel(t *testing.T) {
	r := newSemConnRig(t)
	big := make([]byte, 64<<20)
	cases := []semCase{
		{name: "deadline interrupts a large Write", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Write(big)
			tr.note("Write", fmt.Sprintf("some %v all %v %s", n > 0, n == len(big), errClass(err)))
			c.SetWriteDeadline(time.Time{})
			peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			got, err := io.ReadFull(peer, make([]byte, n))
			tr.note("peer reads n", fmt.Sprintf("%v %s", got == n, errClass(err)))
			m, err := c.Write([]byte("z"))
			tr.call("Write after", m, err)
			peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			m, err = io.ReadFull(peer, make([]byte, 1))
			tr.call("peer reads the byte", m, err)
			peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			m, err = peer.Read(make([]byte, 10))
			tr.call("peer reads no more", m, err)
		}},
		{name: "deadline moved earlier while a Write waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			tr.err("SetWriteDeadline soon", c.SetWriteDeadline(time.Now().Add(50*time.Millisecond)))
			select {
			case r := <-w:
				tr.note("blocked Write", fmt.Sprintf("some %v all %v %s fast %v", r.n > 0, r.n == len(big), errClass(r.err), r.took < 2*time.Second))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked")
			}
		}},
		{name: "deadline past while a Write waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			w2 := goCall(func() (int, error) { return c.Write([]byte("second")) })
			time.Sleep(50 * time.Millisecond)
			tr.err("SetWriteDeadline past", c.SetWriteDeadline(time.Unix(1, 0)))
			select {
			case r := <-w:
				tr.note("blocked Write", fmt.Sprintf("some %v all %v %s", r.n > 0, r.n == len(big), errClass(r.err)))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked")
			}
			tr.awaitCall("second Write", w2)
		}},
		{name: "Close wakes two blocked Writes", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			w2 := goCall(func() (int, error) { return c.Write([]byte("second")) })
			time.Sleep(50 * time.Millisecond)
			tr.err("Close", c.Close())
			select {
			case r := <-w:
				tr.note("blocked Write", fmt.Sprintf("some %v all %v %s", r.n > 0, r.n == len(big), errClass(r.err)))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked")
			}
			tr.awaitCall("second Write", w2)
		}},
		{name: "CloseRead while a Read waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(50 * time.Millisecond)
			tr.err("CloseRead", callMethod(c, closeReader.CloseRead))
			r := tr.awaitCall("waiting Read", rd)
			tr.note("fast", fmt.Sprint(r.took < time.Second))
			peer.Write([]byte("late"))
			time.Sleep(100 * time.Millisecond)
			n, err := c.Read(make([]byte, 16))
			tr.call("Read late data", n, err)
			n, err = c.Read(make([]byte, 16))
			tr.call("Read again", n, err)
		}},
		{name: "peer reset while a Read waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			rd := goCall(func() (int, error) { return c.Read(make([]byte, 16)) })
			time.Sleep(50 * time.Millisecond)
			resetConn(t, peer)
			tr.awaitCall("waiting Read", rd)
			n, err := c.Read(make([]byte, 16))
			tr.call("Read again", n, err)
			n, err = c.Write([]byte("x"))
			tr.call("Write", n, err)
		}},
		{name: "peer reset while a Write waits", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			w, ok := blockedWrite(c, big, tr)
			if !ok {
				return
			}
			resetConn(t, peer)
			select {
			case r := <-w:
				tr.note("blocked Write", fmt.Sprintf("some %v all %v %s", r.n > 0, r.n == len(big), errClass(r.err)))
			case <-time.After(5 * time.Second):
				tr.note("blocked Write", "still blocked")
			}
			n, err := c.Write([]byte("x"))
			tr.call("Write again", n, err)
			n, err = c.Read(make([]byte, 16))
			tr.call("Read", n, err)
		}},
	}
	runSemCases(t, r.kinds(), cases)
}
