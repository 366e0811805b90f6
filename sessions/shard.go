package sessions

import (
	"sync"
)

// ShardSession is what a worker knows of one established session of its
// shard: enough to deliver payload without asking the control plane.
type ShardSession struct {
	Handle  Handle
	App     AppID
	Tuple   FiveTuple
	FIB     FIBID
	IfIndex int
	Pair    FifoPair  // the app's end of the session: the worker writes Pair.Rx, reads Pair.Tx
	Memory  AppMemory // the app's memory (its event queue), for signalling the app
}

// Shard is one worker's part of the established sessions: its pool of
// sessions by index (the Index of their handles) and its mailbox. Packets
// find a session through the datapath's own table of connected sessions
// (by 5-tuple); a worker uses its shard to learn a session it now owns.
//
// Threading: a shard has one owner goroutine, the worker of the same index.
// Get, Len, Add, Del and Drain may be called by the owner only, with no
// lock. Everyone else changes a shard by posting a function to its mailbox
// (Post); the owner runs posted functions, in order, when it calls Drain at
// the top of its poll loop. Post, Wake, SetNotify and Pending are safe for
// concurrent use.
type Shard struct {
	worker uint32
	sess   []*ShardSession // by session index (Handle.Index); nil when free. Owner only
	n      int             // non-nil entries of sess. Owner only

	mu    sync.Mutex     // guards mbox and spare
	mbox  []func(*Shard) // posted, not yet drained
	spare []func(*Shard) // the previous batch's slice, for reuse

	wake   chan struct{} // receives after Post unless notify is set; never closed
	notify func()        // guarded by mu: called by Post instead of wake; see SetNotify
}

// NewShard returns an empty shard for worker.
func NewShard(worker uint32) *Shard {
	return &Shard{worker: worker, wake: make(chan struct{}, 1)}
}

// Worker returns the shard's worker index.
func (s *Shard) Worker() uint32 { return s.worker }

// Len returns the number of sessions in the shard. Owner goroutine only.
func (s *Shard) Len() int { return s.n }

// Get returns the session with the given index, or nil. Owner goroutine only.
func (s *Shard) Get(index uint32) *ShardSession {
	if int(index) >= len(s.sess) {
		return nil
	}
	return s.sess[index]
}

// Add stores ss under its handle's index, replacing what was there. Owner
// goroutine only.
func (s *Shard) Add(ss *ShardSession) {
	i := ss.Handle.Index()
	for int(i) >= len(s.sess) {
		s.sess = append(s.sess, nil)
	}
	if s.sess[i] == nil {
		s.n++
	}
	s.sess[i] = ss
}

// Del removes the session with handle h, if the shard has it, and returns
// it. Owner goroutine only.
func (s *Shard) Del(h Handle) *ShardSession {
	i := h.Index()
	if int(i) >= len(s.sess) || s.sess[i] == nil || s.sess[i].Handle != h {
		return nil
	}
	ss := s.sess[i]
	s.sess[i] = nil
	s.n--
	return ss
}

// Post queues fn to run on the owner goroutine at its next Drain, after
// everything posted before it. It never blocks: the control plane posts with
// its lock held, and a worker may be waiting for that lock, so a full
// mailbox would deadlock them. Pending reports the backlog.
func (s *Shard) Post(fn func(*Shard)) {
	s.mu.Lock()
	s.mbox = append(s.mbox, fn)
	notify := s.notify
	if notify != nil {
		notify()
	}
	s.mu.Unlock()
	if notify != nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// SetNotify makes Post call fn after queueing, instead of sending on the
// Wake channel: the owner's wake-up without a goroutine in between. fn
// must not block or call the shard; Post calls it with the mailbox's lock
// held, so once SetNotify(nil) returned, no call of fn is running or will
// start (the owner may then release what fn touches).
func (s *Shard) SetNotify(fn func()) {
	s.mu.Lock()
	s.notify = fn
	s.mu.Unlock()
}

// Wake returns a channel that receives a value after Post, for an idle
// owner to wait on before calling Drain.
func (s *Shard) Wake() <-chan struct{} { return s.wake }

// Pending returns the number of posted functions not yet drained.
func (s *Shard) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mbox)
}

// Drain runs the functions posted so far, in order, and returns how many
// ran. Owner goroutine only; never blocks on the control plane.
//
// The spare array becomes the mailbox and stops being the spare in one step:
// were it still the spare while it is the mailbox, a second Drain running
// meanwhile (the Engine's final drain racing a worker, a posted function
// draining) would take it as its batch and hand the same array out as the
// mailbox again, so that Post overwrote entries that batch then cleared, and
// a later Drain called a nil function (seen once in a daemon test run).
func (s *Shard) Drain() int {
	s.mu.Lock()
	fns := s.mbox
	s.mbox, s.spare = s.spare[:0], nil
	s.mu.Unlock()
	for i, fn := range fns {
		fn(s)
		fns[i] = nil
	}
	s.mu.Lock()
	if cap(fns) <= 1024 && s.spare == nil {
		s.spare = fns[:0]
	}
	s.mu.Unlock()
	return len(fns)
}
