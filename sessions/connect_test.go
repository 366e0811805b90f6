package sessions_test

import (
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// vnet_connect_i

func TestConnect_ZeroAddress(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	_, err := r.l.ConnectURI(a, "tcp://0.0.0.0:80", 0)
	wantErr(t, err, sessions.ErrInvalidValue)
	_, err = r.l.Connect(a, sessions.Endpoint{Transport: sessions.TransportTCP, Port: 80}, 0)
	wantErr(t, err, sessions.ErrInvalidValue)
}

// ::ffff:0.0.0.0 is the zero address too: it never reaches a 0.0.0.0
// listener of the local table.
func TestConnect_MappedZeroAddressInvalid(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(srv, "tcp://0.0.0.0:80")
	for _, uri := range []string{"tcp://[::ffff:0.0.0.0]:80", "tcp://0.0.0.0:80", "tcp://[::]:80"} {
		_, err := r.l.ConnectURI(cli, uri, 0)
		wantErr(t, err, sessions.ErrInvalidValue)
	}
	if ev := r.appEvents(srv); len(ev) != 0 {
		t.Fatalf("server events %+v", ev)
	}
}

// The zero address is refused before the app is looked up (seed order).
func TestConnect_ZeroAddressNotAttached_InvalidValue(t *testing.T) {
	r := newRig(t)
	_, err := r.l.ConnectURI(77, "tcp://0.0.0.0:80", 0)
	wantErr(t, err, sessions.ErrInvalidValue)
	_, err = r.l.ConnectURI(77, "tcp://[::ffff:0.0.0.0]:80", 0)
	wantErr(t, err, sessions.ErrInvalidValue)
}

func TestConnect_NotAttached(t *testing.T) {
	r := newRig(t)
	_, err := r.l.ConnectURI(3, "tcp://192.0.2.7:80", 0)
	wantErr(t, err, sessions.ErrNotAttached)
}

func TestConnect_SCTPNotSupported(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	_, err := r.l.ConnectURI(a, "sctp://192.0.2.7:80", 0)
	wantErr(t, err, sessions.ErrNotSupported)
}

func TestConnect_LocalScopeDropRule_Filtered(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(srv, "tcp://0.0.0.0:80")
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("127.0.0.0/8"),
		RemotePort: 80, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	_, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:80", 0)
	wantErr(t, err, sessions.ErrFiltered)
	if len(r.l.Sessions()) != 0 || len(r.appEvents(srv)) != 0 {
		t.Fatal("filtered connect left something")
	}
	// The rule covers 127/8 only; another destination reaches the listener.
	res, err := r.l.ConnectURI(cli, "tcp://192.0.2.7:80", 0)
	if err != nil || !res.CutThrough {
		t.Fatalf("connect elsewhere: %+v %v", res, err)
	}
}

func TestConnect_LocalScopeListenerOfOtherApp_CutThrough(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal)
	lh := r.bind(srv, "udp://0.0.0.0:7000")
	res, err := r.l.ConnectURI(cli, "udp://127.0.0.1:7000", 77)
	if err != nil || !res.CutThrough || res.Handle.Worker() != sessions.CutThroughWorker {
		t.Fatalf("connect: %+v %v", res, err)
	}
	sev, cev := r.appEvents(srv), r.appEvents(cli)
	if len(sev) != 1 || sev[0].Kind != sessions.EventAccepted || sev[0].Listener != lh || !sev[0].CutThrough {
		t.Fatalf("server events %+v", sev)
	}
	if len(cev) != 1 || cev[0].Kind != sessions.EventConnected || cev[0].Handle != res.Handle || cev[0].Opaque != 77 {
		t.Fatalf("client events %+v", cev)
	}
	// One segment, shared; each side's tx is the other's rx.
	sp, cp := sev[0].Pair, cev[0].Pair
	if sp.Segment != cp.Segment || sp.Rx != cp.Tx || sp.Tx != cp.Rx {
		t.Fatalf("pairs do not mirror: server %+v client %+v", sp, cp)
	}
	// No packet path: nothing opened, nothing in the feed.
	if opens, _, _, _ := r.dp.Calls(); len(opens) != 0 {
		t.Fatalf("datapath opens %v", opens)
	}
	if seq, _ := r.l.Snapshot(); seq != 0 {
		t.Fatalf("feed moved to %d", seq)
	}
	// The Notifier saw both events too.
	if n := len(r.note.Events()); n != 2 {
		t.Fatalf("notifier saw %d events", n)
	}
	ss := r.l.Sessions()
	if len(ss) != 2 || ss[0].State != "cut-through" || ss[0].Peer != ss[1].Handle {
		t.Fatalf("sessions %+v", ss)
	}
}

