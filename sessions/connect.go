package sessions

import (
	"errors"
	"fmt"
	"net/netip"
)

// Connect (seed: vnet_connect_i): cut-through sessions, half-open
// sessions handed to the datapath, and their claim or failure.

// ConnectResult says how a connect went on.
type ConnectResult struct {
	Handle     Handle // the app's session: cut-through, or half-open
	CutThrough bool
	// Local is the local address and port the datapath chose for a
	// session to a remote peer (zero for cut-through).
	Local netip.AddrPort
}

// Connect connects app to e (seed: vnet_connect_i). In order:
//   - the zero address is refused (ErrInvalidValue), an IPv4-mapped one
//     (::ffff:0.0.0.0) too, before the app is looked up;
//   - port 0 skips every step that makes a cut-through session (no app
//     listens on it; drop rules still apply): it is refused on a loopback
//     address and goes to the Datapath otherwise, as a kernel socket's
//     connect to port 0 goes to the peer (TCP's refused with a reset,
//     UDP's connected);
//   - an app with local scope looks e up in its namespace's local table:
//     a drop rule fails the connect (ErrFiltered); a rule forwarding to
//     another app that has a listener for e makes a cut-through session
//     with it; an allow rule, or a forward rule whose app has no such
//     listener, goes on to the table's listeners; another app's zero-address
//     listener of e's port (whatever e's address: see the package doc), or
//     a proxy's every-port entry, makes a cut-through session; a match
//     naming the connecting app itself (a proxy) is skipped;
//   - a loopback destination that found nothing fails (ErrLocalConnect);
//   - an app without global scope can go no further (ErrScope);
//   - the FIB's global rules: drop fails (ErrFiltered), forwarding to
//     another app with a listener for e makes a cut-through session, allow
//     and a forward to an app without one go on;
//   - a destination that is an address of this host with a global listener
//     (other than the app's own proxy entry) makes a cut-through session;
//   - anything else becomes a half-open session handed to the Datapath.
//
// A rule that acts on the connect (drop, allow, or a forward that makes
// the cut-through) counts a hit.
func (l *Layer) Connect(id AppID, e Endpoint, opaque uint32) (ConnectResult, error) {
	l.lock()
	defer l.unlock()
	if e.Normalized(e.Family()).IsZero() {
		return ConnectResult{}, fmt.Errorf("connect: zero address: %w", ErrInvalidValue)
	}
	a, err := l.appLocked(id)
	if err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	if err := validEndpoint(e); err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	e = a.endpointFor(e)
	rt := FiveTuple{Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}
	// No app listens on port 0 (a bind of port 0 gets another), and the
	// tables' entries of port 0 are a proxy's every-port ones: a connect
	// to port 0 makes no cut-through session, and goes where a kernel
	// socket's connect goes (refused by the peer, or on the loopback
	// address; a UDP session to the wire).
	port0 := e.Port == 0

	if a.hasLocal() {
		target, ln, m := l.localLookupLocked(a, e, &rt)
		switch {
		case m.Action == RuleDrop:
			m.Hits.Add(1)
			return ConnectResult{}, fmt.Errorf("connect %s: local rule %d: %w", e.URI(), m.ID, ErrFiltered)
		case target != nil && target != a && !port0:
			m.Hits.Add(1)
			return l.cutThroughLocked(a, target, ln, e, opaque)
		}
	}
	if !a.hasGlobal() {
		if EndpointIsLocal(e) {
			// Nothing of the local table took it, and the global one
			// (a listener bound to the loopback address) is not this
			// app's to reach.
			return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), ErrLocalConnect)
		}
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), ErrScope)
	}
	if m, ok := l.rules.Load().table(ruleTableID{fib: e.FIB}).Match(&rt); ok {
		switch m.Action {
		case RuleDrop:
			m.Hits.Add(1)
			return ConnectResult{}, fmt.Errorf("connect %s: rule %d: %w", e.URI(), m.ID, ErrFiltered)
		case RuleAllow:
			m.Hits.Add(1)
		case RuleForward:
			// The rule's app is of the rule's namespace (AddRule): its
			// namespace's connects alone go to it, as namespaces are
			// isolated; another namespace on the same FIB shares the
			// table, and its connects take the normal lookup.
			if t := l.apps[m.App]; t != nil && t != a && t.ns == a.ns && !port0 {
				if ln := l.appListenerLocked(t, e); ln != nil {
					m.Hits.Add(1)
					return l.cutThroughLocked(a, t, ln, e, opaque)
				}
			}
		}
	}
	if EndpointIsLocal(e) {
		// A listener bound to the loopback address itself
		// (tcp://127.0.0.1:80) is in the global table: a connect to it
		// is cut-through, as one to the host's own address is below,
		// after the global rules, as that one.
		if !port0 {
			if r, ok, err := l.globalCutThroughLocked(a, e, opaque); ok {
				return r, err
			}
		}
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), ErrLocalConnect)
	}
	if l.cfg.View.IsLocal(e.FIB, e.Addr) && !port0 {
		if r, ok, err := l.globalCutThroughLocked(a, e, opaque); ok {
			return r, err
		}
	}
	return l.openLocked(a, e, opaque)
}

