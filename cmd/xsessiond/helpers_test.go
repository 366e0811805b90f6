package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
)

func TestMain(m *testing.M) {
	if arg := os.Getenv(unprivEnv); arg != "" {
		os.Exit(unprivChild(arg))
	}
	if arg := os.Getenv(segmemEnv); arg != "" {
		os.Exit(segmemChild(arg))
	}
	if arg := os.Getenv(spamEnv); arg != "" {
		os.Exit(kickSpammer(arg))
	}
	if arg := os.Getenv(cycleEnv); arg != "" {
		os.Exit(connectCycler(arg))
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// startDaemon runs a daemon in-process on lo, without a datapath, with its
// socket in a temporary directory, for the CLI to talk to.
func startDaemon(t testing.TB) *daemon.Daemon {
	t.Helper()
	cfg := daemon.Config{Datapath: datapath.Config{IfName: "lo"}, NoDatapath: true, Socket: filepath.Join(t.TempDir(), "api.sock"), Version: version}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// attach attaches an app to d, closed when the test ends.
func attach(t testing.TB, d *daemon.Daemon, o app.Options) *app.App {
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

// echoServer binds port on a and echoes every datagram back to its sender
// until the listener is closed.
func echoServer(t testing.TB, a *app.App, port int) net.PacketConn {
	t.Helper()
	pc, err := a.ListenPacket(fmt.Sprintf("udp://0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	return pc
}
