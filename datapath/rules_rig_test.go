package datapath_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// pingUDP sends n datagrams from a kernel UDP socket on host A to dst, one
// at a time, and returns how many came back (each waited for up to wait).
func pingUDP(t *testing.T, r *engineRig, dst netip.AddrPort, n int, wait time.Duration) int {
	t.Helper()
	c := hostUDP(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0))
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := 0; i < n; i++ {
		msg := content(uint32(i), 64)
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		for {
			k, err := c.Read(buf)
			if err != nil {
				break
			}
			if string(buf[:k]) == string(msg) {
				got++
				break
			}
		}
	}
	return got
}

// sink binds uri for a and counts the datagrams it receives until the test
// ends.
func (r *engineRig) sink(t *testing.T, a *app, uri string) *atomic.Int64 {
	t.Helper()
	h, err := r.l.BindURI(a.id, uri)
	if err != nil {
		t.Fatal(err)
	}
	pair, _, err := r.l.ListenerPair(a.id, h)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs := make([]fifo.DgramHeader, 64)
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		evs := make([]fifo.Event, 64)
		for ctx.Err() == nil {
			pair.Rx.ClearEvent()
			k, _ := pair.Rx.DequeueDgrams(hs, bufs)
			if k == 0 {
				wctx, c := context.WithTimeout(ctx, 20*time.Millisecond)
				_ = a.evq.Wait(wctx)
				c()
				_, _ = a.evq.PopBatch(evs)
				continue
			}
			n.Add(int64(k))
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	r.waitMirror(t)
	return &n
}

func ruleHitsOf(t *testing.T, l *sessions.Layer, id uint32) uint64 {
	t.Helper()
	for _, ri := range l.Rules() {
		if ri.ID == id {
			return ri.Hits
		}
	}
	t.Fatalf("rule %d not listed", id)
	return 0
}

// TestRulesOnTheWire: an echo app on B's address, port 9000, and a kernel
// UDP client on host A. A global drop rule for A's address stops the echo
// and counts the drops; deleted by id, the echo is back; a forward rule
// hands A's datagrams to a second app's wildcard listener of the port; a
// local-scope rule never touches wire traffic.
func TestRulesOnTheWire(t *testing.T) {
	r := newEngineRig(t, 1, 1520)
	echo, other := r.attach(t), r.attach(t)
	r.listenEcho(t, echo, "udp://"+r.p.B.IPv4.String()+":9000")
	sunk := r.sink(t, other, "udp://0.0.0.0:9000")
	dst := netip.AddrPortFrom(r.p.B.IPv4, 9000)
	const n = 20
	if got := pingUDP(t, r, dst, n, time.Second); got != n {
		t.Fatalf("before any rule: %d of %d echoed", got, n)
	}
	fromA := netip.PrefixFrom(r.p.A.IPv4, 32)

	drop, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: fromA, LocalPort: 9000, Action: sessions.RuleDrop, Tag: "block-a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := pingUDP(t, r, dst, n, 100*time.Millisecond); got != 0 {
		t.Fatalf("drop rule: %d of %d echoed", got, n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for ruleHitsOf(t, r.l, drop) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h := ruleHitsOf(t, r.l, drop); h != n {
		t.Fatalf("drop rule counted %d hits, want %d", h, n)
	}
	for r.eng.Stats().Totals.Drops["rule-drop"] < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := r.eng.Stats().Totals.Drops["rule-drop"]; d != n {
		t.Fatalf("engine counted %d rule drops, want %d", d, n)
	}
	if err := r.l.DelRule(drop); err != nil {
		t.Fatal(err)
	}
	if got := pingUDP(t, r, dst, n, time.Second); got != n {
		t.Fatalf("drop rule deleted: %d of %d echoed", got, n)
	}

	fwd, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: fromA, Action: sessions.RuleForward, App: other.id})
	if err != nil {
		t.Fatal(err)
	}
	if got := pingUDP(t, r, dst, n, 100*time.Millisecond); got != 0 {
		t.Fatalf("forward rule: %d of %d echoed by the first app", got, n)
	}
	deadline = time.Now().Add(2 * time.Second)
	for sunk.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := sunk.Load(); s != n {
		t.Fatalf("forward rule: the second app got %d of %d", s, n)
	}
	if h := ruleHitsOf(t, r.l, fwd); h != n {
		t.Fatalf("forward rule counted %d hits, want %d", h, n)
	}
	if err := r.l.DelRule(fwd); err != nil {
		t.Fatal(err)
	}

	local, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: fromA, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal})
	if err != nil {
		t.Fatal(err)
	}
	if got := pingUDP(t, r, dst, n, time.Second); got != n {
		t.Fatalf("local rule: %d of %d echoed", got, n)
	}
	if h := ruleHitsOf(t, r.l, local); h != 0 {
		t.Fatalf("local rule counted %d hits", h)
	}
	if s := sunk.Load(); s != n {
		t.Fatalf("the second app got %d datagrams, want the %d forwarded only", s, n)
	}
}
