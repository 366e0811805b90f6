package datapath_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// TestTxRoomNotify: an app whose writer waits for room in a listener's tx
// fifo asks for dequeue notifications (fifo.DeqNotifyAlways, as the app
// library does when the fifo is full); the worker that drains the fifo
// then writes the app's eventfd, so the writer wakes when room is made
// rather than on a timer. An app that did not ask is not woken.
func TestTxRoomNotify(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	a := r.attach(t)
	srv := hostUDP(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 7300))
	h, err := r.l.BindURI(a.id, "udp://"+netip.AddrPortFrom(r.p.B.IPv4, 7301).String())
	if err != nil {
		t.Fatal(err)
	}
	pair, w, err := r.l.ListenerPair(a.id, h)
	if err != nil {
		t.Fatal(err)
	}
	r.waitMirror(t)
	tx := pair.Tx
	efd := a.evq.EventFD()
	// signalled reports whether the app's eventfd was written within d,
	// and resets it.
	signalled := func(d time.Duration) bool {
		fds := []unix.PollFd{{Fd: int32(efd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if n == 0 {
			return false
		}
		var b [8]byte
		_, _ = unix.Read(efd, b[:])
		return true
	}
	signalled(0)
	buf := make([]byte, 64)
	send := func(seq byte) {
		hdr := fifo.DgramHeader{Family: flow.Family4, Remote: flow.AddrBytes(r.p.A.IPv4), RemotePort: 7300}
		if err := tx.EnqueueDgram(&hdr, []byte{seq}); err != nil {
			t.Fatal(err)
		}
		if tx.SetEvent() {
			r.kick(w)
		}
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := srv.ReadFromUDPAddrPort(buf)
		if err != nil || n != 1 || buf[0] != seq {
			t.Fatalf("datagram %d: A read %d bytes %x, %v", seq, n, buf[:max(n, 0)], err)
		}
	}

	// Not asked: the drain tells nobody.
	send(1)
	if signalled(200 * time.Millisecond) {
		t.Fatal("the app's eventfd was written for a dequeue nobody asked to hear of")
	}
	// Asked: the drain of the next datagram wakes the app.
	tx.WantDeqNotify(fifo.DeqNotifyAlways)
	send(2)
	if !signalled(5 * time.Second) {
		t.Fatal("a writer waiting for room asked for dequeue notifications; the worker drained the fifo and did not write the app's eventfd")
	}
	tx.WantDeqNotify(0)
	send(3)
	if signalled(200 * time.Millisecond) {
		t.Fatal("the app's eventfd was written after the app stopped asking")
	}
}