func TestConnect_LocalScopeRuleToSelf_Skipped(t *testing.T) {
	r := newRig(t)
	// A proxy with both scopes: its every-port entries catch everything,
	// and a forward rule points at it too. Its own connect must not loop.
	p := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeLocal | sessions.ScopeGlobal, Proxy: true,
		ProxyTransports: []sessions.Transport{sessions.TransportTCP}})
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		Action: sessions.RuleForward, App: p, Scope: sessions.ScopeLocal | sessions.ScopeGlobal}); err != nil {
		t.Fatal(err)
	}
	res, err := r.l.ConnectURI(p, "tcp://192.0.2.7:80", 1)
	if err != nil || res.CutThrough || res.Handle.Worker() != sessions.HalfOpenWorker {
		t.Fatalf("proxy's own connect: %+v %v (want a half-open session to the wire)", res, err)
	}
	// Another local app's connect goes to the proxy through cut-through.
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	res, err = r.l.ConnectURI(cli, "tcp://192.0.2.7:80", 2)
	if err != nil || !res.CutThrough {
		t.Fatalf("client connect: %+v %v", res, err)
	}
	// And so does a global-only app, through the global rule.
	g := r.attach(sessions.ScopeGlobal)
	res, err = r.l.ConnectURI(g, "tcp://192.0.2.7:80", 3)
	if err != nil || !res.CutThrough {
		t.Fatalf("global client connect: %+v %v", res, err)
	}
}

func TestConnect_LocalScopeListenerOfSelf_Skipped(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(a, "tcp://0.0.0.0:80")
	// Its own local entry is skipped; the destination is remote, so the
	// connect goes to the wire.
	res, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 0)
	if err != nil || res.CutThrough {
		t.Fatalf("connect: %+v %v", res, err)
	}
}

func TestConnect_LocalScopeForwardRule_CutThrough(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal)
	lh := r.bind(srv, "tcp://0.0.0.0:443")
	id, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		RemotePort: 443, Action: sessions.RuleForward, App: srv, Scope: sessions.ScopeLocal, Tag: "redirect"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.l.ConnectURI(cli, "tcp://192.0.2.1:443", 0)
	if err != nil || !res.CutThrough {
		t.Fatalf("connect %+v %v", res, err)
	}
	ev := r.appEvents(srv)
	if len(ev) != 1 || ev[0].Kind != sessions.EventAccepted || ev[0].Listener != lh || !lh.IsLocal() {
		t.Fatalf("server events %+v, want one accept on listener %#x", ev, uint64(lh))
	}
	if rs := r.l.Rules(); len(rs) != 1 || rs[0].ID != id || rs[0].Hits != 1 {
		t.Fatalf("rules %+v, want one hit", rs)
	}
}

// A forward rule whose app has no listener for the destination's port is
// no match: the lookup goes on as without it (here: a local-scope app can
// go no further).
func TestConnect_ForwardRuleAppWithoutListener_NoMatch(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	cli := r.attach(sessions.ScopeLocal)
	r.bind(srv, "tcp://0.0.0.0:8443")
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		RemotePort: 443, Action: sessions.RuleForward, App: srv, Scope: sessions.ScopeLocal | sessions.ScopeGlobal}); err != nil {
		t.Fatal(err)
	}
	_, err := r.l.ConnectURI(cli, "tcp://192.0.2.1:443", 0)
	wantErr(t, err, sessions.ErrScope)
	// A global app goes to the wire instead of a listener-less cut-through.
	g := r.attach(sessions.ScopeGlobal)
	res, err := r.l.ConnectURI(g, "tcp://192.0.2.1:443", 0)
	if err != nil || res.CutThrough || res.Handle.Worker() != sessions.HalfOpenWorker {
		t.Fatalf("global connect %+v %v, want a half-open session", res, err)
	}
	if ev := r.appEvents(srv); len(ev) != 0 {
		t.Fatalf("server got %+v", ev)
	}
	if rs := r.l.Rules(); rs[0].Hits != 0 {
		t.Fatalf("rule counted %d hits without acting", rs[0].Hits)
	}
}

