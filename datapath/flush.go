package datapath

import (
	"context"
	"time"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/sessions"
)

// FlushTx looks at the fifos it waits for after flushPoll, then at twice
// the interval each time, up to flushPollMax: an app with many fifos
// that cannot drain costs the daemon little while it waits.
const (
	flushPoll    = 500 * time.Microsecond
	flushPollMax = 8 * time.Millisecond
)

// FlushTx waits until the workers took every datagram the tx fifos of
// app's UDP listeners and connected sessions hold, or ctx ends, and
// reports whether they did. The daemon calls it when an app's connection
// ended, before the app is detached: a process that exits (or is killed)
// right after its last write loses none of what it wrote, as datagrams a
// process sent through a kernel socket go out after it exits. It sets
// each such fifo's event flag and wakes its worker (the app may have
// died between its write and its kick); the app's memory lives until the
// detach, and a Target killed meanwhile is no longer looked at.
func (e *Engine) FlushTx(ctx context.Context, app sessions.AppID) bool {
	var ts []*udp.Target
	e.mu.Lock()
	for _, t := range *e.lis.Load() {
		if t.App == app {
			ts = append(ts, t)
		}
	}
	for _, c := range e.conns {
		// A session has its Target once claimed, when conns forgot its
		// half-open handle: each is seen once.
		if t := c.target; t != nil && t.App == app {
			ts = append(ts, t)
		}
	}
	e.mu.Unlock()
	if len(ts) == 0 {
		return true
	}
	pause := flushPoll
	timer := time.NewTimer(pause)
	defer timer.Stop()
	for {
		left := ts[:0]
		for _, t := range ts {
			if t.Lock() && t.Tx.Queued() {
				t.Tx.SetEvent()
				left = append(left, t)
			}
			t.Unlock()
		}
		if len(left) == 0 {
			return true
		}
		for _, t := range left {
			if w := e.workerByID(t.Worker); w != nil {
				w.wakeUp()
			}
		}
		ts = left
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
		pause = min(2*pause, flushPollMax)
		timer.Reset(pause)
	}
}
