package sessions_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// TestSessionsPageFollowsChanges: pages of sessions, read after each
// change of the table (connects on the wire and cut-through, the
// handshake's end, disconnects, an app's detach), are the table in handle
// order, each session once, whatever the page size; and the sorted
// handles the pages come from are never marked current while they are not
// the table's (CheckInvariants).
func TestSessionsPageFollowsChanges(t *testing.T) {
	view := sessionstest.NewView().Add(2, 1, addrA)
	dp := sessionstest.NewDatapath(addrA, addrA6)
	l, err := sessions.New(sessions.Config{View: view, Memory: sessions.FifoMemory{}, Datapath: dp, Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1}})
	if err != nil {
		t.Fatal(err)
	}
	attach := func(id uint64) sessions.AppID {
		t.Helper()
		at, err := l.Attach(sessions.AttachOptions{ClientID: id, Scope: sessions.ScopeLocal | sessions.ScopeGlobal, SegmentSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return at.App
	}
	srv := attach(1)
	if _, err := l.BindURI(srv, "tcp://0.0.0.0:7000"); err != nil {
		t.Fatal(err)
	}
	clients := []sessions.AppID{attach(2), attach(3)}
	next := uint64(4)
	rng := rand.New(rand.NewPCG(1, 2))
	var halfOpen []sessions.Handle
	port := 1000
	check := func(step int, what string) {
		t.Helper()
		if err := l.CheckInvariants(); err != nil {
			t.Fatalf("step %d (%s): %v", step, what, err)
		}
		whole := l.Sessions()
		size := 1 + rng.IntN(7)
		var paged []sessions.SessionInfo
		for after := sessions.Handle(0); ; {
			p := l.SessionsPage(after, size)
			paged = append(paged, p...)
			if len(p) < size {
				break
			}
			after = p[len(p)-1].Handle
		}
		if len(paged) != len(whole) {
			t.Fatalf("step %d (%s): pages of %d gave %d sessions, the table has %d", step, what, size, len(paged), len(whole))
		}
		for i := range whole {
			if paged[i].Handle != whole[i].Handle || (i > 0 && whole[i].Handle <= whole[i-1].Handle) {
				t.Fatalf("step %d (%s): row %d: paged %#x, whole %#x", step, what, i, paged[i].Handle, whole[i].Handle)
			}
		}
	}
	for step := range 400 {
		var what string
		switch r := rng.IntN(10); {
		case r < 3:
			what = "cut-through connect"
			c := clients[rng.IntN(len(clients))]
			if _, err := l.ConnectURI(c, "tcp://127.0.0.1:7000", 0); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		case r < 5:
			what = "wire connect"
			port++
			res, err := l.ConnectURI(srv, fmt.Sprintf("udp://192.0.2.7:%d", port), 0)
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			halfOpen = append(halfOpen, res.Handle)
		case r < 6 && len(halfOpen) > 0:
			what = "handshake done"
			ho := halfOpen[0]
			halfOpen = halfOpen[1:]
			if _, err := l.Connected(0, ho); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		case r < 9:
			what = "disconnect"
			ss := l.Sessions()
			if len(ss) == 0 {
				continue
			}
			s := ss[rng.IntN(len(ss))]
			if err := l.Disconnect(s.App, s.Handle); err != nil {
				t.Fatalf("step %d: disconnect %#x: %v", step, s.Handle, err)
			}
			halfOpen = nil // some may be gone; the rest stay half-open
		default:
			what = "client detach"
			i := rng.IntN(len(clients))
			if err := l.Detach(clients[i]); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			clients[i] = attach(next)
			next++
		}
		check(step, what)
	}
	if len(l.Sessions()) == 0 {
		t.Fatal("the table ended empty: the test checked little")
	}
}