// An allow rule of the local table means "go on to the normal lookup": the
// local listener still catches the connect.
func TestConnect_LocalScopeAllowRule_GoesOnToListeners(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	lh := r.bind(srv, "tcp://0.0.0.0:80")
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		Action: sessions.RuleAllow, Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	res, err := r.l.ConnectURI(cli, "tcp://192.0.2.7:80", 0)
	if err != nil || !res.CutThrough {
		t.Fatalf("allowed connect went %+v %v, want the local listener", res, err)
	}
	if ev := r.appEvents(srv); len(ev) != 1 || ev[0].Listener != lh {
		t.Fatalf("server events %+v", ev)
	}
	// Without a listener on the port, allow lets it go to the wire.
	res, err = r.l.ConnectURI(cli, "tcp://192.0.2.7:81", 0)
	if err != nil || res.CutThrough {
		t.Fatalf("allowed connect to a port without listener went %+v %v, want the wire", res, err)
	}
	if rs := r.l.Rules(); rs[0].Hits != 2 {
		t.Fatalf("allow rule counted %d hits, want 2", rs[0].Hits)
	}
}

// The package doc's choice: a zero-address listener of the local table
// catches local-scope connects to its port whatever their address (seed
// behaviour), not only loopback ones.
func TestConnect_LocalZeroListenerCatchesAnyAddress(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal)
	lh := r.bind(srv, "udp://0.0.0.0:5353")
	for i, uri := range []string{"udp://127.0.0.1:5353", "udp://192.0.2.99:5353", "udp://10.0.0.1:5353", "udp://[::ffff:198.51.100.1]:5353"} {
		res, err := r.l.ConnectURI(cli, uri, uint32(i))
		if err != nil || !res.CutThrough {
			t.Fatalf("connect %s: %+v %v", uri, res, err)
		}
	}
	if ev := r.appEvents(srv); len(ev) != 4 || ev[3].Listener != lh {
		t.Fatalf("server events %+v", ev)
	}
	// Not IPv6 destinations: the listener is an IPv4 one.
	_, err := r.l.ConnectURI(cli, "udp://[2001:db8::1]:5353", 9)
	wantErr(t, err, sessions.ErrScope)
}

func TestConnect_LocalDestinationNoLocalMatch_LocalConnect(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		name  string
		scope sessions.Scope
		uri   string
	}{
		{"LocalScopeLoopback4", sessions.ScopeLocal, "tcp://127.0.0.1:80"},
		{"LocalScopeLoopback6", sessions.ScopeLocal | sessions.ScopeGlobal, "udp://[::1]:80"},
		{"GlobalScopeLoopback", sessions.ScopeGlobal, "tcp://127.0.0.2:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := r.attach(c.scope)
			_, err := r.l.ConnectURI(a, c.uri, 0)
			wantErr(t, err, sessions.ErrLocalConnect)
		})
	}
}

func TestConnect_NoGlobalScope_Scope(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeLocal)
	_, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 0)
	wantErr(t, err, sessions.ErrScope)
	// Even to a global listener on this host.
	s := r.attach(sessions.ScopeGlobal)
	r.bind(s, "tcp://10.0.0.1:80")
	_, err = r.l.ConnectURI(a, "tcp://10.0.0.1:80", 0)
	wantErr(t, err, sessions.ErrScope)
}

