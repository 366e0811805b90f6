package datapath

import (
	"math/rand/v2"
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

// The worker's decision cache answers what the table answers, entry reuse
// and replaced tables included, and a datagram whose verdict came from
// the cache is counted on its rule like any other.
func TestRules_DecisionCache(t *testing.T) {
	r := newMemRig(t, 1<<20)
	_, rx := r.listen(t, "udp://0.0.0.0:9000")
	rnd := rand.New(rand.NewPCG(5, 5))
	addr := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rnd.IntN(4)), byte(rnd.IntN(4)), byte(rnd.IntN(16))})
	}
	var rules []sessions.Rule
	seen := map[sessions.Rule]bool{}
	for len(rules) < 400 {
		ru := sessions.Rule{Transport: flow.TransportUDP, Remote: netip.PrefixFrom(addr(), []int{8, 16, 20, 24, 28, 32}[rnd.IntN(6)]).Masked(),
			Action: sessions.RuleDrop + sessions.RuleAction(rnd.IntN(2))}
		if rnd.IntN(4) == 0 {
			ru.RemotePort = uint16(1 + rnd.IntN(4))
		}
		if rnd.IntN(4) == 0 {
			ru.LocalPort = uint16(1 + rnd.IntN(4))
		}
		k := ru
		k.Action = 0
		if seen[k] {
			continue
		}
		seen[k] = true
		rules = append(rules, ru)
	}
	ids, err := r.l.AddRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	// More tuples than the cache has entries, each asked several times.
	tuples := make([]flow.FiveTuple, 3<<ruleCacheBits)
	for i := range tuples {
		tuples[i] = flow.FiveTuple{Local: flow.AddrBytes(tLocal4), Remote: flow.AddrBytes(addr()), LocalPort: uint16(rnd.IntN(5)),
			RemotePort: uint16(rnd.IntN(5)), Proto: flow.TransportUDP, Family: flow.Family4}
	}
	var c ruleCache
	check := func(name string, wantHits bool) {
		t.Helper()
		rt := r.l.GlobalRules(tFIB)
		c.use(rt)
		hits, cached := 0, 0
		for n := 0; n < 4*len(tuples); n++ {
			tu := &tuples[rnd.IntN(len(tuples))]
			fills := c.fills
			got, gotOK := c.match(tu)
			if rt.MayMatch(tu) && c.fills == fills {
				cached++
			}
			want, wantOK := rt.Match(tu)
			if gotOK != wantOK || got.ID != want.ID || got.Action != want.Action || got.Hits != want.Hits || got.App != want.App {
				t.Fatalf("%s: tuple %+v: cache says %+v %v, table %+v %v", name, tu, got, gotOK, want, wantOK)
			}
			if gotOK {
				hits++
			}
		}
		if (hits > 0) != wantHits || cached < len(tuples)/2 {
			t.Fatalf("%s: %d matches, %d answers from the cache", name, hits, cached)
		}
	}
	check("Rules", true)
	// A replaced table: the same tuples now match other rules, or none.
	if err := r.l.DelRule(ids[0]); err != nil {
		t.Fatal(err)
	}
	check("OneDeleted", true)
	for _, id := range ids[1:] {
		if err := r.l.DelRule(id); err != nil {
			t.Fatal(err)
		}
	}
	if r.l.GlobalRules(tFIB) != nil {
		t.Fatal("rules left")
	}
	id, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportTCP, Action: sessions.RuleDrop})
	if err != nil {
		t.Fatal(err)
	}
	check("OtherTransport", false)
	if err := r.l.DelRule(id); err != nil {
		t.Fatal(err)
	}

	// The worker: the same frames twice (the second time every verdict
	// comes from the cache), then a rule of the same match and another
	// action: the cache must not answer with the deleted rule.
	frames := udpFrames(t, 16, tRemote4, tLocal4, 9000, 32)
	drop, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.PrefixFrom(tRemote4, 32), Action: sessions.RuleDrop})
	if err != nil {
		t.Fatal(err)
	}
	r.w.processBatch(frames)
	r.w.processBatch(frames)
	if h := ruleHits(t, r.l, drop); h != 32 || r.w.c.Drops[dropRule] != 32 || r.w.c.Delivered != 0 {
		t.Fatalf("drop rule: %d hits, %d rule drops, %d delivered", h, r.w.c.Drops[dropRule], r.w.c.Delivered)
	}
	if err := r.l.DelRule(drop); err != nil {
		t.Fatal(err)
	}
	allow, err := r.l.AddRule(sessions.Rule{Transport: flow.TransportUDP, Remote: netip.PrefixFrom(tRemote4, 32), Action: sessions.RuleAllow})
	if err != nil {
		t.Fatal(err)
	}
	r.w.processBatch(frames)
	r.w.processBatch(frames)
	if h := ruleHits(t, r.l, allow); h != 32 || r.w.c.Drops[dropRule] != 32 || r.w.c.Delivered != 32 || rx.MaxDequeue() == 0 {
		t.Fatalf("allow rule: %d hits, %d rule drops, %d delivered", h, r.w.c.Drops[dropRule], r.w.c.Delivered)
	}
}

