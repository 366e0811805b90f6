package datapath_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestConnectedUDPPeerUnreachable: a connected session whose peer has no
// socket on its port is closed when the peer's ICMP port unreachable
// comes back, and its app is told; a session to a live peer stays.
func TestConnectedUDPPeerUnreachable(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	a := r.attach(t)
	// A live peer on A:7100 (it reads and drops), none on A:7101.
	var srv *net.UDPConn
	if err := r.p.A.Do(func() error {
		var err error
		srv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.p.A.IPv4, 7100)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := srv.Read(buf); err != nil {
				return
			}
		}
	}()
	connect := func(port uint16, opaque uint32) sessions.Event {
		if _, err := r.l.ConnectURI(a.id, "udp://"+netip.AddrPortFrom(r.p.A.IPv4, port).String(), opaque); err != nil {
			t.Fatal(err)
		}
		return r.note.wait(t, "connected", func(e sessions.Event) bool { return e.Kind == sessions.EventConnected && e.Opaque == opaque })
	}
	live, dead := connect(7100, 31), connect(7101, 32)
	r.waitMirror(t)
	for _, ev := range []sessions.Event{live, dead} {
		tx := ev.Pair.Tx
		if err := tx.EnqueueDgram(&fifo.DgramHeader{}, []byte("is anyone there?")); err != nil {
			t.Fatal(err)
		}
		if tx.SetEvent() {
			r.kick(ev.Handle.Worker())
		}
	}
	r.note.wait(t, "disconnected", func(e sessions.Event) bool { return e.Kind == sessions.EventDisconnected && e.Handle == dead.Handle })
	if st := r.eng.Stats(); st.PeerClosed != 1 {
		t.Fatalf("peer-closed %d, want 1", st.PeerClosed)
	}
	// The closed session's port is free again; the live one is still open.
	if err := r.p.B.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(dead.Local))
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("port %v of the closed session: %v", dead.Local, err)
	}
	if err := r.l.Disconnect(a.id, dead.Handle); !errors.Is(err, flow.ErrNoSession) {
		t.Fatalf("disconnect of the closed session: %v", err)
	}
	if err := r.l.Disconnect(a.id, live.Handle); err != nil {
		t.Fatalf("disconnect of the live session: %v", err)
	}
}
