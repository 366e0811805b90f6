package daemon

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// TestCutThroughConnectRacingDetachLeavesNothingTracked: a cut-through
// connect whose listening app detaches between the session layer making
// the session and the daemon recording it (the listener's end closed
// with its app, the session's memory freed) leaves neither end's fifos in
// the daemon's books. Before, the listening app's end stayed under an app
// that is gone (its books were emptied at its detach, before the late
// record), and the dialing app's end, which it never heard of, stayed
// until it detached.
func TestCutThroughConnectRacingDetachLeavesNothingTracked(t *testing.T) {
	d := startDaemon(t)
	o := app.Options{RxFifoSize: 4096, TxFifoSize: 4096}
	o.Name = "srv"
	srv := attach(t, d, o)
	if _, err := srv.Listen("tcp://0.0.0.0:7000"); err != nil {
		t.Fatal(err)
	}
	o.Name = "cli"
	cli := attach(t, d, o)
	srvID := appIDOf(srv)

	var once sync.Once
	var hookErr error
	hook := func(ev sessions.Event) {
		if ev.Kind != sessions.EventAccepted || !ev.CutThrough || ev.App != srvID {
			return
		}
		once.Do(func() {
			// The listening app goes before the daemon records its end.
			srv.Close()
			end := time.Now().Add(5 * time.Second)
			for slices.ContainsFunc(d.layer.Apps(), func(a sessions.AppInfo) bool { return a.ID == srvID }) {
				if time.Now().After(end) {
					hookErr = errors.New("the listening app was not detached")
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	d.beforeNotify.Store(&hook)
	defer d.beforeNotify.Store(nil)

	c, err := cli.Dial(t.Context(), "tcp://127.0.0.1:7000")
	if err == nil {
		c.Close()
		t.Fatal("the connect to a listener whose app went away worked")
	}
	if !errors.Is(err, flow.ErrConnect) {
		t.Errorf("connect: %v, want an error wrapping flow.ErrConnect", err)
	}
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	if gone := d.trackedDetached(); len(gone) != 0 {
		t.Errorf("the daemon keeps fifos of apps no longer attached: %v", gone)
	}
	if n := d.trackedFifos(appIDOf(cli)); n != 0 {
		t.Errorf("the daemon keeps %d entries of the dialing app's fifos, want 0", n)
	}
}
