package daemon

import (
	"testing"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
)

// TestDefaultNamespaceByItsName: the default namespace, which every
// listing names "default", is taken by that name wherever a namespace is
// given: an app's attach, a rule of the config file and one of ctl rule
// add (as a show rules row gives it).
func TestDefaultNamespaceByItsName(t *testing.T) {
	d := startDaemon(t, func(o *Config) {
		o.Rules = []RuleConfig{{Proto: "udp", LocalPort: 9000, Action: "drop", Namespace: DefaultNamespace, Tag: "file"}}
	})
	attach(t, d, app.Options{Name: "by-name", Namespace: DefaultNamespace})
	for _, v := range d.AppViews() {
		if v.Name == "by-name" && v.Namespace != DefaultNamespace {
			t.Fatalf("an app attached to %q is in namespace %q", DefaultNamespace, v.Namespace)
		}
	}
	r, err := ruleFromAPI(api.Rule{Transport: 17, LocalPort: 9001, Action: api.ActionDrop, Namespace: DefaultNamespace, Tag: "ctl"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.layer.AddRule(r); err != nil {
		t.Fatalf("a rule of namespace %q: %v", DefaultNamespace, err)
	}
	rules := d.layer.Rules()
	if len(rules) != 2 {
		t.Fatalf("rules %+v, want the file's and ctl's", rules)
	}
	for _, r := range rules {
		if r.Namespace != "" {
			t.Errorf("rule %q of namespace %q, want the default one", r.Tag, r.Namespace)
		}
	}
}
