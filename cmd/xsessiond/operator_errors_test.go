package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/xsessiond/xsessiond/app"
)

// mistake runs the xsessiond binary with args, which must fail with one
// line, and checks that the line has every one of words: what is wrong
// and what to type instead.
func mistake(t *testing.T, xs string, args []string, words ...string) {
	t.Helper()
	got := oneLine(t, xs, args...)
	for _, w := range words {
		if !strings.Contains(got, w) {
			t.Errorf("xsessiond %s:\n got %q\nwant it to say %q", strings.Join(args, " "), got, w)
		}
	}
}

// TestOperatorCtlMistakes types every ctl command wrong: too few, too
// many and malformed words and flags, names the daemon does not know. Each
// fails with one line that says what is wrong and what to type, and a
// non-zero exit; none is the parser's words, a panic or a silent 0.
func TestOperatorCtlMistakes(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	if err := d.AddNamespace("blue", 42, "lo", ""); err != nil {
		t.Fatal(err)
	}
	attach(t, d, app.Options{Name: "in-blue", Namespace: "blue", Secret: 42})
	ctlArgs := func(args ...string) []string { return append([]string{"ctl", "--socket", d.Socket()}, args...) }
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{ctlArgs("bogus"), []string{"ctl bogus: no such command", "show", "rule", "--help"}},
		{ctlArgs("ns", "add", strings.Repeat("n", 65), "--secret", "1", "--iface", "lo"), []string{"ns add", "is 65 bytes long", "1 to 64"}},
		{ctlArgs("show", "tables"), []string{`show "tables"`, "apps, sessions"}},
		{ctlArgs("show", "apps", "--app", "x"), []string{`--app "x"`, "whole number", "4294967295"}},
		{ctlArgs("show", "apps", "--app", "-1"), []string{`--app "-1"`, "whole number"}},
		{ctlArgs("ns", "bogus"), []string{"ns bogus: no such command", "add, del, set-secret"}},
		{ctlArgs("ns", "add"), []string{"ns add needs an id", "--secret", "--iface"}},
		{ctlArgs("ns", "add", "red", "green", "--secret", "1", "--iface", "lo"), []string{"takes one id", "ns add ID --secret N --iface IF"}},
		{ctlArgs("ns", "add", "red", "--secret", "-1", "--iface", "lo"), []string{`--secret "-1"`, "want a number"}},
		{ctlArgs("ns", "add", "red", "--secret", "many", "--iface", "lo"), []string{`--secret "many"`, "want a number"}},
		{ctlArgs("ns", "add", "blue", "--secret", "1", "--iface", "lo"), []string{"already exists", "set-secret", "ns del"}},
		{ctlArgs("ns", "del"), []string{"ns del needs the namespace id", "ns del ID"}},
		{ctlArgs("ns", "del", "red", "green"), []string{"takes one id", "ns del ID"}},
		{ctlArgs("ns", "del", "red"), []string{`"red"`, "no such namespace", "ctl show namespaces"}},
		{ctlArgs("ns", "del", "blue"), []string{"has apps attached", "ctl show apps --ns blue", "stop them"}},
		{ctlArgs("ns", "del", "default"), []string{"built in", "cannot be deleted"}},
		{ctlArgs("ns", "set-secret", "default", "--secret", "1"), []string{"default namespace has no secret", "without one"}},
		{ctlArgs("rule", "add", "proto", "udp", "proto", "tcp", "action", "drop"), []string{`"proto" given twice`}},
		{ctlArgs("ns", "set-secret", "--id", "red", "--secret", "1"), []string{"no such namespace", "ctl show namespaces"}},
		{ctlArgs("ns", "set-secret", "--id", "blue"), []string{"needs --id and --secret"}},
		{ctlArgs("rule", "bogus"), []string{"rule bogus: no such command", "add, del"}},
		{ctlArgs("rule", "add"), []string{"at least proto P and action A", "--help"}},
		{ctlArgs("rule", "add", "proto", "sctp", "action", "drop"), []string{`proto "sctp"`, "udp or tcp"}},
		{ctlArgs("rule", "add", "proto", "udp", "action", "explode"), []string{`action "explode"`, "drop, allow, forward"}},
		{ctlArgs("rule", "add", "proto", "udp", "local", "0.0.0.0/0", "70000", "action", "drop"), []string{"local port 70000", "0 to 65535"}},
		{ctlArgs("rule", "add", "proto", "udp", "remote", "10.0.0.0/8", "99999", "action", "drop"), []string{"remote port 99999", "0 to 65535"}},
		{ctlArgs("rule", "add", "proto", "udp", "local", "0.0.0.0/0", "-1", "action", "drop"), []string{"rule add -1", "0 to 65535"}},
		{ctlArgs("rule", "add", "proto", "udp", "local", "10.0.0.0/33", "80", "action", "drop"), []string{`"10.0.0.0/33"`, "want a prefix like 10.0.0.0/8"}},
		{ctlArgs("rule", "add", "proto", "udp", "local", "10.0.0.300/24", "80", "action", "drop"), []string{`"10.0.0.300/24"`, "want a prefix"}},
		{ctlArgs("rule", "del", "99"), []string{"no such rule", "ctl show rules"}},
		{ctlArgs("rule", "del", "tag", "nothing"), []string{"no such rule", "ctl show rules"}},
		{ctlArgs("rule", "del", "-3"), []string{"rule del -3", "rule id 1 or more"}},
		{ctlArgs("rule", "del", "1", "2"), []string{"rule del 1 2", "one rule id at a time", "tag T"}},
		{ctlArgs("clear", "stats", "now"), []string{"clear stats takes no arguments", `"now"`}},
		{ctlArgs("top", "--once", "--sessions", "-3"), []string{"--sessions -3", "0 or more"}},
		{ctlArgs("top", "--once", "--interval", "1"), []string{`--interval "1"`, "with its unit", "2s"}},
		{ctlArgs("top", "--once", "--interval", "0s"), []string{"--interval 0s", "positive"}},
		{ctlArgs("capture", "-c", "10"), []string{"capture needs -w FILE", "-w -"}},
		{ctlArgs("capture", "-c", "x", "-w", "-"), []string{`-c/--count "x"`, "whole number"}},
		{ctlArgs("capture", "-c", "-1", "-w", "-"), []string{`-c/--count "-1"`, "whole number"}},
		{ctlArgs("capture", "-c", "1", "-w", "/nonexistent-dir/x.pcapng"), []string{"no directory /nonexistent-dir", "-w - for stdout"}},
		{ctlArgs("capture", "-c", "1", "-w", t.TempDir()), []string{"a directory", "give a file name"}},
		{ctlArgs("capture", "--duration", "5", "-w", "-"), []string{`--duration "5"`, "with its unit"}},
		{ctlArgs("capture", "-w"), []string{"needs an argument", "-w", "see xsessiond ctl capture --help"}},
		{ctlArgs("show", "apps", "--bogus"), []string{"unknown flag: --bogus", "see xsessiond ctl show --help"}},
		{ctlArgs("top", "-once"), []string{"-once", "two dashes: --once", "xsessiond ctl top --help"}},
		{ctlArgs("rule", "add", "proto", "udp", "local", "0.0.0.0/0", "abc", "action", "drop"), []string{`local port "abc"`, "0 to 65535"}},
	} {
		mistake(t, xs, c.args, c.words...)
	}
}

