package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/leakcheck"
)

// goneBound is how long an app's blocked calls may take to return once
// its daemon stopped or died.
const goneBound = 2 * time.Second

// goneCall is a call of an app blocked when its daemon went away.
type goneCall struct {
	name string
	err  error
	at   time.Time
}

// daemonGoneErr checks that err is the error of a call whose daemon went
// away: it wraps net.ErrClosed and its text says so ("xsessiond is
// shutting down" after a stop, "lost the daemon: ..." after a death).
func daemonGoneErr(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error after the daemon went away", what)
	case !errors.Is(err, net.ErrClosed):
		t.Errorf("%s: %v (%T), want an error wrapping net.ErrClosed", what, err, err)
	case !strings.Contains(err.Error(), "daemon") && !strings.Contains(err.Error(), "xsessiond"):
		t.Errorf("%s: %q does not say the daemon went away", what, err)
	}
}

// TestDaemonGone runs the daemon binary on a rig and an app in the test,
// with a call of every kind blocked: a listener's Accept, Read and Write
// of a TCP connection from host A and of a cut-through one, ReadFrom of a
// PacketConn, Read of a cut-through UDP connection, and a Dial to an
// address nobody answers. The daemon stops (SIGTERM) or dies (SIGKILL):
// every blocked call returns within goneBound with an error wrapping
// net.ErrClosed that says the daemon went away; every later call (data
// calls, WriteTo, Dial, Listen, the cut-through sessions' reads and writes
// with data queued) fails at once the same way; Close of the App and of
// its objects returns. A new daemon on the same socket takes a new app,
// which serves host A, while the old App's calls keep failing and reach
// the new daemon not at all (its port is the new app's to bind). Once
// the apps are closed, the process holds no goroutine, descriptor or
// mapping more than before.
func TestDaemonGone(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { daemonGone(t, sig) })
	}
}

