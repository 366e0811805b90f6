package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// vnet_bind_i

func TestBind_NotAttached(t *testing.T) {
	r := newRig(t)
	_, err := r.l.Bind(5, ep(sessions.TransportTCP, zero4, 80))
	wantErr(t, err, sessions.ErrNotAttached)
}

func TestBind_EndpointNotInNamespace(t *testing.T) {
	for _, c := range []struct {
		name string
		uri  string
		ns   string
		want error
	}{
		{"ZeroAddressAlwaysIn", "tcp://0.0.0.0:80", "", nil},
		{"AddressOnNamespaceInterface", "tcp://10.0.0.1:80", "", nil},
		{"IPv6AddressOnNamespaceInterface", "tcp://[fd00::1]:80", "", nil},
		{"InterfaceLacksAddress", "tcp://10.0.0.9:80", "", sessions.ErrNotInNamespace},
		{"NotLocalToFIB", "tcp://192.0.2.7:80", "", sessions.ErrNotInNamespace},
		{"AddressOfAnotherNamespace", "tcp://10.1.0.1:80", "", sessions.ErrNotInNamespace},
		{"OtherNamespaceOwnAddress", "tcp://10.1.0.1:80", "blue", nil},
		{"OtherNamespaceDefaultsAddress", "tcp://10.0.0.1:80", "blue", sessions.ErrNotInNamespace},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			o := sessions.AttachOptions{Namespace: c.ns}
			if c.ns == "blue" {
				o.Secret = 42
			}
			a := r.attachOpts(o)
			_, err := r.l.BindURI(a, c.uri)
			wantErr(t, err, c.want)
		})
	}
}

func TestBind_AddressInUseGlobalTable(t *testing.T) {
	r := newRig(t)
	a, b := r.attach(0), r.attach(sessions.ScopeLocal)
	r.bind(a, "udp://0.0.0.0:53")
	// Even a local-only app is refused: the global table is checked first.
	_, err := r.l.BindURI(b, "udp://0.0.0.0:53")
	wantErr(t, err, sessions.ErrAddressInUse)
	_, err = r.l.BindURI(a, "udp://0.0.0.0:53")
	wantErr(t, err, sessions.ErrAddressInUse)
	// Other port, transport, family or address are free.
	r.bind(a, "tcp://0.0.0.0:53")
	r.bind(a, "udp://[::]:53")
	r.bind(a, "udp://10.0.0.1:53")
}

func TestBind_AddressInUseLocalTable(t *testing.T) {
	r := newRig(t)
	a, b := r.attach(sessions.ScopeLocal), r.attach(sessions.ScopeLocal|sessions.ScopeGlobal)
	r.bind(a, "tcp://0.0.0.0:80")
	_, err := r.l.BindURI(b, "tcp://0.0.0.0:80")
	wantErr(t, err, sessions.ErrAddressInUse)
	if _, g := r.listenersOf(b); len(g) != 0 {
		t.Fatal("global listener added although the local table refused")
	}
	// Another namespace has its own local table.
	c := r.attachOpts(sessions.AttachOptions{Namespace: "blue", Secret: 42, Scope: sessions.ScopeLocal})
	r.bind(c, "tcp://0.0.0.0:80")
}

func TestBind_LocalScopeZeroAddress_LocalHandle(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal)
	h := r.bind(a, "tcp://0.0.0.0:8080")
	if !h.IsLocal() {
		t.Fatalf("handle %#x is not local", h)
	}
	e, err := sessions.ParseLocalListenerHandle(h)
	if err != nil || e.Port != 8080 || e.Transport != sessions.TransportTCP || !e.Addr.Is4() || !e.IsZero() {
		t.Fatalf("parse handle = %+v, %v", e, err)
	}
	local, global := r.listenersOf(a)
	if len(local) != 1 || len(global) != 0 {
		t.Fatalf("local %v global %v", local, global)
	}
	if seq, snap := r.l.Snapshot(); seq != 0 || len(snap) != 0 {
		t.Fatalf("local listener reached the global feed: %d %v", seq, snap)
	}
}

func TestBind_LocalScopeOnlyNonZeroAddress_Fails(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal)
	_, err := r.l.BindURI(a, "tcp://10.0.0.1:80")
	wantErr(t, err, sessions.ErrScope)
	if l, g := r.listenersOf(a); len(l)+len(g) != 0 {
		t.Fatalf("listeners %v %v", l, g)
	}
}

