package nsbind

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

var (
	_ sessions.NetView = (*View)(nil)
	_ sessions.NetView = (*Views)(nil)
)

// TestSessionsBindFollowsAddress runs the session layer on a live View: a
// bind to an address works once the address is on the namespace's
// interface, and answers ErrNotInNamespace once it is gone.
func TestSessionsBindFollowsAddress(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	ns := openNamed(t, p.B.Name)
	v := newView(t, ns, ViewOptions{})
	l, err := sessions.New(sessions.Config{
		View:     v,
		Memory:   &sessionstest.Memory{},
		Datapath: sessionstest.NewDatapath(p.B.IPv4, p.B.IPv6),
		Default:  sessions.NamespaceConfig{IfIndex: p.B.IfIndex, FIB4: ns.FIB(), FIB6: ns.FIB()},
	})
	if err != nil {
		t.Fatal(err)
	}
	at, err := l.Attach(sessions.AttachOptions{ClientID: 1, Scope: flow.ScopeGlobal})
	if err != nil {
		t.Fatal(err)
	}
	nh := nlHandle(t, p.B)
	lk := link(t, nh, p.B)
	for i, pfx := range []netip.Prefix{netip.MustParsePrefix("10.77.0.60/24"), netip.MustParsePrefix("fd77::60/64")} {
		e := flow.Endpoint{Transport: flow.TransportUDP, Addr: pfx.Addr(), Port: uint16(5000 + i)}
		if _, err := l.Bind(at.App, e); !errors.Is(err, flow.ErrNotInNamespace) {
			t.Fatalf("bind %v before the address exists: %v", pfx, err)
		}
		if err := nh.AddrAdd(lk, nlAddr(pfx)); err != nil {
			t.Fatal(err)
		}
		if _, err := v.WaitFor(ctxT(t), func(s *Snapshot) bool { return s.HasAddress(p.B.IfIndex, pfx.Addr()) }); err != nil {
			t.Fatal(err)
		}
		h, err := l.Bind(at.App, e)
		if err != nil {
			t.Fatalf("bind %v with the address present: %v", pfx, err)
		}
		if err := l.Unbind(at.App, h); err != nil {
			t.Fatal(err)
		}
		if err := nh.AddrDel(lk, nlAddr(pfx)); err != nil {
			t.Fatal(err)
		}
		if _, err := v.WaitFor(ctxT(t), func(s *Snapshot) bool { return !s.HasAddress(p.B.IfIndex, pfx.Addr()) }); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Bind(at.App, e); !errors.Is(err, flow.ErrNotInNamespace) {
			t.Fatalf("bind %v after the address was removed: %v, want ErrNotInNamespace", pfx, err)
		}
	}
	// A's address is not B's, loopback is.
	if _, err := l.Bind(at.App, flow.Endpoint{Transport: flow.TransportUDP, Addr: p.A.IPv4, Port: 6000}); !errors.Is(err, flow.ErrNotInNamespace) {
		t.Fatalf("bind to the peer's address: %v", err)
	}
}
