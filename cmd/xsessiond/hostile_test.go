package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// rawClient is a control client of the test's own, over a bare api.Conn:
// it does only what the test says, and reads nothing unless told.
type rawClient struct {
	c  *api.Conn
	id uint32
}

func dialRaw(t *testing.T, sock string) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := api.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawClient{c: c}
	if _, err := r.call(&api.Hello{Major: api.VersionMajor, Minor: api.VersionMinor, Name: "raw"}); err != nil {
		t.Fatalf("hello: %v", err)
	}
	return r
}

// call sends m and reads its reply, closing the descriptors it carries.
func (r *rawClient) call(m api.Message) (api.Message, error) {
	rep, fds, err := r.callFDs(m)
	api.CloseFDs(fds)
	return rep, err
}

// callFDs sends m and returns its reply with the descriptors it carries.
func (r *rawClient) callFDs(m api.Message) (api.Message, []int, error) {
	return r.callNotices(m, nil)
}

// callNotices is callFDs that hands each message that is not the reply to
// notice first, when there is one; a notice that returns true keeps the
// message's descriptors.
func (r *rawClient) callNotices(m api.Message, notice func(id uint32, msg api.Message, fds []int) bool) (api.Message, []int, error) {
	r.id++
	if err := r.c.SendID(r.id, m); err != nil {
		return nil, nil, err
	}
	for {
		id, rep, fds, err := r.c.RecvID()
		if err != nil {
			return nil, nil, err
		}
		if notice != nil && notice(id, rep, fds) {
			continue
		}
		if id != r.id {
			api.CloseFDs(fds)
			continue // a notice
		}
		if e, ok := rep.(*api.Error); ok {
			api.CloseFDs(fds)
			return nil, nil, e.Err()
		}
		return rep, fds, nil
	}
}

// xdpAttached reports whether h's veth runs an XDP program.
func xdpAttached(t *testing.T, h *nstest.Host) bool {
	t.Helper()
	return xdpAttachedTo(t, h, h.Link)
}

