package datapath

import (
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

func ruleHits(t *testing.T, l *sessions.Layer, id uint32) uint64 {
	t.Helper()
	for _, r := range l.Rules() {
		if r.ID == id {
			return r.Hits
		}
	}
	t.Fatalf("rule %d not listed", id)
	return 0
}

// A global drop rule drops the datagrams of a bound port it matches, and
// counts them on the rule and as rule-drop; deleted, it lets them through.
func TestRules_GlobalDropOnListenerHit(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, rx := r.listen(t, "udp://0.0.0.0:9000")
	id, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.PrefixFrom(tRemote4, 32), Action: sessions.RuleDrop})
	if err != nil {
		t.Fatal(err)
	}
	frames := udpFrames(t, 8, tRemote4, tLocal4, 9000, 32)
	other := udpFrames(t, 2, netip.MustParseAddr("10.9.0.77"), tLocal4, 9000, 32)
	r.w.processBatch(append(append([][]byte{}, frames...), other...))
	if r.w.c.Drops[dropRule] != 8 || r.w.c.Delivered != 2 || rx.MaxDequeue() == 0 {
		t.Fatalf("rule drops %d, delivered %d", r.w.c.Drops[dropRule], r.w.c.Delivered)
	}
	if h := ruleHits(t, r.l, id); h != 8 {
		t.Fatalf("rule hits %d, want 8", h)
	}
	if err := r.l.DelRule(id); err != nil {
		t.Fatal(err)
	}
	r.w.processBatch(frames)
	if r.w.c.Delivered != 10 || r.w.c.Drops[dropRule] != 8 {
		t.Fatalf("after delete: delivered %d, rule drops %d", r.w.c.Delivered, r.w.c.Drops[dropRule])
	}
}

// A forward rule delivers to the named app's listener of the port, here a
// wildcard bind behind another app's exact bind; a forward to an app
// without a listener there, an allow rule and a local-scope rule leave the
// normal lookup's listener in charge.
func TestRules_GlobalForwardAllowLocal(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, rx1 := r.listen(t, "udp://10.9.0.2:9000")
	at2, err := r.l.Attach(sessions.AttachOptions{ClientID: 2, Name: "second", RxFifoSize: 1 << 20, SegmentSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.l.Detach(at2.App) })
	h2, err := r.l.BindURI(at2.App, "udp://0.0.0.0:9000")
	if err != nil {
		t.Fatal(err)
	}
	p2, _, err := r.l.ListenerPair(at2.App, h2)
	if err != nil {
		t.Fatal(err)
	}
	r.l.Shard(0).Drain()
	at3, err := r.l.Attach(sessions.AttachOptions{ClientID: 3, Name: "third"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.l.Detach(at3.App) })
	frames := udpFrames(t, 4, tRemote4, tLocal4, 9000, 32)
	step := func(name string, rule sessions.Rule, want1, want2 int, hits uint64) {
		t.Helper()
		id, err := r.l.AddRule(rule)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r.w.processBatch(frames)
		n1, n2 := rx1.MaxDequeue(), p2.Rx.MaxDequeue()
		_ = rx1.Drop(n1)
		_ = p2.Rx.Drop(n2)
		if (n1 > 0) != (want1 > 0) || (n2 > 0) != (want2 > 0) {
			t.Fatalf("%s: exact listener got %d bytes, wildcard listener %d", name, n1, n2)
		}
		if h := ruleHits(t, r.l, id); h != hits {
			t.Fatalf("%s: %d hits, want %d", name, h, hits)
		}
		if err := r.l.DelRule(id); err != nil {
			t.Fatal(err)
		}
	}
	rmt := netip.PrefixFrom(tRemote4, 24).Masked()
	step("NoRule", sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("192.0.2.0/24"), Action: sessions.RuleDrop}, 1, 0, 0)
	step("Forward", sessions.Rule{Transport: flow.TransportUDP, Remote: rmt, Action: sessions.RuleForward, App: at2.App}, 0, 1, 4)
	step("ForwardNoListener", sessions.Rule{Transport: flow.TransportUDP, Remote: rmt, Action: sessions.RuleForward, App: at3.App}, 1, 0, 0)
	step("Allow", sessions.Rule{Transport: flow.TransportUDP, Remote: rmt, Action: sessions.RuleAllow}, 1, 0, 4)
	step("LocalDrop", sessions.Rule{Transport: flow.TransportUDP, Remote: rmt, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal}, 1, 0, 0)
	step("OtherTransport", sessions.Rule{Transport: flow.TransportTCP, Remote: rmt, Action: sessions.RuleDrop}, 1, 0, 0)
	if r.w.c.Drops[dropRule] != 0 {
		t.Fatalf("rule drops %d", r.w.c.Drops[dropRule])
	}
}

// With 10,000 rules, the per-batch path still allocates nothing, whether
// the rules let the datagrams through, drop them or forward them.
func TestRules_NoAllocs(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, rx := r.listen(t, "udp://0.0.0.0:9000")
	peers := rulePeers(DefaultBatch)
	if _, err := r.l.AddRules(benchRules(10000, peers)); err != nil {
		t.Fatal(err)
	}
	frames := make([][]byte, len(peers))
	for i, p := range peers {
		frames[i] = udpFrames(t, 1, p, tLocal4, 9000, 64)[0]
	}
	run := func(name string) {
		if a := testing.AllocsPerRun(100, func() {
			r.w.processBatch(frames)
			_ = rx.Drop(rx.MaxDequeue())
		}); a != 0 {
			t.Errorf("%s: %v allocations per batch", name, a)
		}
	}
	run("NoMatch")
	for _, act := range []sessions.RuleAction{sessions.RuleAllow, sessions.RuleDrop, sessions.RuleForward} {
		id, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("10.9.0.0/16"), Action: act, App: r.app})
		if err != nil {
			t.Fatal(err)
		}
		run(act.String())
		if err := r.l.DelRule(id); err != nil {
			t.Fatal(err)
		}
	}
	if r.w.c.Delivered == 0 || r.w.c.Drops[dropRule] == 0 {
		t.Fatalf("delivered %d, rule drops %d", r.w.c.Delivered, r.w.c.Drops[dropRule])
	}
}