// TestOperatorCtlSockets points ctl at nothing, a directory, a regular
// file, a socket of another kind, a stale socket, and a socket it may not
// open: each says what the path is and what to give instead, fast.
func TestOperatorCtlSockets(t *testing.T) {
	xs, _ := binaries(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(file, []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stream, err := net.Listen("unix", filepath.Join(dir, "stream.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	stale := filepath.Join(dir, "stale.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	for _, c := range []struct {
		socket string
		words  []string
	}{
		{filepath.Join(dir, "none.sock"), []string{"no daemon at", "is xsessiond run going?"}},
		{stale, []string{"no daemon at " + stale, "is xsessiond run going?"}},
		{dir, []string{dir + " is a directory", "give --socket the daemon's control socket", DefaultSocket}},
		{file, []string{file + " is not a socket", "give --socket", DefaultSocket}},
		{filepath.Join(file, "api.sock"), []string{file + " is a file, not a directory", "give --socket"}},
		{filepath.Join(dir, "stream.sock"), []string{"a socket of another kind", "give --socket"}},
		{"", []string{"--socket is empty", DefaultSocket}},
	} {
		start := time.Now()
		mistake(t, xs, []string{"ctl", "--socket", c.socket, "show", "apps"}, c.words...)
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("ctl --socket %q took %v to fail", c.socket, took)
		}
	}
	if os.Getuid() != 0 {
		return
	}
	// A socket of root's, mode 0600, as another user.
	nd := nobodyDir(t, "xsessiond-op-")
	ln, err := net.Listen("unixpacket", filepath.Join(nd, "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(filepath.Join(nd, "api.sock"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(xs), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(xs, "ctl", "--socket", filepath.Join(nd, "api.sock"), "show", "apps")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if s := string(out); err == nil || !strings.Contains(s, "permission denied") || !strings.Contains(s, "socket's group") {
		t.Errorf("ctl on a socket uid 65534 may not open: %v %q, want permission denied and the socket's group", err, s)
	}
	// A socket it may open, in a folder it may not pass.
	if err := os.Chmod(filepath.Join(nd, "api.sock"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(nd, 0o750); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(xs, "ctl", "--socket", filepath.Join(nd, "api.sock"), "show", "apps")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err = cmd.CombinedOutput()
	if s := string(out); err == nil || !strings.Contains(s, "permission denied on its directory "+nd) || !strings.Contains(s, "0755") {
		t.Errorf("ctl on a socket in a folder uid 65534 may not pass: %v %q, want permission denied on the directory", err, s)
	}
}

// TestOperatorCtlSilentDaemon: ctl against a socket whose listener never
// answers gives up after its timeout and says what to look at, instead of
// hanging.
func TestOperatorCtlSilentDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unixpacket", sock) // listens, never accepts
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	saved := ctlTimeout
	ctlTimeout = 300 * time.Millisecond
	defer func() { ctlTimeout = saved }()
	for _, args := range [][]string{{"show", "apps"}, {"rule", "del", "1"}, {"top", "--once"}, {"capture", "-w", "-"}} {
		start := time.Now()
		_, err := ctl(t, sock, args...)
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%v: took %v against a daemon that does not answer", args, took)
		}
		if err == nil || !strings.Contains(err.Error(), "did not answer within") || !strings.Contains(err.Error(), "stopped or stuck") {
			t.Errorf("%v: error %v, want one saying it did not answer and what to look at", args, err)
		}
	}
}

// TestOperatorRunMistakes starts run with what an operator gets wrong:
// no interface, one given as an argument, a namespace or config file that
// does not exist. All fail before touching anything, with one line.
func TestOperatorRunMistakes(t *testing.T) {
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	dir := t.TempDir()
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"run", "--socket", sock}, []string{"no interface", "--iface"}},
		{[]string{"run", "eth1", "--socket", sock}, []string{"run takes no arguments", `"eth1"`, "--iface IF"}},
		{[]string{"run", "--iface"}, []string{"--iface", "see xsessiond run --help"}},
		{[]string{"run", "--bogus"}, []string{"unknown flag: --bogus", "see xsessiond run --help"}},
		{[]string{"run", "--iface", "lo", "--socket", ""}, []string{"--socket is empty", DefaultSocket}},
		{[]string{"run", "--iface", "lo", "--netns", "no-such-netns-op", "--socket", sock}, []string{`netns "no-such-netns-op"`, "no such network namespace", "ip netns list"}},
		{[]string{"run", "--iface", "lo", "--queues", "x", "--socket", sock}, []string{`--queues "x"`, "whole number"}},
		{[]string{"run", "--iface", "lo", "--send-timeout", "5", "--socket", sock}, []string{`--send-timeout "5"`, "with its unit"}},
		{[]string{"run", "--iface", "lo", "--cpus", "2-", "--socket", sock}, []string{"--cpus", `"2-" is no CPU or range of CPUs`, "2-5,8"}},
		{[]string{"run", "--iface", "lo", "--cpus", "1-0", "--socket", sock}, []string{"--cpus", `"1-0" runs backwards`}},
		{[]string{"run", "--iface", "lo", "--cpus", "1023", "--socket", sock}, []string{"CPU 1023 is not one this process may run on"}},
		{[]string{"run", "--config", filepath.Join(dir, "missing.yaml")}, []string{"missing.yaml", "no such file", "give --config a YAML file"}},
		{[]string{"run", "--config", dir}, []string{"is a directory", "give --config a YAML file"}},
		{[]string{"cleanup", "eth1"}, []string{"cleanup takes no arguments", "--iface IF"}},
		{[]string{"cleanup", "--iface", "nosuchif0"}, []string{`"nosuchif0" does not exist in this netns`, "cleanup --stale"}},
		{[]string{"cleanup", "--iface", "lo", "--netns", "no-such-netns-op"}, []string{"no such network namespace", "ip netns list", "cleanup --stale"}},
		{[]string{"version", "now"}, []string{"version takes no arguments"}},
		{[]string{"bogus"}, []string{"bogus: no such command", "run", "ctl", "xsessiond --help"}},
	} {
		mistake(t, xs, c.args, c.words...)
	}
}

// TestOperatorConfigMistakes runs run --config on files with unknown keys,
// values of the wrong type or out of range, a namespace twice or named
// default, broken YAML: each names the line or key and what it wants. A
// number with a fraction where a whole one goes is refused, not cut.
func TestOperatorConfigMistakes(t *testing.T) {
	xs, _ := binaries(t)
	dir := t.TempDir()
	for i, c := range []struct {
		yaml  string
		words []string
	}{
		{"hi\n", []string{"line 1", `"hi" is not a section of keys`, "deploy/xsessiond.yaml"}},
		{"- a\n- b\n", []string{"line 1", "a list where the file wants a section of keys"}},
		{"interfaces:\n  name: eth1\n", []string{"line 2", "a section of keys where the file wants a list"}},
		{"interfaces: [eth1]\n", []string{`"eth1" is not a section of keys`}},
		{"socket: [a, b]\n", []string{"a list where the file wants a single value"}},
		{"interfaces: [{name: eth1, queus: 2}]\n", []string{`unknown key "queus" in an interface`, "queues"}},
		{"interfaces: [{name: eth1, queues: 1.5}]\n", []string{"line 1", `"1.5" is not a whole number`}},
		{"tcp: {max_time_wait: 2.7}\n", []string{`"2.7" is not a whole number`}},
		{"interfaces: [{name: eth1, batch: 5000}]\n", []string{"batch in 0..1024"}},
		{"rules: [{proto: udp, action: drop, local_port: 70000}]\n", []string{`"70000" is not a whole number from 0 to 65535`}},
		{"namespaces: [{id: blue, secret: -1, iface: eth1}]\n", []string{`"-1" is not a whole number from 0 to 18446744073709551615`}},
		{"namespaces: [{id: blue, secret: 1, iface: eth1}, {id: blue, secret: 2, iface: eth1}]\n", []string{`namespace "blue" listed twice`}},
		{"namespaces: [{id: default, secret: 1, iface: eth1}]\n", []string{`"default" is the built-in namespace`, "another id"}},
		{"namespaces: [{id: x/y, secret: 1, iface: eth1}]\n", []string{"namespaces[0]", `'/' at offset 1 is not allowed`, "ASCII letters, digits"}},
		{"control: {send_timeout: 5}\n", []string{`"5" is not a duration`, "30s"}},
		{"authorization: root\n", []string{`"root" is not a section of keys`}},
		{"interfaces: [{name: eth1}\n", []string{"did not find expected", "the file is YAML", "brackets"}},
		{"\tinterfaces: []\n", []string{"YAML indents with spaces", "tab"}},
	} {
		path := filepath.Join(dir, "c"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		mistake(t, xs, []string{"run", "--config", path, "--socket", filepath.Join(dir, "api.sock")}, append(c.words, "(in "+path+")")...)
	}
}

// TestOperatorHelpMatches: what a command's help shows works as shown:
// ctl help COMMAND shows COMMAND's help; ns set-secret takes the id as its
// argument as ns del does, and ctl with
// no command shows its help and exits 0.
func TestOperatorHelpMatches(t *testing.T) {
	d := startDaemon(t)
	if err := d.AddNamespace("blue", 42, "lo", ""); err != nil {
		t.Fatal(err)
	}
	out, err := ctl(t, d.Socket(), "ns", "set-secret", "--help")
	if err != nil || !strings.Contains(out, "set-secret [ID]") {
		t.Fatalf("ns set-secret --help: %v\n%s", err, out)
	}
	if out, err := ctl(t, d.Socket(), "ns", "set-secret", "blue", "--secret", "7"); err != nil || !strings.Contains(out, `namespace "blue": secret replaced`) {
		t.Fatalf("ns set-secret blue --secret 7: %v %s", err, out)
	}
	if _, err := ctl(t, d.Socket(), "ns", "set-secret", "blue", "--id", "red", "--secret", "7"); err == nil || !strings.Contains(err.Error(), "two ids") {
		t.Fatalf("ns set-secret blue --id red: %v, want two ids", err)
	}
	if out, err := ctl(t, d.Socket()); err != nil || !strings.Contains(out, "Available Commands") {
		t.Fatalf("ctl alone: %v\n%s", err, out)
	}
	// ctl help COMMAND, as help ctl COMMAND.
	for _, args := range [][]string{{"help", "show"}, {"help", "ns", "add"}} {
		out, err := ctl(t, d.Socket(), args...)
		want, _ := ctl(t, d.Socket(), append(args[1:], "--help")...)
		if err != nil || out != want || out == "" {
			t.Errorf("ctl %v: %v\n%s\nwant\n%s", args, err, out, want)
		}
	}
	if _, err := ctl(t, d.Socket(), "help", "bogus"); err == nil || !strings.Contains(err.Error(), "no such command") {
		t.Errorf("ctl help bogus: %v", err)
	}
}

// TestOperatorCtlDaemonStops: a daemon that stops while ctl waits on it
// (top between its two samples) is named as gone, with where to look, not
// as the socket's end of file.
func TestOperatorCtlDaemonStops(t *testing.T) {
	d := startDaemon(t)
	go func() {
		time.Sleep(300 * time.Millisecond)
		d.Close()
	}()
	_, err := ctl(t, d.Socket(), "top", "--once", "--interval", "3s")
	if err == nil || !strings.Contains(err.Error(), "closed the connection") || !strings.Contains(err.Error(), "did it stop?") || strings.Contains(err.Error(), "EOF") {
		t.Fatalf("top --once across the daemon's stop: %v, want it to say the daemon closed the connection and ask whether it stopped", err)
	}
}

// usageFlag is a line of a flag set's usage: its shorthand and name.
var usageFlag = regexp.MustCompile(`^\s+(?:-(\w), )?--([\w-]+)`)

// TestCLIDocumented: docs/cli.md names every command and every flag the
// CLI defines, so that it stays the CLI's reference.
func TestCLIDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if w := words(c); w != "" && !strings.Contains(doc, "`"+w) && !strings.Contains(doc, "xsessiond "+w) {
			t.Errorf("docs/cli.md does not name the command %q", c.CommandPath())
		}
		for _, l := range strings.Split(c.LocalFlags().FlagUsages(), "\n") {
			p := usageFlag.FindStringSubmatch(l)
			if p == nil || p[2] == "help" || strings.Contains(doc, "--"+p[2]) || (p[1] != "" && strings.Contains(doc, "-"+p[1]+" ")) {
				continue
			}
			t.Errorf("docs/cli.md does not name %s's flag --%s", c.CommandPath(), p[2])
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
}

// TestOperatorNamespaceIDRuleAndSocketDir: ns add with an id that would
// break ctl show's columns or a path fails with one line that says what an
// id may be, and adds nothing; a rule whose namespace is not there is named
// by its words, not by a number that reads as a rule id; run --socket in a
// directory under one that does not exist names the missing directory,
// says what to do, and creates nothing.
func TestOperatorNamespaceIDRuleAndSocketDir(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	ctlArgs := func(args ...string) []string { return append([]string{"ctl", "--socket", d.Socket()}, args...) }
	allowed := "an id is 1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
	for _, c := range []struct {
		id, says string
	}{
		{"a b", `namespace id "a b": ' ' at offset 1 is not allowed`},
		{"x/../y", `namespace id "x/../y": '/' at offset 1 is not allowed`},
		{"tab\there", `namespace id "tab\there": '\t' at offset 3 is not allowed`},
		{"esc\x1b[2J", `namespace id "esc\x1b[2J": '\x1b' at offset 3 is not allowed`},
		{"-x", `namespace id "-x": '-' at offset 0 is not allowed`},
		{"..", `namespace id "..": '.' at offset 0 is not allowed`},
	} {
		mistake(t, xs, ctlArgs("ns", "add", "--id="+c.id, "--secret", "1", "--iface", "lo"), c.says, allowed)
	}
	if out, err := ctl(t, d.Socket(), "show", "namespaces"); err != nil || strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Errorf("show namespaces after refused adds: %v\n%s", err, out)
	}
	line := oneLine(t, xs, ctlArgs("rule", "add", "proto", "udp", "local", "0.0.0.0/0", "9000", "action", "drop", "ns", "red")...)
	if want := `add rule proto udp local 0.0.0.0/0 9000 action drop ns red: namespace "red": no such namespace`; !strings.Contains(line, want) || strings.Contains(line, "rule 0") {
		t.Errorf("rule add in a namespace that is not there:\n got %q\nwant it to say %q", line, want)
	}

	base := t.TempDir()
	missing := filepath.Join(base, "nonexistent")
	sock := filepath.Join(missing, "dir", "api.sock")
	mistake(t, xs, []string{"run", "--iface", "lo", "--socket", sock}, "directory "+missing+" does not exist", "mkdir -p "+filepath.Dir(sock))
	if _, err := os.Lstat(missing); !os.IsNotExist(err) {
		t.Errorf("run --socket %s created %s: %v", sock, missing, err)
	}
}
