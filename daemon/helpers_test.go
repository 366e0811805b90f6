package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// startDaemon runs a daemon in-process on lo, without a datapath, with its
// socket in a temporary directory.
func startDaemon(t testing.TB, mod ...func(*Config)) *Daemon {
	t.Helper()
	cfg := Config{Datapath: datapath.Config{IfName: "lo"}, NoDatapath: true, Socket: filepath.Join(t.TempDir(), "api.sock")}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mod {
		m(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// onB runs the daemon's datapath on host B's end of rig.
func onB(rig *nstest.Pair) func(*Config) {
	return func(o *Config) {
		o.Datapath.IfName, o.Datapath.NetnsName, o.NoDatapath = rig.B.Link, rig.B.Name, false
	}
}

// attach attaches an app to d, closed when the test ends.
func attach(t testing.TB, d *Daemon, o app.Options) *app.App {
	t.Helper()
	o.Socket = d.Socket()
	if o.Scope == 0 {
		o.Scope = flow.ScopeGlobal | flow.ScopeLocal
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := app.Attach(ctx, o)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitProgress waits until count() reaches target, failing when it does
// not grow for stall: a slow machine (the race detector, a busy core) may
// take its time, a stalled counter may not.
func waitProgress(t testing.TB, what string, stall time.Duration, count func() int64, target int64) {
	t.Helper()
	last, since := count(), time.Now()
	for last < target {
		time.Sleep(5 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > stall {
			t.Fatalf("%s: stalled at %d of %d for %v", what, last, target, stall)
		}
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

var errEcho = errorString("echo differs from what was sent")

type errorString string

func (e errorString) Error() string { return string(e) }

// closeRights closes the descriptors of SCM_RIGHTS messages in oob.
func closeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

// show asks the daemon at socket for what ctl show lists (apps, sessions,
// listeners, namespaces, rules, stats) over the control socket, as the CLI
// does, and returns the JSON document.
func show(t testing.TB, socket, what string) ([]byte, error) {
	t.Helper()
	w, err := api.ParseShowWhat(what)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "test"})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	m, fds, err := cl.Call(ctx, &api.Show{What: w})
	api.CloseFDs(fds)
	if err != nil {
		return nil, err
	}
	sr, ok := m.(*api.ShowReply)
	if !ok {
		return nil, fmt.Errorf("show %s: the daemon answered %v", what, m.Type())
	}
	return sr.JSON, nil
}

// echoPackets sends every datagram pc receives back to its sender (a
// cut-through peer's too: its address is a *app.CutThroughAddr) until pc
// is closed.
func echoPackets(pc net.PacketConn) {
	b := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			return
		}
		pc.WriteTo(b[:n], from)
	}
}

// echoUDP sends every datagram c (a kernel *net.UDPConn or an
// *app.PacketConn) receives back to its sender until c is closed.
func echoUDP(c interface {
	ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
}) {
	b := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(b)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(b[:n], from)
	}
}
