package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/app"
)

var (
	keyRE    = regexp.MustCompile(`^[a-z0-9_]+$`)
	handleRE = regexp.MustCompile(`^0x[0-9a-f]+$`)
)

// handleKeys are the keys whose values are handles.
var handleKeys = map[string]bool{"handle": true, "listener": true, "peer": true}

// checkJSON walks a document and reports every key not in snake_case,
// every handle that is not a "0x…" string, every duration that is not a
// number of seconds, and an empty namespace name. It returns the number
// of handles it saw.
func checkJSON(t *testing.T, what string, v any, path string) (handles int) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			p := path + "." + k
			if !keyRE.MatchString(k) {
				t.Errorf("%s: key %q is not snake_case", what, p)
			}
			if handleKeys[k] {
				s, ok := e.(string)
				if !ok || !handleRE.MatchString(s) {
					t.Errorf("%s: %s = %v (%T), want a \"0x…\" string", what, p, e, e)
				}
				handles++
			}
			if strings.HasSuffix(k, "_seconds") || strings.HasSuffix(k, "_seconds_ago") {
				if _, ok := e.(float64); !ok {
					t.Errorf("%s: %s = %v (%T), want seconds as a number", what, p, e, e)
				}
			}
			if k == "namespace" && e == "" {
				t.Errorf("%s: %s is empty, want \"default\"", what, p)
			}
			handles += checkJSON(t, what, e, p)
		}
	case []any:
		for _, e := range v {
			handles += checkJSON(t, what, e, path+"[]")
		}
	}
	return handles
}

// checkShowJSON runs every `ctl show X --json` against socket and checks
// each document's keys and handles; it returns the documents by name.
func checkShowJSON(t *testing.T, run func(args ...string) (string, error)) map[string]any {
	t.Helper()
	docs := map[string]any{}
	for _, what := range []string{"apps", "sessions", "listeners", "namespaces", "rules", "stats"} {
		out, err := run("show", what, "--json")
		if err != nil {
			t.Fatalf("show %s --json: %v\n%s", what, err, out)
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("show %s --json: %v\n%s", what, err, out)
		}
		h := checkJSON(t, what, v, what)
		if what == "listeners" && h == 0 {
			t.Errorf("show %s --json: no handle to check in\n%s", what, out)
		}
		docs[what] = v
	}
	return docs
}

// TestCtlJSONKeys checks the key style and handle form of every show
// document of a daemon with apps, listeners, sessions, namespaces and
// rules.
func TestCtlJSONKeys(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	b := attach(t, d, app.Options{Name: "cli"})
	c, err := b.Dial(t.Context(), "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sock := d.Socket()
	if out, err := ctl(t, sock, "ns", "add", "blue", "--secret", "42", "--iface", "lo"); err != nil {
		t.Fatalf("ns add: %v %s", err, out)
	}
	if out, err := ctl(t, sock, "rule", "add", "proto", "udp", "action", "drop", "tag", "T"); err != nil {
		t.Fatalf("rule add: %v %s", err, out)
	}
	docs := checkShowJSON(t, func(args ...string) (string, error) { return ctl(t, sock, args...) })
	ns := docs["namespaces"].([]any)
	if len(ns) != 2 || ns[0].(map[string]any)["id"] != "default" {
		t.Errorf("namespaces: %v, want default first", ns)
	}
	st := docs["stats"].(map[string]any)
	for _, k := range []string{"engine", "detail", "targets"} {
		if _, ok := st[k]; ok {
			t.Errorf("stats has a %q section", k)
		}
	}
}

// TestCtlPapercuts checks the CLI's listing, aliases and argument forms.
func TestCtlPapercuts(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	out, err := ctl(t, sock, "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"apps", "sessions", "listeners", "namespaces", "rules", "stats"} {
		if !strings.Contains(out, "\n  "+w+" ") {
			t.Errorf("show without an argument does not list %s:\n%s", w, out)
		}
	}
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	for _, alias := range [][2]string{{"session", "sessions"}, {"ns", "namespaces"}, {"app", "apps"}, {"listener", "listeners"}} {
		got, err := ctl(t, sock, "show", alias[0])
		if err != nil {
			t.Fatalf("show %s: %v", alias[0], err)
		}
		want, err := ctl(t, sock, "show", alias[1])
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("show %s:\n%s\nshow %s:\n%s", alias[0], got, alias[1], want)
		}
	}
	if out, err := ctl(t, sock, "ns", "add", "blue", "--secret", "1", "--iface", "lo"); err != nil {
		t.Fatalf("ns add blue: %v %s", err, out)
	}
	if out, err := ctl(t, sock, "ns", "add", "default", "--secret", "1", "--iface", "lo"); err == nil {
		t.Errorf("ns add default: no error (%s)", out)
	}
	out, err = ctl(t, sock, "show", "listeners", "--ns", "default")
	if err != nil {
		t.Fatal(err)
	}
	if rows := checkColumns(t, out); len(rows) != 2 {
		t.Errorf("listeners --ns default:\n%s", out)
	}
	// "" names the default namespace, as wherever a namespace is given.
	out, err = ctl(t, sock, "show", "listeners", "--ns", "")
	if err != nil {
		t.Fatal(err)
	}
	if rows := checkColumns(t, out); len(rows) != 2 {
		t.Errorf("listeners --ns \"\":\n%s", out)
	}
	out, err = ctl(t, sock, "show", "listeners", "--ns", "blue")
	if err != nil {
		t.Fatal(err)
	}
	if rows := checkColumns(t, out); len(rows) != 0 {
		t.Errorf("listeners --ns blue:\n%s", out)
	}
	if out, err := ctl(t, sock, "ns", "del", "blue"); err != nil || !strings.Contains(out, `namespace "blue" deleted`) {
		t.Fatalf("ns del blue: %v %s", err, out)
	}
	out, err = ctl(t, sock, "show", "ns")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "blue") {
		t.Errorf("blue still there:\n%s", out)
	}
}
