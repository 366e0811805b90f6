package sessions_test

import (
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestNamespace_IDForm adds namespaces with ids that would split a table
// column, a path or a log line, and ids of the allowed form: letters,
// digits, '.', '_' and '-', starting with a letter or digit, at most
// MaxNamespaceIDLen bytes. The refused ones fail with ErrInvalidValue and
// an error that says what is allowed, and leave no namespace behind.
func TestNamespace_IDForm(t *testing.T) {
	if sessions.MaxNamespaceIDLen != api.MaxNameLen {
		t.Fatalf("MaxNamespaceIDLen %d, the control protocol carries ids of up to %d bytes", sessions.MaxNamespaceIDLen, api.MaxNameLen)
	}
	r := newRig(t)
	before := len(r.l.Namespaces())
	bad := []string{
		"a b", "x/../y", "/etc", "..", ".", ".hidden", "-x", "_x", "tab\there", "new\nline", "esc\x1b[31m",
		"nul\x00", "del\x7f", "ümlaut", "quote\"", "semi;colon", "a,b", "a=b", "a{b}", "\xff\xfe",
		strings.Repeat("n", sessions.MaxNamespaceIDLen+1), strings.Repeat("n", 4096),
	}
	for _, id := range bad {
		err := r.l.AddNamespace(sessions.NamespaceConfig{ID: id, Secret: 1, IfIndex: 3, FIB4: 10, FIB6: 11})
		wantErr(t, err, sessions.ErrInvalidValue)
		if !strings.Contains(err.Error(), "1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit") {
			t.Errorf("id %q: error %q does not say what is allowed", id, err)
		}
		if len(err.Error()) > 400 {
			t.Errorf("id of %d bytes: error of %d bytes", len(id), len(err.Error()))
		}
		if got := sessions.ValidNamespaceID(id); got == nil {
			t.Errorf("ValidNamespaceID(%q) = nil", id)
		}
	}
	if err := sessions.ValidNamespaceID(""); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("ValidNamespaceID(\"\") = %v, want an error that says it is empty", err)
	}
	if n := len(r.l.Namespaces()); n != before {
		t.Fatalf("%d namespaces after refused adds, want %d", n, before)
	}
	good := []string{"green", "Red", "n1", "1n", "a.b", "a_b", "a-b", "prod-eu.1_x", strings.Repeat("n", sessions.MaxNamespaceIDLen)}
	for _, id := range good {
		if err := r.l.AddNamespace(sessions.NamespaceConfig{ID: id, Secret: 1, IfIndex: 3, FIB4: 10, FIB6: 11}); err != nil {
			t.Errorf("id %q: %v", id, err)
		}
	}
	if n := len(r.l.Namespaces()); n != before+len(good) {
		t.Fatalf("%d namespaces, want %d", n, before+len(good))
	}
}

// TestRules_ErrorNamesRule adds rules that fail, one at a time and in a
// batch: the error names the rule by its words, never by its place in
// the batch, which reads as a rule id.
func TestRules_ErrorNamesRule(t *testing.T) {
	r := newRig(t)
	tcp := sessions.TransportTCP
	for _, c := range []struct {
		rule sessions.Rule
		want string
	}{
		{sessions.Rule{Transport: tcp, Remote: pfx("192.0.2.0/24"), RemotePort: 53, Action: sessions.RuleDrop, Namespace: "green"},
			`add rule proto tcp remote 192.0.2.0/24 53 action drop ns green: namespace "green": no such namespace`},
		{sessions.Rule{Transport: 99, LocalPort: 9000, Action: sessions.RuleDrop, Tag: "t 1"},
			`add rule proto proto(99) local any 9000 action drop tag "t 1": rule transport proto(99): invalid value`},
		{sessions.Rule{Transport: tcp, Action: sessions.RuleForward, App: 999, Scope: sessions.ScopeLocal | sessions.ScopeGlobal},
			`add rule proto tcp action forward app 999 scope both: forward to app 999: app is not attached`},
	} {
		_, err := r.l.AddRule(c.rule)
		if err == nil || err.Error() != c.want {
			t.Errorf("AddRule(%+v):\n got %v\nwant %s", c.rule, err, c.want)
		}
		_, err = r.l.AddRules([]sessions.Rule{{Transport: tcp, Action: sessions.RuleAllow}, c.rule})
		if err == nil || err.Error() != c.want {
			t.Errorf("AddRules(…, %+v):\n got %v\nwant %s", c.rule, err, c.want)
		}
	}
	// Two rules of one batch that match the same: neither has an id yet,
	// so the error names none.
	dup := sessions.Rule{Transport: tcp, Remote: pfx("192.0.2.0/24"), RemotePort: 53, Action: sessions.RuleDrop}
	_, err := r.l.AddRules([]sessions.Rule{dup, dup})
	wantErr(t, err, sessions.ErrInvalidValue)
	if want := "add rule proto tcp remote 192.0.2.0/24 53 action drop: another rule added with it matches the same in the same tables: invalid value"; err.Error() != want {
		t.Errorf("duplicate in a batch:\n got %v\nwant %s", err, want)
	}
	if n := len(r.l.Rules()); n != 0 {
		t.Fatalf("%d rules after failed adds", n)
	}
}
