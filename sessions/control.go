package sessions

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// --- rules ---

// AddRule adds a rule and returns its ID. The rule's namespace must
// exist; a forward rule must name an app attached to that same namespace
// (ErrNotInNamespace otherwise: namespaces are isolated, so a rule never
// hands a connection to another namespace's app); a rule matching exactly
// what an existing rule matches in the same tables (everything but action,
// app and tag) is refused with ErrInvalidValue.
func (l *Layer) AddRule(r Rule) (uint32, error) {
	ids, err := l.AddRules([]Rule{r})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// AddRules adds rules in one step (all or none) and returns their IDs.
func (l *Layer) AddRules(rs []Rule) ([]uint32, error) { return l.ReplaceRules(nil, rs) }

// ReplaceRules deletes the rules del names and adds rs in one step, and
// returns the IDs of rs: if any of rs is refused (as AddRule refuses it,
// the rules of del already gone), nothing changes, so that a set of rules
// never leaves a gap while it is replaced, nor a bad rule in a new set
// the old set. A rule of rs equal to one of del (its match, action, app
// and tag) is that rule still: it keeps its ID and hits. IDs of del that
// name no rule (deleted meanwhile) are passed over.
func (l *Layer) ReplaceRules(del []uint32, rs []Rule) ([]uint32, error) {
	l.lock()
	defer l.unlock()
	gone := make(map[uint32]bool, len(del))
	for _, id := range del {
		gone[id] = true
	}
	ids := make([]uint32, 0, len(rs))
	add := make([]RuleInfo, 0, len(rs))
	type matchKey struct {
		Transport          Transport
		Local, Remote      netip.Prefix
		LocalPort, RmtPort uint16
		Scope              Scope
		Namespace          string
	}
	keyOf := func(r Rule) matchKey {
		return matchKey{r.Transport, r.Local, r.Remote, r.LocalPort, r.RemotePort, r.Scope, r.Namespace}
	}
	have := make(map[matchKey]uint32, len(l.ruleList)+len(rs))
	same := make(map[Rule]uint32, len(del)) // the rules of del, by what they are
	for _, r := range l.ruleList {
		if gone[r.ID] {
			same[r.Rule] = r.ID
			continue
		}
		have[keyOf(r.Rule)] = r.ID
	}
	kept := make(map[uint32]bool, len(del))
	batch := make(map[matchKey]bool, len(rs)) // the matches of rs, which have no ids yet
	next := l.nextRule
	for _, r := range rs {
		// A rule is named by its words: the index in rs is no id.
		what := "add rule " + r.words()
		r, err := r.normalize()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if _, ok := l.nss[r.Namespace]; !ok {
			return nil, fmt.Errorf("%s: namespace %q: %w", what, r.Namespace, ErrInvalidNamespace)
		}
		if r.Action == RuleForward {
			t := l.apps[r.App]
			if t == nil {
				return nil, fmt.Errorf("%s: forward to app %d: %w", what, r.App, ErrNotAttached)
			}
			if t.ns.cfg.ID != r.Namespace {
				return nil, fmt.Errorf("%s: forward to app %d of namespace %q from a rule of namespace %q: %w",
					what, r.App, t.ns.cfg.ID, r.Namespace, ErrNotInNamespace)
			}
		}
		if batch[keyOf(r)] {
			return nil, fmt.Errorf("%s: another rule added with it matches the same in the same tables: %w", what, ErrInvalidValue)
		}
		if old, dup := have[keyOf(r)]; dup {
			return nil, fmt.Errorf("%s: rule %d already matches the same in the same tables (delete it first): %w", what, old, ErrInvalidValue)
		}
		batch[keyOf(r)] = true
		if id, ok := same[r]; ok {
			kept[id] = true
			ids = append(ids, id)
			continue
		}
		add = append(add, RuleInfo{ID: next, Rule: r})
		ids = append(ids, next)
		next++
	}
	l.nextRule = next
	if len(gone) > 0 {
		l.ruleList = slices.DeleteFunc(l.ruleList, func(r RuleInfo) bool { return gone[r.ID] && !kept[r.ID] })
	}
	for _, r := range add {
		l.ruleHits[r.ID] = new(RuleHits)
	}
	l.ruleList = append(l.ruleList, add...)
	l.publishRulesLocked()
	return ids, nil
}

// DelRule deletes the rule with the given ID.
func (l *Layer) DelRule(id uint32) error {
	return l.delRules(func(r RuleInfo) bool { return r.ID == id }, fmt.Sprintf("id %d", id))
}

// DelRulesByTag deletes every rule with tag (non-empty) and returns how many
// went; none is ErrNoRule.
func (l *Layer) DelRulesByTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("delete rules: empty tag: %w", ErrInvalidValue)
	}
	return l.delRules(func(r RuleInfo) bool { return r.Tag == tag }, fmt.Sprintf("tag %q", tag))
}

