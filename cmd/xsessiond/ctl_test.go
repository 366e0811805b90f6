package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/flow"
)

// ctl runs `xsessiond ctl --socket S args...` in-process and returns its
// output and error.
func ctl(t *testing.T, socket string, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"ctl", "--socket", socket}, args...))
	err := cmd.Execute()
	return out.String(), err
}

// columns checks that every line of a table has its columns where the
// header has them: cell i of each row starts at the offset of header
// column i.
func checkColumns(t *testing.T, table string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < 1 {
		t.Fatalf("empty table")
	}
	header := lines[0]
	var starts []int
	var names []string
	for i := 0; i < len(header); {
		for i < len(header) && header[i] == ' ' {
			i++
		}
		if i >= len(header) {
			break
		}
		j := strings.Index(header[i:], "  ")
		if j < 0 {
			j = len(header) - i
		}
		starts = append(starts, i)
		names = append(names, header[i:i+j])
		i += j
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for k, s := range starts {
			if s >= len(l) {
				t.Fatalf("row %q too short for column %q", l, names[k])
			}
			if s > 0 && l[s-1] != ' ' {
				t.Fatalf("row %q: column %q does not start at offset %d\n%s", l, names[k], s, table)
			}
			end := len(l)
			if k+1 < len(starts) {
				end = starts[k+1]
			}
			row[names[k]] = strings.TrimSpace(l[s:end])
		}
		rows = append(rows, row)
	}
	return rows
}