func TestBind_GlobalScope_GlobalListener(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	h := r.bind(a, "udp://10.0.0.1:53")
	if h.IsLocal() || h.Worker() != sessions.ListenerWorker {
		t.Fatalf("handle %#x", h)
	}
	tup := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 53, Proto: sessions.TransportUDP, Family: sessions.Family4}
	ln, ok := r.l.LookupListener(1, &tup)
	if !ok || ln.Handle != h || ln.App != a || ln.Endpoint.IfIndex != 2 || ln.Endpoint.FIB != 1 {
		t.Fatalf("LookupListener = %+v %v", ln, ok)
	}
	_, listens, _, _ := r.dp.Calls()
	if len(listens) != 1 || listens[0].Handle != h {
		t.Fatalf("datapath listens %v", listens)
	}
	seq, snap := r.l.Snapshot()
	if seq != 1 || len(snap) != 1 || snap[0].Kind != sessions.KindListener || snap[0].Handle != h || snap[0].Tuple != tup {
		t.Fatalf("snapshot %d %+v", seq, snap)
	}
}

func TestBind_LocalAndGlobalScopeZeroAddress_BothTables(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	h := r.bind(a, "tcp://[::]:443")
	if h.IsLocal() {
		t.Fatalf("both scopes: want the global handle, got local %#x", h)
	}
	local, global := r.listenersOf(a)
	if len(local) != 1 || len(global) != 1 || global[0].Handle != h || global[0].FIB != 2 {
		t.Fatalf("local %v global %v", local, global)
	}
}

func TestBind_GlobalListenFails_LocalEntryRolledBack(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.dp.SetFail(false, true)
	_, err := r.l.BindURI(a, "tcp://0.0.0.0:80")
	wantErr(t, err, sessionstest.ErrInjected)
	if l, g := r.listenersOf(a); len(l)+len(g) != 0 {
		t.Fatalf("after failed listen: local %v global %v", l, g)
	}
	r.dp.SetFail(false, false)
	r.bind(a, "tcp://0.0.0.0:80")
}

func TestBind_UnsupportedTransport(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	_, err := r.l.BindURI(a, "sctp://0.0.0.0:9")
	wantErr(t, err, sessions.ErrNotSupported)
	_, err = r.l.Bind(a, ep(99, zero4, 9))
	wantErr(t, err, sessions.ErrNotSupported)
	_, err = r.l.BindURI(a, "quic://0.0.0.0:9")
	wantErr(t, err, sessions.ErrInvalidURI)
}

// vnet_unbind_i

func TestUnbind_NotAttached(t *testing.T) {
	r := newRig(t)
	wantErr(t, r.l.Unbind(9, sessions.MakeHandle(sessions.ListenerWorker, 0)), sessions.ErrNotAttached)
}

func TestUnbind_LocalScope_ListenerHandleFindsLocalEntry(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	h := r.bind(a, "udp://0.0.0.0:5000")
	wantErr(t, r.l.Unbind(a, h), nil)
	if l, g := r.listenersOf(a); len(l)+len(g) != 0 {
		t.Fatalf("left: %v %v", l, g)
	}
	_, _, unl, _ := r.dp.Calls()
	if len(unl) != 1 {
		t.Fatalf("datapath unlistens %v", unl)
	}
}

func TestUnbind_LocalScope_LocalHandleParsed(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal)
	h := r.bind(a, "udp://[::]:5000")
	wantErr(t, r.l.Unbind(a, h), nil)
	if l, _ := r.listenersOf(a); len(l) != 0 {
		t.Fatalf("left: %v", l)
	}
	wantErr(t, r.l.Unbind(a, h), sessions.ErrAddressNotInUse)
}

func TestUnbind_LocalScope_UnparsableHandle(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal)
	r.bind(a, "udp://0.0.0.0:5000")
	wantErr(t, r.l.Unbind(a, sessions.LocalHandleBit|0x7f<<24|5000), sessions.ErrInvalidValue)
	if l, _ := r.listenersOf(a); len(l) != 1 {
		t.Fatal("bad handle removed a listener")
	}
}

func TestUnbind_GlobalScope_StopListen(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	h := r.bind(a, "tcp://10.0.0.1:22")
	wantErr(t, r.l.Unbind(a, h), nil)
	tup := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 22, Proto: sessions.TransportTCP, Family: sessions.Family4}
	if _, ok := r.l.LookupListener(1, &tup); ok {
		t.Fatal("listener still found")
	}
	wantErr(t, r.l.Unbind(a, h), sessions.ErrAddressNotInUse)
	// A local handle means nothing to a global-only app.
	wantErr(t, r.l.Unbind(a, sessions.LocalListenerHandle(sessions.TransportTCP, sessions.Family4, 22)), sessions.ErrAddressNotInUse)
}

