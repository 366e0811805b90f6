package datapath

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/sessions"
)

// Each app gets a kick eventfd of its own per worker (Engine.AppKicks), so
// that a worker knows who woke it. A kick after which the app had nothing
// to send is spurious; after kickStrikes spurious kicks in a row the
// worker stops polling that app's eventfd for a while (kickMuteMin,
// doubling up to kickMuteMax while the spam goes on), so that an app
// writing its eventfd in a loop costs the worker a bounded number of
// wakeups and wakes it for no one else. A muted app loses nothing: the
// worker drains every tx fifo that has data each time it runs, and
// unmutes the eventfd after the pause (a pending kick then fires at once).
// A kick whose work the worker already did is not spurious: a worker that
// was awake (busy or spinning) took the event flag the app set before it
// kicked, with data queued behind it, and reads the kick only in its next
// poll (appKick.took). A flag with nothing queued earns no such credit, so
// an app that sets its flag and kicks in a loop is still paused; nor does
// data queued behind no flag, which the worker does not look at (an app
// that left a datagram in its tx fifo and kicked in a loop was never
// paused), nor a dequeue notification of a TCP session's rx fifo that the
// Conn did not ask for or that left it no room.
const (
	kickStrikes = 8
	kickMuteMin = 100 * time.Microsecond
	kickMuteMax = 10 * time.Millisecond
)

// appKick is one app's kick eventfd at one worker.
type appKick struct {
	fd   int
	app  sessions.AppID
	shut atomic.Bool // fd closed (close)
	// Worker goroutine only.
	took       bool // the worker took a tx event flag of the app, data behind it, since it last read fd
	strikes    int
	mute       time.Duration // the last pause
	mutedUntil time.Time
}

// appKicks are a worker's app kick eventfds. The worker goroutine owns
// them: the control plane adds and removes through the worker's mailbox.
type appKicks struct {
	list   []*appKick
	polled []*appKick    // scratch: those in the current poll
	pfds   []unix.PollFd // scratch: the poll set
	muted  atomic.Uint64 // pauses imposed
	wakes  atomic.Uint64 // kicks that woke the worker
	bogus  atomic.Uint64 // spurious kicks
}

// KickStats count the wakeups by app kick eventfds over every worker.
type KickStats struct {
	Wakes    uint64 `json:"wakes"`    // app kicks that woke a worker
	Spurious uint64 `json:"spurious"` // of them, with nothing to send
	Muted    uint64 `json:"muted"`    // pauses imposed on an app's eventfd
}

// KickStats returns the app kick counters.
func (e *Engine) KickStats() KickStats {
	var s KickStats
	for _, w := range e.work {
		s.Wakes += w.apps.wakes.Load()
		s.Spurious += w.apps.bogus.Load()
		s.Muted += w.apps.muted.Load()
	}
	return s
}

// AppKicks makes app's kick eventfds, one per worker in worker order, for
// the app to write after it queued datagrams in a tx fifo (the control
// protocol passes them in AttachReply). The engine owns them; release
// (call it once, when the app detached) closes them.
func (e *Engine) AppKicks(app sessions.AppID) (fds []int, release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, ErrClosed
	}
	ks := make([]*appKick, 0, len(e.work))
	for range e.work {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			for _, k := range ks {
				unix.Close(k.fd)
			}
			return nil, nil, fmt.Errorf("app kick eventfd: %w", err)
		}
		ks = append(ks, &appKick{fd: fd, app: app})
		fds = append(fds, fd)
	}
	for i, w := range e.work {
		k := ks[i]
		w.postKick(func() { w.apps.list = append(w.apps.list, k) })
	}
	released := atomic.Bool{}
	release = func() {
		if released.Swap(true) {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for i, w := range e.work {
			k := ks[i]
			if e.closed {
				k.close() // no worker polls it any more
				continue
			}
			w.postKick(func() {
				for j, x := range w.apps.list {
					if x == k {
						w.apps.list = append(w.apps.list[:j], w.apps.list[j+1:]...)
						break
					}
				}
				k.close()
			})
		}
	}
	return fds, release, nil
}

