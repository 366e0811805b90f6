package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// TestCtlSocketPathTooLong: a --socket longer than a unix socket's path
// may be is named as such, with what to give instead, not as the
// connect's "invalid argument".
func TestCtlSocketPathTooLong(t *testing.T) {
	xs, _ := binaries(t)
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100), "api.sock")
	for _, args := range [][]string{{"show", "apps"}, {"top", "--once"}, {"capture", "-c", "1", "-w", os.DevNull}} {
		got := oneLine(t, xs, append([]string{"ctl", "--socket", long}, args...)...)
		for _, w := range []string{long, "too long", "107 bytes", "shorter"} {
			if !strings.Contains(got, w) {
				t.Errorf("ctl --socket LONG %s:\n got %q\nwant it to say %q", strings.Join(args, " "), got, w)
			}
		}
		if strings.Contains(got, "invalid argument") {
			t.Errorf("ctl --socket LONG %s: %q: the connect's words", strings.Join(args, " "), got)
		}
	}
}

// TestHelpUnknownTopic: xsessiond help with a command that is not there
// fails and names the commands there are, as ctl help does, instead of
// printing another command's help and exiting 0.
func TestHelpUnknownTopic(t *testing.T) {
	xs, _ := binaries(t)
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"help", "bogus"}, []string{"bogus: no such command", "ctl", "run", "--help"}},
		{[]string{"help", "ctl", "bogus"}, []string{"ctl bogus: no such command", "show", "rule"}},
		{[]string{"help", "ctl", "ns", "bogus"}, []string{"ns bogus: no such command", "add, del, set-secret"}},
	} {
		mistake(t, xs, c.args, c.words...)
	}
	// A command there is: its help, as --help prints it.
	for _, args := range [][]string{{"ctl", "show"}, {"ctl", "ns", "add"}, {"run"}, {"ctl"}} {
		got, err := exec.Command(xs, append([]string{"help"}, args...)...).CombinedOutput()
		want, _ := exec.Command(xs, append(args, "--help")...).CombinedOutput()
		if err != nil || string(got) != string(want) || len(got) == 0 {
			t.Errorf("help %s: %v\n%s\nwant\n%s", strings.Join(args, " "), err, got, want)
		}
	}
}

// TestRuleForwardToMissingApp: a forward rule to an app that is not
// attached says where the app ids are.
func TestRuleForwardToMissingApp(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	attach(t, d, app.Options{Name: "here"})
	mistake(t, xs, []string{"ctl", "--socket", d.Socket(), "rule", "add", "proto", "udp", "local", "0.0.0.0/0", "9000", "action", "forward", "app", "99"},
		"app 99", "not attached", "ctl show apps")
}

// TestCaptureFilterMissing: a capture filtered by an app, a listener or a
// session that is not there says so on stderr as it starts, naming it and
// where the ones there are are listed, rather than only "0 frames
// captured" at its end; filters that name what is there say nothing.
func TestCaptureFilterMissing(t *testing.T) {
	_, sock, _ := startRigDaemon(t)
	xs, _ := binaries(t)
	ctlArgs := func(args ...string) []string { return append([]string{"ctl", "--socket", sock}, args...) }
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"--app", "99"}, []string{"--app 99", "no such app", "ctl show apps"}},
		{[]string{"--listener", "0x1234"}, []string{"--listener 0x1234", "no such listener", "ctl show listeners"}},
		{[]string{"--session", "0x5"}, []string{"--session 0x5", "no such session", "ctl show sessions"}},
	} {
		cmd := exec.Command(xs, ctlArgs(append(append([]string{"capture"}, c.args...), "--duration", "200ms", "-w", os.DevNull)...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("capture %s: %v\n%s", strings.Join(c.args, " "), err, stderr.String())
		}
		for _, w := range c.words {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("capture %s:\n got %q\nwant it to say %q", strings.Join(c.args, " "), stderr.String(), w)
			}
		}
	}

	// Filters that name what is there capture.
	a := attachTo(t, sock, "echo")
	pc, err := a.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "listeners", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("show listeners: %v\n%s", err, out)
	}
	h := handleIn(t, string(out))
	for _, args := range [][]string{{"--app", fmt.Sprint(a.Index())}, {"--listener", h}, {"--listener", "0x" + strings.ToUpper(h[2:]), "--app", fmt.Sprint(a.Index())}} {
		cmd := exec.Command(xs, ctlArgs(append(append([]string{"capture"}, args...), "--duration", "200ms", "-w", os.DevNull)...)...)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "no such") {
			t.Errorf("capture %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// attachTo attaches an app named name to the daemon at sock, closed when
// the test ends.
func attachTo(t *testing.T, sock, name string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: name, Scope: flow.ScopeGlobal | flow.ScopeLocal})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// handleIn returns the handle of the first row of a show --json list.
func handleIn(t *testing.T, doc string) string {
	t.Helper()
	var rows []struct {
		Handle string `json:"handle"`
	}
	if err := json.Unmarshal([]byte(doc), &rows); err != nil || len(rows) == 0 || !strings.HasPrefix(rows[0].Handle, "0x") {
		t.Fatalf("no handle in %v: %s", err, doc)
	}
	return rows[0].Handle
}
