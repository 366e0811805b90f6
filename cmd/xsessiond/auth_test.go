package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// unprivEnv makes the test binary run unprivChild instead of the tests.
const unprivEnv = "XSESSIOND_TEST_UNPRIV"

// errWord names the sentinel err wraps, for the parent to compare.
func errWord(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, flow.ErrPermission):
		return "permission"
	case errors.Is(err, flow.ErrAddressInUse):
		return "address-in-use"
	case errors.Is(err, flow.ErrLimit):
		return "limit"
	case errors.Is(err, flow.ErrWrongSecret):
		return "wrong-secret"
	case errors.Is(err, flow.ErrNoMemory):
		return "no-memory"
	}
	return "other: " + err.Error()
}

// unprivChild is what the test binary does as uid 65534: each action, one
// line "name result [error message]".
func unprivChild(arg string) int {
	var p struct {
		Sock, Link, AddrA, AddrB string
	}
	if err := json.Unmarshal([]byte(arg), &p); err != nil {
		fmt.Println("bad argument:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	say := func(name string, err error) {
		msg := ""
		if err != nil {
			msg = " | " + err.Error()
		}
		fmt.Printf("%s %s%s\n", name, errWord(err), msg)
	}
	a, err := app.Attach(ctx, app.Options{Socket: p.Sock, Name: "unpriv", Scope: flow.ScopeGlobal | flow.ScopeLocal})
	say("attach-default", err)
	if err != nil {
		return 1
	}
	defer a.Close()
	_, err = a.ListenPacket("udp://0.0.0.0:80")
	say("bind-port-80", err)
	_, err = a.ListenPacket("udp://0.0.0.0:9400")
	say("bind-port-9400", err)
	_, err = a.ListenPacket("udp://" + p.AddrB + ":9100")
	say("bind-specific-over-root-wildcard", err)
	_, err = a.ListenPacket("udp://" + p.AddrB + ":9401")
	say("bind-specific-free", err)
	// Ports per uid (6): the two listeners above and connects to the
	// wire until refused; a close makes room again.
	dialed := dialUntil(ctx, a, "udp://"+p.AddrA+":9", "port", 5, say)
	_, err = a.ListenPacket("udp://0.0.0.0:9402")
	say("port-bind-over", err)
	if len(dialed) > 0 {
		dialed[0].Close()
		// The daemon ends the session as the app's Disconnect reaches it.
		for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var c net.Conn
			if c, err = a.Dial(ctx, "udp://"+p.AddrA+":9"); err == nil {
				dialed[0] = c
			}
			if !errors.Is(err, flow.ErrLimit) || time.Now().After(end) {
				break
			}
		}
		say("port-after-close", err)
	}

	cl, err := api.DialClient(ctx, p.Sock, api.ClientOptions{Name: "unpriv-ctl"})
	if err != nil {
		say("dial", err)
		return 1
	}
	defer cl.Close()
	call := func(name string, m api.Message) {
		_, fds, err := cl.Call(ctx, m)
		api.CloseFDs(fds)
		say(name, err)
	}
	call("ns-add", &api.NsAdd{ID: "mine", Secret: 1, Iface: p.Link})
	call("ns-del", &api.NsDel{ID: "open"})
	call("ns-set-secret", &api.NsSetSecret{ID: "open", Secret: 1})
	call("rule-add", &api.RuleAdd{Rule: api.Rule{Transport: flow.TransportUDP, Action: api.ActionDrop, Tag: "x"}})
	call("rule-del", &api.RuleDel{Rule: api.Rule{Tag: "x"}})
	call("capture", &api.Capture{})
	call("stats-clear", &api.StatsClear{})
	// TCP connects keep their port once closed, in TIME-WAIT (the kernel
	// echo server on A closes after the app); at the bound the oldest of
	// those are released early, as Linux reuses a port in TIME-WAIT, so
	// the four closed ones leave room for four open ones beside the two
	// listeners, and no more.
	for _, c := range dialed {
		c.Close()
	}
	if err := waitSessions(ctx, cl, "established", "udp", 0); err != nil {
		say("udp-closed", err)
	}
	for i := range 4 {
		c, err := a.Dial(ctx, "tcp://"+p.AddrA+":7700")
		say(fmt.Sprintf("tcp-closed-%d", i), err)
		if err != nil {
			break
		}
		c.Close()
		if err := waitSessions(ctx, cl, "lingering", "tcp", i+1); err != nil {
			say("tcp-lingering", err)
			break
		}
	}
	open := dialUntil(ctx, a, "tcp://"+p.AddrA+":7700", "tcp-open", 5, say)
	for _, c := range open {
		c.Close()
	}
	m, fds, err := cl.Call(ctx, &api.Show{What: api.ShowApps})
	api.CloseFDs(fds)
	if err != nil {
		say("show-apps", err)
	} else {
		var apps []struct {
			UID uint32 `json:"uid"`
		}
		err = json.Unmarshal(m.(*api.ShowReply).JSON, &apps)
		for _, x := range apps {
			if err == nil && x.UID != 65534 {
				err = fmt.Errorf("shows an app of uid %d", x.UID)
			}
		}
		if err == nil && len(apps) != 1 {
			err = fmt.Errorf("shows %d apps, not its own one", len(apps))
		}
		say("show-apps-own-only", err)
	}
	_, err = app.Attach(ctx, app.Options{Socket: p.Sock, Namespace: "restricted", Secret: 5})
	say("attach-restricted", err)
	b, err := app.Attach(ctx, app.Options{Socket: p.Sock, Namespace: "open", Secret: 7})
	say("attach-open", err)
	if err == nil {
		b.Close()
	}
	for i := range 8 {
		_, err = app.Attach(ctx, app.Options{Socket: p.Sock, Namespace: "open", Secret: 8})
		say(fmt.Sprintf("wrong-secret-%d", i), err)
	}
	// Apps per uid (4, one attached): small ones until refused.
	var more []*app.App
	for i := range 5 {
		x, err := app.Attach(ctx, app.Options{Socket: p.Sock, MaxFifoMemory: 4 << 20})
		say(fmt.Sprintf("small-app-%d", i), err)
		if err != nil {
			break
		}
		more = append(more, x)
	}
	for _, x := range more {
		x.Close()
	}
	// Segment memory per uid (160 MiB, 64 MiB an app that asks for no
	// bound, one such attached): one more fits, the next does not.
	for i := range 2 {
		x, err := app.Attach(ctx, app.Options{Socket: p.Sock})
		// The daemon detaches the closed ones as their connections end.
		for end := time.Now().Add(2 * time.Second); errors.Is(err, flow.ErrLimit) && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
			x, err = app.Attach(ctx, app.Options{Socket: p.Sock})
		}
		say(fmt.Sprintf("big-app-%d", i), err)
		if err == nil {
			defer x.Close()
		}
	}
	return 0
}

