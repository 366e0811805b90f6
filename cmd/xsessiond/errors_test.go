package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// oneLine runs a binary that must fail, and returns its single line of
// output.
func oneLine(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s %v did not exit", filepath.Base(name), args)
	}
	if err == nil {
		t.Fatalf("%s %v succeeded:\n%s", filepath.Base(name), args, out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("%s %v: %v", filepath.Base(name), args, err)
	}
	s := strings.TrimRight(string(out), "\n")
	if strings.Contains(s, "\n") {
		t.Fatalf("%s %v: more than one line:\n%s", filepath.Base(name), args, s)
	}
	return s
}

// TestAttachErrorsUdpecho checks what the echo example prints when the
// attach or bind fails: one line a person understands, and a non-zero
// exit.
func TestAttachErrorsUdpecho(t *testing.T) {
	_, echo := binaries(t)
	d := startDaemon(t)
	if err := d.AddNamespace("blue", 42, "lo", ""); err != nil {
		t.Fatal(err)
	}
	holder := attach(t, d, app.Options{Name: "holder"})
	if _, err := holder.ListenPacket("udp://0.0.0.0:9000"); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nobody.sock")
	sock := d.Socket()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--socket", sock, "--ns", "blue", "--secret", "41"}, `udpecho: wrong secret for namespace "blue": give --secret the namespace's secret (the --secret of xsessiond ctl ns add, or of ctl ns set-secret)`},
		{[]string{"--socket", sock, "--ns", "green", "--secret", "1"}, `udpecho: no namespace "green" in the daemon: xsessiond ctl show namespaces lists those it has`},
		{[]string{"--socket", sock, "--listen", "udp://0.0.0.0:9000"}, `udpecho: listen udp 0.0.0.0:9000: bind: address already in use`},
		{[]string{"--socket", missing}, "udpecho: no daemon at " + missing + ": is xsessiond run going? Start it, or give --socket the socket a running daemon's run --socket was given (" + DefaultSocket + " when not given)"},
		{[]string{"--socket", sock, "--listen", "udp://1.2.3.4:9"}, `udpecho: listen udp 1.2.3.4:9: bind: the address is not one of the namespace's`},
		{[]string{"--socket", sock, "--secret", "x"}, `udpecho: --secret "x": want a number from 0 to 2^64-1 in decimal digits, or in hex after 0x (42 or 0x2a)`},
	}
	for _, c := range cases {
		if got := oneLine(t, echo, c.args...); got != c.want {
			t.Errorf("udpecho %v:\n got %q\nwant %q", c.args, got, c.want)
		}
	}
}

// TestRunRefuses checks that the daemon refuses to start, with one line,
// when the interface does not exist, when another daemon owns the socket,
// when the interface is not Ethernet (loopback), and when it is not
// privileged.
func TestRunRefuses(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	got := oneLine(t, xs, "run", "--iface", "nosuchif0", "--socket", filepath.Join(t.TempDir(), "a.sock"))
	if want := `xsessiond: interface "nosuchif0" does not exist in the daemon's netns: ip link lists the interfaces there; one in a named netns needs --netns NAME (ip netns list)`; got != want {
		t.Errorf("missing interface:\n got %q\nwant %q", got, want)
	}
	got = oneLine(t, xs, "run", "--iface", "lo", "--socket", d.Socket(), "--log-level", "error")
	if want := "xsessiond: another xsessiond is already running on " + d.Socket() + ": give this one another --socket, or stop that one first"; got != want {
		t.Errorf("second daemon:\n got %q\nwant %q", got, want)
	}
	got = oneLine(t, xs, "run", "--iface", "lo", "--socket", filepath.Join(t.TempDir(), "c.sock"))
	if !strings.HasPrefix(got, "xsessiond: interface lo is the loopback interface, not Ethernet: ") {
		t.Errorf("loopback: got %q", got)
	}
	got = oneLine(t, xs, "run", "--netns", "no-such-netns-x", "--iface", "lo", "--socket", filepath.Join(t.TempDir(), "b.sock"))
	if !strings.HasPrefix(got, `xsessiond: netns "no-such-netns-x": `) {
		t.Errorf("missing netns: got %q", got)
	}
	if os.Getuid() == 0 {
		// The same binary as an unprivileged user.
		if err := os.Chmod(filepath.Dir(xs), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(xs, "run", "--iface", "lo", "--socket", "/tmp/xsessiond-unpriv-test.sock")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		s := strings.TrimRight(string(out), "\n")
		if err == nil || strings.Contains(s, "\n") || !strings.HasPrefix(s, "xsessiond: not privileged: missing CAP_NET_ADMIN, CAP_BPF") {
			t.Errorf("unprivileged run: %v\n%s", err, out)
		}
	}
}

// TestRunStopsWhenInterfaceLost: xsessiond run whose interface is deleted
// under it says so and exits 1 (for its service manager to restart it),
// leaving no pins behind.
func TestRunStopsWhenInterfaceLost(t *testing.T) {
	rig, _, d := startRigDaemon(t)
	if err := rig.A.Do(func() error {
		l, err := netlink.LinkByName(rig.A.Link)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l) // the pair, B's end with it
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after its interface was deleted; output:\n%s", d.output())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, d.output())
	}
	want := "xsessiond: interface " + rig.B.Link + " (ifindex "
	if out := d.output(); !strings.Contains(out, want) || !strings.Contains(out, "left netns "+rig.B.Name) {
		t.Fatalf("output does not say the interface left (%q ... left netns %s):\n%s", want, rig.B.Name, out)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/bpf/xsessiond", rig.B.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pins left after the stop: %v", err)
	}
}