// A flood of tuples never seen again puts the decision cache aside (the
// table answers directly, every answer still the table's), and flows that
// repeat bring it back: then most answers come from the entries again.
func TestRules_DecisionCacheBypass(t *testing.T) {
	r := newMemRig(t, 1<<20)
	r.listen(t, "udp://0.0.0.0:9000")
	rules := benchRules(2000, nil)
	rules = append(rules, sessions.Rule{Transport: flow.TransportUDP, Remote: netip.MustParsePrefix("10.9.0.0/16"), Action: sessions.RuleAllow})
	if _, err := r.l.AddRules(rules); err != nil {
		t.Fatal(err)
	}
	rt := r.l.GlobalRules(tFIB)
	var c ruleCache
	c.use(rt)
	tuple := func(i int) flow.FiveTuple {
		a := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		return flow.FiveTuple{Local: flow.AddrBytes(tLocal4), Remote: flow.AddrBytes(a), LocalPort: 9000,
			RemotePort: uint16(1024 + i>>16), Proto: flow.TransportUDP, Family: flow.Family4}
	}
	ask := func(name string, n int, tu func(int) flow.FiveTuple) (fills uint64) {
		t.Helper()
		before := c.fills
		for i := range n {
			x := tu(i)
			got, gotOK := c.match(&x)
			want, wantOK := rt.Match(&x)
			if gotOK != wantOK || got.ID != want.ID || got.Action != want.Action || got.Hits != want.Hits {
				t.Fatalf("%s: tuple %d: cache says %+v %v, table %+v %v", name, i, got, gotOK, want, wantOK)
			}
		}
		return c.fills - before
	}
	// Every tuple new: after the first window the cache steps aside.
	ask("Flood", 64*ruleCacheWindow, tuple)
	if !c.bypass || c.bypassed < 32*ruleCacheWindow {
		t.Fatalf("flood: bypass %v after %d direct answers", c.bypass, c.bypassed)
	}
	// 64 flows over and over: the samples hit, the cache comes back and
	// answers nearly everything.
	few := func(i int) flow.FiveTuple { return tuple(i % 64) }
	ask("Repeat", 4*ruleCacheSample*ruleCacheWindow, few)
	if c.bypass {
		t.Fatal("repeating flows: still bypassed")
	}
	if f := ask("Cached", 16*ruleCacheWindow, few); f > 64 {
		t.Fatalf("repeating flows: the table answered %d of %d", f, 16*ruleCacheWindow)
	}
	// A new table starts with the cache in use.
	ask("Flood2", 64*ruleCacheWindow, tuple)
	if err := r.l.DelRule(1); err != nil {
		t.Fatal(err)
	}
	c.use(r.l.GlobalRules(tFIB))
	if c.bypass {
		t.Fatal("new table: still bypassed")
	}
}