// dialUntil dials uri up to n times until one fails, saying each result
// as name-i, and returns the connections.
func dialUntil(ctx context.Context, a *app.App, uri, name string, n int, say func(string, error)) []net.Conn {
	var cs []net.Conn
	for i := range n {
		c, err := a.Dial(ctx, uri)
		say(fmt.Sprintf("%s-%d", name, i), err)
		if err != nil {
			break
		}
		cs = append(cs, c)
	}
	return cs
}

// waitSessions waits until show sessions lists n sessions of transport in
// state.
func waitSessions(ctx context.Context, cl *api.Client, state, transport string, n int) error {
	seen := 0
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		m, fds, err := cl.Call(ctx, &api.Show{What: api.ShowSessions})
		api.CloseFDs(fds)
		if err != nil {
			return err
		}
		var ss []struct {
			State     string `json:"state"`
			Transport string `json:"transport"`
		}
		if err := json.Unmarshal(m.(*api.ShowReply).JSON, &ss); err != nil {
			return err
		}
		seen = 0
		for _, s := range ss {
			if s.State == state && s.Transport == transport {
				seen++
			}
		}
		if seen == n {
			return nil
		}
	}
	return fmt.Errorf("%d %s %s sessions listed, want %d", seen, state, transport, n)
}

// TestUnprivilegedClient runs the daemon binary with its socket group
// "nogroup", limits on apps, segment memory and ports per uid, and two
// namespaces, one that lets uid 65534 attach and one
// that does not, and runs the test binary as uid 65534 (a member of the
// socket group, no capabilities) through a list of actions: what needs
// privileges is refused with a clear error, the rest works.
func TestUnprivilegedClient(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	dir := nobodyDir(t, "xsessiond-unpriv-")
	sock := filepath.Join(dir, "api.sock")
	cfg := filepath.Join(dir, "xsessiond.yaml")
	conf := fmt.Sprintf(`socket: %s
socket_group: nogroup
interfaces:
  - name: %s
    netns: %s
namespaces:
  - id: restricted
    secret: 5
    iface: %s
    netns: %s
    allow_uids: [0]
  - id: open
    secret: 7
    iface: %s
    netns: %s
    allow_uids: [65534]
limits:
  max_apps_per_uid: 4
  max_ports_per_uid: 6
  app_segment_memory: 67108864
  segment_memory_per_uid: 167772160
`, sock, rig.B.Link, rig.B.Name, rig.B.Link, rig.B.Name, rig.B.Link, rig.B.Name)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startProcess(t, xs, "run", "--config", cfg)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	startKernelEcho(t, rig, 7700)
	root := attachRoot(t, sock)
	if _, err := root.ListenPacket("udp://0.0.0.0:9100"); err != nil {
		t.Fatal(err)
	}

	out := runAsNobody(t, dir, unprivEnv, map[string]string{"Sock": sock, "Link": rig.B.Link, "AddrA": rig.A.IPv4.String(), "AddrB": rig.B.IPv4.String()})
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, rest, _ := strings.Cut(l, " ")
		word, _, _ := strings.Cut(rest, " | ")
		got[name] = word
	}
	want := map[string]string{
		"attach-default":                   "ok",
		"bind-port-80":                     "permission",
		"bind-port-9400":                   "ok",
		"bind-specific-over-root-wildcard": "address-in-use",
		"bind-specific-free":               "ok",
		"ns-add":                           "permission",
		"ns-del":                           "permission",
		"ns-set-secret":                    "permission",
		"rule-add":                         "permission",
		"rule-del":                         "permission",
		"capture":                          "permission",
		"stats-clear":                      "permission",
		"show-apps-own-only":               "ok",
		"attach-restricted":                "permission",
		"attach-open":                      "ok",
	}
	for i, w := range []string{"ok", "ok", "ok", "ok", "limit"} {
		want[fmt.Sprintf("port-%d", i)] = w
	}
	want["port-bind-over"], want["port-after-close"] = "limit", "ok"
	for i, w := range []string{"ok", "ok", "ok", "ok", "limit"} {
		want[fmt.Sprintf("tcp-closed-%d", i)] = w
		want[fmt.Sprintf("tcp-open-%d", i)] = w
	}
	delete(want, "tcp-closed-4")
	for i, w := range []string{"ok", "ok", "ok", "limit"} {
		want[fmt.Sprintf("small-app-%d", i)] = w
	}
	want["big-app-0"], want["big-app-1"] = "ok", "no-memory"
	for i := range 8 {
		w := "wrong-secret"
		if i >= 5 {
			w = "limit"
		}
		want[fmt.Sprintf("wrong-secret-%d", i)] = w
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	// The refusals say why.
	for _, want := range []string{"needs uid 0 or CAP_NET_ADMIN", "needs CAP_NET_BIND_SERVICE", `does not let uid 65534 attach`, "too many wrong secrets"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no error saying %q", want)
		}
	}
	d.waitLine(t, "wrong namespace secrets: further attempts refused", 5*time.Second)
	// Root still does what the child could not.
	if _, err := call0(sock, &api.NsSetSecret{ID: "open", Secret: 9}); err != nil {
		t.Errorf("root ns set-secret: %v", err)
	}
}

