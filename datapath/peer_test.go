package datapath_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestConnectedUDPPeerUnreachable: a connected session whose peer has no
// socket on its port gets the peer's ICMP port unreachable as an
// EventError with ECONNREFUSED in its app's event queue and stays open: a
// later datagram, once the port has a socket, goes through. A session to
// a live peer gets no error.
func TestConnectedUDPPeerUnreachable(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	a := r.attach(t)
	// A live peer on A:7100, none on A:7101 yet.
	listen := func(port uint16) (*net.UDPConn, chan string) {
		srv := hostUDP(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, port))
		got := make(chan string, 16)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, err := srv.Read(buf)
				if err != nil {
					return
				}
				got <- string(buf[:n])
			}
		}()
		return srv, got
	}
	srv, _ := listen(7100)
	defer srv.Close()
	connect := func(port uint16, opaque uint32) sessions.Event {
		if _, err := r.l.ConnectURI(a.id, "udp://"+netip.AddrPortFrom(r.p.A.IPv4, port).String(), opaque); err != nil {
			t.Fatal(err)
		}
		return r.note.wait(t, "connected", func(e sessions.Event) bool { return e.Kind == sessions.EventConnected && e.Opaque == opaque })
	}
	live, dead := connect(7100, 31), connect(7101, 32)
	r.waitMirror(t)
	send := func(ev sessions.Event, msg string) {
		tx := ev.Pair.Tx
		if err := tx.EnqueueDgram(&fifo.DgramHeader{}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if tx.SetEvent() {
			r.kick(ev.Handle.Worker())
		}
	}
	for _, ev := range []sessions.Event{live, dead} {
		send(ev, "is anyone there?")
	}
	var errEv fifo.Event
	evs := make([]fifo.Event, 64)
	for deadline := time.Now().Add(5 * time.Second); errEv.Type == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no error event")
		}
		n, _ := a.evq.PopBatch(evs)
		for _, ev := range evs[:n] {
			if ev.Type == fifo.EventError {
				if flow.Handle(ev.Handle) != dead.Handle {
					t.Fatalf("error event for handle %#x, want %#x", ev.Handle, uint64(dead.Handle))
				}
				errEv = ev
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if unix.Errno(errEv.Arg32) != unix.ECONNREFUSED {
		t.Fatalf("error event errno %v, want ECONNREFUSED", unix.Errno(errEv.Arg32))
	}
	if st := r.eng.Stats(); st.PeerErrors != 1 {
		t.Fatalf("peer errors %d, want 1", st.PeerErrors)
	}
	// The session stays open and its port held: a socket on the peer's
	// port now receives what it sends.
	if err := r.p.B.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(dead.Local))
		if err == nil {
			c.Close()
			return errors.New("the session's port is free")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	srv2, got := listen(7101)
	defer srv2.Close()
	send(dead, "now?")
	select {
	case m := <-got:
		if m != "now?" {
			t.Fatalf("peer got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session sent nothing after its error")
	}
	for _, h := range []flow.Handle{dead.Handle, live.Handle} {
		if err := r.l.Disconnect(a.id, h); err != nil {
			t.Fatalf("disconnect %#x: %v", uint64(h), err)
		}
	}
}
