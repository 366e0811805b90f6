package datapath

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// An active open whose app closes it (or dies) before its dial took its
// fifos counts its port against the app's uid from the close, and no more
// once the dial gave the port up: an app that dials and cancels at once,
// again and again, would otherwise leave its uid a kept port each time
// that nothing releases, until every connect and bind of the uid's apps
// failed at sessions.Config.MaxPortsPerOwner.
func TestTCPHalfOpenClosedBeforeDialKeepsNoPort(t *testing.T) {
	l, err := sessions.New(sessions.Config{View: sessionstest.NewView(), Memory: sessions.FifoMemory{}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpPath{e: &Engine{log: slog.New(slog.NewTextHandler(io.Discard, nil))}, users: map[sessions.AppID]uint32{},
		conns: map[flow.Handle]*tcpSess{}, apps: map[sessions.AppID]*tcpApp{}}
	p.e.layer.Store(l)
	const ho = flow.Handle(7)
	s := &tcpSess{p: p, app: 1, uid: 1000, res: &tcpReservation{fd: -1}, ho: ho}
	p.apps[1] = &tcpApp{live: 1}
	p.conns[ho] = s
	// The app's close of the half-open (the layer forgot it first), before
	// the dial's goroutine got to it.
	if !p.closeByApp(ho) {
		t.Fatal("the half-open was not found")
	}
	if n := p.keptPorts(1000); n != 1 {
		t.Fatalf("closed while its dial waits: %d ports kept, want 1", n)
	}
	// The dial finds the session gone and gives the port up.
	p.dial(s, netip.MustParseAddrPort("10.0.0.1:80"))
	if n := p.keptPorts(1000); n != 0 || len(p.coolBy) != 0 {
		t.Fatalf("after the dial gave up: %d ports kept for uid 1000 (%v), want 0", n, p.coolBy)
	}
	if len(p.conns) != 0 || len(p.apps) != 0 {
		t.Fatalf("after the dial gave up: %d sessions, %d apps left", len(p.conns), len(p.apps))
	}
}

// A connection a forward rule hands to another app's listener, refused
// by the layer (here: a worker it does not know), is counted out of the
// app it was counted against, the rule's, not out of the listening app:
// else the listening app's count of live connections would fall short
// (its memory freed at its detach while a connection of it still runs)
// and the other app's would never reach zero (its memory never freed).
func TestTCPForwardedAcceptRefusedCountsOut(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.1")
	l, err := sessions.New(sessions.Config{View: sessionstest.NewView().Add(2, 1, addr), Memory: &sessionstest.Memory{},
		Datapath: sessionstest.NewDatapath(addr, netip.MustParseAddr("fd00::1")), Workers: 1,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := l.Attach(sessions.AttachOptions{ClientID: 1, Scope: sessions.ScopeGlobal})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := l.Attach(sessions.AttachOptions{ClientID: 2, Scope: sessions.ScopeGlobal, Proxy: true,
		ProxyTransports: []sessions.Transport{sessions.TransportTCP}})
	if err != nil {
		t.Fatal(err)
	}
	lh, err := l.BindURI(lis.App, "tcp://10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddRule(sessions.Rule{Transport: flow.TransportTCP, Action: sessions.RuleForward, App: proxy.App}); err != nil {
		t.Fatal(err)
	}
	e := &Engine{log: slog.New(slog.NewTextHandler(io.Discard, nil)), fib: 1, work: []*worker{{id: 9}}}
	e.layer.Store(l)
	p := &tcpPath{e: e, users: map[sessions.AppID]uint32{}, conns: map[flow.Handle]*tcpSess{}, apps: map[sessions.AppID]*tcpApp{}}
	p.wq = []*tcpWorker{{w: e.work[0]}}
	p.apps[lis.App] = &tcpApp{live: 1} // a connection of the listening app's runs
	tl := &tcpListener{p: p, h: lh, app: lis.App, backlog: 8}
	if _, _, _, err := tl.Accept(new(tcp.Conn)); err == nil {
		t.Fatal("accepted on a worker the layer does not know")
	}
	if a := p.apps[lis.App]; a == nil || a.live != 1 {
		t.Fatalf("the listening app's live connections: %+v, want 1", a)
	}
	if a := p.apps[proxy.App]; a != nil {
		t.Fatalf("the forward rule's app's live connections: %+v, want none", a)
	}
}
