package sessions

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
)

// ErrResync is returned by Feed.Next once the subscriber fell behind and
// changes were dropped: call Feed.Resync for a fresh snapshot.
var ErrResync = errors.New("change feed overflowed: resync needed")

// ErrFeedClosed is returned by Feed.Next after Close.
var ErrFeedClosed = errors.New("change feed closed")

// Feed is one subscription to the ordered change feed of the global tables
// (listeners, half-open and established sessions). Changes come out in Seq
// order with no gaps until the subscriber falls more than its buffer behind;
// the feed is then marked as needing a resync and drops changes (the control
// plane never waits for a subscriber) until Resync is called.
//
// A Feed is meant for one consuming goroutine; Close may be called from any.
type Feed struct {
	l      *Layer
	ch     chan Change
	resync atomic.Bool
	done   chan struct{}
	closed atomic.Bool
}

// Subscribe returns a new feed with room for buf changes (at least 1). A
// mirror calls f.Resync first for the state to start from; the changes that
// follow on the feed apply on top of it.
func (l *Layer) Subscribe(buf int) *Feed {
	if buf < 1 {
		buf = 1
	}
	f := &Feed{l: l, ch: make(chan Change, buf), done: make(chan struct{})}
	l.lock()
	l.feeds[f] = struct{}{}
	l.unlock()
	return f
}

// publishLocked stamps c with the next Seq and offers it to every feed.
func (l *Layer) publishLocked(c Change) {
	l.seq++
	l.pubSeq.Store(l.seq)
	c.Seq = l.seq
	for f := range l.feeds {
		if f.resync.Load() {
			continue
		}
		select {
		case f.ch <- c:
		default:
			f.resync.Store(true)
		}
	}
}

// C returns the channel changes arrive on. A closed feed's channel is not
// closed; use Next to learn about overflow and Close.
func (f *Feed) C() <-chan Change { return f.ch }

// NeedsResync reports whether changes were dropped since the last Resync.
func (f *Feed) NeedsResync() bool { return f.resync.Load() }

// Next returns the next change, waiting for one until ctx is done. It
// returns ErrResync when the feed overflowed and ErrFeedClosed after Close.
func (f *Feed) Next(ctx context.Context) (Change, error) {
	if f.closed.Load() {
		return Change{}, ErrFeedClosed
	}
	if f.resync.Load() {
		return Change{}, ErrResync
	}
	select {
	case c := <-f.ch:
		return c, nil
	case <-ctx.Done():
		return Change{}, ctx.Err()
	case <-f.done:
		return Change{}, ErrFeedClosed
	}
}

// Resync discards what the feed holds, clears its overflow mark and returns
// a snapshot of the global tables with the Seq it is consistent with: the
// changes that follow on the feed all have a larger Seq.
func (f *Feed) Resync() (seq uint64, snapshot []Change) {
	f.l.lock()
	defer f.l.unlock()
	for {
		select {
		case <-f.ch:
			continue
		default:
		}
		break
	}
	f.resync.Store(false)
	return f.l.snapshotLocked()
}

// Close ends the subscription.
func (f *Feed) Close() {
	if f.closed.Swap(true) {
		return
	}
	f.l.lock()
	delete(f.l.feeds, f)
	f.l.unlock()
	close(f.done)
}

// Snapshot returns the global tables as a list of OpAdd changes (listeners
// first) and the Seq of the last change they include.
func (l *Layer) Snapshot() (seq uint64, snapshot []Change) {
	l.lock()
	defer l.unlock()
	return l.snapshotLocked()
}

// Seq returns the Seq of the last change made to the global tables: what
// Snapshot's would be, without building one. It takes no lock: a
// PortReserver may call it under the control-plane lock.
func (l *Layer) Seq() uint64 { return l.pubSeq.Load() }

func (l *Layer) snapshotLocked() (uint64, []Change) {
	out := make([]Change, 0, len(l.glisten)+len(l.sess))
	for _, ln := range l.glisten {
		e := ln.Endpoint
		out = append(out, Change{Seq: l.seq, Op: OpAdd, Kind: KindListener, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: listenTuple(e), Handle: ln.Handle})
	}
	for _, s := range l.sess {
		if s.kind == kindCutThrough {
			continue
		}
		out = append(out, Change{Seq: l.seq, Op: OpAdd, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
	}
	for _, s := range l.linger {
		out = append(out, Change{Seq: l.seq, Op: OpAdd, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
	}
	slices.SortFunc(out, func(a, b Change) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		if a.Handle < b.Handle {
			return -1
		}
		if a.Handle > b.Handle {
			return 1
		}
		return 0
	})
	return l.seq, out
}