// nobodyDir makes a folder uid 65534 can reach (t.TempDir's parent is
// 0700), removed when the test ends.
func nobodyDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runAsNobody runs a copy of the test binary, put in dir (which uid 65534
// can reach), as uid 65534 with env set to arg in JSON, and returns its
// output; the test fails if the child does.
func runAsNobody(t *testing.T, dir, env string, arg any) []byte {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "child.test")
	copyFile(t, self, bin)
	js, _ := json.Marshal(arg)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534}}}
	out, err := cmd.CombinedOutput()
	t.Logf("uid 65534:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return out
}

// attachRoot attaches an app of the test process (uid 0).
func attachRoot(t *testing.T, sock string) *app.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "root", Scope: flow.ScopeGlobal | flow.ScopeLocal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func call0(sock string, m api.Message) (api.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, sock, api.ClientOptions{Name: "test"})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	r, fds, err := cl.Call(ctx, m)
	api.CloseFDs(fds)
	return r, err
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoofedSource has a raw client write two datagrams straight into its
// listener's tx fifo: one with a source address that is not the
// interface's, one with the interface's. Host A gets only the second; the
// first is dropped and counted as tx-bad-source.
func TestSpoofedSource(t *testing.T) {
	rig, sock, _ := startRigDaemon(t)
	xs, _ := binaries(t)

	// Host A listens before anything is sent.
	type got struct {
		from netip.AddrPort
		msg  string
	}
	recv := make(chan got, 16)
	var pc *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		pc, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 5555})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				close(recv)
				return
			}
			recv <- got{from, string(buf[:n])}
		}
	}()

	r := dialRaw(t, sock)
	rep, fds, err := r.callFDs(&api.Attach{Name: "spoofer", Scope: flow.ScopeGlobal})
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseFDs(fds)
	ar := rep.(*api.AttachReply)
	brep, err := r.call(&api.Bind{URI: "udp://0.0.0.0:9300"})
	if err != nil {
		t.Fatal(err)
	}
	br := brep.(*api.BindReply)
	segFD := -1
	for i, s := range ar.Segments {
		if s.Index == br.Tx.Segment {
			segFD = fds[i]
		}
	}
	if segFD < 0 {
		t.Fatalf("no segment %d in the attach reply", br.Tx.Segment)
	}
	seg, err := fifo.MapSegment(segFD)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	tx, err := seg.FifoAt(uint32(br.Tx.Offset))
	if err != nil {
		t.Fatal(err)
	}
	kick := fds[len(ar.Segments)+1+int(br.Worker)]
	send := func(src netip.Addr, msg string) {
		h := fifo.DgramHeader{Family: flow.Family4, Remote: flow.AddrBytes(rig.A.IPv4), RemotePort: 5555,
			Local: flow.AddrBytes(src), LocalPort: 9300}
		if err := tx.EnqueueDgram(&h, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		tx.SetEvent() // as the app library does: the worker drains fifos that say so
		var one [8]byte
		one[0] = 1
		unix.Write(kick, one[:])
	}
	spoofed := netip.MustParseAddr("10.77.0.99")
	send(spoofed, "spoofed")
	send(rig.B.IPv4, "genuine")
	deadline := time.After(5 * time.Second)
	var genuine bool
	for !genuine {
		select {
		case g := <-recv:
			t.Logf("host A got %q from %v", g.msg, g.from)
			if g.from.Addr() == spoofed || g.msg == "spoofed" {
				t.Fatalf("a datagram with a spoofed source left: %q from %v", g.msg, g.from)
			}
			genuine = g.msg == "genuine"
		case <-deadline:
			out, _ := exec.Command(xs, "ctl", "--socket", sock, "show", "stats", "--json").CombinedOutput()
			t.Fatalf("the genuine datagram never arrived; stats: %s", out)
		}
	}
	select {
	case g := <-recv:
		t.Fatalf("host A got %q from %v after the genuine one", g.msg, g.from)
	case <-time.After(300 * time.Millisecond):
	}
	out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "stats", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("show stats: %v\n%s", err, out)
	}
	var st struct {
		Queues []struct {
			Drops map[string]uint64 `json:"drops"`
		} `json:"queues"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	var bad uint64
	for _, q := range st.Queues {
		bad += q.Drops["tx_bad_source"]
	}
	if bad != 1 {
		t.Errorf("tx-bad-source = %d, want 1: %s", bad, out)
	}
}
