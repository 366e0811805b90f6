package api

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// showGate bounds the Show requests a Server serves at once across all its
// connections. A Show holds a slot from before its handler builds the
// document until the last record of the reply left (or was dropped with
// its connection), so that the documents held at once, being built, queued
// or written, are at most max, whatever the number of connections asking
// and however slowly they read. A peer other than root holds at most one
// slot at a time, and such peers together at most max-1: the last is kept
// for root, so that an administrator's `ctl show` answers while other
// users fill the rest.
//
// Waiters are granted slots in the order they came, skipping those whose
// uid already holds its one, and those of the uid that gave the slot back
// while another uid's wait.
type showGate struct {
	max int // <= 0: no bound

	mu      sync.Mutex
	held    int            // guarded by mu: slots held
	nonRoot int            // guarded by mu: slots held by peers other than root
	byUID   map[uint32]int // guarded by mu: slots held per uid other than 0
	waiters []*showWaiter  // guarded by mu: in arrival order
}

type showWaiter struct {
	uid     uint32
	ready   chan struct{} // closed once granted
	granted bool          // guarded by showGate.mu
}

func newShowGate(max int) *showGate {
	return &showGate{max: max, byUID: make(map[uint32]int)}
}

// mayTakeLocked reports whether a peer of uid may take a slot now.
func (g *showGate) mayTakeLocked(uid uint32) bool {
	if g.held >= g.max {
		return false
	}
	if uid == 0 {
		return true
	}
	nonRootMax := g.max - 1
	if nonRootMax < 1 {
		nonRootMax = 1
	}
	return g.nonRoot < nonRootMax && g.byUID[uid] == 0
}

func (g *showGate) takeLocked(uid uint32) {
	g.held++
	if uid != 0 {
		g.nonRoot++
		g.byUID[uid]++
	}
}

// acquire takes a slot for a peer of uid, waiting up to wait for one, or
// until stopped is closed or ctx ends. It returns the function that gives
// the slot back (safe to call more than once), or an error wrapping
// flow.ErrLimit.
func (g *showGate) acquire(ctx context.Context, uid uint32, wait time.Duration, stopped <-chan struct{}) (func(), error) {
	if g.max <= 0 {
		return func() {}, nil
	}
	g.mu.Lock()
	if g.mayTakeLocked(uid) {
		g.takeLocked(uid)
		g.mu.Unlock()
		return g.releaser(uid), nil
	}
	w := &showWaiter{uid: uid, ready: make(chan struct{})}
	g.waiters = append(g.waiters, w)
	g.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	var why string
	timedOut := false
	select {
	case <-w.ready:
		return g.releaser(uid), nil
	case <-t.C:
		why, timedOut = fmt.Sprintf("waited %v", wait), true
	case <-stopped:
		why = "connection closed"
	case <-ctx.Done():
		why = "server stopping"
	}
	g.mu.Lock()
	if w.granted {
		// Granted as the wait ended.
		g.mu.Unlock()
		if timedOut {
			return g.releaser(uid), nil
		}
		g.release(uid)
	} else {
		if i := slices.Index(g.waiters, w); i >= 0 {
			g.waiters = slices.Delete(g.waiters, i, i+1)
		}
		g.mu.Unlock()
	}
	return nil, fmt.Errorf("show: the daemon serves %d show requests at once (one per user), all taken by others; %s: try again: %w",
		g.max, why, flow.ErrLimit)
}

// releaser returns a function that gives back one slot of uid, once.
func (g *showGate) releaser(uid uint32) func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			g.release(uid)
		}
	}
}

// release gives back one slot of uid and grants the freed room to the
// waiters that may take it, oldest first, those of other uids before
// those of uid: a uid whose many connections wait cannot take every slot
// it gives back ahead of another uid's waiter.
func (g *showGate) release(uid uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held--
	if uid != 0 {
		g.nonRoot--
		if g.byUID[uid]--; g.byUID[uid] <= 0 {
			delete(g.byUID, uid)
		}
	}
	g.grantLocked(func(w *showWaiter) bool { return w.uid != uid })
	g.grantLocked(func(*showWaiter) bool { return true })
}

// grantLocked grants slots to the waiters that pick selects and may take
// one, oldest first.
func (g *showGate) grantLocked(pick func(*showWaiter) bool) {
	if g.held >= g.max {
		return
	}
	kept := g.waiters[:0]
	for _, w := range g.waiters {
		if pick(w) && g.mayTakeLocked(w.uid) {
			g.takeLocked(w.uid)
			w.granted = true
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(g.waiters[len(kept):])
	g.waiters = kept
}

// inUse returns the slots held.
func (g *showGate) inUse() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}