// globalCutThroughLocked makes the connect of app a to e, an address of
// this host, cut-through to the global listener that serves e, if there
// is one (ok).
func (l *Layer) globalCutThroughLocked(a *app, e Endpoint, opaque uint32) (r ConnectResult, ok bool, err error) {
	k := listenTuple(e)
	ln := l.listeners.Load().set(e.FIB).lookup(k.Proto, k.Family, &k.Local, k.LocalPort)
	if ln == nil {
		return ConnectResult{}, false, nil
	}
	t := l.apps[ln.App]
	if t == nil || t == a && ln.Proxy {
		return ConnectResult{}, false, nil
	}
	r, err = l.cutThroughLocked(a, t, ln, e, opaque)
	return r, true, err
}

// ConnectURI parses uri and connects to it.
func (l *Layer) ConnectURI(id AppID, uri string, opaque uint32) (ConnectResult, error) {
	e, err := ParseURI(uri)
	if err != nil {
		return ConnectResult{}, fmt.Errorf("connect: %w", err)
	}
	return l.Connect(id, e, opaque)
}

// localLookupLocked looks a connect up in the app's local table (seed:
// session_lookup_local_endpoint): rules first, then the zero-address
// listener of the port, then a proxy's every-port entry. It returns the
// app found and its listener (if any), and the rule that decided: a drop
// (no app then), or the forward that found the app. An allow rule, or a
// forward to an app without a listener for e, lets the listeners decide
// (m is zero then).
func (l *Layer) localLookupLocked(a *app, e Endpoint, rt *FiveTuple) (*app, *Listener, RuleMatch) {
	if m, ok := l.rules.Load().table(ruleTableID{local: true, ns: a.ns.cfg.ID}).Match(rt); ok {
		switch m.Action {
		case RuleDrop:
			return nil, nil, m
		case RuleAllow:
			m.Hits.Add(1)
		case RuleForward:
			if t := l.apps[m.App]; t != nil {
				if ln := l.appListenerLocked(t, e); ln != nil {
					return t, ln, m
				}
			}
		}
	}
	k := keyOf(Endpoint{Transport: e.Transport, Addr: e.Addr, Port: e.Port})
	k.addr = [16]byte{}
	ln := a.ns.local[k]
	if ln == nil {
		k.port = 0
		ln = a.ns.local[k]
	}
	if ln == nil {
		return nil, nil, RuleMatch{}
	}
	return l.apps[ln.App], ln, RuleMatch{}
}

// appListenerLocked finds t's listener that would serve e, local table
// first, or nil.
func (l *Layer) appListenerLocked(t *app, e Endpoint) *Listener {
	k := keyOf(e)
	for _, kk := range []listenKey{{port: k.port, proto: k.proto, fam: k.fam}, {proto: k.proto, fam: k.fam}} {
		if ln := t.local[kk]; ln != nil {
			return ln
		}
	}
	for _, ln := range t.global {
		le := ln.Endpoint
		if le.Transport == e.Transport && le.Family() == e.Family() && (le.Port == e.Port || le.Port == 0) &&
			(le.IsZero() || le.Addr == e.Addr) {
			return ln
		}
	}
	return nil
}

