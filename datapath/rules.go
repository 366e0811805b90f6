package datapath

import (
	"encoding/binary"

	"github.com/xsessiond/xsessiond/datapath/udp"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// Session rules on the wire: the global rules table of the engine's FIB is
// consulted when a packet from the wire found a listener (seed:
// APP_DROP_INDEX, later VPP's session rules table). A worker loads the
// table once per batch; an empty table costs one nil check per packet, and
// a flow's verdict is kept in the worker's decision cache (rulecache.go)
// until the table changes.

// ruleVerdict is what the global rules say about a packet that found a
// listener.
type ruleVerdict uint8

const (
	rulePass    ruleVerdict = iota // no rule, an allow rule, or a forward whose app has no listener for the packet: the normal lookup's listener
	ruleDrop                       // a drop rule
	ruleForward                    // a forward rule: deliver to the returned listener, the named app's
)

// checkRules applies the global rules' verdict for a packet from the wire
// whose 5-tuple t (Local: this host) found a listener: m, the winning rule
// of the table of FIB fib (layer l), when ok. A forward goes to the named
// app's listener that would serve t (its exact bind, its wildcard bind, or
// its proxy entry); when it has none, the rule is as if it did not match.
// It returns the rule's counter, nil with no rule or no effect. Lock-free,
// no allocation. UDP calls it for each datagram; TCP for a connection's
// first segment (tcpRuleDrops) and again when the connection is accepted
// (a forward picks the listener then).
func checkRules(m sessions.RuleMatch, ok bool, l *sessions.Layer, fib flow.FIBID, t *flow.FiveTuple) (ruleVerdict, *sessions.Listener, *sessions.RuleHits) {
	if !ok {
		return rulePass, nil, nil
	}
	switch m.Action {
	case sessions.RuleDrop:
		return ruleDrop, nil, m.Hits
	case sessions.RuleForward:
		if ln, ok := l.LookupAppListener(fib, t, m.App); ok {
			return ruleForward, ln, m.Hits
		}
		return rulePass, nil, nil
	}
	return rulePass, nil, m.Hits
}

// ruleHitRun is a worker's run of hits of one rule, added to the rule's
// counter when another rule hits and at the end of each batch: one atomic
// add per run, not per datagram.
type ruleHitRun struct {
	h *sessions.RuleHits
	n uint64
}

func (r *ruleHitRun) hit(h *sessions.RuleHits) {
	if h != r.h {
		r.flush()
		r.h = h
	}
	r.n++
}

func (r *ruleHitRun) flush() {
	if r.n > 0 {
		r.h.Add(r.n)
	}
	r.h, r.n = nil, 0
}

// listenerHit ends a listener lookup that gave t (nil: none): the rules
// step, when the FIB has rules. With no Target it returns the drop reason.
func (w *worker) listenerHit(l *sessions.Layer, t *udp.Target) (*udp.Target, int) {
	if t == nil || !w.stillLocal(t) {
		return nil, dropNoSession
	}
	if w.rules == nil {
		return t, 0
	}
	return w.applyRules(l, t)
}

// applyRules is the rules step of a datagram whose listener lookup gave
// target t: t itself, the target of a forward rule's listener, or nil when
// a rule drops it (counted as dropRule).
func (w *worker) applyRules(l *sessions.Layer, t *udp.Target) (*udp.Target, int) {
	m, ok := w.ruleCache.match(&w.tuple)
	v, ln, h := checkRules(m, ok, l, w.e.fib, &w.tuple)
	if h != nil {
		w.ruleHits.hit(h)
	}
	switch v {
	case ruleDrop:
		return nil, dropRule
	case ruleForward:
		if ft := (*w.e.lis.Load())[ln.Handle]; ft != nil {
			return ft, 0
		}
	}
	return t, 0
}

// tcpRuleDrops is the rules step of a received TCP frame (decoded into
// w.pkt up to its IP header): a connection's first segment (SYN without
// ACK) whose 5-tuple is not an active open of ours is matched against the
// global rules, counted in the winning rule's hits, and dropped when the
// rule says drop (counted as dropRule; the peer sees no answer, as behind
// a firewall's drop). Established connections are not checked again. A
// forward takes effect when the connection is accepted (tcpListener).
func (w *worker) tcpRuleDrops(l *sessions.Layer, est *estTable, f []byte) bool {
	p := &w.pkt
	if l == nil || p.L4Off+14 > len(f) || f[p.L4Off+13]&(tcpFlagSYN|tcpFlagACK) != tcpFlagSYN {
		return false
	}
	w.tuple = flow.FiveTuple{Local: p.Dst, Remote: p.Src, LocalPort: binary.BigEndian.Uint16(f[p.L4Off+2:]),
		RemotePort: binary.BigEndian.Uint16(f[p.L4Off:]), Proto: flow.TransportTCP, Family: p.Family}
	if est.lookup(&w.tuple) != nil {
		return false
	}
	m, ok := w.ruleCache.match(&w.tuple)
	v, _, h := checkRules(m, ok, l, w.e.fib, &w.tuple)
	if h != nil {
		w.ruleHits.hit(h)
	}
	if v != ruleDrop {
		return false
	}
	w.c.Drops[dropRule]++
	w.cap.rxDrop(w.q, f, nil, dropRule)
	return true
}

// TCP header flags.
const (
	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagACK = 0x10
)
