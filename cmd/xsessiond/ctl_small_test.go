package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestRuleEmptyTag checks that a rule's tag given empty (tag "$TAG" with
// TAG unset) is named as such, not taken for a rule without its proto
// (rule del) or for a rule without a tag (rule add).
func TestRuleEmptyTag(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"rule", "del", "tag", ""}, []string{`rule del tag ""`, "the tag is empty", "ctl show rules"}},
		{[]string{"rule", "del", "proto", "udp", "tag", ""}, []string{"the tag is empty"}},
		{[]string{"rule", "add", "proto", "udp", "local", "0.0.0.0/0", "9000", "action", "drop", "tag", ""}, []string{"the tag is empty", "leave tag out"}},
	} {
		out, err := ctl(t, sock, c.args...)
		if err == nil {
			t.Errorf("%q: no error:\n%s", c.args, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v: want %q in it", c.args, err, w)
			}
		}
		if strings.Contains(err.Error(), "needs proto") {
			t.Errorf("%q: %v: asks for a proto", c.args, err)
		}
	}
	// The rule add above added nothing.
	if out, err := ctl(t, sock, "show", "rules", "--json"); err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("show rules: %v\n%s", err, out)
	}
	// A tag named like a keyword's value still works as a tag.
	if _, err := ctl(t, sock, "rule", "add", "proto", "udp", "local", "0.0.0.0/0", "9000", "action", "drop", "tag", "t1"); err != nil {
		t.Fatal(err)
	}
	if out, err := ctl(t, sock, "rule", "del", "tag", "t1"); err != nil || !strings.Contains(out, "rule deleted") {
		t.Fatalf("rule del tag t1: %v\n%s", err, out)
	}
}

// TestShowFlagsWithoutWhat checks that show --json (or --app, --ns) with
// nothing to show is an error that names the choices, not the plain-text
// list a script would read as JSON, and that docs/cli.md says so.
func TestShowFlagsWithoutWhat(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	for _, args := range [][]string{{"show", "--json"}, {"show", "--app", "1"}, {"show", "--ns", "default", "--json"}} {
		out, err := ctl(t, sock, args...)
		if err == nil {
			t.Errorf("%q: no error:\n%s", args, out)
			continue
		}
		for _, w := range []string{"show what?", "apps, sessions, listeners, namespaces, rules or stats", args[1]} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v: want %q in it", args, err, w)
			}
		}
	}
	if out, err := ctl(t, sock, "show"); err != nil || !strings.Contains(out, "What ctl show shows") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if !strings.Contains(cliDoc(t), "`show --json` with nothing to show") {
		t.Errorf("docs/cli.md does not say what show --json without what to show does")
	}
}

// TestNsAddMissingInterfaceSaysWhatToDo checks that ns add naming an
// interface its netns does not have says how to list the ones there and
// which one the daemon runs on.
func TestNsAddMissingInterfaceSaysWhatToDo(t *testing.T) {
	t.Run("daemon's netns", func(t *testing.T) {
		d := startDaemon(t)
		_, err := ctl(t, d.Socket(), "ns", "add", "blue", "--secret", "1", "--iface", "nope0")
		if err == nil {
			t.Fatal("ns add --iface nope0: no error")
		}
		for _, w := range []string{`interface "nope0" does not exist`, "ip link lists the interfaces there", "the daemon runs on lo"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: want %q in it", err, w)
			}
		}
	})
	t.Run("named netns", func(t *testing.T) {
		nstest.RequirePrivileged(t)
		rig, sock, _ := startRigDaemon(t)
		runsOn := "the daemon runs on " + rig.B.Link + " in netns " + rig.B.Name
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"--netns", rig.A.Name}, []string{"ip -n " + rig.A.Name + " link lists the interfaces there", runsOn}},
			{nil, []string{"ip -n " + rig.B.Name + " link lists the interfaces there", "without --netns", runsOn}},
		} {
			args := append([]string{"ns", "add", "blue", "--secret", "1", "--iface", "nope0"}, c.args...)
			_, err := ctl(t, sock, args...)
			if err == nil {
				t.Fatalf("%q: no error", args)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q: %v: want %q in it", args, err, w)
				}
			}
		}
	})
}

// TestSecretForms checks that --secret takes decimal digits and hex after
// 0x, and refuses the other forms Go's number syntax has (1_000, 0o17,
// 0b1, a sign) and a leading 0, which some read as octal.
func TestSecretForms(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	for _, s := range []string{"1_000", "0x3_e8", "0o1750", "0b1111101000", "01750", "+1000", "-1", "1e3", "18446744073709551616", " 1000", "0x"} {
		if out, err := ctl(t, sock, "ns", "add", "blue", "--secret", s, "--iface", "lo"); err == nil {
			t.Errorf("ns add --secret %q: no error:\n%s", s, out)
		} else if !strings.Contains(err.Error(), "--secret") {
			t.Errorf("ns add --secret %q: %v", s, err)
		}
	}
	if out, err := ctl(t, sock, "show", "namespaces", "--json"); err != nil || strings.Contains(out, "blue") {
		t.Fatalf("a refused secret added a namespace: %v\n%s", err, out)
	}
	attachWith := func(secret uint64) error { return attachBlue(sock, secret) }
	if _, err := ctl(t, sock, "ns", "add", "blue", "--secret", "1000", "--iface", "lo"); err != nil {
		t.Fatal(err)
	}
	if err := attachWith(1000); err != nil {
		t.Fatalf("--secret 1000: attach with 1000: %v", err)
	}
	for _, s := range []string{"1_000", "01750"} {
		if _, err := ctl(t, sock, "ns", "set-secret", "blue", "--secret", s); err == nil {
			t.Errorf("ns set-secret --secret %q: no error", s)
		}
	}
	if _, err := ctl(t, sock, "ns", "set-secret", "blue", "--secret", "0x3E8"); err != nil {
		t.Fatal(err)
	}
	if err := attachWith(1000); err != nil {
		t.Fatalf("--secret 0x3E8: attach with 1000: %v", err)
	}
	if err := attachWith(3_000); err == nil {
		t.Fatal("attach with a wrong secret worked")
	}
}