func TestUnbind_OtherAppsListener_NotOwner(t *testing.T) {
	r := newRig(t)
	a, b := r.attach(sessions.ScopeLocal|sessions.ScopeGlobal), r.attach(sessions.ScopeLocal|sessions.ScopeGlobal)
	h := r.bind(a, "tcp://0.0.0.0:80")
	wantErr(t, r.l.Unbind(b, h), sessions.ErrNotOwner)
	lh := sessions.LocalListenerHandle(sessions.TransportTCP, sessions.Family4, 80)
	wantErr(t, r.l.Unbind(b, lh), sessions.ErrNotOwner)
	if l, g := r.listenersOf(a); len(l) != 1 || len(g) != 1 {
		t.Fatalf("a's listeners changed: %v %v", l, g)
	}
}

func TestUnbind_ProxyEntryRefused(t *testing.T) {
	r := newRig(t)
	p := r.attachOpts(sessions.AttachOptions{Proxy: true, ProxyTransports: []sessions.Transport{sessions.TransportUDP}})
	_, g := r.listenersOf(p)
	wantErr(t, r.l.Unbind(p, g[0].Handle), sessions.ErrInvalidValue)
}

// vnet_unbind_uri

func TestUnbindURI(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	wantErr(t, r.l.UnbindURI(a, "udp://10.0.0.1:99"), sessions.ErrAddressNotInUse)
	r.bind(a, "udp://10.0.0.1/99")
	wantErr(t, r.l.UnbindURI(a, "bogus"), sessions.ErrInvalidURI)
	wantErr(t, r.l.UnbindURI(a, "udp://10.0.0.1:99"), nil)
	wantErr(t, r.l.UnbindURI(a, "udp://10.0.0.1:99"), sessions.ErrAddressNotInUse)
}

// UnbindURI looks in the table of the app's own namespace's FIB, not the
// default namespace's.
func TestUnbindURI_NonDefaultNamespace(t *testing.T) {
	r := newRig(t)
	blue := r.attachOpts(sessions.AttachOptions{Namespace: "blue", Secret: 42})
	blue2 := r.attachOpts(sessions.AttachOptions{Namespace: "blue", Secret: 42})
	def := r.attach(0)
	r.bind(blue, "udp://10.1.0.1:99")
	r.bind(blue, "udp://0.0.0.0:7")
	dh := r.bind(def, "udp://0.0.0.0:7") // same endpoint, the default namespace's FIB
	// The default namespace's app sees no listener on blue's address.
	wantErr(t, r.l.UnbindURI(def, "udp://10.1.0.1:99"), sessions.ErrAddressNotInUse)
	// Another app of blue finds blue's listener, and does not own it.
	wantErr(t, r.l.UnbindURI(blue2, "udp://10.1.0.1:99"), sessions.ErrNotOwner)
	wantErr(t, r.l.UnbindURI(blue, "udp://10.1.0.1:99"), nil)
	wantErr(t, r.l.UnbindURI(blue, "udp://10.1.0.1:99"), sessions.ErrAddressNotInUse)
	// The zero address: blue's own entry goes, the default one stays.
	wantErr(t, r.l.UnbindURI(blue, "udp://0.0.0.0:7"), nil)
	_, g := r.listenersOf(def)
	if len(g) != 1 || g[0].Handle != dh {
		t.Fatalf("default namespace's listeners %+v", g)
	}
	if _, g := r.listenersOf(blue); len(g) != 0 {
		t.Fatalf("blue's listeners left: %+v", g)
	}
}

// Two users' listeners of one port may not overlap, as Linux refuses a
// bind over another user's socket of the port whatever SO_REUSEADDR says:
// a specific address over another user's wildcard, and a wildcard over
// another user's specific address (which the layer took before), both
// fail with ErrAddressInUse. One user's listeners share the port so.
func TestBind_OverlapWithOtherOwner_AddressInUse(t *testing.T) {
	r := newRig(t)
	alice := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1000})
	bob := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1001})
	alice2 := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Owner: 1000})
	spec := "udp://" + addrA.String() + ":8000"
	r.bind(alice, "udp://0.0.0.0:8000")
	_, err := r.l.BindURI(bob, spec)
	wantErr(t, err, sessions.ErrAddressInUse)
	r.bind(alice2, spec) // the same user's
	r.bind(bob, "tcp://"+addrA.String()+":8001")
	_, err = r.l.BindURI(alice, "tcp://0.0.0.0:8001")
	wantErr(t, err, sessions.ErrAddressInUse)
	r.bind(bob, "tcp://0.0.0.0:8001") // the same user's
}
