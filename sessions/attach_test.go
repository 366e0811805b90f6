package sessions_test

import (
	"errors"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// session_validate_namespace

func TestValidateNamespace(t *testing.T) {
	for _, c := range []struct {
		name   string
		ns     string
		secret uint64
		want   error
	}{
		{"DefaultNeedsNoSecret", "", 12345, nil},
		{"UnknownID_InvalidNamespace", "green", 42, sessions.ErrInvalidNamespace},
		{"WrongSecret", "blue", 41, sessions.ErrWrongSecret},
		{"ZeroSecretIsWrong", "blue", 0, sessions.ErrWrongSecret},
		{"RightSecret", "blue", 42, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			_, err := r.l.Attach(sessions.AttachOptions{ClientID: 1, Namespace: c.ns, Secret: c.secret})
			wantErr(t, err, c.want)
			if c.want == nil {
				apps := r.l.Apps()
				if len(apps) != 1 || apps[0].Namespace != c.ns {
					t.Fatalf("apps = %+v", apps)
				}
			} else if len(r.l.Apps()) != 0 {
				t.Fatal("failed attach left an app")
			}
		})
	}
}

// vnet_application_attach

func TestAttach_AlreadyAttached(t *testing.T) {
	r := newRig(t)
	if _, err := r.l.Attach(sessions.AttachOptions{ClientID: 7}); err != nil {
		t.Fatal(err)
	}
	_, err := r.l.Attach(sessions.AttachOptions{ClientID: 7, Name: "again"})
	wantErr(t, err, sessions.ErrAlreadyAttached)
	if n := len(r.l.Apps()); n != 1 {
		t.Fatalf("%d apps", n)
	}
}

func TestAttach_NamespaceValidationFails(t *testing.T) {
	r := newRig(t)
	_, err := r.l.Attach(sessions.AttachOptions{ClientID: 7, Namespace: "nope"})
	wantErr(t, err, sessions.ErrInvalidNamespace)
	if apps, _, _, _ := r.mem.Live(); apps != 0 {
		t.Fatal("memory made for a refused app")
	}
}

func TestAttach_AppInitFails_Memory(t *testing.T) {
	r := newRig(t)
	r.mem.FailApp = true
	_, err := r.l.Attach(sessions.AttachOptions{ClientID: 7})
	wantErr(t, err, sessions.ErrNoMemory)
	ns := r.l.Namespaces()
	if ns[0].Apps != 0 {
		t.Fatal("namespace counts a failed app")
	}
}

func TestAttach_AppInitFails_BadOptions(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		o    sessions.AttachOptions
		want error
	}{
		{sessions.AttachOptions{Scope: 0x80}, sessions.ErrInvalidValue},
		{sessions.AttachOptions{RxFifoSize: sessions.MaxFifoSize + 1}, sessions.ErrInvalidValue},
		{sessions.AttachOptions{TxFifoSize: sessions.MaxFifoSize + 1}, sessions.ErrInvalidValue},
		{sessions.AttachOptions{Proxy: true}, sessions.ErrInvalidValue},
		{sessions.AttachOptions{Proxy: true, ProxyTransports: []sessions.Transport{sessions.TransportSCTP}}, sessions.ErrNotSupported},
		{sessions.AttachOptions{MaxSegments: -1}, sessions.ErrInvalidValue},
	} {
		c.o.ClientID = 9
		_, err := r.l.Attach(c.o)
		if !errors.Is(err, c.want) {
			t.Errorf("attach %+v: %v, want %v", c.o, err, c.want)
		}
	}
	if apps, _, _, _ := r.mem.Live(); apps != 0 {
		t.Fatalf("%d app memories alive", apps)
	}
	if ns := r.l.Namespaces(); ns[0].Apps != 0 {
		t.Fatalf("namespace counts %d apps", ns[0].Apps)
	}
}

