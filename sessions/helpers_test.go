package sessions_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// The fake world of the tests:
//
//	default namespace: ifindex 2, FIB 1 (v4) / 2 (v6): 10.0.0.1, fd00::1 on
//	    ifindex 2; 10.0.0.9 on ifindex 4, another interface of the same netns
//	namespace "blue" (secret 42): ifindex 3, FIB 10 / 11: 10.1.0.1
//	remote hosts: 192.0.2.0/24, 2001:db8::/32
var (
	addrA    = netip.MustParseAddr("10.0.0.1")
	addrA6   = netip.MustParseAddr("fd00::1")
	addrOthr = netip.MustParseAddr("10.0.0.9")
	addrBlue = netip.MustParseAddr("10.1.0.1")
	remote   = netip.MustParseAddr("192.0.2.7")
	remote6  = netip.MustParseAddr("2001:db8::7")
	zero4    = netip.IPv4Unspecified()
	zero6    = netip.IPv6Unspecified()
)

type rig struct {
	l    *sessions.Layer
	view *sessionstest.View
	mem  *sessionstest.Memory
	dp   *sessionstest.Datapath
	note *sessionstest.Notifier
	mems map[sessions.AppID]*sessionstest.App
	t    testing.TB
}

func newRig(t testing.TB) *rig {
	t.Helper()
	return newRigWith(t, func(*sessions.Config) {})
}

// newRigWith is newRig with the layer's Config changed by mod.
func newRigWith(t testing.TB, mod func(*sessions.Config)) *rig {
	t.Helper()
	r := &rig{
		view: sessionstest.NewView().Add(2, 1, addrA).Add(2, 2, addrA6).Add(4, 1, addrOthr).Add(3, 10, addrBlue),
		mem:  &sessionstest.Memory{},
		dp:   sessionstest.NewDatapath(addrA, addrA6),
		note: &sessionstest.Notifier{},
		mems: map[sessions.AppID]*sessionstest.App{},
		t:    t,
	}
	cfg := sessions.Config{
		View: r.view, Memory: r.mem, Datapath: r.dp, Notifier: r.note, Workers: 2,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2},
	}
	mod(&cfg)
	l, err := sessions.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddNamespace(sessions.NamespaceConfig{ID: "blue", Secret: 42, IfIndex: 3, FIB4: 10, FIB6: 11}); err != nil {
		t.Fatal(err)
	}
	r.l = l
	return r
}

var nextClient uint64

// attach attaches an app with the given scope to the default namespace.
func (r *rig) attach(scope sessions.Scope) sessions.AppID {
	r.t.Helper()
	return r.attachOpts(sessions.AttachOptions{Scope: scope})
}

func (r *rig) attachOpts(o sessions.AttachOptions) sessions.AppID {
	r.t.Helper()
	nextClient++
	o.ClientID = nextClient
	at, err := r.l.Attach(o)
	if err != nil {
		r.t.Fatalf("attach: %v", err)
	}
	r.mems[at.App] = at.Memory.(*sessionstest.App)
	return at.App
}

func (r *rig) bind(app sessions.AppID, uri string) sessions.Handle {
	r.t.Helper()
	h, err := r.l.BindURI(app, uri)
	if err != nil {
		r.t.Fatalf("bind %s: %v", uri, err)
	}
	return h
}

func ep(tr sessions.Transport, a netip.Addr, port uint16) sessions.Endpoint {
	return sessions.Endpoint{Transport: tr, Addr: a, Port: port}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

// appEvents returns (and forgets) the events queued in app's event queue.
func (r *rig) appEvents(app sessions.AppID) []sessions.Event {
	r.t.Helper()
	m := r.memOf(app)
	return m.Events()
}

// memOf returns the heap memory Attach gave app.
func (r *rig) memOf(app sessions.AppID) *sessionstest.App {
	r.t.Helper()
	m, ok := r.mems[app]
	if !ok {
		r.t.Fatalf("no memory recorded for app %d", app)
	}
	return m
}

// listenersOf returns the listeners of app by table.
func (r *rig) listenersOf(app sessions.AppID) (local, global []sessions.ListenerInfo) {
	for _, li := range r.l.Listeners() {
		if li.App != app {
			continue
		}
		if li.Table == "local" {
			local = append(local, li)
		} else {
			global = append(global, li)
		}
	}
	return local, global
}

// established connects app to uri (a remote peer) and has worker claim the
// half-open session at once, as the datapath does for UDP: an established
// session of worker's shard. It returns the session's handle.
func (r *rig) established(app sessions.AppID, worker uint32, uri string) sessions.Handle {
	r.t.Helper()
	res, err := r.l.ConnectURI(app, uri, 0)
	if err != nil {
		r.t.Fatalf("connect %s: %v", uri, err)
	}
	h, err := r.l.Connected(worker, res.Handle)
	if err != nil {
		r.t.Fatalf("connected %s: %v", uri, err)
	}
	return h
}

// inShard reports whether established session h is in its worker's shard.
// Call it only where no worker goroutine owns the shards.
func (r *rig) inShard(h sessions.Handle) bool {
	ss := r.l.Shard(h.Worker()).Get(h.Index())
	return ss != nil && ss.Handle == h
}

func (r *rig) drainShards() {
	for w := 0; w < r.l.Workers(); w++ {
		r.l.Shard(uint32(w)).Drain()
	}
}

// opReader reads a fuzz input's operations byte by byte; past the end it
// reads zeros.
type opReader struct {
	b []byte
	i int
}

func (r *opReader) more() bool { return r.i < len(r.b) }

func (r *opReader) next() byte {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return r.b[r.i-1]
}