// DelRuleMatching deletes the rules matching exactly what r matches
// (transport, prefixes, ports, scope, namespace; action, app and tag are
// ignored).
func (l *Layer) DelRuleMatching(r Rule) error {
	r, err := r.normalize()
	if err != nil {
		return fmt.Errorf("delete rule: %w", err)
	}
	return l.delRules(func(x RuleInfo) bool { return x.sameMatch(r) }, "matching")
}

func (l *Layer) delRules(match func(RuleInfo) bool, what string) error {
	l.lock()
	defer l.unlock()
	n := len(l.ruleList)
	l.ruleList = slices.DeleteFunc(l.ruleList, match)
	if len(l.ruleList) == n {
		return fmt.Errorf("delete rule %s: %w", what, ErrNoRule)
	}
	l.publishRulesLocked()
	return nil
}

// Rules lists the rules in ID order, with their hits.
func (l *Layer) Rules() []RuleInfo {
	l.lock()
	defer l.unlock()
	out := slices.Clone(l.ruleList)
	for i := range out {
		out[i].Hits = l.ruleHits[out[i].ID].Load()
	}
	return out
}

// publishRulesLocked rebuilds every rules table from ruleList, and drops
// the counters of rules that are gone.
func (l *Layer) publishRulesLocked() {
	if len(l.ruleHits) != len(l.ruleList) {
		live := make(map[uint32]bool, len(l.ruleList))
		for _, r := range l.ruleList {
			live[r.ID] = true
		}
		maps.DeleteFunc(l.ruleHits, func(id uint32, _ *RuleHits) bool { return !live[id] })
	}
	by := map[ruleTableID][]RuleInfo{}
	for _, r := range l.ruleList {
		ns := l.nss[r.Namespace]
		if ns == nil {
			continue
		}
		if r.Scope&ScopeLocal != 0 {
			id := ruleTableID{local: true, ns: r.Namespace}
			by[id] = append(by[id], r)
		}
		if r.Scope&ScopeGlobal != 0 {
			var done [2]FIBID
			for i, fam := range r.families() {
				fib := ns.cfg.fib(fam)
				if i == 1 && fib == done[0] {
					continue // one table for both families: added once
				}
				done[i] = fib
				id := ruleTableID{fib: fib}
				by[id] = append(by[id], r)
			}
		}
	}
	snap := &ruleSnap{tables: map[ruleTableID]*RuleTable{}}
	for id, rs := range by {
		snap.tables[id] = buildRuleTable(rs, l.ruleHits)
	}
	l.rules.Store(snap)
}

// MatchRule returns the global rule of FIB fib that wins for tuple t (Local
// is this host's side). It is for the datapath: lock-free, no allocation.
func (l *Layer) MatchRule(fib FIBID, t *FiveTuple) (RuleMatch, bool) {
	return l.rules.Load().table(ruleTableID{fib: fib}).Match(t)
}

// GlobalRules returns the current global rules table of FIB fib (nil when
// it has none), for a datapath worker to load once per batch and Match
// each packet against. Lock-free, no allocation.
func (l *Layer) GlobalRules(fib FIBID) *RuleTable {
	return l.rules.Load().table(ruleTableID{fib: fib})
}

// MatchLocalRule returns the rule of namespace ns's local table that wins
// for tuple t. Lock-free, no allocation.
func (l *Layer) MatchLocalRule(ns string, t *FiveTuple) (RuleMatch, bool) {
	return l.rules.Load().table(ruleTableID{local: true, ns: ns}).Match(t)
}

