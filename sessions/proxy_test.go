package sessions_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// application_setup_proxy and the proxy loop break of vnet_connect_i.

func TestProxy_GlobalOnly_OwnConnectToThisHostDoesNotLoop(t *testing.T) {
	r := newRig(t)
	p := r.attachOpts(sessions.AttachOptions{Proxy: true, ProxyTransports: []sessions.Transport{sessions.TransportTCP, sessions.TransportUDP}})
	// 10.0.0.1:8080 is this host; only the proxy's own every-port entry
	// would serve it, so the connect goes to the datapath instead.
	res, err := r.l.ConnectURI(p, "tcp://10.0.0.1:8080", 0)
	if err != nil || res.CutThrough {
		t.Fatalf("proxy's own connect: %+v %v", res, err)
	}
	if len(r.appEvents(p)) != 0 {
		t.Fatal("proxy accepted its own connect")
	}
	// Another app's connect to this host is served by the proxy.
	c := r.attach(sessions.ScopeGlobal)
	res, err = r.l.ConnectURI(c, "udp://[fd00::1]:9999", 0)
	if err != nil || !res.CutThrough {
		t.Fatalf("client connect: %+v %v", res, err)
	}
	// A specific listener beats the proxy's every-port entry.
	s := r.attach(sessions.ScopeGlobal)
	lh := r.bind(s, "tcp://10.0.0.1:8080")
	if _, err := r.l.ConnectURI(c, "tcp://10.0.0.1:8080", 0); err != nil {
		t.Fatal(err)
	}
	if ev := r.appEvents(s); len(ev) != 1 || ev[0].Listener != lh {
		t.Fatalf("specific listener events %+v", ev)
	}
}

// leaksSecret reports whether a JSON document carries the secret: its
// decimal form, or a key naming a secret.
func leaksSecret(doc []byte, secret uint64) bool {
	return strings.Contains(string(doc), strconv.FormatUint(secret, 10)) || strings.Contains(strings.ToLower(string(doc)), `"secret"`)
}

func TestIntrospection_JSON(t *testing.T) {
	r := newRig(t)
	const secret = 8675309123456789
	if err := r.l.AddNamespace(sessions.NamespaceConfig{ID: "green", Secret: secret, IfIndex: 3, FIB4: 10, FIB6: 11}); err != nil {
		t.Fatal(err)
	}
	r.attachOpts(sessions.AttachOptions{Namespace: "green", Secret: secret, Name: "g"})
	a := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(a, "tcp://0.0.0.0:80")
	c := r.attach(sessions.ScopeLocal)
	if _, err := r.l.ConnectURI(c, "tcp://127.0.0.1:80", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop, Tag: "t", Namespace: "green"}); err != nil {
		t.Fatal(err)
	}
	// The check trips on a document that carries the secret, in either
	// form a leak would take.
	for _, leak := range []any{map[string]uint64{"s": secret}, map[string]uint64{"Secret": 1}} {
		b, _ := json.Marshal(leak)
		if !leaksSecret(b, secret) {
			t.Fatalf("leak check misses %s", b)
		}
	}
	for _, v := range []any{r.l.Apps(), r.l.Listeners(), r.l.Sessions(), r.l.Namespaces(), r.l.Rules()} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if leaksSecret(b, secret) {
			t.Fatalf("secret leaked: %s", b)
		}
	}
	if n := len(r.l.Listeners()); n != 2 {
		t.Fatalf("%d listeners", n)
	}
	ns := r.l.Namespaces()
	if len(ns) != 3 || ns[1].ID != "blue" || ns[2].ID != "green" || ns[2].Secret != 0 || ns[2].Apps != 1 || ns[0].LocalListeners != 1 {
		t.Fatalf("namespaces %+v", ns)
	}
}