// cutThroughLocked makes a cut-through session between client a and server
// t: one segment holding a fifo per direction, an accept event for the
// server and a connected event for the client.
func (l *Layer) cutThroughLocked(a, t *app, ln *Listener, e Endpoint, opaque uint32) (ConnectResult, error) {
	if err := l.ctRoomLocked(a); err != nil {
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), err)
	}
	// Both fifos count against the opener's memory, as its own sessions'
	// do: the cut-through segment is memory it holds and can fill.
	charge := uint64(t.opts.RxFifoSize) + uint64(a.opts.RxFifoSize)
	if err := l.chargeLocked(a, charge); err != nil {
		return ConnectResult{}, fmt.Errorf("connect %s: cut-through: %w", e.URI(), err)
	}
	name := fmt.Sprintf("ct-%d-%d-%d", a.id, t.id, l.seq)
	ct, err := l.cfg.Memory.NewCutThrough(name, t.opts.RxFifoSize, a.opts.RxFifoSize)
	if err != nil {
		l.unchargeLocked(a, charge)
		return ConnectResult{}, fmt.Errorf("connect %s: cut-through: %w: %w", e.URI(), ErrNoMemory, err)
	}
	lh := InvalidHandle
	if ln != nil {
		lh = ln.Handle
	}
	ch := l.newHandleLocked(CutThroughWorker)
	sh := l.newHandleLocked(CutThroughWorker)
	cs := &session{h: ch, app: a, kind: kindCutThrough, fib: e.FIB, ifindex: e.IfIndex, opaque: opaque, pair: ct.Client(), ct: ct, opener: true, charged: charge}
	ss := &session{h: sh, app: t, kind: kindCutThrough, fib: e.FIB, ifindex: e.IfIndex, listener: lh, pair: ct.Server(), ct: ct}
	cs.peer, ss.peer = ss, cs
	cs.tuple = FiveTuple{Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}
	ss.tuple = FiveTuple{Local: AddrBytes(e.Addr), LocalPort: e.Port, Proto: e.Transport, Family: e.Family()}
	l.sess[ch], l.sess[sh] = cs, ss
	l.sessOrderOK = false
	a.sess[ch], t.sess[sh] = cs, ss
	l.ct++
	a.ct++
	l.notifyLocked(t, Event{Kind: EventAccepted, Handle: sh, Listener: lh, Transport: e.Transport,
		Local: netip.AddrPortFrom(e.Addr, e.Port), CutThrough: true, Pair: ss.pair})
	l.notifyLocked(a, Event{Kind: EventConnected, Handle: ch, Opaque: opaque, Transport: e.Transport,
		Remote: netip.AddrPortFrom(e.Addr, e.Port), CutThrough: true, Pair: cs.pair})
	return ConnectResult{Handle: ch, CutThrough: true}, nil
}

// ctRoomLocked reports whether one more cut-through session opened by
// app a stays within the bounds (Config.MaxCutThrough, and
// MaxCutThroughPerApp on the sessions a opened). The listening app's
// sessions are not bounded by its own count: a client that fills its own
// bound must not keep other clients from the listener.
func (l *Layer) ctRoomLocked(a *app) error {
	if m := l.cfg.MaxCutThrough; m > 0 && l.ct >= m {
		return fmt.Errorf("%d cut-through sessions, the daemon's limit: %w", l.ct, ErrLimit)
	}
	if m := l.cfg.MaxCutThroughPerApp; m > 0 && a.ct >= m {
		return fmt.Errorf("the app opened %d cut-through sessions, its limit: %w", a.ct, ErrLimit)
	}
	return nil
}

// chargeLocked counts bytes against app a's fifo memory bound, when its
// memory keeps one (MemoryCharger).
func (l *Layer) chargeLocked(a *app, bytes uint64) error {
	if c, ok := a.mem.(MemoryCharger); ok {
		if err := c.Charge(bytes); err != nil {
			if errors.Is(err, ErrNoMemory) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrNoMemory, err)
		}
	}
	return nil
}

// unchargeLocked gives back bytes chargeLocked counted for app a.
func (l *Layer) unchargeLocked(a *app, bytes uint64) {
	if c, ok := a.mem.(MemoryCharger); ok {
		c.Uncharge(bytes)
	}
}

// openLocked hands a connect to the datapath as a half-open session.
func (l *Layer) openLocked(a *app, e Endpoint, opaque uint32) (ConnectResult, error) {
	if l.cfg.Datapath == nil {
		return ConnectResult{}, fmt.Errorf("connect %s: no datapath: %w", e.URI(), ErrConnect)
	}
	if err := l.portRoomLocked(a); err != nil {
		return ConnectResult{}, fmt.Errorf("connect %s: %w", e.URI(), err)
	}
	h := l.newHandleLocked(HalfOpenWorker)
	local, err := l.cfg.Datapath.Open(OpenRequest{HalfOpen: h, App: a.id, Namespace: a.ns.cfg.ID, Remote: e, Opaque: opaque})
	if err != nil {
		l.freeHandleLocked(h)
		return ConnectResult{}, fmt.Errorf("connect %s: %w: %w", e.URI(), ErrConnect, err)
	}
	la := local.Addr().Unmap()
	if la.IsValid() && familyOf(la) != e.Family() {
		l.freeHandleLocked(h)
		l.cfg.Datapath.Close(h, FiveTuple{})
		return ConnectResult{}, fmt.Errorf("connect %s: datapath chose local address %v of another family: %w", e.URI(), la, ErrConnect)
	}
	t := FiveTuple{Local: AddrBytes(la), LocalPort: local.Port(), Remote: AddrBytes(e.Addr), RemotePort: e.Port, Proto: e.Transport, Family: e.Family()}
	key := hoKey{fib: e.FIB, t: t}
	_, dup := l.halfOpen[key]
	if dup {
		l.freeHandleLocked(h)
		l.cfg.Datapath.Close(h, t)
		return ConnectResult{}, fmt.Errorf("connect %s: 5-tuple from %v already connecting: %w", e.URI(), local, ErrAddressInUse)
	}
	s := &session{h: h, app: a, kind: kindHalfOpen, tuple: t, fib: e.FIB, ifindex: e.IfIndex, opaque: opaque, wire: true}
	l.linkSessLocked(s)
	l.halfOpen[key] = h
	l.publishLocked(Change{Op: OpAdd, Kind: KindEstablished, IfIndex: e.IfIndex, FIB: e.FIB, Tuple: t, Handle: h})
	return ConnectResult{Handle: h, Local: netip.AddrPortFrom(la, local.Port())}, nil
}