func TestConnect_GlobalScopeDropRule_Filtered(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportUDP, Remote: netip.MustParsePrefix("2001:db8::/32"),
		Action: sessions.RuleDrop}); err != nil {
		t.Fatal(err)
	}
	_, err := r.l.ConnectURI(a, "udp://[2001:db8::7]:53", 0)
	wantErr(t, err, sessions.ErrFiltered)
	// v4 and other transports are not covered.
	if _, err := r.l.ConnectURI(a, "udp://192.0.2.7:53", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.l.ConnectURI(a, "tcp://[2001:db8::7]:53", 0); err != nil {
		t.Fatal(err)
	}
	// A local-scope drop rule does not bind a global-only app.
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.l.ConnectURI(a, "tcp://192.0.2.7:1", 0); err != nil {
		t.Fatal(err)
	}
}

func TestConnect_GlobalListenerOnThisHost_CutThrough(t *testing.T) {
	for _, c := range []struct {
		name, bind, dial string
	}{
		{"ExactAddress", "tcp://10.0.0.1:80", "tcp://10.0.0.1:80"},
		{"WildcardListener", "tcp://0.0.0.0:80", "tcp://10.0.0.1:80"},
		{"WildcardListenerOtherInterfaceAddress", "tcp://0.0.0.0:80", "tcp://10.0.0.9:80"},
		{"IPv6", "udp://[::]:53", "udp://[fd00::1]:53"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			srv, cli := r.attach(sessions.ScopeGlobal), r.attach(sessions.ScopeGlobal)
			lh := r.bind(srv, c.bind)
			res, err := r.l.ConnectURI(cli, c.dial, 0)
			if err != nil || !res.CutThrough {
				t.Fatalf("connect %+v %v", res, err)
			}
			ev := r.appEvents(srv)
			if len(ev) != 1 || ev[0].Listener != lh {
				t.Fatalf("server events %+v", ev)
			}
			if opens, _, _, _ := r.dp.Calls(); len(opens) != 0 {
				t.Fatal("datapath asked to open a local session")
			}
		})
	}
}

func TestConnect_GlobalListenerRemoteDestination_Opens(t *testing.T) {
	r := newRig(t)
	srv, cli := r.attach(sessions.ScopeGlobal), r.attach(sessions.ScopeGlobal)
	r.bind(srv, "tcp://0.0.0.0:80")
	// 192.0.2.7 is not this host: the wildcard listener does not serve it.
	res, err := r.l.ConnectURI(cli, "tcp://192.0.2.7:80", 0)
	if err != nil || res.CutThrough {
		t.Fatalf("connect %+v %v", res, err)
	}
}

func TestConnect_Remote_HalfOpenToDatapath(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	f := r.l.Subscribe(16)
	defer f.Close()
	res, err := r.l.ConnectURI(a, "udp://192.0.2.7:9000", 31)
	if err != nil || res.CutThrough || res.Handle.Worker() != sessions.HalfOpenWorker {
		t.Fatalf("connect %+v %v", res, err)
	}
	opens, _, _, _ := r.dp.Calls()
	if len(opens) != 1 || opens[0].HalfOpen != res.Handle || opens[0].Opaque != 31 || opens[0].Remote.FIB != 1 || opens[0].Remote.IfIndex != 2 {
		t.Fatalf("opens %+v", opens)
	}
	c, err := f.Next(t.Context())
	if err != nil || c.Op != sessions.OpAdd || c.Kind != sessions.KindEstablished || c.Handle != res.Handle {
		t.Fatalf("feed: %+v %v", c, err)
	}
	want := sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 40001, Remote: sessions.AddrBytes(remote), RemotePort: 9000,
		Proto: sessions.TransportUDP, Family: sessions.Family4}
	if c.Tuple != want {
		t.Fatalf("half-open tuple %+v, want %+v", c.Tuple, want)
	}

	// The worker that sees the reply claims it.
	eh, err := r.l.Connected(1, res.Handle)
	if err != nil || eh.Worker() != 1 {
		t.Fatalf("Connected = %#x %v", eh, err)
	}
	r.drainShards()
	ss := r.l.Shard(1).Get(eh.Index())
	if ss == nil || ss.Handle != eh || ss.App != a || ss.Tuple != want {
		t.Fatalf("shard entry %+v", ss)
	}
	ev := r.appEvents(a)
	if len(ev) != 1 || ev[0].Kind != sessions.EventConnected || ev[0].Handle != eh || ev[0].Opaque != 31 || ev[0].CutThrough {
		t.Fatalf("events %+v", ev)
	}
	// One Add that replaces the half-open's entry, never a Del first:
	// the maps must not lack the 5-tuple in between.
	c1, _ := f.Next(t.Context())
	if c1.Op != sessions.OpAdd || c1.Handle != eh || c1.Tuple != want || c1.Seq != c.Seq+1 {
		t.Fatalf("feed after Connected: %+v", c1)
	}
}