// An attached client asking again is refused as already attached, before
// its namespace is looked at (seed order).
func TestAttach_AlreadyAttachedBadNamespace_AlreadyAttached(t *testing.T) {
	r := newRig(t)
	if _, err := r.l.Attach(sessions.AttachOptions{ClientID: 11}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []sessions.AttachOptions{
		{ClientID: 11, Namespace: "nosuch"},
		{ClientID: 11, Namespace: "blue", Secret: 41},
		{ClientID: 11, Scope: 0x80},
	} {
		_, err := r.l.Attach(o)
		wantErr(t, err, sessions.ErrAlreadyAttached)
	}
	if n := len(r.l.Apps()); n != 1 {
		t.Fatalf("%d apps", n)
	}
}

func TestAttach_Defaults_SegmentAndEventQueue(t *testing.T) {
	r := newRig(t)
	at, err := r.l.Attach(sessions.AttachOptions{ClientID: 3, Name: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	if len(at.Memory.Segments()) != 1 || at.Memory.EventSegment() == nil {
		t.Fatalf("segments %v, event segment %v", at.Memory.Segments(), at.Memory.EventSegment())
	}
	ai := r.l.Apps()[0]
	if ai.Scope != "global" || ai.RxFifoSize != sessions.DefaultFifoSize || ai.Name != "srv" {
		t.Fatalf("app info %+v", ai)
	}
	if id, ok := r.l.AppOf(3); !ok || id != at.App {
		t.Fatalf("AppOf(3) = %v, %v", id, ok)
	}
}

func TestAttach_Proxy_ListensEveryPortInBothTables(t *testing.T) {
	r := newRig(t)
	p := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeLocal | sessions.ScopeGlobal, Proxy: true,
		ProxyTransports: []sessions.Transport{sessions.TransportTCP}})
	local, global := r.listenersOf(p)
	if len(local) != 2 || len(global) != 2 {
		t.Fatalf("local %v global %v, want 2 each (v4, v6)", local, global)
	}
	for _, li := range append(local, global...) {
		if !li.Proxy {
			t.Errorf("%+v not marked proxy", li)
		}
	}
	// A packet to any address and port of the FIB finds the proxy.
	tup := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 4242, Proto: sessions.TransportTCP, Family: sessions.Family4}
	ln, ok := r.l.LookupListener(1, &tup)
	if !ok || ln.App != p {
		t.Fatalf("LookupListener = %+v, %v", ln, ok)
	}
	tup.Proto = sessions.TransportUDP
	if _, ok := r.l.LookupListener(1, &tup); ok {
		t.Fatal("proxy of tcp caught udp")
	}
}

func TestAttach_Proxy_SecondProxyAddressInUse(t *testing.T) {
	r := newRig(t)
	r.attachOpts(sessions.AttachOptions{Proxy: true, ProxyTransports: []sessions.Transport{sessions.TransportUDP}})
	_, err := r.l.Attach(sessions.AttachOptions{ClientID: 999, Proxy: true, ProxyTransports: []sessions.Transport{sessions.TransportUDP}})
	wantErr(t, err, sessions.ErrAddressInUse)
	if n := len(r.l.Apps()); n != 1 {
		t.Fatalf("%d apps after refused proxy", n)
	}
	if apps, _, _, _ := r.mem.Live(); apps != 1 {
		t.Fatalf("%d app memories alive, want 1", apps)
	}
}

// vnet_application_detach

func TestDetach_NotAttached(t *testing.T) {
	r := newRig(t)
	wantErr(t, r.l.Detach(77), sessions.ErrNotAttached)
	if r.l.DetachClient(77) {
		t.Fatal("DetachClient of unknown client reported true")
	}
}