func daemonGone(t *testing.T, sig syscall.Signal) {
	rig, sock, d := startRigDaemon(t)
	xs, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := func(name string) app.Options {
		return app.Options{Socket: sock, Name: name, Scope: flow.ScopeGlobal | flow.ScopeLocal}
	}
	// What a first App opens once per process (the runtime's timers, the
	// pools) is not a leak of the ones under test.
	warm, err := app.Attach(ctx, opts("warm"))
	if err != nil {
		t.Fatal(err)
	}
	if pc, err := warm.ListenPacket("udp://0.0.0.0:7190"); err == nil {
		pc.Close()
	}
	warm.Close()
	snap := leakcheck.Take(t, leakcheck.Options{FDs: true, Goroutines: true, Timeout: 5 * time.Second})
	maps := leakcheck.Mappings(t, "memfd:")

	a, err := app.Attach(ctx, opts("gone-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := app.Attach(ctx, opts("gone-b"))
	if err != nil {
		t.Fatal(err)
	}

	// A TCP connection from host A, which reads nothing.
	wln, err := a.Listen("tcp://0.0.0.0:7100")
	if err != nil {
		t.Fatal(err)
	}
	var kc net.Conn
	if err := rig.A.Do(func() (err error) {
		kc, err = net.DialTimeout("tcp", net.JoinHostPort(rig.B.IPv4.String(), "7100"), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	wc, err := wln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// A cut-through TCP session a→b: b reads nothing, and queues data
	// that a has not read on a second one.
	cln, err := b.Listen("tcp://0.0.0.0:7101")
	if err != nil {
		t.Fatal(err)
	}
	cta, err := a.Dial(ctx, "tcp://127.0.0.1:7101")
	if err != nil {
		t.Fatal(err)
	}
	ctb, err := cln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cta.LocalAddr().(*app.CutThroughAddr); !ok {
		t.Fatalf("the session to 127.0.0.1 is not cut-through: %v", cta.LocalAddr())
	}
	cta2, err := a.Dial(ctx, "tcp://127.0.0.1:7101")
	if err != nil {
		t.Fatal(err)
	}
	ctb2, err := cln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctb2.Write([]byte("queued before")); err != nil {
		t.Fatal(err)
	}
	// A PacketConn, and a cut-through UDP session to it.
	pc, err := a.ListenPacket("udp://0.0.0.0:7102")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := b.Dial(ctx, "udp://127.0.0.1:7102")
	if err != nil {
		t.Fatal(err)
	}
	aln, err := a.Listen("tcp://0.0.0.0:7103")
	if err != nil {
		t.Fatal(err)
	}

	calls := make(chan goneCall, 32)
	blocked := func(name string, fn func() error) {
		go func() {
			err := fn()
			calls <- goneCall{name, err, time.Now()}
		}()
	}
	big := make([]byte, 64<<20)
	blocked("Accept", func() error { _, err := aln.Accept(); return err })
	blocked("wire Read", func() error { _, err := wc.Read(make([]byte, 100)); return err })
	blocked("wire Write", func() error { _, err := wc.Write(big); return err })
	blocked("cut-through Read", func() error { _, err := cta.Read(make([]byte, 100)); return err })
	blocked("cut-through Write", func() error { _, err := cta.Write(big[:8<<20]); return err })
	blocked("ReadFrom", func() error { _, _, err := pc.ReadFrom(make([]byte, 100)); return err })
	blocked("cut-through UDP Read", func() error { _, err := uc.Read(make([]byte, 100)); return err })
	blocked("Dial", func() error {
		// Nobody answers ARP for .99: the connect waits 3 s for the
		// kernel's probes to run out.
		c, err := a.Dial(ctx, "tcp://10.77.0.99:80")
		if err == nil {
			c.Close()
		}
		return err
	})
	// Control requests in flight: binds and unbinds, over and over, until
	// the daemon goes away.
	const inFlight = 8
	for i := range inFlight {
		blocked(fmt.Sprintf("ListenPacket loop %d", i), func() error {
			for {
				p, err := b.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", 7200+i))
				if err != nil {
					return err
				}
				if err := p.Close(); err != nil {
					// A Close the daemon's going cut short is no
					// failure: the daemon let go of the port.
					return errors.New("Close failed: " + err.Error())
				}
			}
		})
	}
	const nblocked = 8 + inFlight
	time.Sleep(300 * time.Millisecond)
	select {
	case c := <-calls:
		t.Fatalf("%s returned before the daemon went away: %v", c.name, c.err)
	default:
	}

	gone := time.Now()
	d.cmd.Process.Signal(sig)
	for range nblocked {
		select {
		case c := <-calls:
			if took := c.at.Sub(gone); took > goneBound {
				t.Errorf("%s returned %v after the daemon went away", c.name, took)
			}
			daemonGoneErr(t, c.name, c.err)
		case <-time.After(goneBound + time.Second):
			t.Fatalf("blocked calls still blocked %v after the daemon went away:\n%s", goneBound+time.Second, goroutineStacks())
		}
	}
	select {
	case <-a.Done():
	case <-time.After(goneBound):
		t.Fatal("App.Done not closed")
	}
	daemonGoneErr(t, "App.Err", a.Err())
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not exit after %v", sig)
	}

	// Every later call fails at once, the same way, the cut-through
	// sessions' included (their fifos are still mapped, the data b
	// queued still there).
	later := func(when string) {
		t.Helper()
		for _, c := range []struct {
			name string
			fn   func() error
		}{
			{"Accept", func() error { _, err := aln.Accept(); return err }},
			{"wire Read", func() error { _, err := wc.Read(make([]byte, 100)); return err }},
			{"wire Write", func() error { _, err := wc.Write([]byte("x")); return err }},
			{"cut-through Read", func() error { _, err := cta.Read(make([]byte, 100)); return err }},
			{"cut-through Write", func() error { _, err := cta.Write([]byte("x")); return err }},
			{"cut-through Read of queued data", func() error { _, err := cta2.Read(make([]byte, 100)); return err }},
			{"cut-through Write to a reading peer", func() error { _, err := cta2.Write([]byte("x")); return err }},
			{"peer's cut-through Read", func() error { _, err := ctb.Read(make([]byte, 100)); return err }},
			{"peer's cut-through Write", func() error { _, err := ctb2.Write([]byte("x")); return err }},
			{"ReadFrom", func() error { _, _, err := pc.ReadFrom(make([]byte, 100)); return err }},
			{"WriteTo", func() error {
				_, err := pc.WriteTo([]byte("x"), &net.UDPAddr{IP: rig.A.IPv4.AsSlice(), Port: 9})
				return err
			}},
			{"cut-through UDP Write", func() error { _, err := uc.Write([]byte("x")); return err }},
			{"Dial", func() error { _, err := a.Dial(ctx, "tcp://127.0.0.1:7101"); return err }},
			{"Listen", func() error { _, err := a.Listen("tcp://0.0.0.0:7104"); return err }},
			{"ListenPacket", func() error { _, err := b.ListenPacket("udp://0.0.0.0:7105"); return err }},
		} {
			start := time.Now()
			err := c.fn()
			if took := time.Since(start); took > 200*time.Millisecond {
				t.Errorf("%s: %s took %v", when, c.name, took)
			}
			if when == "after Close" {
				// As after the Close of a kernel socket.
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("%s: %s: %v, want an error wrapping net.ErrClosed", when, c.name, err)
				}
				continue
			}
			daemonGoneErr(t, when+": "+c.name, err)
		}
	}
	later("after the daemon went away")

	// A new daemon on the same socket: a new app attaches and serves;
	// the old App still fails, and binds nothing there.
	d2 := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d2.waitLine(t, "xsessiond started", 15*time.Second)
	later("with a new daemon on the socket")
	n, err := app.Attach(ctx, opts("gone-new"))
	if err != nil {
		t.Fatalf("attach to the new daemon: %v", err)
	}
	npc, err := n.ListenPacket("udp://0.0.0.0:7102")
	if err != nil {
		t.Fatalf("the new app binds the old one's port: %v", err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := npc.ReadFrom(buf)
			if err != nil {
				return
			}
			npc.WriteTo(buf[:k], from)
		}
	}()
	if err := echoOnce(t, rig, 7102); err != nil {
		t.Errorf("the new daemon's app: %v", err)
	}
	if out, err := execCtl(xs, sock, "show", "apps"); err != nil || strings.Contains(out, "gone-a") || strings.Contains(out, "gone-b") {
		t.Errorf("the new daemon's apps (err %v):\n%s", err, out)
	}

	// Close returns, the objects' and the App's, and a second time.
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for _, o := range []interface{ Close() error }{wc, cta, cta2, ctb, ctb2, uc, pc, wln, cln, aln} {
			o.Close()
		}
		if err := a.Close(); err != nil {
			t.Errorf("App.Close: %v", err)
		}
		b.Close()
		a.Close()
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Close after the daemon went away did not return:\n%s", goroutineStacks())
	}
	later("after Close")
	n.Close()
	kc.Close()
	if code := d2.stop(t); code != 0 {
		t.Errorf("the new daemon exited %d", code)
	}
	snap.Check(t)
	if m := leakcheck.Mappings(t, "memfd:"); m != maps {
		t.Errorf("%d mappings of shared memory after Close, %d before Attach", m, maps)
	}
}

// execCtl runs xsessiond ctl against sock.
func execCtl(xs, sock string, args ...string) (string, error) {
	out, err := exec.Command(xs, append([]string{"ctl", "--socket", sock}, args...)...).CombinedOutput()
	return string(out), err
}

func goroutineStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
