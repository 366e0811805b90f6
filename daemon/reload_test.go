package daemon

import (
	"errors"
	"testing"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestReload starts a daemon with configured namespaces and rules and
// reloads others, as SIGHUP does: namespaces and rules follow the file,
// those added with ctl stay, a namespace in use stays.
func TestReload(t *testing.T) {
	nss1 := []NamespaceConfig{{ID: "blue", Secret: 1, Iface: "lo"}, {ID: "red", Secret: 2, Iface: "lo"}}
	rules1 := []RuleConfig{{Proto: "udp", Local: "0.0.0.0/0", LocalPort: 9000, Remote: "192.0.2.0/24", Action: "drop", Tag: "a"}}
	d := startDaemon(t, func(o *Config) { o.Namespaces, o.Rules = nss1, rules1 })
	if err := d.AddNamespace("mine", 5, "lo", ""); err != nil {
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
	nss2 := []NamespaceConfig{{ID: "green", Secret: 3, Iface: "lo"}}
	rules2 := []RuleConfig{
		{Proto: "tcp", Remote: "198.51.100.0/24", Action: "drop", Tag: "b"},
		{Proto: "udp", Action: "forward", App: "nobody"},
	}
	err := d.Reload(nss2, rules2)
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