// TestStreamConnected_ReplacesHalfOpenEntry: a TCP half-open that becomes
// established is published as one Add of its 5-tuple with the new
// handle, with no Del before it. (With a Del then an Add, the peer's ACK
// could arrive while the datapath's maps lacked the 5-tuple, reach the
// kernel, and be answered with a reset: about one dial in a few
// thousand.)
func TestStreamConnected_ReplacesHalfOpenEntry(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	f := r.l.Subscribe(16)
	defer f.Close()
	res, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 5)
	if err != nil || res.CutThrough || res.Handle.Worker() != sessions.HalfOpenWorker {
		t.Fatalf("connect %+v %v", res, err)
	}
	c, err := f.Next(t.Context())
	if err != nil || c.Op != sessions.OpAdd || c.Handle != res.Handle {
		t.Fatalf("feed: %+v %v", c, err)
	}
	eh, err := r.l.StreamConnected(1, res.Handle, sessions.FifoPair{}, func(sessions.Handle) {})
	if err != nil {
		t.Fatalf("StreamConnected: %v", err)
	}
	c1, err := f.Next(t.Context())
	if err != nil || c1.Op != sessions.OpAdd || c1.Handle != eh || c1.Tuple != c.Tuple || c1.Seq != c.Seq+1 {
		t.Fatalf("feed after StreamConnected: %+v %v (half-open was %+v)", c1, err, c)
	}
	seq, snap := r.l.Snapshot()
	if seq != c1.Seq {
		t.Fatalf("snapshot at %d, last change %d", seq, c1.Seq)
	}
	n := 0
	for _, s := range snap {
		if s.Tuple == c.Tuple {
			n++
			if s.Handle != eh {
				t.Fatalf("snapshot entry %+v, want handle %#x", s, eh)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d snapshot entries for the 5-tuple, want 1", n)
	}
}

func TestConnect_DatapathOpenFails(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	r.dp.SetFail(true, false)
	_, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 0)
	wantErr(t, err, sessions.ErrConnect)
	if len(r.l.Sessions()) != 0 {
		t.Fatal("failed open left a session")
	}
}

func TestConnect_NoDatapath(t *testing.T) {
	l, err := sessions.New(sessions.Config{View: newRig(t).view, Memory: newRig(t).mem})
	if err != nil {
		t.Fatal(err)
	}
	at, err := l.Attach(sessions.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.ConnectURI(at.App, "tcp://192.0.2.7:80", 0)
	wantErr(t, err, sessions.ErrConnect)
}

func TestConnect_ConnectFailed(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	res, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 4)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.ConnectFailed(res.Handle, sessions.ErrConnect), nil)
	ev := r.appEvents(a)
	if len(ev) != 1 || ev[0].Kind != sessions.EventConnectFailed || ev[0].Opaque != 4 {
		t.Fatalf("events %+v", ev)
	}
	wantErr(t, r.l.ConnectFailed(res.Handle, sessions.ErrConnect), sessions.ErrNoSession)
	_, err = r.l.Connected(0, res.Handle)
	wantErr(t, err, sessions.ErrNoSession)
}