func TestCtlShow(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	b := attach(t, d, app.Options{Name: "client-app"})
	c, err := b.Dial(t.Context(), "udp://127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sock := d.Socket()

	out, err := ctl(t, sock, "show", "apps")
	if err != nil {
		t.Fatal(err)
	}
	rows := checkColumns(t, out)
	if len(rows) != 2 || rows[0]["NAME"] != "echo" || rows[1]["NAME"] != "client-app" {
		t.Fatalf("apps table:\n%s", out)
	}
	if rows[0]["PID"] != strconv.Itoa(os.Getpid()) || rows[0]["NAMESPACE"] != "default" || rows[0]["LISTENERS"] != "2" || rows[1]["SESSIONS"] != "1" {
		t.Fatalf("apps table:\n%s", out)
	}

	out, err = ctl(t, sock, "show", "apps", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var apps []daemon.AppView
	if err := json.Unmarshal([]byte(out), &apps); err != nil {
		t.Fatalf("apps json: %v\n%s", err, out)
	}
	if len(apps) != 2 || apps[0].Name != "echo" || apps[0].PID != int32(os.Getpid()) || apps[0].UID != uint32(os.Getuid()) ||
		apps[1].Sessions != 1 || apps[1].FifoSize == 0 {
		t.Fatalf("apps json: %+v", apps)
	}

	out, err = ctl(t, sock, "show", "sessions")
	if err != nil {
		t.Fatal(err)
	}
	rows = checkColumns(t, out)
	if len(rows) != 2 || rows[0]["STATE"] != "cut-through" || rows[0]["WORKER"] != "-" || rows[0]["PEER"] == "-" {
		t.Fatalf("sessions table:\n%s", out)
	}
	out, err = ctl(t, sock, "show", "sessions", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var ss []daemon.SessionView
	if err := json.Unmarshal([]byte(out), &ss); err != nil || len(ss) != 2 {
		t.Fatalf("sessions json: %v\n%s", err, out)
	}

	out, err = ctl(t, sock, "show", "listeners")
	if err != nil {
		t.Fatal(err)
	}
	rows = checkColumns(t, out)
	if len(rows) != 2 || rows[0]["URI"] != "udp://0.0.0.0:9000" {
		t.Fatalf("listeners table:\n%s", out)
	}
	tables := map[string]bool{rows[0]["TABLE"]: true, rows[1]["TABLE"]: true}
	if !tables["local"] || !tables["global"] {
		t.Fatalf("listeners table:\n%s", out)
	}

	if out, err = ctl(t, sock, "ns", "add", "--id", "blue", "--secret", "42", "--iface", "lo"); err != nil {
		t.Fatalf("ns add: %v %s", err, out)
	}
	out, err = ctl(t, sock, "show", "namespaces")
	if err != nil {
		t.Fatal(err)
	}
	rows = checkColumns(t, out)
	if len(rows) != 2 || rows[0]["ID"] != "default" || rows[1]["ID"] != "blue" || rows[1]["IFINDEX"] != "1" || rows[0]["APPS"] != "2" {
		t.Fatalf("namespaces table:\n%s", out)
	}
	out, err = ctl(t, sock, "show", "namespaces", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "42") && strings.Contains(out, "secret") {
		t.Fatalf("namespaces json shows the secret:\n%s", out)
	}

	if out, err = ctl(t, sock, "rule", "add", "proto", "udp", "local", "0.0.0.0/0", "9000", "remote", "10.0.0.0/8", "0",
		"action", "drop", "scope", "global", "tag", "T"); err != nil {
		t.Fatalf("rule add: %v %s", err, out)
	}
	added := out
	out, err = ctl(t, sock, "show", "rules")
	if err != nil {
		t.Fatal(err)
	}
	rows = checkColumns(t, out)
	if len(rows) != 1 || rows[0]["PROTO"] != "udp" || rows[0]["LOCAL"] != "0.0.0.0/0" || rows[0]["LPORT"] != "9000" ||
		rows[0]["REMOTE"] != "10.0.0.0/8" || rows[0]["RPORT"] != "any" || rows[0]["ACTION"] != "drop" || rows[0]["TAG"] != "T" {
		t.Fatalf("rules table:\n%s", out)
	}
	out, err = ctl(t, sock, "show", "rules", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rules []daemon.RuleView
	if err := json.Unmarshal([]byte(out), &rules); err != nil || len(rules) != 1 || rules[0].Remote != "10.0.0.0/8" || rules[0].LocalPort != 9000 {
		t.Fatalf("rules json: %v %+v", err, rules)
	}
	if want := fmt.Sprintf("rule %d added\n", rules[0].ID); added != want {
		t.Fatalf("rule add printed %q, want %q (the id show rules lists)", added, want)
	}
	// VPP's word order, upper-case protocol: another rule; the same match
	// again is refused.
	vpp := []string{"rule", "add", "proto", "UDP", "0.0.0.0/0", "9000", "10.0.0.0/8", "0", "action", "drop", "scope", "local", "appns", "blue", "tag", "t1"}
	if out, err = ctl(t, sock, append(vpp, "--json")...); err != nil {
		t.Fatalf("rule add in VPP's order: %v %s", err, out)
	}
	var addedJSON struct {
		ID uint32 `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &addedJSON); err != nil || addedJSON.ID == 0 {
		t.Fatalf("rule add --json: %v %q", err, out)
	}
	if out, err = ctl(t, sock, vpp...); err == nil || !strings.Contains(out+err.Error(), "already matches") {
		t.Fatalf("duplicate rule add: %v %s", err, out)
	}
	out, err = ctl(t, sock, "show", "rules")
	if err != nil {
		t.Fatal(err)
	}
	rows = checkColumns(t, out)
	if len(rows) != 2 || rows[1]["NAMESPACE"] != "blue" || rows[1]["SCOPE"] != "local" || rows[1]["LPORT"] != "9000" ||
		rows[1]["REMOTE"] != "10.0.0.0/8" || rows[1]["TAG"] != "t1" || rows[1]["HITS"] != "0" {
		t.Fatalf("rules table:\n%s", out)
	}
	if rows[1]["ID"] != fmt.Sprint(addedJSON.ID) {
		t.Fatalf("rule add --json said id %d, show rules lists %s", addedJSON.ID, rows[1]["ID"])
	}
	if out, err = ctl(t, sock, "rule", "del", rows[1]["ID"]); err != nil {
		t.Fatalf("rule del by id: %v %s", err, out)
	}
	if out, err = ctl(t, sock, "rule", "del", rows[1]["ID"]); err == nil {
		t.Fatalf("rule del of a deleted id: %s", out)
	}
	if out, err = ctl(t, sock, "rule", "del", "tag", "T"); err != nil {
		t.Fatalf("rule del: %v %s", err, out)
	}
	if out, err = ctl(t, sock, "show", "rules", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("rules left: %v %s", err, out)
	}

	out, err = ctl(t, sock, "show", "stats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "interface") || !strings.Contains(out, "lo (ifindex 1") || !strings.Contains(out, "datapath") {
		t.Fatalf("stats:\n%s", out)
	}
	out, err = ctl(t, sock, "show", "stats", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st daemon.StatsView
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Apps != 2 || st.Sessions != 2 || st.Datapath != "none" {
		t.Fatalf("stats json: %v %+v", err, st)
	}
}

// TestCtlErrors checks the one-line errors of ctl.
func TestCtlErrors(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	missing := filepath.Join(t.TempDir(), "none.sock")
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		sock string
		want string
	}{
		{[]string{"show", "apps"}, missing, "no daemon at " + missing + ": is xsessiond run going?"},
		// The flags' problem, which no daemon answers, before the daemon's.
		{[]string{"show", "stats", "--app", "1"}, missing, "show stats: --app and --ns filter lists"},
		// A directory of the path that is a file is named.
		{[]string{"show", "apps"}, filepath.Join(file, "api.sock"), file + " is a file, not a directory"},
		{[]string{"show", "bogus"}, sock, `show "bogus": want apps, sessions, listeners, namespaces, rules or stats`},
		{[]string{"ns", "del", "--id", "nope"}, sock, `no such namespace`},
		{[]string{"ns", "add", "--id", "x", "--secret", "1", "--iface", "nosuchif0"}, sock, `interface "nosuchif0" does not exist`},
		{[]string{"ns", "add", "--id", "x", "--secret", "abc", "--iface", "lo"}, sock, `--secret "abc": want a number`},
		{[]string{"rule", "add", "proto", "icmp", "action", "drop"}, sock, `proto "icmp": want udp or tcp`},
		{[]string{"rule", "add", "proto", "udp", "action", "drop", "local", "10.0.0.1"}, sock, `want a prefix`},
		{[]string{"rule", "add", "proto", "udp", "action", "forward", "app", "99"}, sock, `app is not attached`},
		{[]string{"rule", "del", "tag", "nothing"}, sock, `no such rule`},
		{[]string{"rule", "del", "99"}, sock, `no such rule`},
		{[]string{"rule", "del", "x"}, sock, `want a rule id`},
		{[]string{"rule", "add", "proto", "UDP", "0.0.0.0/0", "9000", "10.0.0.0/8", "action", "drop"}, sock, `remote port "action"`},
		{[]string{"rule", "add", "proto", "udp", "0.0.0.0/0", "9000", "10.0.0.0/8"}, sock, `3 of the 4 words`},
		{[]string{"show", "sessions", "foo"}, sock, `show sessions foo: one thing at a time`},
		{[]string{"rule", "add", "proto"}, sock, `rule add needs a rule's words, at least proto P and action A`},
		{[]string{"rule", "del"}, sock, `rule del needs a rule id (see ctl show rules), tag T, or the rule's words`},
	}
	for _, c := range cases {
		out, err := ctl(t, c.sock, c.args...)
		if err == nil {
			t.Errorf("%v: no error (%s)", c.args, out)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%v: error %q, want one line containing %q", c.args, msg, c.want)
		}
	}
}

// RuleAdd answers with the new rule's id; a client of protocol 1, whose
// apps took the daemon's own eventfd, is refused at Hello.
func TestRuleAddReply(t *testing.T) {
	d := startDaemon(t)
	dial := func() *rawClient {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := api.Dial(ctx, d.Socket())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return &rawClient{c: conn}
	}
	r := dial()
	if _, err := r.call(&api.Hello{Major: api.VersionMajor, Minor: api.VersionMinor, Name: "raw"}); err != nil {
		t.Fatalf("hello: %v", err)
	}
	rep, err := r.call(&api.RuleAdd{Rule: api.Rule{Transport: flow.TransportUDP, LocalPort: 9000, Action: api.ActionDrop}})
	if err != nil {
		t.Fatalf("rule add: %v", err)
	}
	m, ok := rep.(*api.RuleAddReply)
	if !ok {
		t.Fatalf("rule add answered %v, want %v", rep.Type(), api.TypeRuleAddReply)
	}
	if rules := d.Layer().Rules(); len(rules) != 1 || rules[0].ID != m.ID {
		t.Fatalf("reply id %d, rules %+v", m.ID, rules)
	}
	old := dial()
	rep, err = old.call(&api.Hello{Major: 1, Minor: 3, Name: "old"})
	if !errors.Is(err, flow.ErrNotSupported) || !strings.Contains(err.Error(), "daemon speaks 2.") {
		t.Fatalf("hello 1.3: %v %v, want a refusal naming the daemon's version", rep, err)
	}
}

// TestCtlShowFilterMissing: --app or --ns naming an app or namespace
// that is not there fails saying so; one that is there but has no rows
// prints the empty table.
func TestCtlShowFilterMissing(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	a := attach(t, d, app.Options{Name: "quiet"})
	if err := d.AddNamespace("blue", 42, "lo", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"show", "sessions", "--ns", "bleu"}, `--ns "bleu": no such namespace (ctl show namespaces lists them)`},
		{[]string{"show", "listeners", "--app", "99", "--json"}, `--app 99: no such app (ctl show apps lists them)`},
		{[]string{"show", "apps", "--app", "99"}, `--app 99: no such app`},
	} {
		if out, err := ctl(t, sock, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v (%s), want an error saying %q", c.args, err, out, c.want)
		}
	}
	for _, args := range [][]string{
		{"show", "sessions", "--app", strconv.Itoa(int(a.Index()))},
		{"show", "apps", "--ns", "blue"},
		{"show", "listeners", "--ns", "default", "--app", strconv.Itoa(int(a.Index()))},
	} {
		if out, err := ctl(t, sock, args...); err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}
