package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
)

// startDaemon runs a daemon in-process on lo, without a datapath, with its
// socket in a temporary directory.
func startDaemon(t testing.TB, mod ...func(*daemonOptions)) *daemon {
	t.Helper()
	opts := daemonOptions{Iface: "lo", Socket: filepath.Join(t.TempDir(), "api.sock")}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mod {
		m(&opts)
	}
	d := newDaemon(opts)
	if err := d.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// attach attaches an app to d, closed when the test ends.
func attach(t testing.TB, d *daemon, o app.Options) *app.App {
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