// The datapath works on a connect off the layer's lock and names it by its
// half-open handle. A connect its app closed, followed at once by another
// app's, must not give the second the first one's handle: the first
// connect's late calls would take the second for their own (its fifos, its
// failure, its session).
func TestConnect_ClosedHalfOpenHandleNotReused(t *testing.T) {
	r := newRig(t)
	a, b := r.attach(0), r.attach(0)
	first, err := r.l.ConnectURI(a, "tcp://192.0.2.7:80", 1)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.Disconnect(a, first.Handle), nil)
	second, err := r.l.ConnectURI(b, "tcp://192.0.2.7:81", 2)
	if err != nil {
		t.Fatal(err)
	}
	if second.Handle == first.Handle {
		t.Fatalf("app %d's connect got handle %#x of app %d's closed one", b, uint64(second.Handle), a)
	}
	// The first connect's late calls find nothing.
	_, err = r.l.StreamFifos(first.Handle)
	wantErr(t, err, sessions.ErrNoSession)
	wantErr(t, r.l.ConnectFailed(first.Handle, sessions.ErrConnect), sessions.ErrNoSession)
	_, err = r.l.Connected(0, first.Handle)
	wantErr(t, err, sessions.ErrNoSession)
	// The second goes on.
	r.appEvents(b)
	if _, err := r.l.Connected(0, second.Handle); err != nil {
		t.Fatal(err)
	}
	if ev := r.appEvents(b); len(ev) != 1 || ev[0].Kind != sessions.EventConnected || ev[0].Opaque != 2 {
		t.Fatalf("app %d's events %+v", b, ev)
	}
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if err := r.l.CheckHandles(); err != nil {
		t.Fatal(err)
	}
}

// An app learns of a cut-through session on its control connection and of
// its end in its event queue, which do not keep one order between them: a
// cut-through session closed and a new one made at once must not share a
// handle, or the first one's end would be taken for the second's.
func TestConnect_CutThroughHandlesNotReused(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal)
	cli := r.attach(sessions.ScopeLocal)
	r.bind(srv, "udp://0.0.0.0:7000")
	seen := map[sessions.Handle]bool{}
	for i := range 3 {
		res, err := r.l.ConnectURI(cli, "udp://127.0.0.1:7000", uint32(i))
		if err != nil || !res.CutThrough {
			t.Fatalf("connect %d: %+v %v", i, res, err)
		}
		ss := r.l.Sessions()
		if len(ss) != 2 {
			t.Fatalf("connect %d: sessions %+v", i, ss)
		}
		for _, s := range ss {
			if seen[s.Handle] {
				t.Fatalf("connect %d: handle %#x of a closed session given again", i, uint64(s.Handle))
			}
			seen[s.Handle] = true
		}
		wantErr(t, r.l.Disconnect(cli, res.Handle), nil)
	}
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if err := r.l.CheckHandles(); err != nil {
		t.Fatal(err)
	}
}