// TestRunWarnsInterfaceDown: run on an interface that is down starts (it
// follows the interface), and its log says at once that nothing reaches
// the datapath and how to bring the interface up.
func TestRunWarnsInterfaceDown(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := rig.B.Do(func() error {
		l, err := netlink.LinkByName(rig.B.Link)
		if err != nil {
			return err
		}
		return netlink.LinkSetDown(l)
	}); err != nil {
		t.Fatal(err)
	}
	xs, _ := binaries(t)
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", filepath.Join(t.TempDir(), "api.sock"))
	d.waitLine(t, "xsessiond started", 15*time.Second)
	line := d.waitLine(t, "the interface is down", 5*time.Second)
	if want := "ip -n " + rig.B.Name + " link set dev " + rig.B.Link + " up"; !strings.Contains(line, want) {
		t.Errorf("the warning does not say %q:\n%s", want, line)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("exit %d on SIGTERM; output:\n%s", code, d.output())
	}
}

// TestExitStatusOfUsage: a run refused for its config file or its flags
// exits with status 2, on which the unit in deploy/ does not restart it
// (a config error restarted every RestartSec forever, filling the
// journal), as does any command for a flag's value or a word it refuses;
// other failures exit 1.
func TestExitStatusOfUsage(t *testing.T) {
	xs, _ := binaries(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("log_levle: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"run", "--config", bad}, exitUsage},
		{[]string{"run", "--config", filepath.Join(dir, "missing.yaml")}, exitUsage},
		{[]string{"run", "--queues", "x"}, exitUsage},
		{[]string{"run", "--nosuchflag"}, exitUsage},
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "show", "apps"}, 1},
		// Refused before the daemon is asked: the command line is wrong,
		// whether a daemon runs or not.
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "show", "bogus"}, exitUsage},
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "top", "--sessions", "-1"}, exitUsage},
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "capture", "-w", "-", "--listener", "010"}, exitUsage},
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "rule", "add", "proto", "xx", "action", "drop"}, exitUsage},
		{[]string{"ctl", "--socket", filepath.Join(dir, "none.sock"), "ns", "add"}, exitUsage},
		{[]string{"demo", "--duration", "0s"}, exitUsage},
	} {
		out, err := exec.Command(xs, c.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.want {
			t.Errorf("%v: %v, want exit status %d:\n%s", c.args, err, c.want, out)
		}
	}
	if got := unitSettings(t)["RestartPreventExitStatus"]; got != strconv.Itoa(exitUsage) {
		t.Errorf("the unit's RestartPreventExitStatus %q, want %d", got, exitUsage)
	}
}
