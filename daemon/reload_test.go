package daemon

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
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

// TestReloadTakesOverCtlNamespace: a namespace added with ctl that the
// file lists after a reload is the file's: its secret is the file's
// (rotated in place: an app attached before keeps working), and a
// namespace the file lists on another interface is replaced when no app
// uses it. Before, the file's entry was taken over as it was, with the
// secret ctl gave, and the log said the config was reloaded.
func TestReloadTakesOverCtlNamespace(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, func(o *Config) { o.Datapath.IfName, o.Datapath.NetnsName = rig.B.Link, rig.B.Name })
	if err := d.AddNamespace("blue", 1, "lo", ""); err != nil {
		t.Fatal(err)
	}
	if err := d.AddNamespace("red", 1, "lo", ""); err != nil {
		t.Fatal(err)
	}
	a := attach(t, d, app.Options{Name: "before", Namespace: "blue", Secret: 1})
	if err := d.Reload([]NamespaceConfig{{ID: "blue", Secret: 2, Iface: "lo"}}, nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b, err := app.Attach(ctx, app.Options{Socket: d.Socket(), Namespace: "blue", Secret: 1}); err == nil {
		b.Close()
		t.Error("attach with ctl's secret after the file gave another: let in")
	} else if !errors.Is(err, flow.ErrWrongSecret) {
		t.Errorf("attach with ctl's secret: %v, want a wrong secret", err)
	}
	if b, err := app.Attach(ctx, app.Options{Socket: d.Socket(), Namespace: "blue", Secret: 2}); err != nil {
		t.Errorf("attach with the file's secret: %v", err)
	} else {
		b.Close()
	}
	if _, err := a.ListenPacket("udp://127.0.0.1:9100"); err != nil {
		t.Errorf("the app attached before the reload: %v", err)
	}
	// The file's namespace on another interface than ctl's, which no
	// app uses: replaced.
	ifc := rig.B.Link
	if err := d.Reload([]NamespaceConfig{{ID: "blue", Secret: 2, Iface: "lo"}, {ID: "red", Secret: 3, Iface: ifc}}, nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	for _, n := range d.layer.Namespaces() {
		if n.ID == "red" && n.IfIndex == 1 {
			t.Errorf("namespace red still on lo, the file says %s", ifc)
		}
	}
	// And deleted when the file drops it, as the file's own.
	if err := d.Reload([]NamespaceConfig{{ID: "blue", Secret: 2, Iface: "lo"}}, nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	for _, n := range d.layer.Namespaces() {
		if n.ID == "red" {
			t.Error("namespace red, the file's since a reload, outlived its removal from the file")
		}
	}
}

// TestReloadRulesInOneStep: a reload whose rules the layer refuses (one of
// a namespace the daemon does not have, two matching the same) leaves the
// rules of the file before in force, with their IDs, rather than none; a
// reload of the same rules keeps their IDs and hits, and one that changes
// one rule of two keeps the other.
func TestReloadRulesInOneStep(t *testing.T) {
	drop := func(port uint16, tag string) RuleConfig {
		return RuleConfig{Proto: "udp", Local: "0.0.0.0/0", LocalPort: port, Remote: "192.0.2.0/24", Action: "drop", Tag: tag}
	}
	rules1 := []RuleConfig{drop(9000, "a"), drop(9001, "b")}
	d := startDaemon(t, func(o *Config) { o.Rules = rules1 })
	ruleIDs := func() map[string]uint32 {
		m := map[string]uint32{}
		for _, r := range d.layer.Rules() {
			m[r.Tag] = r.ID
		}
		return m
	}
	before := ruleIDs()
	if len(before) != 2 {
		t.Fatalf("rules at start %v", before)
	}
	for _, bad := range [][]RuleConfig{
		{drop(9000, "a"), drop(9001, "b"), {Proto: "tcp", Action: "drop", Namespace: "nowhere", Tag: "c"}},
		{drop(9000, "a"), drop(9001, "b"), drop(9001, "twice")},
	} {
		if err := d.Reload(nil, bad); err == nil {
			t.Fatalf("reload of %+v: no error", bad)
		}
		if got := ruleIDs(); !maps.Equal(got, before) {
			t.Fatalf("rules after a refused reload %v, want those before %v", got, before)
		}
	}
	if err := d.Reload(nil, rules1); err != nil {
		t.Fatal(err)
	}
	if got := ruleIDs(); !maps.Equal(got, before) {
		t.Fatalf("rules after reloading the same %v, want the same IDs %v", got, before)
	}
	if err := d.Reload(nil, []RuleConfig{drop(9000, "a"), drop(9002, "b")}); err != nil {
		t.Fatal(err)
	}
	got := ruleIDs()
	if len(got) != 2 || got["a"] != before["a"] || got["b"] == before["b"] {
		t.Fatalf("rules after changing b %v (before %v): want a's ID kept and a new one for b", got, before)
	}
}

// TestConfigForwardRuleFollowsItsApp: a forward rule of the config file
// names an app no one runs when the daemon starts; it is added when an
// app of that name attaches, gone when it detaches, and added again when
// one attaches again, the file's other rules untouched.
func TestConfigForwardRuleFollowsItsApp(t *testing.T) {
	rules := []RuleConfig{
		{Proto: "udp", Local: "0.0.0.0/0", LocalPort: 9000, Remote: "192.0.2.0/24", Action: "drop", Tag: "drop"},
		{Proto: "udp", LocalPort: 9100, Action: "forward", App: "fwd", Tag: "fwd"},
	}
	d := startDaemon(t, func(o *Config) { o.Rules = rules })
	tags := func() map[string]uint32 {
		m := map[string]uint32{}
		for _, r := range d.layer.Rules() {
			m[r.Tag] = uint32(r.App)
		}
		return m
	}
	if got := tags(); len(got) != 1 || !maps.Equal(got, map[string]uint32{"drop": 0}) {
		t.Fatalf("rules at start %v, want the drop rule alone", got)
	}
	for round := range 2 {
		a := attach(t, d, app.Options{Name: "fwd"})
		got := tags()
		if len(got) != 2 || got["fwd"] == 0 {
			t.Fatalf("round %d: rules with the app attached %v, want the forward rule to it too", round, got)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); len(tags()) != 1; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: rules after the app detached %v, want the drop rule alone", round, tags())
			}
		}
	}
}

