package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestOwnerPorts: the apps of one owner (uid) hold together at most
// Config.MaxPortsPerOwner ports of the host: global listeners and wire
// connects, half-open or established; past it a bind or connect fails with
// ErrLimit. Another owner's apps and root's are not held back, and a
// failed connect, a close, an unbind and an app's detach give theirs back.
func TestOwnerPorts(t *testing.T) {
	r := newRigWith(t, func(c *sessions.Config) { c.MaxPortsPerOwner = 4 })
	check := func() {
		t.Helper()
		if err := r.l.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
	}
	a1 := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal | sessions.ScopeLocal, Owner: 1000})
	a2 := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1000})
	other := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1001})
	root := r.attach(sessions.ScopeGlobal)

	r.bind(a1, "udp://0.0.0.0:5000")                           // 1
	ho, err := r.l.ConnectURI(a1, "tcp://192.0.2.7:80", 1)     // 2, half-open
	wantErr(t, err, nil)                                       //
	est := r.established(a2, 1, "udp://192.0.2.7:53")          // 3
	failed, err := r.l.ConnectURI(a2, "tcp://192.0.2.7:81", 2) // 4, to fail below
	wantErr(t, err, nil)                                       //
	check()
	_, err = r.l.BindURI(a2, "udp://0.0.0.0:5001")
	wantErr(t, err, sessions.ErrLimit)
	_, err = r.l.ConnectURI(a1, "udp://192.0.2.7:54", 3)
	wantErr(t, err, sessions.ErrLimit)
	// Others are not held back.
	r.bind(other, "udp://0.0.0.0:5002")
	for i := range 6 {
		if _, err := r.l.ConnectURI(root, "udp://192.0.2.7:55", uint32(i)); err != nil {
			t.Fatalf("root's connect %d: %v", i, err)
		}
	}
	check()
	// A half-open that fails gives its port back.
	wantErr(t, r.l.ConnectFailed(failed.Handle, sessions.ErrConnect), nil)
	check()
	h5 := r.bind(a2, "udp://0.0.0.0:5001")
	_, err = r.l.BindURI(a2, "udp://0.0.0.0:5003")
	wantErr(t, err, sessions.ErrLimit)
	// A half-open that completes keeps it; a close gives it back.
	eh, err := r.l.Connected(1, ho.Handle)
	wantErr(t, err, nil)
	check()
	_, err = r.l.ConnectURI(a2, "udp://192.0.2.7:56", 5)
	wantErr(t, err, sessions.ErrLimit)
	wantErr(t, r.l.Disconnect(a1, eh), nil)
	wantErr(t, r.l.Disconnect(a2, est), nil)
	check()
	r.established(a2, 0, "udp://192.0.2.7:57")
	wantErr(t, r.l.Unbind(a2, h5), nil)
	check()
	// A detach gives back all of the app's.
	r.l.Detach(a1)
	check()
	for i := range 3 { // beside its connect to port 57
		if _, err := r.l.ConnectURI(a2, "udp://192.0.2.7:58", uint32(10+i)); err != nil {
			t.Fatalf("connect %d after the detach: %v", i, err)
		}
	}
	_, err = r.l.ConnectURI(a2, "udp://192.0.2.7:59", 13)
	wantErr(t, err, sessions.ErrLimit)
	r.l.Detach(a2)
	// Ports the datapath keeps after closed sessions of the owner's count
	// too. Those in TIME-WAIT are shed, oldest first, before a connect is
	// refused: with 3 kept, a second connect sheds one.
	r.dp.Keep(1000, 3)
	a3 := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1000})
	r.established(a3, 0, "udp://192.0.2.7:60")
	r.established(a3, 0, "udp://192.0.2.7:61")
	if r.dp.Shed != 1 {
		t.Fatalf("%d kept ports shed, want 1", r.dp.Shed)
	}
	// Those still draining are not: with 2 live and 2 draining, a
	// connect is refused.
	r.dp.Keep(1000, 0)
	r.dp.Drain(1000, 2)
	_, err = r.l.ConnectURI(a3, "udp://192.0.2.7:62", 1)
	wantErr(t, err, sessions.ErrLimit)
	r.dp.Drain(1000, 1)
	r.established(a3, 0, "udp://192.0.2.7:62")
	check()
	// A stream (TCP) connect holds its port once established too.
	r.dp.Drain(1000, 0)
	res, err := r.l.ConnectURI(a3, "tcp://192.0.2.7:80", 2)
	wantErr(t, err, nil)
	if _, err := r.l.StreamConnected(1, res.Handle, sessions.FifoPair{}, func(sessions.Handle) {}); err != nil {
		t.Fatalf("StreamConnected: %v", err)
	}
	check()
	_, err = r.l.ConnectURI(a3, "tcp://192.0.2.7:81", 3)
	wantErr(t, err, sessions.ErrLimit)
}
