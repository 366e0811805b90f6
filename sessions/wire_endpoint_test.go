package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestWireEndpoint: an app's global listener and datapath session name the
// endpoint (interface and FIB) they send from; another app's handle, an
// unknown one, a local listener and a cut-through session do not.
func TestWireEndpoint(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	lh := r.bind(a, "udp://10.0.0.1:9000")
	e, err := r.l.WireEndpoint(a, lh)
	if err != nil || e.Addr != addrA || e.Port != 9000 || e.IfIndex != 2 || e.FIB != 1 {
		t.Fatalf("listener: %+v, %v", e, err)
	}
	lh6 := r.bind(a, "udp://[::]:9000")
	if e, err := r.l.WireEndpoint(a, lh6); err != nil || !e.Addr.Is6() || e.FIB != 2 {
		t.Fatalf("IPv6 listener: %+v, %v", e, err)
	}
	sh := r.established(a, 1, "udp://192.0.2.7:53")
	e, err = r.l.WireEndpoint(a, sh)
	if err != nil || !e.Addr.Is4() || e.Port == 0 || e.IfIndex != 2 || e.FIB != 1 || e.Transport != sessions.TransportUDP {
		t.Fatalf("session: %+v, %v", e, err)
	}

	b := r.attach(sessions.ScopeGlobal | sessions.ScopeLocal)
	_, err = r.l.WireEndpoint(b, lh)
	wantErr(t, err, sessions.ErrNotOwner)
	_, err = r.l.WireEndpoint(b, sh)
	wantErr(t, err, sessions.ErrNotOwner)
	_, err = r.l.WireEndpoint(a, sessions.MakeHandle(0, 999))
	wantErr(t, err, sessions.ErrNoSession)

	c := r.attach(sessions.ScopeLocal)
	loc := r.bind(c, "udp://0.0.0.0:7000")
	if !loc.IsLocal() {
		t.Fatalf("listener of a local-scope app: %#x is not a local handle", uint64(loc))
	}
	_, err = r.l.WireEndpoint(c, loc)
	wantErr(t, err, sessions.ErrNotSupported)
	res, err := r.l.ConnectURI(b, "udp://127.0.0.1:7000", 1)
	if err != nil || !res.CutThrough {
		t.Fatalf("connect to the local listener: %+v, %v", res, err)
	}
	_, err = r.l.WireEndpoint(b, res.Handle)
	wantErr(t, err, sessions.ErrNotSupported)
	_, err = r.l.WireEndpoint(sessions.AppID(9999), lh)
	wantErr(t, err, sessions.ErrNotAttached)
}
