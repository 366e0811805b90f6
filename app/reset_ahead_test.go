package app

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// A reset ahead of its data (fifo.EventResetAhead) that comes before the
// session's owner registered (a dial's Conn not made yet) is kept for it
// with its reason: the session is not over for the reads (register
// reports it alive), it is for CloseWrite and CloseRead (ended: ENOTCONN,
// as shutdown(2) of a kernel socket in CLOSE), and the writes' error is
// the reset's: ETIMEDOUT for a timeout, EPIPE for a reset after the
// peer's FIN, else ECONNRESET. The EventReset that follows ends it.
func TestResetAheadBeforeRegister(t *testing.T) {
	a := &App{owners: map[flow.Handle]owner{}, goneEarly: map[flow.Handle]uint8{},
		closing: map[flow.Handle]struct{}{}, localOf: map[flow.Handle]netip.AddrPort{}}
	for i, c := range []struct {
		code flow.Code
		want error
	}{
		{flow.CodeOK, syscall.ECONNRESET},
		{flow.CodeTimedOut, syscall.ETIMEDOUT},
		{flow.CodeBrokenPipe, syscall.EPIPE},
	} {
		h := flow.MakeHandle(0, uint32(i))
		ev := (&fifo.SessionEvent{Type: fifo.EventResetAhead, Handle: uint64(h), Code: uint64(c.code)}).Encode()
		a.handleEvent(&ev)
		conn := newConn(a, &end{h: h, datapath: true}, &net.TCPAddr{}, &net.TCPAddr{}, netip.AddrPort{}, netip.AddrPort{})
		if !a.register(h, conn) {
			t.Fatalf("code %d: a reset ahead of its data ended the session for the reads", c.code)
		}
		if !conn.e.resetAhead.Load() || conn.e.gone.Load() {
			t.Errorf("code %d: resetAhead %v, gone %v; want the reset ahead kept, the session not gone",
				c.code, conn.e.resetAhead.Load(), conn.e.gone.Load())
		}
		if !conn.ended() {
			t.Errorf("code %d: not ended for CloseWrite and CloseRead", c.code)
		}
		if err := conn.e.resetErr(); !errors.Is(err, c.want) {
			t.Errorf("code %d: the writes' error %v, want %v", c.code, err, c.want)
		}
		ev = (&fifo.SessionEvent{Type: fifo.EventReset, Handle: uint64(h), Code: uint64(c.code)}).Encode()
		a.handleEvent(&ev)
		if !conn.e.gone.Load() || !conn.e.reset.Load() {
			t.Errorf("code %d: the reset that followed did not end the session", c.code)
		}
		a.unregister(h, conn)
	}
	if len(a.goneEarly) != 0 {
		t.Errorf("goneEarly keeps %d entries", len(a.goneEarly))
	}
}
