package sessions

import (
	"fmt"
	"maps"
	"slices"
)

// CheckInvariants drains every shard (as their owners would) and checks
// the Layer's tables against each other. For tests.
func (l *Layer) CheckInvariants() error {
	for _, s := range l.shards {
		s.Drain()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessOrderOK {
		// The sorted handles pages are taken from, while marked
		// current, are the table's.
		if want := slices.Sorted(maps.Keys(l.sess)); !slices.Equal(l.sessOrder, want) {
			return fmt.Errorf("sessOrder marked current: %d handles, the table %d", len(l.sessOrder), len(want))
		}
	}
	nsApps := map[*namespace]int{}
	opened := 0
	owners := map[uint32]int{}
	for id, a := range l.apps {
		if a.id != id || l.byClient[a.opts.ClientID] != a {
			return fmt.Errorf("app %d: index broken", id)
		}
		if l.nss[a.ns.cfg.ID] != a.ns {
			return fmt.Errorf("app %d: namespace %q gone", id, a.ns.cfg.ID)
		}
		nsApps[a.ns]++
		for h, ln := range a.global {
			if l.glisten[h] != ln || ln.App != id {
				return fmt.Errorf("app %d: global listener %#x not in the table", id, h)
			}
		}
		for k, ln := range a.local {
			if a.ns.local[k] != ln || ln.App != id {
				return fmt.Errorf("app %d: local listener %v not in its namespace table", id, ln.Endpoint)
			}
		}
		ct, ports := 0, 0
		for h, s := range a.sess {
			if l.sess[h] != s || s.app != a {
				return fmt.Errorf("app %d: session %#x not in the table", id, h)
			}
			if s.kind == kindCutThrough && s.opener {
				ct++
			}
			if s.wire {
				if s.kind == kindCutThrough {
					return fmt.Errorf("app %d: cut-through session %#x counted as a wire connect", id, h)
				}
				ports++
			}
		}
		if ct != a.ct {
			return fmt.Errorf("app %d: counts %d cut-through sessions it opened, has %d", id, a.ct, ct)
		}
		opened += ct
		for _, ln := range a.global {
			if !ln.Proxy {
				ports++
			}
		}
		if ports != a.ports {
			return fmt.Errorf("app %d: counts %d ports, holds %d", id, a.ports, ports)
		}
		if a.opts.Owner != 0 && ports != 0 {
			owners[a.opts.Owner] += ports
		}
	}
	if opened != l.ct {
		return fmt.Errorf("%d cut-through sessions opened, %d counted", opened, l.ct)
	}
	if !maps.Equal(owners, l.owners) {
		return fmt.Errorf("ports by owner %v, counted %v", owners, l.owners)
	}
	if len(l.byClient) != len(l.apps) {
		return fmt.Errorf("%d clients for %d apps", len(l.byClient), len(l.apps))
	}
	for _, ns := range l.nss {
		if ns.apps != nsApps[ns] {
			return fmt.Errorf("namespace %q counts %d apps, has %d", ns.cfg.ID, ns.apps, nsApps[ns])
		}
		for k, ln := range ns.local {
			a := l.apps[ln.App]
			if a == nil || a.local[k] != ln || a.ns != ns {
				return fmt.Errorf("local listener %v of app %d without a live owner", ln.Endpoint, ln.App)
			}
		}
	}
	published := 0
	for fib, set := range l.listeners.Load().fibsOrNil() {
		for _, ln := range set.all(nil) {
			published++
			if l.glisten[ln.Handle] != ln || ln.Endpoint.FIB != fib {
				return fmt.Errorf("published listener %#x not in the table", ln.Handle)
			}
			if a := l.apps[ln.App]; a == nil || a.global[ln.Handle] != ln {
				return fmt.Errorf("published listener %#x of app %d without a live owner", ln.Handle, ln.App)
			}
		}
	}
	if published != len(l.glisten) {
		return fmt.Errorf("%d listeners published, %d in the table", published, len(l.glisten))
	}
	perWorker := map[uint32]int{}
	halfOpen := 0
	for h, s := range l.sess {
		if s.h != h {
			return fmt.Errorf("session %#x filed under %#x", s.h, h)
		}
		a := l.apps[s.app.id]
		if a != s.app || a.sess[h] != s {
			return fmt.Errorf("session %#x without a live owner", h)
		}
		_, inHO := l.halfOpen[hoKey{fib: s.fib, t: s.tuple}]
		switch s.kind {
		case kindHalfOpen:
			halfOpen++
			if h.Worker() != HalfOpenWorker || !inHO || l.halfOpen[hoKey{fib: s.fib, t: s.tuple}] != h {
				return fmt.Errorf("half-open %#x not in the half-open table", h)
			}
		case kindEstablished:
			if inHO {
				return fmt.Errorf("established %#x also in the half-open table", h)
			}
			if int(h.Worker()) >= len(l.shards) {
				return fmt.Errorf("established %#x on no worker", h)
			}
			ss := l.shards[h.Worker()].Get(h.Index())
			if ss == nil || ss.Handle != h || ss.Tuple != s.tuple || ss.FIB != s.fib {
				return fmt.Errorf("established %#x not in its shard", h)
			}
			perWorker[h.Worker()]++
		case kindCutThrough:
			if h.Worker() != CutThroughWorker || s.peer == nil || s.peer.peer != s || l.sess[s.peer.h] != s.peer {
				return fmt.Errorf("cut-through %#x without its peer", h)
			}
			if inHO {
				return fmt.Errorf("cut-through %#x in the half-open table", h)
			}
		}
	}
	if halfOpen != len(l.halfOpen) {
		return fmt.Errorf("%d half-open sessions, %d half-open entries", halfOpen, len(l.halfOpen))
	}
	for w, sh := range l.shards {
		if sh.Len() != perWorker[uint32(w)] {
			return fmt.Errorf("shard %d holds %d sessions, want %d", w, sh.Len(), perWorker[uint32(w)])
		}
	}
	type mk struct {
		tr       Transport
		lcl, rmt string
		lp, rp   uint16
		sc       Scope
		ns       string
	}
	matches := map[mk]uint32{}
	for _, r := range l.ruleList {
		if r.Action == RuleForward && l.apps[r.App] == nil {
			return fmt.Errorf("rule %d forwards to detached app %d", r.ID, r.App)
		}
		if r.Action == RuleForward && l.apps[r.App].ns.cfg.ID != r.Namespace {
			return fmt.Errorf("rule %d of namespace %q forwards to app %d of namespace %q", r.ID, r.Namespace, r.App, l.apps[r.App].ns.cfg.ID)
		}
		k := mk{r.Transport, r.Local.String(), r.Remote.String(), r.LocalPort, r.RemotePort, r.Scope, r.Namespace}
		if old, dup := matches[k]; dup {
			return fmt.Errorf("rules %d and %d match the same", old, r.ID)
		}
		matches[k] = r.ID
		if l.ruleHits[r.ID] == nil {
			return fmt.Errorf("rule %d has no counter", r.ID)
		}
	}
	if len(l.ruleHits) != len(l.ruleList) {
		return fmt.Errorf("%d rule counters for %d rules", len(l.ruleHits), len(l.ruleList))
	}
	n := 0
	if p := l.rules.Load(); p != nil {
		for _, t := range p.tables {
			n += t.Len()
		}
	}
	want := 0
	for _, r := range l.ruleList {
		if l.nss[r.Namespace] == nil {
			continue
		}
		if r.Scope&ScopeLocal != 0 {
			want++
		}
		if r.Scope&ScopeGlobal != 0 {
			ns := l.nss[r.Namespace]
			fams := r.families()
			want++
			if len(fams) == 2 && ns.cfg.FIB4 != ns.cfg.FIB6 {
				want++
			}
		}
	}
	if n != want {
		return fmt.Errorf("published rule tables hold %d rules, the list makes %d", n, want)
	}
	return nil
}

func (p *listenerSnap) fibsOrNil() map[FIBID]*listenerSet {
	if p == nil {
		return nil
	}
	return p.fibs
}

// RuleTableIndexed reports whether t's family fam part has a remote-prefix
// index.
func RuleTableIndexed(t *RuleTable, fam uint8) bool {
	return t != nil && t.fams[famIndex(fam)].first != nil
}

// PostponedEvents returns what a FifoMemory app's memory holds for a full
// event queue: events waiting and events lost.
func PostponedEvents(am AppMemory) (int, uint64) {
	return am.(*fifoApp).Postponed()
}

// CheckHandles checks the handle pools against the tables: no index is
// free twice or beyond what the pool gave out, and no live session's
// handle, nor one of a session held for its app's close (an app's ended
// set), is free. Call after CheckInvariants, which drains the shards.
func (l *Layer) CheckHandles() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	free := map[Handle]bool{}
	for w, p := range l.pools {
		for _, i := range p.free {
			h := MakeHandle(w, i)
			if free[h] || i >= p.next {
				return fmt.Errorf("handle %#x free twice or never given out (pool %d gave %d)", uint64(h), w, p.next)
			}
			free[h] = true
		}
	}
	for h := range l.sess {
		if free[h] {
			return fmt.Errorf("live session %#x has a free handle", uint64(h))
		}
	}
	for _, a := range l.apps {
		for h, s := range a.ended {
			if s.h != h || l.sess[h] != nil || free[h] {
				return fmt.Errorf("app %d: ended session %#x is live again or its handle free", a.id, uint64(h))
			}
		}
	}
	return nil
}

// HandlesInUse is how many handles the workers' pools gave out and did not
// get back, and how many sessions have a handle of a counter (half-open,
// cut-through).
func (l *Layer) HandlesInUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for w, p := range l.pools {
		if !serialWorker(w) {
			n += int(p.next) - len(p.free)
			if w == 0 {
				n-- // index 0, never given (pool)
			}
		}
	}
	for h := range l.sess {
		if serialWorker(h.Worker()) {
			n++
		}
	}
	return n
}

// Ended returns the handles of app id's sessions held for its close.
func (l *Layer) Ended(id AppID) []Handle {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.apps[id]
	if a == nil {
		return nil
	}
	return slices.Collect(maps.Keys(a.ended))
}

// HoldLock takes the layer's lock, as a long control-plane call holds it,
// and returns its release.
func (l *Layer) HoldLock() func() {
	l.mu.Lock()
	return l.mu.Unlock
}
