package daemon

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// trackedStale returns the handles the daemon keeps fifos of (for its
// metrics and show) that name no session or listener of their app in the
// session layer.
func trackedStale(d *Daemon) map[sessions.AppID][]flow.Handle {
	live := map[sessions.AppID]map[flow.Handle]bool{}
	add := func(a sessions.AppID, h flow.Handle) {
		if live[a] == nil {
			live[a] = map[flow.Handle]bool{}
		}
		live[a][h] = true
	}
	for _, s := range d.layer.Sessions() {
		add(s.App, s.Handle)
	}
	for _, l := range d.layer.Listeners() {
		add(l.App, l.Handle)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[sessions.AppID][]flow.Handle{}
	for a, m := range d.fifos {
		for h := range m {
			if !live[a][h] {
				out[a] = append(out[a], h)
			}
		}
	}
	return out
}

// TestCutThroughRefusedConnectLeavesNothingTracked: a cut-through connect
// refused because the listening app does not take its notices (the
// session withdrawn, neither app ever holding it) leaves no fifos behind
// in the daemon's books of either app. Before, both ends of every refused
// connect stayed listed there until their apps detached: a client that
// keeps connecting to a stuck listener grew them without bound.
func TestCutThroughRefusedConnectLeavesNothingTracked(t *testing.T) {
	d := startDaemon(t, func(c *Config) {
		c.Control.SendTimeout = 8 * time.Second // the stuck app is not dropped meanwhile
		c.Control.QueueLen = 8
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stuck := make(chan struct{})
	victim, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "stuck", Notify: func(m api.Message, fds []int) {
		api.CloseFDs(fds)
		if _, ok := m.(*api.Accepted); ok {
			<-stuck // reads nothing more
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	defer close(stuck) // first: the client's Close waits for its receiver
	_, fds, err := victim.Call(ctx, &api.Attach{Name: "stuck", Scope: flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := victim.Call(ctx, &api.Bind{URI: "tcp://0.0.0.0:7100"}); err != nil {
		t.Fatal(err)
	}
	cl, err := api.DialClient(ctx, d.Socket(), api.ClientOptions{Name: "client"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	_, fds, err = cl.Call(ctx, &api.Attach{Name: "client", Scope: flow.ScopeLocal, RxFifoSize: 4096, TxFifoSize: 4096})
	api.CloseFDs(fds)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := 0; i < 2000 && refused < 2; i++ {
		_, fds, err := cl.Call(ctx, &api.Connect{URI: "tcp://127.0.0.1:7100"})
		api.CloseFDs(fds)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			refused++
		case err != nil:
			t.Fatalf("connect %d: %v", i, err)
		}
	}
	if refused == 0 {
		t.Fatal("no connect was refused")
	}
	if stale := trackedStale(d); len(stale) != 0 {
		t.Fatalf("after %d refused connects, fifos of no session are tracked: %v", refused, stale)
	}
}