// xdpAttachedTo reports whether link of h runs an XDP program.
func xdpAttachedTo(t *testing.T, h *nstest.Host, link string) bool {
	t.Helper()
	var on bool
	err := h.Do(func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		on = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func pinDir(h *nstest.Host) string { return filepath.Join(loader.DefaultPinRoot, h.Name, h.Link) }

// TestStuckClient runs the daemon binary on a rig with control clients
// that never read their replies. Another app's cut-through connects to a
// stuck client's listener are each answered within 1 s (refused once its
// queue has no room to spare; the stuck client is dropped for not reading,
// its app detached, counted), and
// SIGTERM with a stuck client still connected detaches XDP at once and
// stops the daemon within 2 s.
func TestStuckClient(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	if !xdpAttached(t, rig.B) {
		t.Fatal("no XDP program on the interface after start")
	}

	stuck := func(port int) {
		r := dialRaw(t, sock)
		if _, err := r.call(&api.Attach{Name: "stuck", Scope: flow.ScopeLocal | flow.ScopeGlobal}); err != nil {
			t.Fatalf("stuck attach: %v", err)
		}
		if _, err := r.call(&api.Bind{URI: fmt.Sprintf("tcp://0.0.0.0:%d", port)}); err != nil {
			t.Fatalf("stuck bind: %v", err)
		}
		// From here on it reads nothing.
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := app.Attach(ctx, app.Options{Socket: sock, Name: "other", Scope: flow.ScopeLocal | flow.ScopeGlobal})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	// dials connects n times to port, or until the first refusal when
	// untilRefused, and returns the slowest answer, the connects made and
	// those refused.
	dials := func(port, n int, untilRefused bool) (worst time.Duration, made, failed int) {
		for ; made < n && (failed == 0 || !untilRefused); made++ {
			t0 := time.Now()
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := other.Dial(dctx, fmt.Sprintf("tcp://127.0.0.1:%d", port))
			dcancel()
			worst = max(worst, time.Since(t0))
			if err != nil {
				failed++
				continue
			}
			c.Close()
		}
		return worst, made, failed
	}

	stuck(7000)
	worst, made, failed := dials(7000, 5000, true)
	t.Logf("connects to a stuck listener until it was dropped: %d, slowest answered in %v", made, worst)
	if worst >= time.Second {
		t.Errorf("a connect to a stuck client's listener took %v", worst)
	}
	if failed == 0 {
		t.Errorf("the stuck client was never dropped (every connect reached its listener)")
	}
	d.waitLine(t, "client dropped", 5*time.Second)
	out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "stats", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("show stats: %v\n%s", err, out)
	}
	var st struct {
		Control struct {
			Dropped map[string]uint64 `json:"dropped"`
		} `json:"control"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Control.Dropped["queue_full"]+st.Control.Dropped["send_timeout"] == 0 {
		t.Errorf("no drop counted: %s", out)
	}

	// A second stuck client, with notices queued, stays connected over
	// the stop.
	stuck(7001)
	if worst, _, _ := dials(7001, 20, false); worst >= time.Second {
		t.Errorf("a connect took %v", worst)
	}
	t0 := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	var detached time.Duration = -1
	for {
		select {
		case <-d.exited:
		default:
			if detached < 0 && !xdpAttached(t, rig.B) {
				detached = time.Since(t0)
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("the daemon did not stop within 5s of SIGTERM")
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		break
	}
	stopped := time.Since(t0)
	t.Logf("SIGTERM with a stuck client: XDP detached after %v (seen while the daemon ran), exit after %v", detached, stopped)
	if stopped >= 2*time.Second {
		t.Errorf("the daemon took %v to stop", stopped)
	}
	if detached < 0 {
		t.Errorf("XDP was still attached while the daemon waited for its clients")
	}
	if xdpAttached(t, rig.B) {
		t.Errorf("XDP still attached after the stop")
	}
	if _, err := os.Stat(pinDir(rig.B)); err == nil {
		t.Errorf("pins %s left after the stop", pinDir(rig.B))
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if !strings.Contains(d.output(), "xsessiond stopped") {
		t.Errorf("no stop line in the output")
	}
}

// echoOnce sends one datagram from host A to port on host B and reports
// whether it came back intact within a second (three tries).
func echoOnce(t *testing.T, rig *nstest.Pair, port int) error {
	t.Helper()
	return rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port})
		if err != nil {
			return err
		}
		defer c.Close()
		msg := []byte(fmt.Sprintf("ping %d", time.Now().UnixNano()))
		buf := make([]byte, 256)
		for range 3 {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err != nil {
				continue
			}
			if string(buf[:n]) == string(msg) {
				return nil
			}
		}
		return fmt.Errorf("no echo from %v:%d", rig.B.IPv4, port)
	})
}

// lockFile is the instance lock of h's veth.
func lockFile(t *testing.T, h *nstest.Host) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", h.Name), &st); err != nil {
		t.Fatal(err)
	}
	return daemon.LockPath("", st.Ino, h.IfIndex)
}

// pinsIntact checks that h's pin folder holds the link and the maps.
func pinsIntact(t *testing.T, h *nstest.Host) error {
	t.Helper()
	ents, err := os.ReadDir(pinDir(h))
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, want := range []string{"link", "listeners", "established", "xsks"} {
		if !slices.Contains(names, want) {
			return fmt.Errorf("pin %s missing from %s (has %v)", want, pinDir(h), names)
		}
	}
	return nil
}

// TestSecondRunKeepsFirst starts a second `xsessiond run` on the interface
// a daemon serves, in every way that used to get as far as the datapath,
// and checks each fails with one line and leaves the first daemon as it
// was: still echoing, its XDP program and pins in place. A start that
// fails on a free interface leaves no program, pins or lock behind, and a
// clean stop leaves no lock file and no pin folder.
func TestSecondRunKeepsFirst(t *testing.T) {
	rig, sock, d := startRigDaemon(t)
	xs, echo := binaries(t)
	dir := filepath.Dir(sock)
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatal(err)
	}
	lock := lockFile(t, rig.B)
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("no lock file while the daemon runs: %v", err)
	}
	cfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces:\n  - name: "+rig.B.Link+"\n    netns: "+rig.B.Name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"run", "--netns", rig.B.Name, "--iface", rig.B.Link}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--socket", filepath.Join(dir, "2.sock")}, "another xsessiond"},
		{[]string{"--socket", filepath.Join(dir, "3.sock"), "--metrics-addr", "bogus"}, `metrics address "bogus": want host:port`},
		{[]string{"--socket", filepath.Join(dir, "3.sock"), "--metrics-addr", "127.0.0.1:1"}, "another xsessiond"},
		{[]string{"--socket", filepath.Join(dir, "4.sock"), "--queues", "1"}, "another xsessiond"},
		{[]string{"--socket", filepath.Join(dir, "5.sock"), "--xdp-mode", "generic"}, "another xsessiond"},
		{[]string{"--socket", filepath.Join(dir, "6.sock"), "--queues", "9"}, "another xsessiond"},
		{[]string{"--socket", sock}, "another xsessiond"},
		{[]string{"--socket", filepath.Join(dir, "7.sock"), "--config", cfg}, "another xsessiond"},
	}
	for _, cs := range cases {
		c := cs.args
		args := append(append([]string{}, base...), c...)
		line := oneLine(t, xs, args...)
		t.Logf("%v: %s", c, line)
		if !strings.Contains(line, cs.want) {
			t.Errorf("%v: got %q, want it to say %q", c, line, cs.want)
		}
		if err := echoOnce(t, rig, 9000); err != nil {
			t.Errorf("after %v: the first daemon broke: %v", c, err)
		}
		if !xdpAttached(t, rig.B) {
			t.Fatalf("after %v: XDP program detached", c)
		}
		if err := pinsIntact(t, rig.B); err != nil {
			t.Fatalf("after %v: %v", c, err)
		}
		if _, err := os.Stat(lock); err != nil {
			t.Fatalf("after %v: lock file gone: %v", c, err)
		}
	}
	// A start that fails on a free interface gives it back as it found it.
	// A port in use fails the metrics listener after the datapath
	// started: the failing start detaches what it attached.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, c := range [][]string{
		{"--metrics-addr", "bogus"},
		{"--metrics-addr", held.Addr().String()},
		{"--queues", "9"},
	} {
		args := append([]string{"run", "--netns", rig.A.Name, "--iface", rig.A.Link, "--socket", filepath.Join(dir, "a.sock"), "--log-level", "error"}, c...)
		line := oneLine(t, xs, args...)
		t.Logf("free interface %v: %s", c, line)
		if xdpAttached(t, rig.A) {
			t.Errorf("%v: failed start left an XDP program on %s", c, rig.A.Link)
		}
		if _, err := os.Stat(pinDir(rig.A)); err == nil {
			t.Errorf("%v: failed start left pins %s", c, pinDir(rig.A))
		}
		if _, err := os.Stat(lockFile(t, rig.A)); err == nil {
			t.Errorf("%v: failed start left its lock file", c)
		}
	}
	e.stop(t)
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond exited %d", code)
	}
	if _, err := os.Stat(lock); err == nil {
		t.Errorf("lock file %s left after a clean stop", lock)
	}
	if _, err := os.Stat(pinDir(rig.B)); err == nil {
		t.Errorf("pin folder %s left after a clean stop", pinDir(rig.B))
	}
	if _, err := os.Stat(filepath.Dir(pinDir(rig.B))); err == nil {
		t.Errorf("netns pin folder %s left after a clean stop", filepath.Dir(pinDir(rig.B)))
	}
}

// TestCleanupAfterKill SIGKILLs a daemon, which leaves its XDP program
// attached through its pinned link, its pins and its lock file; `xsessiond
// cleanup` removes them (and refuses while a daemon runs), and a daemon
// started afterwards serves.
func TestCleanupAfterKill(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, echo := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	run := []string{"run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock}
	d := startProcess(t, xs, run...)
	d.waitLine(t, "xsessiond started", 15*time.Second)

	line := oneLine(t, xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link)
	if !strings.Contains(line, "another xsessiond serves this interface") {
		t.Errorf("cleanup beside a running daemon: %q", line)
	}
	if !xdpAttached(t, rig.B) || pinsIntact(t, rig.B) != nil {
		t.Fatal("cleanup touched a running daemon's program or pins")
	}

	d.cmd.Process.Kill()
	<-d.exited
	if !xdpAttached(t, rig.B) {
		t.Fatal("no XDP program left after SIGKILL: nothing to test")
	}
	if err := pinsIntact(t, rig.B); err != nil {
		t.Fatalf("after SIGKILL: %v", err)
	}
	out, err := exec.Command(xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link).CombinedOutput()
	t.Logf("cleanup: %s", out)
	if err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if xdpAttached(t, rig.B) {
		t.Errorf("XDP still attached after cleanup")
	}
	if _, err := os.Stat(pinDir(rig.B)); err == nil {
		t.Errorf("pins left after cleanup")
	}
	if _, err := os.Stat(filepath.Dir(pinDir(rig.B))); err == nil {
		t.Errorf("netns pin folder left after cleanup")
	}
	if _, err := os.Stat(lockFile(t, rig.B)); err == nil {
		t.Errorf("lock file left after cleanup")
	}
	out, err = exec.Command(xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to clean up") {
		t.Errorf("second cleanup: %v: %s", err, out)
	}

	d = startProcess(t, xs, run...)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatalf("after cleanup and restart: %v", err)
	}
	e.stop(t)
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond exited %d", code)
	}
	if _, err := os.Stat(lockFile(t, rig.B)); err == nil {
		t.Errorf("lock file left after a clean stop")
	}
}

// configRig makes a rig for a daemon binary run with a config file: the
// rig, the binary, and the paths of the control socket and the config
// file in a folder of the test's.
func configRig(t *testing.T) (rig *nstest.Pair, xs, sock, cfg string) {
	t.Helper()
	rig = nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, _ = binaries(t)
	dir := t.TempDir()
	return rig, xs, filepath.Join(dir, "api.sock"), filepath.Join(dir, "xsessiond.yaml")
}

// TestOperatorMistakes runs the daemon binary with a config file and
// checks what an operator gets wrong: ns add on an interface that is not
// there, or not in the FIB the daemon serves, fails with a clear error;
// ns set-secret rotates a secret (the new one for new attaches, attached
// apps keep working); SIGHUP with a changed interface says it needs a
// restart instead of "config reloaded".
func TestOperatorMistakes(t *testing.T) {
	rig, xs, sock, cfg := configRig(t)
	conf := func(iface string) []byte {
		return []byte(fmt.Sprintf("socket: %s\ninterfaces:\n  - name: %s\n    netns: %s\nnamespaces:\n  - id: blue\n    secret: 1\n    iface: %s\n    netns: %s\n",
			sock, iface, rig.B.Name, rig.B.Link, rig.B.Name))
	}
	if err := os.WriteFile(cfg, conf(rig.B.Link), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(xs, append([]string{"ctl", "--socket", sock}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	out, err := ctl("ns", "add", "--id", "x", "--secret", "1", "--iface", "nosuch0", "--netns", rig.B.Name)
	if err == nil || !strings.Contains(out, `interface "nosuch0" does not exist in netns "`+rig.B.Name+`"`) {
		t.Errorf("ns add on a missing interface: %v: %s", err, out)
	}
	out, err = ctl("ns", "add", "--id", "x", "--secret", "1", "--iface", rig.A.Link, "--netns", rig.A.Name)
	if err == nil || !strings.Contains(out, "not in the FIB this daemon serves") {
		t.Errorf("ns add in another netns: %v: %s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := app.Attach(ctx, app.Options{Socket: sock, Namespace: "blue", Secret: 1, Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	pc, err := old.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatal(err)
	}
	if out, err := ctl("ns", "set-secret", "--id", "blue", "--secret", "2"); err != nil {
		t.Fatalf("ns set-secret: %v: %s", err, out)
	}
	if _, err := app.Attach(ctx, app.Options{Socket: sock, Namespace: "blue", Secret: 1}); !errors.Is(err, flow.ErrWrongSecret) {
		t.Errorf("attach with the old secret: %v", err)
	}
	if a, err := app.Attach(ctx, app.Options{Socket: sock, Namespace: "blue", Secret: 2}); err != nil {
		t.Errorf("attach with the new secret: %v", err)
	} else {
		a.Close()
	}
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Errorf("the app attached before the rotation: %v", err)
	}

	if err := os.WriteFile(cfg, conf("eth9"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLine(t, "not applied, needs a restart: interface "+rig.B.Link+" -> eth9", 5*time.Second)
	d.waitLine(t, "other changes need a restart", 5*time.Second)
	if strings.Contains(d.output(), "config reloaded") {
		t.Errorf("SIGHUP with a changed interface said the config was reloaded")
	}
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Errorf("after SIGHUP: %v", err)
	}
}
