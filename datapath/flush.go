package datapath

import (
	"context"
	"time"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/sessions"
)

// FlushTx looks at the fifos it waits for after flushPoll, then at twice
// the interval each time, up to flushPollMax: an app with many fifos
// that cannot drain costs the daemon little while it waits. It gives up
// on a fifo its worker took nothing from for flushStall (its datagrams
// wait for a next hop that does not answer, say), and at once on one the
// worker found corrupt since the flush began: a hostile app's detach is
// not held for the whole bound.
const (
	flushPoll    = 500 * time.Microsecond
	flushPollMax = 8 * time.Millisecond
	flushStall   = 20 * time.Millisecond
)

// flushing is a tx fifo FlushTx waits for: where its consumer's head was
// last seen to move, and when.
type flushing struct {
	t       *udp.Target
	head    uint32
	moved   time.Time
	corrupt uint64 // t.TxCorrupt when the flush began
}

// FlushTx waits until the workers took every datagram the tx fifos of
// app's UDP listeners and connected sessions hold, or ctx ends, and
// reports whether they did (false too when it gave up on a fifo, see
// flushStall). The daemon calls it before it detaches an app, when the
// app's connection ended or it asked to detach: a process that exits (or
// is killed) right after its last write loses none of what it wrote, as
// datagrams a process sent through a kernel socket go out after it exits.
// It sets each such fifo's event flag and wakes its worker (the app may
// have died between its write and its kick); the app's memory lives until
// the detach, and a Target killed meanwhile is no longer looked at.
func (e *Engine) FlushTx(ctx context.Context, app sessions.AppID) bool {
	var fs []flushing
	e.mu.Lock()
	for _, t := range *e.lis.Load() {
		if t.App == app {
			fs = append(fs, flushing{t: t, corrupt: t.TxCorrupt.Load()})
		}
	}
	for _, c := range e.conns {
		// A session has its Target once claimed, when conns forgot its
		// half-open handle: each is seen once.
		if t := c.target; t != nil && t.App == app {
			fs = append(fs, flushing{t: t, corrupt: t.TxCorrupt.Load()})
		}
	}
	e.mu.Unlock()
	if len(fs) == 0 {
		return true
	}
	pause := flushPoll
	timer := time.NewTimer(pause)
	defer timer.Stop()
	for first := true; ; first = false {
		now := time.Now()
		left := fs[:0]
		stuck := false
		for _, f := range fs {
			t := f.t
			if t.Lock() && t.Tx.Queued() {
				if h := t.Tx.SharedHead(); first || h != f.head {
					f.head, f.moved = h, now
				}
				if now.Sub(f.moved) < flushStall && t.TxCorrupt.Load() == f.corrupt {
					t.Tx.SetEvent()
					left = append(left, f)
				} else {
					stuck = true
				}
			}
			t.Unlock()
		}
		if len(left) == 0 {
			return !stuck
		}
		for _, f := range left {
			if w := e.workerByID(f.t.Worker); w != nil {
				w.wakeUp()
			}
		}
		fs = left
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
		pause = min(2*pause, flushPollMax)
		timer.Reset(pause)
	}
}