// TestConfigForwardRuleAppOfItsNamespace: a forward rule of the config
// file names an app of its namespace. An app of another namespace that
// attached first under that name neither gets the rule nor keeps it from
// the app it names: the rule goes to that app when it attaches. Before, the
// first app by the name was taken, whatever its namespace, and the layer
// refused the file's whole set of rules for it, the drop rule's change
// too, for as long as it stayed attached.
func TestConfigForwardRuleAppOfItsNamespace(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	rules := []RuleConfig{
		{Proto: "udp", LocalPort: 9100, Action: "forward", App: "fwd", Namespace: "blue", Scope: "local", Tag: "fwd"},
	}
	d := startDaemon(t, onB(rig), func(o *Config) {
		o.Namespaces = []NamespaceConfig{{ID: "blue", Secret: 42, Iface: rig.B.Link}}
		o.Rules = rules
	})
	forwards := func() []uint32 {
		var apps []uint32
		for _, r := range d.layer.Rules() {
			if r.Tag == "fwd" {
				apps = append(apps, uint32(r.App))
			}
		}
		return apps
	}
	impostor := attach(t, d, app.Options{Name: "fwd"})
	defer impostor.Close()
	if got := forwards(); len(got) != 0 {
		t.Fatalf("an app named fwd in the default namespace got the forward rule of namespace blue: %v", got)
	}
	attach(t, d, app.Options{Name: "fwd", Namespace: "blue", Secret: 42})
	var blue uint32
	for _, a := range d.layer.Apps() {
		if a.Name == "fwd" && a.Namespace == "blue" {
			blue = uint32(a.ID)
		}
	}
	if got := forwards(); len(got) != 1 || got[0] != blue {
		t.Fatalf("forward rules %v with fwd attached to blue as app %d, want one to it", got, blue)
	}
}

// TestMaxConnsAboveRootReserve: a bound on the control connections at or
// under root's reserve would leave none to other users' apps, which would
// all be refused with no word at start: New refuses it and says what to
// change; one above it, or no reserve, starts.
func TestMaxConnsAboveRootReserve(t *testing.T) {
	for _, c := range []struct {
		maxConns, reserve int
		ok                bool
	}{{4, 0, false}, {8, 0, false}, {5, 5, false}, {9, 0, true}, {4, -1, true}, {-1, 0, true}, {0, 0, true}} {
		err := ControlLimits{MaxConns: c.maxConns, RootReserve: c.reserve}.check()
		switch {
		case c.ok && err != nil:
			t.Errorf("max_conns %d, root_reserve %d: %v", c.maxConns, c.reserve, err)
		case !c.ok && (!errors.Is(err, flow.ErrInvalidValue) || !strings.Contains(err.Error(), "root_reserve")):
			t.Errorf("max_conns %d, root_reserve %d: %v, want an error naming root_reserve", c.maxConns, c.reserve, err)
		}
	}
	if _, err := New(Config{Datapath: datapath.Config{IfName: "lo"}, Control: ControlLimits{MaxConns: 8}}); !errors.Is(err, flow.ErrInvalidValue) {
		t.Errorf("New with max_conns 8: %v, want it refused", err)
	}
}