// postKick runs fn on the worker's goroutine (its mailbox), or now when
// the worker has no mailbox yet (before Start). e.mu is held.
func (w *worker) postKick(fn func()) {
	if w.shard == nil {
		fn()
		return
	}
	w.shard.Post(func(*sessions.Shard) { fn() })
}

// close closes k's eventfd once: an app's release after the engine's
// Close began and the worker's closeAppKicks may both come to it, and a
// second close would close whatever took its number since.
func (k *appKick) close() {
	if !k.shut.Swap(true) {
		unix.Close(k.fd)
	}
}

// closeAppKicks closes the eventfds left when the worker stopped.
func (w *worker) closeAppKicks() {
	for _, k := range w.apps.list {
		k.close()
	}
	w.apps.list = nil
}

// sleepPoll waits in poll on the socket, the worker's own kick eventfd and
// the app kick eventfds that are not paused, for at most timeout (less
// when a pause ends sooner).
func (w *worker) sleepPoll(timeout time.Duration) {
	a := &w.apps
	now := time.Now()
	a.pfds = append(a.pfds[:0], unix.PollFd{Fd: int32(w.sock.FD()), Events: unix.POLLIN}, unix.PollFd{Fd: int32(w.kick), Events: unix.POLLIN})
	a.polled = a.polled[:0]
	for _, k := range a.list {
		if now.Before(k.mutedUntil) {
			timeout = min(timeout, k.mutedUntil.Sub(now))
			continue
		}
		a.pfds = append(a.pfds, unix.PollFd{Fd: int32(k.fd), Events: unix.POLLIN})
		a.polled = append(a.polled, k)
	}
	w.c.Sleeps++
	ts := unix.NsecToTimespec(int64(max(timeout, 0)))
	n, err := unix.Ppoll(a.pfds, &ts, nil)
	if err != nil || n == 0 {
		return
	}
	var b [8]byte
	if a.pfds[1].Revents&unix.POLLIN != 0 {
		_, _ = unix.Read(w.kick, b[:])
		w.c.Kicks++
	}
	for i, k := range a.polled {
		if a.pfds[2+i].Revents&unix.POLLIN == 0 {
			continue
		}
		if _, err := readNoWait(k.fd, b[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
			continue
		}
		w.c.Kicks++
		a.wakes.Add(1)
		if k.took || w.appHasTx(k.app) {
			k.took, k.strikes, k.mute = false, 0, 0
			continue
		}
		a.bogus.Add(1)
		if k.strikes++; k.strikes >= kickStrikes {
			k.mute = min(max(2*k.mute, kickMuteMin), kickMuteMax)
			k.mutedUntil = now.Add(k.mute)
			k.strikes = 0
			a.muted.Add(1)
		}
	}
}

// took notes that the worker took a tx event flag of app outside poll:
// the kick the app wrote after it set the flag is not spurious.
func (a *appKicks) took(app sessions.AppID) {
	for _, k := range a.list {
		if k.app == app {
			k.took = true
			return
		}
	}
}

// appHasTx reports whether a tx fifo of app that this worker drains has
// its event flag set with something queued behind it (or more than one
// drain's worth left), or (TCP) a session of app that this worker kicks
// has work for it: a kick of a TCP app is no less real than a UDP one.
// Data queued without the flag is not work: the worker drains a fifo when
// its flag is set, and the app library sets it before every kick.
func (w *worker) appHasTx(app sessions.AppID) bool {
	for _, t := range w.own {
		if t.App == app && (t.More || t.Tx.HasEvent() && t.Tx.MaxDequeue() > 0) {
			return true
		}
	}
	return w.e.tcp != nil && w.e.tcp.appActive(w, app)
}