// Connected turns half-open session ho into an established session owned by
// worker, allocates its fifos from the app's segment manager, posts it to
// the worker's shard and tells the app. It returns the session's handle.
func (l *Layer) Connected(worker uint32, ho Handle) (Handle, error) {
	l.lock()
	defer l.unlock()
	if int(worker) >= len(l.shards) {
		return InvalidHandle, fmt.Errorf("connected: worker %d: %w", worker, ErrInvalidValue)
	}
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return InvalidHandle, fmt.Errorf("connected: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	a := s.app
	pair, added, err := a.mem.AllocPair(a.opts.RxFifoSize, a.opts.TxFifoSize)
	if err != nil {
		l.failHalfOpenLocked(s, fmt.Errorf("%w: %w", ErrNoMemory, err))
		return InvalidHandle, fmt.Errorf("connected: %w: %w", ErrNoMemory, err)
	}
	l.forgetHalfOpenLocked(s) // the Add below replaces its entry
	if added != nil {
		l.notifyLocked(a, Event{Kind: EventSegmentAdded, Segment: added})
	}
	h := l.newHandleLocked(worker)
	ns := &session{h: h, app: a, kind: kindEstablished, tuple: s.tuple, fib: s.fib, ifindex: s.ifindex, opaque: s.opaque, pair: pair, wire: s.wire}
	l.addEstablishedLocked(ns)
	l.notifyLocked(a, Event{Kind: EventConnected, Handle: h, Opaque: s.opaque, Transport: s.tuple.Proto,
		Local: tupleLocal(&s.tuple), Remote: tupleRemote(&s.tuple), Pair: pair})
	return h, nil
}

// ConnectFailed ends half-open session ho and tells its app why.
func (l *Layer) ConnectFailed(ho Handle, why error) error {
	l.lock()
	defer l.unlock()
	s := l.sess[ho]
	if s == nil || s.kind != kindHalfOpen {
		return fmt.Errorf("connect failed: half-open %#x: %w", uint64(ho), ErrNoSession)
	}
	l.failHalfOpenLocked(s, why)
	return nil
}

func (l *Layer) failHalfOpenLocked(s *session, why error) {
	l.dropHalfOpenLocked(s)
	l.notifyLocked(s.app, Event{Kind: EventConnectFailed, Handle: s.h, Opaque: s.opaque, Transport: s.tuple.Proto,
		Remote: tupleRemote(&s.tuple), Err: why})
	l.freeHandleLocked(s.h)
}

// dropHalfOpenLocked removes a half-open entry from the tables (not its
// handle from the pool).
func (l *Layer) dropHalfOpenLocked(s *session) {
	l.forgetHalfOpenLocked(s)
	l.publishLocked(Change{Op: OpDel, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
}

// forgetHalfOpenLocked removes a half-open entry from the tables and
// publishes nothing: for a half-open that becomes established, whose Add
// of the same 5-tuple replaces the entry. A Del then an Add would leave
// the datapath's maps without the 5-tuple between the two, and a segment
// of the peer arriving then would reach the kernel, which has no socket
// for it and answers with a reset.
func (l *Layer) forgetHalfOpenLocked(s *session) {
	delete(l.halfOpen, hoKey{fib: s.fib, t: s.tuple})
	l.unlinkSessLocked(s)
}

func (l *Layer) addEstablishedLocked(s *session) {
	l.linkSessLocked(s)
	ss := &ShardSession{Handle: s.h, App: s.app.id, Tuple: s.tuple, FIB: s.fib, IfIndex: s.ifindex, Pair: s.pair, Memory: s.app.mem}
	l.shards[s.h.Worker()].Post(func(sh *Shard) { sh.Add(ss) })
	l.publishLocked(Change{Op: OpAdd, Kind: KindEstablished, IfIndex: s.ifindex, FIB: s.fib, Tuple: s.tuple, Handle: s.h})
}

func tupleLocal(t *FiveTuple) netip.AddrPort {
	return netip.AddrPortFrom(AddrFrom(t.Local, t.Family), t.LocalPort)
}

func tupleRemote(t *FiveTuple) netip.AddrPort {
	return netip.AddrPortFrom(AddrFrom(t.Remote, t.Family), t.RemotePort)
}
