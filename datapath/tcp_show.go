package datapath

import (
	"net/netip"
	"slices"

	"github.com/xsessiond/xsessiond/datapath/tcp"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// What the Engine tells of its TCP connections, for `ctl show sessions`
// and the metrics: each connection's gVisor state and counters, and
// counts by namespace.

// TCPConnView is one TCP connection of the Engine.
type TCPConnView struct {
	// Handle is the session's handle (the half-open one before the
	// handshake completed).
	Handle    flow.Handle
	App       sessions.AppID
	Namespace string // the app's namespace id ("" the default)
	Local     netip.AddrPort
	Remote    netip.AddrPort
	// Lingering: the session ended (the layer forgot it) and gVisor still
	// closes the connection (FIN-WAIT, TIME-WAIT) while its port is held.
	Lingering bool
	// Current: the connection still holds Handle. A lingering one whose
	// Handle a new session took since (the layer reuses handles) does
	// not: its Handle is the one it had.
	Current bool
	tcp.ConnInfo
}

// TCPNamespaceStats are the TCP counts of one namespace: connections
// live, ended and refused.
type TCPNamespaceStats struct {
	// States counts the live connections (lingering ones included) by
	// gVisor's state name.
	States map[string]int
	// Retransmits are the segments gVisor retransmitted on the
	// namespace's connections.
	Retransmits uint64
	// ResetsSent counts connections that ended by resetting them (an
	// app's abort, a close timeout, a corrupt fifo); ResetsReceived those
	// the peer reset.
	ResetsSent, ResetsReceived uint64
	// FifoCorrupt counts the connections reset because their app broke
	// the indices of the session's rx or tx fifo (in ResetsSent too).
	FifoCorrupt uint64
	// Refused counts connections its listeners refused, by reason:
	// "backlog" (gVisor's listen queue full: the SYN or final ACK
	// dropped), "limit" (the stack's connection limits), "no_memory" (no
	// fifo memory for the session), "closing" (the app or listener was
	// going).
	Refused map[string]uint64
}

// Reasons of TCPNamespaceStats.Refused.
const (
	TCPRefusedBacklog  = "backlog"
	TCPRefusedLimit    = "limit"
	TCPRefusedNoMemory = "no_memory"
	TCPRefusedClosing  = "closing"
)

func newTCPNamespaceStats() *TCPNamespaceStats {
	return &TCPNamespaceStats{States: map[string]int{}, Refused: map[string]uint64{
		TCPRefusedBacklog: 0, TCPRefusedLimit: 0, TCPRefusedNoMemory: 0, TCPRefusedClosing: 0}}
}

// nsDoneLocked returns the counts kept for namespace ns (p.mu held), for
// a connection or listener of it being made: the layer has the namespace
// then (an app of it is attached).
func (p *tcpPath) nsDoneLocked(ns string) *TCPNamespaceStats {
	st := p.nsDone[ns]
	if st == nil {
		st = newTCPNamespaceStats()
		p.nsDone[ns] = st
	}
	return st
}

// forgetNamespace drops the counts of namespace id, which the layer
// deleted. Its connections that still end add theirs to the entry they
// took (tcpSess.nsDone), out of the map; one of the same id added later
// counts from zero, as every new namespace does: its metric series went
// with the deleted one.
func (p *tcpPath) forgetNamespace(id string) {
	p.mu.Lock()
	delete(p.nsDone, id)
	p.mu.Unlock()
}

// addConn adds a connection's counts.
func (st *TCPNamespaceStats) addConn(in tcp.ConnInfo) {
	st.Retransmits += in.Retransmits
	if in.ResetSent {
		st.ResetsSent++
	}
	if in.ResetReceived {
		st.ResetsReceived++
	}
	if in.FifoCorrupt {
		st.FifoCorrupt++
	}
}

// addListener adds a listener's refusals.
func (st *TCPNamespaceStats) addListener(tl *tcpListener, ln *tcp.Listener) {
	if ln != nil {
		st.Refused[TCPRefusedBacklog] += ln.Overflows()
		st.Refused[TCPRefusedLimit] += ln.Limited()
	}
	st.Refused[TCPRefusedNoMemory] += tl.refusedMem.Load()
	st.Refused[TCPRefusedClosing] += tl.refusedGone.Load()
}

func (st *TCPNamespaceStats) add(o *TCPNamespaceStats) {
	st.Retransmits += o.Retransmits
	st.ResetsSent += o.ResetsSent
	st.ResetsReceived += o.ResetsReceived
	st.FifoCorrupt += o.FifoCorrupt
	for k, v := range o.Refused {
		st.Refused[k] += v
	}
}

// TCPListenerView is what the Engine tells of one of its TCP listeners.
type TCPListenerView struct {
	// Backlog is the listener's backlog (gVisor's accept queue's
	// length, and the most sessions its app may leave untaken once it
	// marks what it takes).
	Backlog int
	// Untaken counts the sessions handed to the app that its Accept has
	// not taken; -1 for an app that has not marked any (one of a
	// protocol before 2.2, whose listener is not held back).
	Untaken int
	// Refused counts the connections the listener refused, by reason (as
	// TCPNamespaceStats.Refused).
	Refused map[string]uint64
}

// TCPListeners tells of the Engine's TCP listeners, by handle.
func (e *Engine) TCPListeners() map[flow.Handle]TCPListenerView {
	p := e.tcp
	if p == nil {
		return nil
	}
	p.mu.Lock()
	lis := make([]*tcpListener, 0, len(p.lis))
	for _, tl := range p.lis {
		lis = append(lis, tl)
	}
	p.mu.Unlock()
	out := make(map[flow.Handle]TCPListenerView, len(lis))
	for _, tl := range lis {
		st := newTCPNamespaceStats()
		st.addListener(tl, tl.ln)
		out[tl.h] = TCPListenerView{Backlog: tl.backlog, Untaken: tl.untaken(), Refused: st.Refused}
	}
	return out
}

// TCPConns lists the Engine's TCP connections: those of the sessions the
// layer knows (half-open ones once their Dial started) and those that
// linger after their session ended.
func (e *Engine) TCPConns() []TCPConnView { return e.tcpConnsWhere(nil) }

// TCPConnsPage is TCPConns for a page of sessions (a show a page at a
// time): the connections of the handles in page, and the lingering ones
// whose handle is in (after, last]. Only theirs are read (their state is
// gVisor's, each under its endpoint's lock), so that a page costs its
// rows rather than every connection of the Engine.
func (e *Engine) TCPConnsPage(page map[flow.Handle]bool, after, last flow.Handle) []TCPConnView {
	return e.tcpConnsWhere(func(h flow.Handle, lingering bool) bool {
		return page[h] || (lingering && after < h && h <= last)
	})
}

// tcpConnsWhere lists the connections TCPConns does, those that want takes
// alone (nil: all), by handle and whether they linger.
func (e *Engine) tcpConnsWhere(want func(h flow.Handle, lingering bool) bool) []TCPConnView {
	p := e.tcp
	if p == nil {
		return nil
	}
	var out []TCPConnView
	seen := map[*tcpSess]bool{}
	p.mu.Lock()
	for _, s := range p.conns {
		h := s.h
		if !s.established {
			h = s.ho
		}
		if s.conn == nil || seen[s] || (want != nil && !want(h, s.done)) || (s.done && s.conn.Finished()) {
			continue
		}
		seen[s] = true
		out = append(out, TCPConnView{Handle: h, App: s.app, Namespace: s.ns, Local: s.conn.LocalAddr(), Remote: s.conn.RemoteAddr(),
			Lingering: s.done, Current: true, ConnInfo: s.conn.InfoRTT()})
	}
	p.mu.Unlock()
	for _, s := range p.lingering() {
		if seen[s] {
			continue
		}
		seen[s] = true
		p.mu.Lock()
		h := s.h
		p.mu.Unlock()
		if want != nil && !want(h, true) {
			continue
		}
		out = append(out, TCPConnView{Handle: h, App: s.app, Namespace: s.ns, Local: s.conn.LocalAddr(), Remote: s.conn.RemoteAddr(),
			Lingering: true, ConnInfo: s.conn.InfoRTT()})
	}
	slices.SortFunc(out, func(a, b TCPConnView) int {
		switch {
		case a.Handle < b.Handle:
			return -1
		case a.Handle > b.Handle:
			return 1
		}
		return 0
	})
	return out
}

// lingering returns the ended connections whose port is still held and
// that gVisor has not closed yet (FIN-WAIT, CLOSING, LAST-ACK,
// TIME-WAIT): a passive close's connection is CLOSED at once, a TIME-WAIT
// is over before its port is released.
func (p *tcpPath) lingering() []*tcpSess {
	p.coolMu.Lock()
	defer p.coolMu.Unlock()
	out := make([]*tcpSess, 0, len(p.cool))
	for _, c := range p.cool {
		if c.s != nil && c.s.conn != nil && !c.s.conn.Finished() {
			out = append(out, c.s)
		}
	}
	return out
}

// TCPNamespaceStats returns the TCP counts by namespace id ("" the
// default): those of the connections and listeners that ended plus those
// of the live ones.
func (e *Engine) TCPNamespaceStats() map[string]*TCPNamespaceStats {
	p := e.tcp
	if p == nil {
		return nil
	}
	out := map[string]*TCPNamespaceStats{}
	get := func(ns string) *TCPNamespaceStats {
		st := out[ns]
		if st == nil {
			st = newTCPNamespaceStats()
			out[ns] = st
		}
		return st
	}
	seen := map[*tcpSess]bool{}
	p.mu.Lock()
	for ns, d := range p.nsDone {
		get(ns).add(d)
	}
	for _, s := range p.conns {
		if s.conn == nil || seen[s] {
			continue
		}
		seen[s] = true
		in := s.conn.Info()
		st := get(s.ns)
		if !s.done {
			st.States[in.State]++
			if s.nsDone == nil || s.nsDone == p.nsDone[s.ns] {
				// Counted with its namespace's; one of a namespace
				// deleted since (whose id may be a new one's) is
				// counted in no namespace's counters.
				st.addConn(in)
			}
		} else if !s.conn.Finished() {
			st.States[in.State]++
		}
	}
	for _, tl := range p.lis {
		if tl.ln != nil && (tl.nsDone == nil || tl.nsDone == p.nsDone[tl.ns]) {
			get(tl.ns).addListener(tl, tl.ln)
		}
	}
	for tl := range p.unlistened {
		if tl.nsDone == nil || tl.nsDone == p.nsDone[tl.ns] {
			get(tl.ns).addListener(tl, tl.ln)
		}
	}
	p.mu.Unlock()
	for _, s := range p.lingering() {
		if !seen[s] {
			seen[s] = true
			get(s.ns).States[s.conn.Info().State]++
		}
	}
	return out
}