// LookupListener finds the global listener of FIB fib serving a packet whose
// 5-tuple (as seen from this host) is t: exact address and port, then the
// wildcard address, then a proxy's every-port entry. For the datapath:
// lock-free, no allocation.
func (l *Layer) LookupListener(fib FIBID, t *FiveTuple) (*Listener, bool) {
	ln := l.listeners.Load().set(fib).lookup(t.Proto, t.Family, &t.Local, t.LocalPort)
	return ln, ln != nil
}

// LookupAppListener finds app's global listener of FIB fib that would
// serve a packet whose 5-tuple is t: its exact bind of the address and
// port, else its wildcard-address bind of the port, else its proxy
// every-port entry. It is what a forward rule delivers to. Lock-free, no
// allocation.
func (l *Layer) LookupAppListener(fib FIBID, t *FiveTuple, app AppID) (*Listener, bool) {
	ln := l.listeners.Load().set(fib).lookupApp(t.Proto, t.Family, &t.Local, t.LocalPort, app)
	return ln, ln != nil
}

// --- introspection ---

// AppInfo describes an attached app.
type AppInfo struct {
	ID        AppID  `json:"id"`
	Client    uint64 `json:"client"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     string `json:"scope"`
	Proxy     bool   `json:"proxy,omitempty"`
	Listeners int    `json:"listeners"`
	Sessions  int    `json:"sessions"`
	// Ended are sessions the transport ended (a reset, a timeout) that
	// the app has not closed yet: their fifos stay allocated until it
	// does (Layer.Disconnect).
	Ended      int      `json:"ended,omitempty"`
	Segments   []string `json:"segments"`
	RxFifoSize uint32   `json:"rx_fifo_size"`
	TxFifoSize uint32   `json:"tx_fifo_size"`
	// EventsWaiting are events the app's full event queue had no room
	// for, waiting to be written out; EventsLost those lost because too
	// many waited.
	EventsWaiting int    `json:"events_waiting"`
	EventsLost    uint64 `json:"events_lost"`
}

// ListenerInfo describes a listener.
type ListenerInfo struct {
	Handle    Handle `json:"handle"`
	App       AppID  `json:"app"`
	URI       string `json:"uri"`
	Namespace string `json:"namespace"`
	Table     string `json:"table"` // "local" or "global"
	FIB       FIBID  `json:"fib"`
	Proxy     bool   `json:"proxy,omitempty"`
}

// SessionInfo describes a session.
type SessionInfo struct {
	Handle    Handle `json:"handle"`
	App       AppID  `json:"app"`
	State     string `json:"state"` // "established", "half-open" or "cut-through"
	Transport string `json:"transport"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	FIB       FIBID  `json:"fib"`
	Worker    uint32 `json:"worker"`
	Listener  Handle `json:"listener,omitempty"`
	Peer      Handle `json:"peer,omitempty"`
}

// NamespaceInfo describes a namespace (never its secret).
type NamespaceInfo struct {
	NamespaceConfig
	Apps           int `json:"apps"`
	LocalListeners int `json:"local_listeners"`
}

func (l *Layer) sortedAppsLocked() []*app {
	as := slices.Collect(maps.Values(l.apps))
	slices.SortFunc(as, func(a, b *app) int { return cmp.Compare(a.id, b.id) })
	return as
}

// Apps lists the attached apps.
func (l *Layer) Apps() []AppInfo {
	l.lock()
	defer l.unlock()
	var out []AppInfo
	for _, a := range l.sortedAppsLocked() {
		ai := AppInfo{ID: a.id, Client: a.opts.ClientID, Name: a.opts.Name, Namespace: a.ns.cfg.ID,
			Scope: a.opts.Scope.String(), Proxy: a.opts.Proxy, Listeners: len(a.global) + len(a.local),
			Sessions: len(a.sess), Ended: len(a.ended), RxFifoSize: a.opts.RxFifoSize, TxFifoSize: a.opts.TxFifoSize}
		for _, s := range a.mem.Segments() {
			ai.Segments = append(ai.Segments, s.Name())
		}
		if p, ok := a.mem.(interface{ Postponed() (int, uint64) }); ok {
			ai.EventsWaiting, ai.EventsLost = p.Postponed()
		}
		out = append(out, ai)
	}
	return out
}

