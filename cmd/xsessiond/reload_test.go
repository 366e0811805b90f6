package main

import (
	"errors"
	"testing"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestReload starts a daemon from a config and reloads another one, as
// SIGHUP does: namespaces and rules follow the file, those added with ctl
// stay, a namespace in use stays.
func TestReload(t *testing.T) {
	c1, err := ParseConfig([]byte(`
namespaces:
  - {id: blue, secret: 1, iface: lo}
  - {id: red, secret: 2, iface: lo}
rules:
  - {proto: udp, local: 0.0.0.0/0, local_port: 9000, remote: 192.0.2.0/24, action: drop, tag: a}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, func(o *daemonOptions) { o.Namespaces, o.Rules = c1.Namespaces, c1.Rules })
	if err := d.addNamespace("mine", 5, "lo", ""); err != nil {
		t.Fatal(err)
	}
	attach(t, d, app.Options{Name: "user", Namespace: "red", Secret: 2})
	ids := func() []string {
		var out []string
		for _, n := range d.layer.Namespaces() {
			out = append(out, n.ID)
		}
		return out
	}
	if got := ids(); len(got) != 4 {
		t.Fatalf("namespaces %v", got)
	}
	c2, err := ParseConfig([]byte(`
namespaces:
  - {id: green, secret: 3, iface: lo}
rules:
  - {proto: tcp, remote: 198.51.100.0/24, action: drop, tag: b}
  - {proto: udp, action: forward, app: nobody}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = d.reload(c2)
	// red has an app attached: it cannot go, and the reload says so.
	if !errors.Is(err, flow.ErrNamespaceInUse) {
		t.Fatalf("reload: %v", err)
	}
	want := map[string]bool{"": true, "red": true, "mine": true, "green": true}
	got := ids()
	if len(got) != len(want) {
		t.Fatalf("namespaces after reload %v", got)
	}
	for _, id := range got {
		if !want[id] {
			t.Fatalf("namespaces after reload %v", got)
		}
	}
	rules := d.layer.Rules()
	if len(rules) != 1 || rules[0].Tag != "b" || rules[0].Transport != flow.TransportTCP {
		t.Fatalf("rules after reload %+v (the forward rule to an app not attached is skipped)", rules)
	}
}
