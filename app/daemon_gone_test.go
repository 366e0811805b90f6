package app

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// TestControlCallDaemonDies: a control request in flight when the daemon
// dies (its end of the control socket closes without a Shutdown notice)
// fails with an error wrapping net.ErrClosed that says the daemon went
// away, as do the requests after it, even before the App's own watch of
// the connection has run; the App is stopped by then. The requests that
// only let go of something (an object's Close) succeed.
func TestControlCallDaemonDies(t *testing.T) {
	daemonEnd, appEnd, err := api.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer daemonEnd.Close()
	go func() {
		id, _, fds, err := daemonEnd.RecvID()
		api.CloseFDs(fds)
		if err == nil {
			daemonEnd.SendID(id, &api.HelloReply{Major: api.VersionMajor, Minor: api.VersionMinor})
		}
		// The daemon dies with the next request unanswered.
		_, _, fds, _ = daemonEnd.RecvID()
		api.CloseFDs(fds)
		daemonEnd.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := api.NewClient(ctx, appEnd, api.ClientOptions{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// No watcher goroutine: the request's own failure must stop the App.
	a := &App{cl: cl, done: make(chan struct{}), dials: map[uint32]chan connectResult{}}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "daemon") {
			t.Errorf("%s: %v, want an error wrapping net.ErrClosed that says the daemon went away", what, err)
		}
	}
	_, _, err = do[*api.BindReply](ctx, a, &api.Bind{URI: "udp://0.0.0.0:1"})
	check("the request in flight", err)
	_, _, err = do[*api.BindReply](ctx, a, &api.Bind{URI: "udp://0.0.0.0:1"})
	check("the next request", err)
	_, _, err = do[*api.ConnectReply](ctx, a, &api.Connect{URI: "tcp://127.0.0.1:1"})
	check("a connect", err)
	// What Close sends succeeds: the daemon let go of everything.
	for _, m := range []api.Message{&api.Unbind{Handle: flow.Handle(1)}, &api.Disconnect{Handle: flow.Handle(1)}, &api.Abort{Handle: flow.Handle(1)}} {
		if _, _, err := a.call(ctx, m); err != nil {
			t.Errorf("%v once the daemon went away: %v, want nil", m.Type(), err)
		}
	}
	select {
	case <-a.Done():
	default:
		t.Error("the App did not stop")
	}
	check("App.Err", a.Err())
}
