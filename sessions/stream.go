package sessions

import (
	"fmt"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// Stream sessions on the wire (TCP): the datapath runs a transport whose
// connections use the app's fifos from the handshake on and go on using
// them after the layer forgot the session (a FIN waits for what the app
// queued; a reset is sent). The layer hands it the frees of that memory
// (StreamKeeper) and learns of passive opens, active opens, half closes and
// resets through the calls below, naming the session by StreamRef.

// StreamKeeper is a Datapath whose stream transport may still touch a
// session's fifos after the layer closed the session. When Config.Datapath
// implements it, the layer asks it before freeing such memory; the calls
// are made under the layer's lock and must neither block nor call back
// into the Layer.
type StreamKeeper interface {
	// KeepFifos wraps free, the free of the fifos of stream session h
	// (run once the shards drained, as every free): the function
	// returned calls free once the transport no longer touches them, at
	// once if it never did or no longer does.
	KeepFifos(h Handle, free func()) func()
	// AppGone is told first when app detaches: its connections are reset,
	// not closed in order.
	AppGone(app AppID)
	// KeepApp wraps free, the close of a detached app's whole memory, the
	// same way, for every connection of the app.
	KeepApp(app AppID, free func()) func()
	// CloseWrite closes the sending half of stream session h: a FIN
	// once what the app queued is sent.
	CloseWrite(h Handle) error
	// ResetOnClose marks stream session h, which the app closes next
	// (Datapath.Close follows under the same lock), so that its
	// connection is reset rather than closed in order.
	ResetOnClose(h Handle)
	// Linger is told that stream session h left the layer while its
	// connection may still exchange segments (FINs, TIME-WAIT): its
	// 5-tuple stays in the tables the program's maps follow until
	// release is called, which the datapath must do once, from a
	// goroutine holding none of its locks (never from Linger itself).
	Linger(h Handle, release func())
}

// StreamSession is a stream session the datapath opened: its handle, the
// app's fifos and the app's memory (its event queue).
type StreamSession struct {
	Handle Handle
	App    AppID
	Pair   FifoPair
	Memory AppMemory
	// Seq is the layer's change sequence number when StreamFifos returned:
	// the half-open session's 5-tuple is in the feed at or before it.
	Seq uint64
}

// StreamFifos allocates the fifos of half-open stream session ho from its
// app's memory: the transport queues into them from the handshake on. They
// are the datapath's until StreamConnected hands them to the session;
// StreamFreeFifos frees them if it never does.
func (l *Layer) StreamFifos(ho Handle) (StreamSession, error) {
	l.lock()
	defer l.unlock()
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return StreamSession{}, fmt.Errorf("stream fifos: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	a := s.app
	pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
	if err != nil {
		return StreamSession{}, fmt.Errorf("stream fifos: %w: %w", ErrNoMemory, err)
	}
	if added != nil {
		l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
	}
	return StreamSession{Handle: ho, App: a.id, Pair: pair, Memory: a.mem, Seq: l.seq}, nil
}

// StreamFreeFifos frees fifos StreamFifos allocated for app that never
// became a session's. Nothing is freed when the app detached meanwhile: its
// whole memory goes then (see StreamKeeper.KeepApp).
func (l *Layer) StreamFreeFifos(app AppID, mem AppMemory, p FifoPair) {
	l.lock()
	defer l.unlock()
	if a := l.apps[app]; a != nil && a.mem == mem && !a.detaching {
		mem.FreePair(p)
	}
}

// StreamConnected turns half-open stream session ho into an established
// session owned by worker, with the fifos StreamFifos allocated, and tells
// the app. bind runs under the layer's lock before the app can learn of the
// session (so before it can close it).
func (l *Layer) StreamConnected(worker uint32, ho Handle, pair FifoPair, bind func(h Handle)) (Handle, error) {
	l.lock()
	defer l.unlock()
	if int(worker) >= len(l.shards) {
		return InvalidHandle, fmt.Errorf("stream connected: worker %d: %w", worker, ErrInvalidValue)
	}
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return InvalidHandle, fmt.Errorf("stream connected: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	a := s.app
	l.forgetHalfOpenLocked(s) // the Add below replaces its entry
	l.freeHandleLocked(ho)
	h := l.newHandleLocked(worker)
	ns := &session{h: h, app: a, kind: kindEstablished, tuple: s.tuple, fib: s.fib, ifindex: s.ifindex, opaque: s.opaque, pair: pair, wire: s.wire}
	bind(h)
	delete(l.linger, hoKey{fib: ns.fib, t: ns.tuple}) // a new session of a lingering 5-tuple takes it over
	l.addEstablishedLocked(ns)
	l.notifyLocked(a, Event{Kind: EventConnected, Handle: h, Opaque: s.opaque, Transport: s.tuple.Proto,
		Local: tupleLocal(&s.tuple), Remote: tupleRemote(&s.tuple), Pair: pair})
	return h, nil
}

// StreamAccepted makes an established session for a connection the
// datapath accepted on global listener ln (tuple t: Local is this host),
// owned by worker, with fifos from the listening app's memory, and tells
// the app. bind runs under the layer's lock before the app can learn of
// the session.
func (l *Layer) StreamAccepted(worker uint32, ln Handle, t FiveTuple, bind func(s StreamSession)) (StreamSession, error) {
	l.lock()
	defer l.unlock()
	if int(worker) >= len(l.shards) {
		return StreamSession{}, fmt.Errorf("stream accepted: worker %d: %w", worker, ErrInvalidValue)
	}
	lis := l.glisten[ln]
	if lis == nil {
		return StreamSession{}, fmt.Errorf("stream accepted: listener %#x: %w", uint64(ln), ErrAddressNotInUse)
	}
	a := l.apps[lis.App]
	if a == nil || a.detaching {
		return StreamSession{}, fmt.Errorf("stream accepted: app %d: %w", lis.App, ErrNotAttached)
	}
	pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
	if err != nil {
		return StreamSession{}, fmt.Errorf("stream accepted: %w: %w", ErrNoMemory, err)
	}
	if added != nil {
		l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
	}
	h := l.newHandleLocked(worker)
	ss := StreamSession{Handle: h, App: a.id, Pair: pair, Memory: a.mem}
	s := &session{h: h, app: a, kind: kindEstablished, tuple: t, fib: lis.Endpoint.FIB, ifindex: lis.Endpoint.IfIndex, listener: ln, pair: pair}
	bind(ss)
	delete(l.linger, hoKey{fib: s.fib, t: s.tuple})
	l.addEstablishedLocked(s)
	l.notifyLocked(a, Event{Kind: EventAccepted, Handle: h, Listener: ln, Transport: t.Proto,
		Local: tupleLocal(&t), Remote: tupleRemote(&t), Pair: pair})
	return ss, nil
}

// StreamRef names a wire stream session as its transport knows it: its
// handle and its rx fifo. A connection may report its end after its app
// closed the session and the handle went to a new one (of any app); the rx
// fifo, which the layer does not free while the transport holds it
// (StreamKeeper.KeepFifos), tells them apart.
type StreamRef struct {
	Handle Handle
	Rx     *fifo.Fifo
}

// streamLocked returns the established session ref names, or nil.
func (l *Layer) streamLocked(ref StreamRef) *session {
	s := l.sess[ref.Handle]
	if s == nil || s.kind != kindEstablished || s.pair.Rx != ref.Rx {
		return nil
	}
	return s
}

// StreamPeerClosed tells the app of session ref that its peer closed its
// half (a FIN): everything it sent is in the rx fifo; the session stays
// open for sending.
func (l *Layer) StreamPeerClosed(ref StreamRef) error {
	l.lock()
	defer l.unlock()
	s := l.streamLocked(ref)
	if s == nil {
		return fmt.Errorf("peer closed: session %#x: %w", uint64(ref.Handle), ErrNoSession)
	}
	l.notifyLocked(s.app, Event{Kind: EventPeerClosed, Handle: s.h})
	return nil
}

// StreamResetAhead tells the app of session ref that its connection was
// reset (or timed out: err as StreamReset's) while the transport still
// holds data received before that for the session's rx fifo: its writes
// fail now, and StreamReset ends the session once the data is there. The
// session stays.
func (l *Layer) StreamResetAhead(ref StreamRef, err error) error {
	l.lock()
	defer l.unlock()
	s := l.streamLocked(ref)
	if s == nil {
		return fmt.Errorf("reset ahead: session %#x: %w", uint64(ref.Handle), ErrNoSession)
	}
	l.notifyLocked(s.app, Event{Kind: EventResetAhead, Handle: s.h, Err: err})
	return nil
}

// StreamReset ends session ref because the connection was reset (or timed
// out) and tells its app with a reset event; err, when not nil, is why
// (ErrTimedOut: retransmissions or keepalive probes went unanswered), and
// the app reports it instead of a reset.
func (l *Layer) StreamReset(ref StreamRef, err error) error {
	return l.endStream(ref, "reset", &Event{Kind: EventReset, Err: err})
}

// StreamClosed ends session ref because its connection closed (both
// FINs exchanged) before its app closed it, and tells the app, as Closed.
func (l *Layer) StreamClosed(ref StreamRef) error {
	return l.endStream(ref, "closed", &Event{Kind: EventDisconnected})
}

// StreamCloseRequested closes session ref as its app's Disconnect would:
// the app asked for it through its tx fifo (fifo.Fifo.RequestClose).
func (l *Layer) StreamCloseRequested(ref StreamRef) error {
	return l.endStream(ref, "close requested", nil)
}

// endStream ends session ref: the transport ended it and its app is told
// ev, or, with ev nil, its app closed it.
func (l *Layer) endStream(ref StreamRef, what string, ev *Event) error {
	l.lock()
	defer l.unlock()
	s := l.streamLocked(ref)
	if s == nil {
		return fmt.Errorf("%s: session %#x: %w", what, uint64(ref.Handle), ErrNoSession)
	}
	if ev != nil {
		ev.Handle = s.h
		l.notifyLocked(s.app, *ev)
	}
	l.closeSessionLocked(s, ev == nil)
	return nil
}

// keeperLocked returns the datapath as the StreamKeeper of session s: ok
// when s is a TCP session and the datapath keeps stream fifos.
func (l *Layer) keeperLocked(s *session) (k StreamKeeper, ok bool) {
	k, ok = l.cfg.Datapath.(StreamKeeper)
	return k, ok && s.tuple.Proto == TransportTCP
}

// keepFifosLocked wraps the free of session s's fifos for a StreamKeeper.
func (l *Layer) keepFifosLocked(s *session, free func()) func() {
	if k, ok := l.keeperLocked(s); ok {
		return k.KeepFifos(s.h, free)
	}
	return free
}

// StreamCloseWrite closes the sending half of app's stream session h: a
// FIN after what it queued on the wire; for a cut-through TCP session, a
// peer-closed event to the other end, whose reads end with EOF once they
// have what is in the fifo (the app wrote it there before it asked). A
// session of another transport fails with ErrNotSupported.
func (l *Layer) StreamCloseWrite(id AppID, h Handle) error {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	s := l.sess[h]
	if s == nil {
		return fmt.Errorf("close write: session %#x: %w", uint64(h), ErrNoSession)
	}
	if s.app.id != id {
		return fmt.Errorf("close write: session %#x: %w", uint64(h), ErrNotOwner)
	}
	if s.kind == kindCutThrough && s.tuple.Proto == TransportTCP {
		if p := s.peer; p != nil && !s.wrClosed {
			s.wrClosed = true
			l.notifyLocked(p.app, Event{Kind: EventPeerClosed, Handle: p.h, CutThrough: true})
		}
		return nil
	}
	k, ok := l.keeperLocked(s)
	if !ok || s.kind != kindEstablished {
		return fmt.Errorf("close write: session %#x: %w", uint64(h), ErrNotSupported)
	}
	if err := k.CloseWrite(h); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	return nil
}

// lingerLocked keeps closed stream session s's 5-tuple in the global
// tables until the datapath releases it, and reports whether it did.
func (l *Layer) lingerLocked(s *session) bool {
	k, ok := l.keeperLocked(s)
	if !ok {
		return false
	}
	if l.linger == nil {
		l.linger = map[hoKey]*session{}
	}
	key := hoKey{fib: s.fib, t: s.tuple}
	l.linger[key] = s
	k.Linger(s.h, func() {
		l.lock()
		defer l.unlock()
		if l.linger[key] != s {
			return
		}
		delete(l.linger, key)
		l.publishLocked(Change{Op: OpDel, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
	})
	return true
}

// Keepalive is a stream session's TCP keepalive: probes after Idle without
// traffic, every Interval, Count unanswered ones end the session (a reset
// event with ErrTimedOut). Zero fields keep the connection's values.
type Keepalive struct {
	Enabled  bool
	Idle     time.Duration
	Interval time.Duration
	Count    int
}

// StreamKeepaliver is a StreamKeeper whose connections do TCP keepalive.
type StreamKeepaliver interface {
	// SetKeepalive sets stream session h's keepalive. Called under the
	// layer's lock: it must not block.
	SetKeepalive(h Handle, k Keepalive) error
}

// StreamSetKeepalive sets the keepalive of app's stream session h on the
// wire. A cut-through session or one of another transport fails with
// ErrNotSupported.
func (l *Layer) StreamSetKeepalive(id AppID, h Handle, k Keepalive) error {
	l.lock()
	defer l.unlock()
	if _, err := l.appLocked(id); err != nil {
		return fmt.Errorf("set keepalive: %w", err)
	}
	if !flow.KeepaliveValid(k.Idle, k.Interval, k.Count) {
		return fmt.Errorf("set keepalive: idle %v, interval %v, count %d: each 0 (unchanged) or 1 s to %d s (1 to %d probes), as Linux takes them: %w",
			k.Idle, k.Interval, k.Count, flow.KeepaliveMaxSeconds, flow.KeepaliveMaxCount, ErrInvalidValue)
	}
	s := l.sess[h]
	if s == nil {
		return fmt.Errorf("set keepalive: session %#x: %w", uint64(h), ErrNoSession)
	}
	if s.app.id != id {
		return fmt.Errorf("set keepalive: session %#x: %w", uint64(h), ErrNotOwner)
	}
	k8r, ok := l.cfg.Datapath.(StreamKeepaliver)
	if !ok || s.kind != kindEstablished || s.tuple.Proto != TransportTCP {
		return fmt.Errorf("set keepalive: session %#x: %w", uint64(h), ErrNotSupported)
	}
	if err := k8r.SetKeepalive(h, k); err != nil {
		return fmt.Errorf("set keepalive: %w", err)
	}
	return nil
}
