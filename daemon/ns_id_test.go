package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

const idForm = "1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"

// TestNamespaceIDRefused adds namespaces whose ids would split ctl show's
// columns or a path, as ctl ns add does (over the control socket) and in
// process: each fails with ErrInvalidValue and an error that says what an
// id may be, before the interface is looked at, and no namespace is added.
func TestNamespaceIDRefused(t *testing.T) {
	nstest.RequirePrivileged(t) // ns add over the socket is an admin request
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, id := range []string{"a b", "x/../y", "..", "-x", "tab\there", "esc\x1b[2J", strings.Repeat("n", 65)} {
		_, fds, err := cl.Call(ctx, &api.NsAdd{ID: id, Secret: 1, Iface: "nosuch0"})
		api.CloseFDs(fds)
		if len(id) > api.MaxNameLen {
			// The codec refuses it before it leaves.
			if !errors.Is(err, api.ErrFieldTooLong) {
				t.Errorf("ns add %q over the socket: %v", id, err)
			}
		} else if !errors.Is(err, flow.ErrInvalidValue) || !strings.HasPrefix(err.Error(), "ns add: namespace id ") || !strings.Contains(err.Error(), idForm) {
			t.Errorf("ns add %q over the socket: %v", id, err)
		}
		err = d.AddNamespace(id, 1, "lo", "")
		if !errors.Is(err, flow.ErrInvalidValue) || !strings.HasPrefix(err.Error(), "ns add: namespace id ") || !strings.Contains(err.Error(), idForm) {
			t.Errorf("AddNamespace(%q): %v", id, err)
		}
	}
	if err := d.AddNamespace("prod-eu.1_x", 1, "lo", ""); err != nil {
		t.Fatal(err)
	}
	if n := len(d.layer.Namespaces()); n != 2 {
		t.Fatalf("%d namespaces, want the default one and prod-eu.1_x", n)
	}
}

// TestConfigNamespaceErrors starts daemons whose config file has a
// namespace with an id of the wrong form, on an interface that is not
// there, and a rule of a namespace that is not there: Start fails with an
// error that says the namespace or rule is the config file's, names the
// rule by its words, and says what an id may be.
func TestConfigNamespaceErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		nss   []NamespaceConfig
		rules []RuleConfig
		want  []string
	}{
		{"id", []NamespaceConfig{{ID: "a b", Secret: 1, Iface: "lo"}}, nil,
			[]string{`config file: namespace id "a b": ' ' at offset 1 is not allowed`, idForm}},
		{"iface", []NamespaceConfig{{ID: "blue", Secret: 1, Iface: "nosuch0"}}, nil,
			[]string{`config file: namespace "blue": interface "nosuch0" does not exist in the daemon's netns`}},
		{"rule", nil, []RuleConfig{{Proto: "udp", LocalPort: 9000, Action: "drop", Namespace: "green"}},
			[]string{`config file: rules: add rule proto udp local any 9000 action drop ns green: namespace "green": no such namespace`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := New(Config{Datapath: datapath.Config{IfName: "lo"}, NoDatapath: true,
				Socket: filepath.Join(t.TempDir(), "api.sock"), Namespaces: c.nss, Rules: c.rules})
			if err != nil {
				t.Fatal(err)
			}
			err = d.Start()
			if err == nil {
				d.Close()
				t.Fatal("started")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("start: %v\nwant it to say %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "ns add") || strings.Contains(err.Error(), "rule 0") {
				t.Errorf("start: %v: reads as a ctl ns add or a rule id", err)
			}
		})
	}
}
