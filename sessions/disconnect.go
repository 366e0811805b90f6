package sessions

import "fmt"

// Disconnect (seed: vnet_disconnect_session) and sessions the peer or the
// transport closed.

// Disconnect closes session h of app (seed: vnet_disconnect_session). A
// handle naming no session fails with ErrNoSession; another app's session
// with ErrNotOwner, and that session is left alone. The peer of a
// cut-through session is told; an established session leaves its worker's
// shard through the worker's mailbox.
//
// A wire stream session the transport ended (StreamClosed, StreamReset) keeps
// its handle and fifos until its app's Disconnect of it, which then
// releases them and succeeds: an app's writes and reads racing the end
// land in memory no other session has (seed: the app's reply to a reset
// or disconnect notification frees the session).
func (l *Layer) Disconnect(id AppID, h Handle) error {
	return l.disconnect(id, h, "disconnect", false)
}

// StreamAbort is Disconnect with a reset, for a TCP session: on the wire
// an RST, what the app queued and was not sent dropped (close(2) with a
// zero SO_LINGER); a cut-through peer gets EventReset (its reads have what
// was queued for them, then ECONNRESET). A session of another transport
// fails with ErrNotSupported; one the transport ended is released as
// Disconnect releases it.
func (l *Layer) StreamAbort(id AppID, h Handle) error {
	return l.disconnect(id, h, "abort", true)
}

// WithdrawConnect closes cut-through session h, which app id opened and
// whose listening app was never told of it (the daemon could not pass it
// the session's segment): the listening app's end goes without an event,
// which it could only keep for a session it will never hear of. A handle
// naming no session of app id fails with ErrNoSession, one that names
// another kind of session, or the listening end, with ErrInvalidValue, and
// that session is left alone.
func (l *Layer) WithdrawConnect(id AppID, h Handle) error {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return fmt.Errorf("withdraw connect: %w", err)
	}
	s := a.sess[h]
	switch {
	case s == nil:
		return fmt.Errorf("withdraw connect: session %#x: %w", uint64(h), ErrNoSession)
	case s.kind != kindCutThrough || !s.opener:
		return fmt.Errorf("withdraw connect: session %#x is no cut-through session this app opened: %w", uint64(h), ErrInvalidValue)
	}
	if p := s.peer; p != nil {
		p.untold = true
	}
	l.closeSessionLocked(s, true)
	return nil
}

func (l *Layer) disconnect(id AppID, h Handle, op string, abort bool) error {
	l.lock()
	defer l.unlock()
	a, err := l.appLocked(id)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s := l.sess[h]
	if s == nil {
		if e := a.ended[h]; e != nil {
			delete(a.ended, h)
			l.releaseEndedLocked(e)
			return nil
		}
		if a.listensOnLocked(h) {
			return fmt.Errorf("%s: handle %#x is a listener of this app, not a session: unbind it instead: %w", op, uint64(h), ErrNoSession)
		}
		return fmt.Errorf("%s: session %#x: %w", op, uint64(h), ErrNoSession)
	}
	if s.app.id != id {
		return fmt.Errorf("%s: session %#x: %w", op, uint64(h), ErrNotOwner)
	}
	if abort {
		if s.tuple.Proto != TransportTCP {
			return fmt.Errorf("%s: session %#x: %w", op, uint64(h), ErrNotSupported)
		}
		switch s.kind {
		case kindCutThrough:
			s.aborted = true
		case kindEstablished:
			if k, ok := l.keeperLocked(s); ok {
				k.ResetOnClose(h)
			}
		}
		// A half-open session's close resets what its handshake made.
	}
	l.closeSessionLocked(s, true)
	return nil
}

// closeSessionLocked removes s from every table and frees what it holds.
// byApp says the app closed it: the datapath is told; a cut-through peer is
// told either way.
func (l *Layer) closeSessionLocked(s *session, byApp bool) {
	l.unlinkSessLocked(s)
	switch s.kind {
	case kindHalfOpen:
		l.dropHalfOpenLocked(s)
		l.freeHandleLocked(s.h)
		if byApp && l.cfg.Datapath != nil {
			l.cfg.Datapath.Close(s.h, s.tuple)
		}
	case kindEstablished:
		h := s.h
		l.shards[h.Worker()].Post(func(sh *Shard) { sh.Del(h) })
		if !l.lingerLocked(s) {
			l.publishLocked(Change{Op: OpDel, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: h})
		}
		if byApp && l.cfg.Datapath != nil {
			l.cfg.Datapath.Close(h, s.tuple)
		}
		if _, kept := l.keeperLocked(s); kept && !byApp && !s.app.detaching {
			s.app.ended[h] = s // until the app's Disconnect
			return
		}
		l.releaseEndedLocked(s)
	case kindCutThrough:
		l.freeHandleLocked(s.h)
		if p := s.peer; p != nil {
			p.peer, s.peer = nil, nil
			delete(l.sess, p.h)
			l.sessOrderOK = false
			delete(p.app.sess, p.h)
			l.freeHandleLocked(p.h)
			// A stream's end closed with data its app left unread resets
			// the peer's end, as close(2) of a TCP socket with unread data
			// does (the peer reads what was queued, then ECONNRESET);
			// otherwise the peer reads what was queued, then EOF. An
			// abort (StreamAbort) resets it too.
			kind := EventDisconnected
			if s.tuple.Proto == TransportTCP && (s.aborted || s.pair.Rx != nil && s.pair.Rx.Queued()) {
				kind = EventReset
			}
			if !p.untold {
				l.notifyLocked(p.app, Event{Kind: kind, Handle: p.h, CutThrough: true})
			}
			l.ct--
			opener := p
			if s.opener {
				opener = s
			}
			opener.app.ct--
			l.unchargeLocked(opener.app, opener.charged)
		}
		_ = s.ct.Close()
	}
}

// releaseEndedLocked gives back what established session s held once
// nobody uses it: its handle, after its worker dropped it (so that a new
// session cannot take the slot while the old one is still in the shard),
// and its fifos, after the datapath let them go (unless the app's whole
// memory is going).
func (l *Layer) releaseEndedLocked(s *session) {
	h := s.h
	// The pool's own lock, not the layer's: the worker never waits for a
	// control-plane call. (An established session's handle is of a
	// datapath worker's pool, never a counter's.)
	p := l.pool(h.Worker())
	l.shards[h.Worker()].Post(func(*Shard) { p.put(h.Index()) })
	if !s.app.detaching {
		mem, pair := s.app.mem, s.pair
		l.reclaimLocked(l.keepFifosLocked(s, func() { mem.FreePair(pair) }))
	}
}