// Listeners lists the listeners of both tables.
func (l *Layer) Listeners() []ListenerInfo {
	l.lock()
	defer l.unlock()
	var out []ListenerInfo
	for _, a := range l.sortedAppsLocked() {
		for _, ln := range a.local {
			out = append(out, listenerInfo(a, ln))
		}
		for _, ln := range a.global {
			out = append(out, listenerInfo(a, ln))
		}
	}
	slices.SortFunc(out, func(a, b ListenerInfo) int {
		return cmp.Or(cmp.Compare(a.App, b.App), cmp.Compare(a.Table, b.Table), cmp.Compare(a.URI, b.URI))
	})
	return out
}

func listenerInfo(a *app, ln *Listener) ListenerInfo {
	li := ListenerInfo{Handle: ln.Handle, App: a.id, URI: ln.Endpoint.URI(), Namespace: a.ns.cfg.ID,
		Table: "global", FIB: ln.Endpoint.FIB, Proxy: ln.Proxy}
	if ln.Local {
		li.Table = "local"
	}
	return li
}

// Sessions lists the sessions.
func (l *Layer) Sessions() []SessionInfo { return l.SessionsPage(0, 0) }

// SessionsPage lists the sessions whose handle is above after, in handle
// order, at most limit of them (0: all). Only the page's sessions are
// described, and the handles are sorted once while the table does not
// change (sessOrder), so that a page costs about its rows: a table read a
// page at a time holds the layer's lock about as long in all as one read
// of it.
func (l *Layer) SessionsPage(after Handle, limit int) []SessionInfo {
	l.lock()
	defer l.unlock()
	hs := l.sessPageLocked(after, limit)
	out := make([]SessionInfo, 0, len(hs))
	for _, h := range hs {
		s := l.sess[h]
		si := SessionInfo{Handle: s.h, App: s.app.id, Transport: s.tuple.Proto.String(),
			Local: tupleLocal(&s.tuple).String(), Remote: tupleRemote(&s.tuple).String(), FIB: s.fib,
			Worker: s.h.Worker(), Listener: s.listener}
		switch s.kind {
		case kindEstablished:
			si.State = "established"
		case kindHalfOpen:
			si.State = "half-open"
		case kindCutThrough:
			si.State = "cut-through"
			if s.peer != nil {
				si.Peer = s.peer.h
			}
		}
		if si.Listener == InvalidHandle {
			si.Listener = 0
		}
		out = append(out, si)
	}
	return out
}

// sessPageLocked returns the handles of sessions above after, at most
// limit (0: all), from sessOrder, which it sorts anew when the table
// changed since.
func (l *Layer) sessPageLocked(after Handle, limit int) []Handle {
	for {
		if !l.sessOrderOK || len(l.sessOrder) != len(l.sess) {
			l.sessOrder = l.sessOrder[:0]
			for h := range l.sess {
				l.sessOrder = append(l.sessOrder, h)
			}
			slices.Sort(l.sessOrder)
			l.sessOrderOK = true
		}
		i, _ := slices.BinarySearchFunc(l.sessOrder, after, func(h, after Handle) int {
			if h <= after {
				return -1
			}
			return 1
		})
		hs := l.sessOrder[i:]
		if limit > 0 && len(hs) > limit {
			hs = hs[:limit]
		}
		ok := true
		for _, h := range hs {
			if l.sess[h] == nil {
				ok = false // a change that did not clear sessOrderOK
				break
			}
		}
		if ok {
			return hs
		}
		l.sessOrderOK = false
	}
}

// Namespaces lists the namespaces.
func (l *Layer) Namespaces() []NamespaceInfo {
	l.lock()
	defer l.unlock()
	var out []NamespaceInfo
	for _, ns := range l.nss {
		c := ns.cfg
		c.Secret = 0
		out = append(out, NamespaceInfo{NamespaceConfig: c, Apps: ns.apps, LocalListeners: len(ns.local)})
	}
	slices.SortFunc(out, func(a, b NamespaceInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