// attachBlue attaches an app to namespace blue of the daemon at sock with
// secret, and closes it.
func attachBlue(sock string, secret uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "s", Namespace: "blue", Secret: secret})
	if err == nil {
		a.Close()
	}
	return err
}

// TestSecretFromEnvironment: ns add and ns set-secret without --secret,
// and the examples, take the secret from $XSESSIOND_SECRET, which other
// users cannot read in ps as they can a flag; --secret wins over it, and
// a bad one is named as the variable's.
func TestSecretFromEnvironment(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	attachWith := func(secret uint64) error { return attachBlue(sock, secret) }
	t.Setenv(api.SecretEnv, "4242")
	if out, err := ctl(t, sock, "ns", "add", "blue", "--iface", "lo"); err != nil {
		t.Fatalf("ns add with $%s: %v\n%s", api.SecretEnv, err, out)
	}
	if err := attachWith(4242); err != nil {
		t.Fatalf("attach with the environment's secret: %v", err)
	}
	t.Setenv(api.SecretEnv, "0x10")
	if _, err := ctl(t, sock, "ns", "set-secret", "blue"); err != nil {
		t.Fatal(err)
	}
	if err := attachWith(16); err != nil {
		t.Fatalf("attach after set-secret from the environment: %v", err)
	}
	if _, err := ctl(t, sock, "ns", "set-secret", "blue", "--secret", "17"); err != nil {
		t.Fatal(err)
	}
	if err := attachWith(17); err != nil {
		t.Fatalf("--secret 17 with $%s=0x10: attach with 17: %v", api.SecretEnv, err)
	}
	t.Setenv(api.SecretEnv, "1_0")
	if _, err := ctl(t, sock, "ns", "set-secret", "blue"); err == nil || !strings.Contains(err.Error(), "$"+api.SecretEnv+` "1_0"`) {
		t.Errorf("a bad $%s: %v", api.SecretEnv, err)
	}
	// An example: the secret from the environment, none on its command
	// line.
	_, echo := binaries(t)
	t.Setenv(api.SecretEnv, "17")
	e := startProcess(t, echo, "--socket", sock, "--ns", "blue", "--listen", "udp://127.0.0.1:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	e.stop(t)
	t.Setenv(api.SecretEnv, "18")
	out, err := exec.Command(echo, "--socket", sock, "--ns", "blue", "--listen", "udp://127.0.0.1:9000").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "secret") {
		t.Errorf("udpecho with a wrong $%s: %v\n%s", api.SecretEnv, err, out)
	}
}

// TestNumericFlagsDecimal checks that the numeric flags take decimal
// digits, as their help writes them, and refuse 1_0, 0x10, 0b1 and 010
// (8 to Go's number syntax) with a line that says what to give.
func TestNumericFlagsDecimal(t *testing.T) {
	d := startDaemon(t)
	sock := d.Socket()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"show", "apps", "--app", "1_0"}, `--app "1_0": want a whole number from 0 to 4294967295, in decimal digits`},
		{[]string{"show", "apps", "--app", "0x1"}, `--app "0x1": want a whole number from 0 to 4294967295, in decimal digits`},
		{[]string{"show", "apps", "--app", "010"}, `--app "010": want a whole number from 0 to 4294967295, in decimal digits without a leading 0`},
		{[]string{"top", "--once", "--sessions", "1_0"}, `--sessions "1_0": want a whole number, in decimal digits`},
		{[]string{"capture", "-w", "-", "-c", "0b1"}, `-c/--count "0b1": want a whole number from 0 to 4294967295, in decimal digits`},
		{[]string{"capture", "-w", "-", "--snaplen", "1_500"}, `--snaplen "1_500": want a whole number from 0 to 4294967295, in decimal digits`},
	} {
		out, err := ctl(t, sock, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q\n%s", c.args, err, c.want, out)
		}
	}
	// Decimal numbers still work; a negative one where one is taken reaches
	// the command's own check.
	a := attach(t, d, app.Options{Name: "ten"})
	if out, err := ctl(t, sock, "show", "apps", "--app", fmt.Sprint(a.Index())); err != nil || !strings.Contains(out, "ten") {
		t.Fatalf("show apps --app %d: %v\n%s", a.Index(), err, out)
	}
	if _, err := ctl(t, sock, "top", "--once", "--interval", "10ms", "--sessions", "-1"); err == nil || !strings.Contains(err.Error(), "want 0 or more") {
		t.Fatalf("top --sessions -1: %v", err)
	}
	// The daemon's flags too.
	if _, err := runRoot("run", "--iface", "lo", "--socket", filepath.Join(t.TempDir(), "api.sock"), "--queues", "0x1"); err == nil || !strings.Contains(err.Error(), `--queues "0x1": want a whole number, in decimal digits`) {
		t.Fatalf("run --queues 0x1: %v", err)
	}
}

// runRoot runs xsessiond args... in-process.
func runRoot(args ...string) (string, error) {
	cmd := newRootCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}