// TestConnect_CutThroughLimits: a cut-through connect past the sessions
// its app opened (MaxCutThroughPerApp), or past the layer's
// (MaxCutThrough), fails with ErrLimit; the listening app's accepted
// sessions count against their openers only; a close or a detach makes
// room again.
func TestConnect_CutThroughLimits(t *testing.T) {
	r := newRigWith(t, func(c *sessions.Config) { c.MaxCutThroughPerApp, c.MaxCutThrough = 3, 5 })
	srv := r.attach(sessions.ScopeLocal)
	r.bind(srv, "tcp://0.0.0.0:7000")
	cli := r.attach(sessions.ScopeLocal)
	var first sessions.Handle
	for i := range 3 {
		res, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:7000", uint32(i))
		if err != nil || !res.CutThrough {
			t.Fatalf("connect %d: %+v %v", i, res, err)
		}
		if i == 0 {
			first = res.Handle
		}
	}
	_, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:7000", 9)
	wantErr(t, err, sessions.ErrLimit) // the client's bound
	other := r.attach(sessions.ScopeLocal)
	if _, err := r.l.ConnectURI(other, "tcp://127.0.0.1:7000", 9); err != nil {
		t.Fatalf("another client of the same listener: %v", err)
	}
	wantErr(t, r.l.Disconnect(cli, first), nil)
	if _, err := r.l.ConnectURI(cli, "tcp://127.0.0.1:7000", 9); err != nil {
		t.Fatalf("connect after a close made room: %v", err)
	}
	if _, err := r.l.ConnectURI(other, "tcp://127.0.0.1:7000", 10); err != nil {
		t.Fatalf("connect %d: %v", 5, err)
	}
	_, err = r.l.ConnectURI(other, "tcp://127.0.0.1:7000", 11)
	wantErr(t, err, sessions.ErrLimit) // the layer's bound: 5 sessions
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	r.l.Detach(cli)
	if _, err := r.l.ConnectURI(other, "tcp://127.0.0.1:7000", 11); err != nil {
		t.Fatalf("connect after an app's detach made room: %v", err)
	}
	if err := r.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// A listener bound to a loopback address itself (in the global table, not
// the local table's zero address) is reached cut-through by a connect to
// that address, as a kernel listener on 127.0.0.1 is; another loopback
// address, or another port, finds nothing (ErrLocalConnect).
func TestConnect_LoopbackAddressListener_CutThrough(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	cli := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(srv, "tcp://127.0.0.1:7100")
	r.bind(srv, "tcp://[::1]:7101")
	for _, uri := range []string{"tcp://127.0.0.1:7100", "tcp://[::1]:7101"} {
		res, err := r.l.ConnectURI(cli, uri, 0)
		if err != nil || !res.CutThrough {
			t.Fatalf("connect %s: %+v %v", uri, res, err)
		}
	}
	for _, uri := range []string{"tcp://127.0.0.1:7102", "tcp://127.0.0.2:7100", "tcp://[::1]:7100"} {
		_, err := r.l.ConnectURI(cli, uri, 0)
		wantErr(t, err, sessions.ErrLocalConnect)
	}
}

// A local-scope-only app's connect to a loopback address does not reach a
// global listener bound there (the global table is not its to reach), and
// a global rule acts on a global app's connect to one, as on a connect to
// the host's own address.
func TestConnect_LoopbackGlobalListener_ScopeAndRules(t *testing.T) {
	r := newRig(t)
	srv := r.attach(sessions.ScopeGlobal)
	r.bind(srv, "tcp://127.0.0.1:7000")
	local := r.attach(sessions.ScopeLocal)
	_, err := r.l.ConnectURI(local, "tcp://127.0.0.1:7000", 0)
	wantErr(t, err, sessions.ErrLocalConnect)
	global := r.attach(sessions.ScopeGlobal)
	if res, err := r.l.ConnectURI(global, "tcp://127.0.0.1:7000", 0); err != nil || !res.CutThrough {
		t.Fatalf("a global app's connect: %+v %v", res, err)
	}
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("127.0.0.0/8"),
		Action: sessions.RuleDrop, Scope: sessions.ScopeGlobal}); err != nil {
		t.Fatal(err)
	}
	_, err = r.l.ConnectURI(global, "tcp://127.0.0.1:7000", 0)
	wantErr(t, err, sessions.ErrFiltered)
}

// A global forward rule of namespace blue hands blue's connects to its
// app, and leaves those of the default namespace, which shares blue's FIB
// here, to the normal lookup: no connection crosses namespaces.
func TestConnect_GlobalForwardRuleStaysInItsNamespace(t *testing.T) {
	r := newRigWith(t, func(c *sessions.Config) { c.Default.FIB4, c.Default.FIB6 = 10, 11 })
	blue := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Namespace: "blue", Secret: 42})
	r.bind(blue, "tcp://0.0.0.0:8080")
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.MustParsePrefix("192.0.2.0/24"),
		Action: sessions.RuleForward, App: blue, Scope: sessions.ScopeGlobal, Namespace: "blue"}); err != nil {
		t.Fatal(err)
	}
	other := r.attachOpts(sessions.AttachOptions{Scope: sessions.ScopeGlobal, Namespace: "blue", Secret: 42})
	if res, err := r.l.ConnectURI(other, "tcp://192.0.2.7:8080", 0); err != nil || !res.CutThrough {
		t.Fatalf("blue's connect: %+v %v, want it forwarded", res, err)
	}
	def := r.attach(sessions.ScopeGlobal)
	if res, err := r.l.ConnectURI(def, "tcp://192.0.2.7:8080", 0); err != nil || res.CutThrough {
		t.Fatalf("the default namespace's connect: %+v %v, want it to the wire", res, err)
	}
}
