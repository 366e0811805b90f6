package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
)

// cliDoc is docs/cli.md.
func cliDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docSection is the text of the section of doc under the heading "## name",
// up to the next heading of that level.
func docSection(t *testing.T, doc, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n## "+name+"\n")
	if !ok {
		t.Fatalf("docs/cli.md has no section %q", name)
	}
	sec, _, _ := strings.Cut(rest, "\n## ")
	return sec
}

// jsonKeys are the keys the JSON encoding of type t writes, at every
// depth (maps' keys, which are data, not included).
func jsonKeys(t reflect.Type, into map[string]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		jsonKeys(t.Elem(), into)
		return
	case reflect.Struct:
	default:
		return
	}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			jsonKeys(f.Type, into)
			continue
		}
		if name == "" {
			name = f.Name
		}
		into[name] = true
		jsonKeys(f.Type, into)
	}
}

// TestShowDocumentsDocumented: every key of the documents ctl show --json
// prints is named in docs/cli.md, as `key`.
func TestShowDocumentsDocumented(t *testing.T) {
	doc := cliDoc(t)
	keys := map[string]bool{}
	for _, v := range []any{daemon.AppView{}, daemon.SessionView{}, daemon.ListenerView{}, daemon.NamespaceView{},
		daemon.RuleView{}, daemon.StatsView{}} {
		jsonKeys(reflect.TypeOf(v), keys)
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		if !strings.Contains(doc, "`"+k+"`") {
			t.Errorf("docs/cli.md does not name the show --json key %q", k)
		}
	}
}

// metricName is a metric family's name on a line of the text exposition
// format.
var metricName = regexp.MustCompile(`(?m)^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) `)

// TestMetricsDocumented: docs/cli.md's Metrics section names every metric
// the daemon defines, and no other of its own; every family /metrics
// serves is one of them or of the collectors the section names.
func TestMetricsDocumented(t *testing.T) {
	doc := cliDoc(t)
	sec := docSection(t, doc, "Metrics")
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(xsessiond_[a-z0-9_]+)`").FindAllStringSubmatch(sec, -1) {
		documented[m[1]] = true
	}
	src, err := os.ReadFile("../../daemon/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(xsessiond_[a-z0-9_]+)"`).FindAllSubmatch(src, -1) {
		defined[string(m[1])] = true
	}
	if len(defined) == 0 {
		t.Fatal("daemon/metrics.go defines no xsessiond_ metric: has it moved?")
	}
	for m := range defined {
		if !documented[m] {
			t.Errorf("the daemon defines %s, which docs/cli.md's Metrics section does not list", m)
		}
	}
	for m := range documented {
		if !defined[m] {
			t.Errorf("docs/cli.md's Metrics section lists %s, which the daemon does not define", m)
		}
	}
	// Anywhere else in the document, a metric named is one the daemon has.
	for _, m := range regexp.MustCompile(`xsessiond_[a-z0-9_]+[a-z0-9]`).FindAllString(doc, -1) {
		if !defined[m] {
			t.Errorf("docs/cli.md names the metric %s, which the daemon does not define", m)
		}
	}

	cfg := daemon.Config{Datapath: datapath.Config{IfName: "lo"}, NoDatapath: true,
		Socket: filepath.Join(t.TempDir(), "api.sock"), Version: version, MetricsAddr: "127.0.0.1:0"}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	resp, err := http.Get("http://" + d.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	collectors := regexp.MustCompile("`([a-z]+)_\\*`|`(promhttp_[a-z0-9_]+)`").FindAllStringSubmatch(sec, -1)
	served := metricName.FindAllStringSubmatch(string(body), -1)
	if len(served) == 0 {
		t.Fatalf("/metrics served no metric:\n%s", body)
	}
	for _, m := range served {
		name := m[1]
		if documented[name] {
			continue
		}
		if !slices.ContainsFunc(collectors, func(c []string) bool {
			return (c[1] != "" && strings.HasPrefix(name, c[1]+"_")) || c[2] == name
		}) {
			t.Errorf("/metrics serves %s, which docs/cli.md's Metrics section does not name", name)
		}
	}
}

// listsFlags matches a usage line that names a flag; flagValue a flag
// with its value's placeholder.
var (
	listsFlags = regexp.MustCompile(`[\s\[(|]--?[a-z]`)
	flagValue  = regexp.MustCompile(`--?[a-z][a-z-]* [A-Z][A-Z|-]*`)
)

// TestCtlUsageLines: a ctl command whose usage line lists its flags lists
// every one of them, and takes an id one way in it (ID or --id ID, not both
// as if both were needed).
func TestCtlUsageLines(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !listsFlags.MatchString(c.Use) {
			return
		}
		// The id as an argument: ID, not a flag's value (--id ID, --app ID).
		hasID := regexp.MustCompile(`\bID\b`).MatchString(flagValue.ReplaceAllString(c.Use, ""))
		if hasID && strings.Contains(c.Use, "--id ") {
			t.Errorf("%s: usage %q takes the id both ways", c.CommandPath(), c.Use)
		}
		for _, l := range strings.Split(c.LocalFlags().FlagUsages(), "\n") {
			p := usageFlag.FindStringSubmatch(l)
			if p == nil || p[2] == "help" || (p[2] == "id" && hasID) {
				continue
			}
			if !strings.Contains(c.Use, "--"+p[2]) && (p[1] == "" || !strings.Contains(c.Use, "-"+p[1]+" ")) {
				t.Errorf("%s: usage %q lists flags but not --%s", c.CommandPath(), c.Use, p[2])
			}
		}
	}
	walk(newRootCmd())
}

// TestTopSessionsCountsListeners: top's --sessions bounds the rows of
// sessions and listeners together, as its help says.
func TestTopSessionsCountsListeners(t *testing.T) {
	top, _, err := newRootCmd().Find([]string{"ctl", "top"})
	if err != nil {
		t.Fatal(err)
	}
	if u := top.Flags().Lookup("sessions").Usage; !strings.Contains(u, "listeners") {
		t.Errorf("top --sessions says %q: it does not say the rows it bounds are sessions' and listeners'", u)
	}
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	echoServer(t, a, 9001)
	for _, c := range []struct {
		n    string
		want int
	}{{"0", 0}, {"1", 1}, {"5", 2}} {
		out, err := ctl(t, d.Socket(), "top", "--once", "--interval", "50ms", "--sessions", c.n)
		if err != nil {
			t.Fatalf("top --once --sessions %s: %v\n%s", c.n, err, out)
		}
		if got := strings.Count(out, " listen udp://"); got != c.want {
			t.Errorf("top --once --sessions %s: %d listener rows, want %d:\n%s", c.n, got, c.want, out)
		}
	}
}
