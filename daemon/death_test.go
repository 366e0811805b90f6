package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"github.com/xsessiond/xsessiond/loader"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// childApp is the app a re-executed test binary runs: it attaches, binds,
// opens a session to the parent's echo app, says ready and waits to be
// killed.
func childApp(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "child", Scope: 3})
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	if _, err := a.ListenPacket("udp://0.0.0.0:9500"); err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	// A TCP listener too (a port reserved in the kernel, an entry in the
	// bpf map, a listener of the TCP stack).
	if _, err := a.Listen("tcp://0.0.0.0:9501"); err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	c, err := a.Dial(ctx, "udp://127.0.0.1:9000")
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if _, err := c.Write([]byte("hi")); err != nil {
		fmt.Println("write:", err)
		return 1
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hi" {
		fmt.Println("read:", n, err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// echoServer serves udp://0.0.0.0:port on a, echoing, until a closes.
func echoServer(t testing.TB, a *app.App, port int) net.PacketConn {
	t.Helper()
	pc, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	go echoPackets(pc)
	return pc
}

// TestAppDeath kills an app process (SIGKILL) that has listeners and a
// cut-through session: within a second the daemon holds no app, listener,
// session or descriptor of it.
// startChild re-executes the test binary as an app of d that attaches,
// binds and says "ready", and waits for that word.
func startChild(t *testing.T, d *Daemon) *exec.Cmd {
	t.Helper()
	c := startChildApp(t, "death", d.Socket(), "")
	c.expect(t, "ready")
	return c.cmd
}

func TestAppDeath(t *testing.T) {
	d := startDaemon(t)
	echo := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, echo, 9000)
	// leakcheck: sets of descriptors and goroutines, looked at (Diff) in
	// the same poll as the daemon's tables, under the test's deadline.
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})
	baseListeners := len(d.layer.Listeners())

	cmd := startChild(t, d)
	defer cmd.Process.Kill()
	if n := len(d.layer.Apps()); n != 2 {
		t.Fatalf("%d apps with the child attached", n)
	}
	if n := len(d.layer.Sessions()); n != 2 {
		t.Fatalf("%d sessions with the child's cut-through session, want its two ends", n)
	}
	if n := len(d.layer.Listeners()); n != baseListeners+4 {
		t.Fatalf("%d listeners with the child's, want %d", n, baseListeners+4)
	}
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := killed.Add(time.Second)
	for {
		apps, ls, ss, left := len(d.layer.Apps()), len(d.layer.Listeners()), len(d.layer.Sessions()), leaks.Diff()
		if apps == 1 && ls == baseListeners && ss == 0 && left == nil {
			t.Logf("reclaimed %v after the kill", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a second after the kill: %d apps, %d listeners (want %d), %d sessions; %v",
				apps, ls, baseListeners, ss, left)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDaemonGone checks that every call blocked on an app returns promptly
// with an error wrapping net.ErrClosed when the daemon goes away, and that
// later calls fail the same way.
func TestDaemonGone(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	cli := attach(t, d, app.Options{Name: "cli"})
	pc, err := srv.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("tcp://0.0.0.0:9001")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, "tcp://127.0.0.1:9001")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := cli.Dial(ctx, "tcp://127.0.0.1:9001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	go func() { _, _, err := pc.ReadFrom(make([]byte, 10)); errs <- fmt.Errorf("ReadFrom: %w", err) }()
	go func() { _, err := ln.Accept(); errs <- fmt.Errorf("Accept: %w", err) }()
	go func() { _, err := c.Read(make([]byte, 10)); errs <- fmt.Errorf("client Read: %w", err) }()
	_ = c2 // the peer of sc: never read, so sc's writes fill its fifo
	go func() {
		// A writer blocked on a full fifo: the client reads nothing.
		buf := make([]byte, 4096)
		for {
			if _, err := sc.Write(buf); err != nil {
				errs <- fmt.Errorf("server Write: %w", err)
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let them block
	stopped := time.Now()
	d.Close()
	for range 4 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%v: does not wrap net.ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("a blocked call did not return within 2s of the daemon stopping\n%s", goroutines())
		}
	}
	t.Logf("blocked calls returned %v after the daemon stopped", time.Since(stopped).Round(time.Millisecond))
	if _, err := cli.Dial(ctx, "udp://127.0.0.1:9000"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after the daemon stopped: %v", err)
	}
	if _, err := pc.WriteTo([]byte("x"), &app.CutThroughAddr{}); err == nil {
		t.Errorf("WriteTo after the daemon stopped worked")
	}
}

// TestAppDeathDatapath is TestAppDeath with the daemon on the datapath of
// a rig's veth: the killed app's listener also leaves the XDP program's
// listener map within the second.
func TestAppDeathDatapath(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	echo := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, echo, 9000)
	pin := filepath.Join(loader.DefaultPinRoot, rig.B.Name, rig.B.Link, "listeners")
	countListeners := func() int {
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			t.Fatalf("open %s: %v", pin, err)
		}
		defer m.Close()
		k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
		n := 0
		for it := m.Iterate(); it.Next(&k, &v); {
			n++
		}
		return n
	}
	waitFor(t, "the echo listener in the bpf map", 2*time.Second, func() bool { return countListeners() == 1 })
	// leakcheck as in TestAppDeath.
	leaks := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true})

	cmd := startChild(t, d)
	defer cmd.Process.Kill()
	waitFor(t, "the child's UDP and TCP listeners in the bpf map", 2*time.Second, func() bool { return countListeners() == 3 })
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := killed.Add(time.Second)
	for {
		apps, ss, bpf, left := len(d.layer.Apps()), len(d.layer.Sessions()), countListeners(), leaks.Diff()
		if apps == 1 && ss == 0 && bpf == 1 && left == nil {
			t.Logf("reclaimed %v after the kill", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a second after the kill: %d apps, %d sessions, %d bpf listeners (want 1); %v",
				apps, ss, bpf, left)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