func TestDetach_FreesEverything(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(srv, "tcp://0.0.0.0:80")
	r.bind(srv, "udp://10.0.0.1:53")
	r.bind(cli, "tcp://0.0.0.0:81")
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, RemotePort: 99, Action: sessions.RuleForward, App: srv, Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	ct, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:80", 5)
	if err != nil || !ct.CutThrough {
		t.Fatalf("cut-through connect: %+v %v", ct, err)
	}
	// An established session of srv on worker 1.
	eh := r.established(srv, 1, "udp://192.0.2.7:5353")
	r.drainShards()
	if !r.inShard(eh) {
		t.Fatal("established session not in shard")
	}
	// A half-open session of srv.
	if _, err := r.l.ConnectURI(srv, "udp://192.0.2.7:9", 0); err != nil {
		t.Fatal(err)
	}
	r.appEvents(cli)

	if err := r.l.Detach(srv); err != nil {
		t.Fatal(err)
	}
	r.drainShards()
	if l, g := r.listenersOf(srv); len(l)+len(g) != 0 {
		t.Fatalf("listeners left: %v %v", l, g)
	}
	for _, s := range r.l.Sessions() {
		if s.App == srv {
			t.Fatalf("session left: %+v", s)
		}
		if s.State == "cut-through" {
			t.Fatalf("cut-through peer left: %+v", s)
		}
	}
	if len(r.l.Rules()) != 0 {
		t.Fatalf("rules forwarding to the app left: %v", r.l.Rules())
	}
	if r.inShard(eh) {
		t.Fatal("session still in shard")
	}
	if !r.memOf(srv).Closed() {
		t.Fatal("app memory not closed")
	}
	evs := r.appEvents(cli)
	if len(evs) != 1 || evs[0].Kind != sessions.EventDisconnected || evs[0].Handle != ct.Handle {
		t.Fatalf("client events %+v, want one disconnect of %#x", evs, ct.Handle)
	}
	apps, pairs, cts, _ := r.mem.Live()
	if apps != 1 || pairs != 0 || cts != 0 {
		t.Fatalf("alive: apps %d pairs %d cts %d", apps, pairs, cts)
	}
	_, _, _, closes := r.dp.Calls()
	if len(closes) != 2 {
		t.Fatalf("datapath told of %d closes, want 2 (established %#x, half-open)", len(closes), eh)
	}
	// The port is free again in both tables.
	other := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(other, "tcp://0.0.0.0:80")
	if ns := r.l.Namespaces(); ns[0].Apps != 2 {
		t.Fatalf("namespace counts %d apps", ns[0].Apps)
	}
}

// namespaces

func TestNamespace_AddDel(t *testing.T) {
	r := newRig(t)
	wantErr(t, r.l.AddNamespace(sessions.NamespaceConfig{ID: "blue"}), sessions.ErrNamespaceExists)
	wantErr(t, r.l.AddNamespace(sessions.NamespaceConfig{ID: ""}), sessions.ErrNamespaceExists)
	wantErr(t, r.l.DelNamespace("green"), sessions.ErrInvalidNamespace)
	wantErr(t, r.l.DelNamespace(""), sessions.ErrInvalidValue)
	a := r.attachOpts(sessions.AttachOptions{Namespace: "blue", Secret: 42})
	wantErr(t, r.l.DelNamespace("blue"), sessions.ErrNamespaceInUse)
	if err := r.l.Detach(a); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.DelNamespace("blue"), nil)
	_, err := r.l.Attach(sessions.AttachOptions{ClientID: 1234, Namespace: "blue", Secret: 42})
	wantErr(t, err, sessions.ErrInvalidNamespace)
}

func TestNamespace_SetDefault(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	wantErr(t, r.l.SetDefaultNamespace(sessions.NamespaceConfig{IfIndex: 3, FIB4: 10}), sessions.ErrNamespaceInUse)
	r.l.Detach(a)
	wantErr(t, r.l.SetDefaultNamespace(sessions.NamespaceConfig{IfIndex: 3, FIB4: 10}), nil)
	b := r.attach(0)
	// 10.1.0.1 is on ifindex 3 / FIB 10: bindable now, 10.0.0.1 no more.
	r.bind(b, "udp://10.1.0.1:1")
	_, err := r.l.BindURI(b, "udp://10.0.0.1:1")
	wantErr(t, err, sessions.ErrNotInNamespace)
}
