package sessions_test

import (
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestHandleOfTheOtherKindSaysWhatToDo: an app that disconnects one of
// its listeners, or unbinds one of its sessions, is told which it is and
// what to call instead, with the sentinel it got before (ErrNoSession,
// ErrAddressNotInUse), and nothing changes. Before, it read only "no such
// session" or "address not in use" for a handle it had just been given.
func TestHandleOfTheOtherKindSaysWhatToDo(t *testing.T) {
	r := newRig(t)
	app := r.attach(sessions.ScopeGlobal | sessions.ScopeLocal)
	local := r.attach(sessions.ScopeLocal)
	gl := r.bind(app, "udp://0.0.0.0:5000")
	ll := r.bind(local, "tcp://0.0.0.0:5001")
	if !ll.IsLocal() {
		t.Fatalf("local-only bind gave handle %#x, not a local one", ll)
	}
	sh := r.established(app, 0, "udp://192.0.2.7:53")

	for _, c := range []struct {
		app sessions.AppID
		h   sessions.Handle
	}{{app, gl}, {local, ll}} {
		err := r.l.Disconnect(c.app, c.h)
		wantErr(t, err, sessions.ErrNoSession)
		if !strings.Contains(err.Error(), "unbind it") {
			t.Errorf("disconnect of listener %#x: %v: does not say to unbind it", c.h, err)
		}
		err = r.l.StreamAbort(c.app, c.h)
		wantErr(t, err, sessions.ErrNoSession)
		if !strings.Contains(err.Error(), "unbind it") {
			t.Errorf("abort of listener %#x: %v: does not say to unbind it", c.h, err)
		}
	}
	err := r.l.Unbind(app, sh)
	wantErr(t, err, sessions.ErrAddressNotInUse)
	if !strings.Contains(err.Error(), "disconnect it") {
		t.Errorf("unbind of session %#x: %v: does not say to disconnect it", sh, err)
	}
	// Another app's handles say nothing of what they are.
	if err := r.l.Disconnect(local, gl); strings.Contains(err.Error(), "unbind") {
		t.Errorf("disconnect of another app's listener: %v", err)
	}
	if err := r.l.Unbind(local, sh); strings.Contains(err.Error(), "disconnect") {
		t.Errorf("unbind of another app's session: %v", err)
	}
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if n, m := len(r.l.Listeners()), len(r.l.Sessions()); n != 3 || m != 1 {
		t.Fatalf("%d listeners and %d sessions after the refused calls, want 3 and 1", n, m)
	}
}
