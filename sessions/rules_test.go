package sessions_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func tuple(local string, lport uint16, rem string, rport uint16, tr sessions.Transport) sessions.FiveTuple {
	l, r := netip.MustParseAddr(local), netip.MustParseAddr(rem)
	fam := sessions.Family4
	if l.Is6() {
		fam = sessions.Family6
	}
	return sessions.FiveTuple{Local: sessions.AddrBytes(l), LocalPort: lport, Remote: sessions.AddrBytes(r), RemotePort: rport, Proto: tr, Family: fam}
}

func TestRules_LongestPrefixTieBreak(t *testing.T) {
	tcp := sessions.TransportTCP
	rules := []sessions.Rule{
		{Transport: tcp, Action: sessions.RuleAllow, Tag: "any"},                                                       // 1
		{Transport: tcp, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop, Tag: "rmt24"},                         // 2
		{Transport: tcp, Remote: pfx("192.0.2.0/25"), RemotePort: 80, Action: sessions.RuleDrop, Tag: "rmt25p80"},      // 3
		{Transport: tcp, Remote: pfx("192.0.2.0/25"), Action: sessions.RuleAllow, Tag: "rmt25"},                        // 4
		{Transport: tcp, Remote: pfx("192.0.2.0/25"), LocalPort: 22, Action: sessions.RuleAllow, Tag: "rmt25l22"},      // 5
		{Transport: tcp, Remote: pfx("192.0.2.0/24"), Local: pfx("10.0.0.0/8"), Action: sessions.RuleAllow, Tag: "l8"}, // 6
		{Transport: tcp, Remote: pfx("2001:db8::/32"), Action: sessions.RuleDrop, Tag: "v6"},                           // 7
		{Transport: sessions.TransportUDP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop, Tag: "udp"},         // 8
	}
	r := newRig(t)
	ids, err := r.l.AddRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	tag := map[uint32]string{}
	for i, id := range ids {
		tag[id] = rules[i].Tag
	}
	for _, c := range []struct {
		name string
		t    sessions.FiveTuple
		want string
	}{
		{"NoSpecificRuleFallsToAny", tuple("10.0.0.1", 1, "198.51.100.1", 2, tcp), "any"},
		{"SameRemoteLongerLocalWins", tuple("10.0.0.1", 1, "192.0.2.200", 2, tcp), "l8"}, // /24 + local /8 beats /24 + local /0
		{"LongerRemoteBeatsLocal", tuple("10.0.0.1", 1, "192.0.2.1", 2, tcp), "rmt25"},
		{"RemotePortBeatsLocalPort", tuple("10.0.0.1", 22, "192.0.2.1", 80, tcp), "rmt25p80"},
		{"LocalPortBeatsNoPort", tuple("10.0.0.1", 22, "192.0.2.1", 81, tcp), "rmt25l22"},
		{"NoLocalPrefixMatch", tuple("11.0.0.1", 1, "192.0.2.200", 2, tcp), "rmt24"},
		{"IPv6", tuple("fd00::1", 1, "2001:db8::1", 2, tcp), "v6"},
		{"IPv6AnyRule", tuple("fd00::1", 1, "2001:db9::1", 2, tcp), "any"},
		{"OtherTransport", tuple("10.0.0.1", 1, "192.0.2.1", 2, sessions.TransportUDP), "udp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fib := sessions.FIBID(1)
			if c.t.Family == sessions.Family6 {
				fib = 2
			}
			m, ok := r.l.MatchRule(fib, &c.t)
			if !ok || tag[m.ID] != c.want {
				t.Fatalf("matched %q (%+v, %v), want %q", tag[m.ID], m, ok, c.want)
			}
			if a := testing.AllocsPerRun(100, func() { r.l.MatchRule(fib, &c.t) }); a != 0 {
				t.Fatalf("MatchRule allocates %v", a)
			}
		})
	}
	if _, ok := r.l.MatchRule(1, &sessions.FiveTuple{Family: sessions.Family4, Proto: sessions.TransportSCTP}); ok {
		t.Fatal("sctp matched a tcp rule")
	}
	if _, ok := r.l.MatchLocalRule("", &sessions.FiveTuple{Family: sessions.Family4, Proto: tcp}); ok {
		t.Fatal("global rule found in the local table")
	}
}

func TestRules_AddDelList(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	base := sessions.Rule{Transport: sessions.TransportUDP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop}
	id1, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportUDP, Remote: pfx("192.0.2.9/24"), Action: sessions.RuleDrop, Tag: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.l.Rules(); len(got) != 1 || got[0].Remote != pfx("192.0.2.0/24") || got[0].Scope != sessions.ScopeGlobal || got[0].ID != id1 {
		t.Fatalf("listed %+v (prefix masked, scope defaulted)", got)
	}
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportUDP, Action: sessions.RuleForward, App: a, Tag: "x", Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	id3, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleAllow, Namespace: "blue"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []sessions.Rule{
		{Transport: 99, Action: sessions.RuleDrop},
		{Transport: sessions.TransportTCP},
		{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Scope: 8},
		{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Local: pfx("10.0.0.0/8"), Remote: pfx("fd00::/8")},
		{Transport: sessions.TransportTCP, Action: sessions.RuleForward, App: 999},
		{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Namespace: "green"},
	} {
		if _, err := r.l.AddRule(bad); err == nil {
			t.Errorf("rule %+v accepted", bad)
		}
	}
	// AddRules is all or nothing.
	if _, err := r.l.AddRules([]sessions.Rule{base, {Transport: 99}}); err == nil || len(r.l.Rules()) != 3 {
		t.Fatalf("partial AddRules: %v, %d rules", err, len(r.l.Rules()))
	}
	wantErr(t, r.l.DelRulesByTag("x"), nil)
	if got := r.l.Rules(); len(got) != 1 || got[0].ID != id3 {
		t.Fatalf("after tag delete %+v", got)
	}
	wantErr(t, r.l.DelRulesByTag("x"), sessions.ErrNoRule)
	wantErr(t, r.l.DelRulesByTag(""), sessions.ErrInvalidValue)
	wantErr(t, r.l.DelRuleMatching(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Namespace: "blue", Scope: sessions.ScopeLocal}), sessions.ErrNoRule)
	wantErr(t, r.l.DelRuleMatching(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Namespace: "blue"}), nil)
	wantErr(t, r.l.DelRule(id3), sessions.ErrNoRule)
	id4, _ := r.l.AddRule(base)
	wantErr(t, r.l.DelRule(id4), nil)
	tup := tuple("10.0.0.1", 1, "192.0.2.1", 2, sessions.TransportUDP)
	if _, ok := r.l.MatchRule(1, &tup); ok {
		t.Fatal("deleted rule still matches")
	}
	// Deleting a namespace deletes its rules.
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Namespace: "blue"}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, r.l.DelNamespace("blue"), nil)
	if n := len(r.l.Rules()); n != 0 {
		t.Fatalf("%d rules after namespace delete", n)
	}
}

func TestRules_GlobalRulesFollowNamespaceFIB(t *testing.T) {
	r := newRig(t)
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleDrop, Namespace: "blue"}); err != nil {
		t.Fatal(err)
	}
	t4 := tuple("10.1.0.1", 1, "192.0.2.1", 2, sessions.TransportTCP)
	t6 := tuple("fd00::1", 1, "2001:db8::1", 2, sessions.TransportTCP)
	if _, ok := r.l.MatchRule(10, &t4); !ok {
		t.Fatal("v4 FIB of blue lacks the rule")
	}
	if _, ok := r.l.MatchRule(11, &t6); !ok {
		t.Fatal("v6 FIB of blue lacks the rule")
	}
	if _, ok := r.l.MatchRule(1, &t4); ok {
		t.Fatal("default FIB got blue's rule")
	}
}

// A rule matching exactly what another matches in the same tables is
// refused; another scope, namespace, port or prefix is another rule.
func TestAddRule_DuplicateRefused(t *testing.T) {
	r := newRig(t)
	base := sessions.Rule{Transport: sessions.TransportUDP, Remote: pfx("192.0.2.0/24"), RemotePort: 53, Action: sessions.RuleDrop, Tag: "a"}
	id, err := r.l.AddRule(base)
	if err != nil {
		t.Fatal(err)
	}
	dup := base
	dup.Action, dup.Tag, dup.Remote = sessions.RuleAllow, "b", pfx("192.0.2.77/24") // masked: the same prefix
	_, err = r.l.AddRule(dup)
	wantErr(t, err, sessions.ErrInvalidValue)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("rule %d already matches", id)) {
		t.Fatalf("error %v does not name rule %d", err, id)
	}
	// Within one AddRules call too, all or nothing.
	other := base
	other.RemotePort = 54
	_, err = r.l.AddRules([]sessions.Rule{other, other})
	wantErr(t, err, sessions.ErrInvalidValue)
	if n := len(r.l.Rules()); n != 1 {
		t.Fatalf("%d rules", n)
	}
	for _, ok := range []sessions.Rule{
		other,
		{Transport: base.Transport, Remote: base.Remote, RemotePort: 53, Action: sessions.RuleDrop, Scope: sessions.ScopeLocal},
		{Transport: base.Transport, Remote: base.Remote, RemotePort: 53, Action: sessions.RuleDrop, Namespace: "blue"},
		{Transport: base.Transport, Remote: pfx("192.0.2.0/25"), RemotePort: 53, Action: sessions.RuleDrop},
		{Transport: sessions.TransportTCP, Remote: base.Remote, RemotePort: 53, Action: sessions.RuleDrop},
	} {
		if _, err := r.l.AddRule(ok); err != nil {
			t.Errorf("rule %+v: %v", ok, err)
		}
	}
	// Deleted, the match is free again.
	wantErr(t, r.l.DelRule(id), nil)
	if _, err := r.l.AddRule(dup); err != nil {
		t.Fatal(err)
	}
}

// A forward rule names an app of its own namespace: a rule of one namespace
// never hands connections to another's app.
func TestAddRule_ForwardToOtherNamespaceRefused(t *testing.T) {
	r := newRig(t)
	blue := r.attachOpts(sessions.AttachOptions{Namespace: "blue", Secret: 42, Scope: sessions.ScopeLocal | sessions.ScopeGlobal})
	def := r.attach(sessions.ScopeLocal | sessions.ScopeGlobal)
	r.bind(blue, "tcp://0.0.0.0:80")
	for _, c := range []struct {
		ns  string
		app sessions.AppID
	}{{"", blue}, {"blue", def}} {
		for _, sc := range []sessions.Scope{sessions.ScopeLocal, sessions.ScopeGlobal} {
			_, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleForward, App: c.app, Namespace: c.ns, Scope: sc})
			wantErr(t, err, sessions.ErrNotInNamespace)
		}
	}
	if n := len(r.l.Rules()); n != 0 {
		t.Fatalf("%d rules", n)
	}
	// The same app of the rule's namespace is fine.
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Action: sessions.RuleForward, App: blue, Namespace: "blue", Scope: sessions.ScopeLocal}); err != nil {
		t.Fatal(err)
	}
	// And a default-namespace client is not cut through to blue's app.
	res, err := r.l.ConnectURI(def, "tcp://192.0.2.1:80", 0)
	if err != nil || res.CutThrough {
		t.Fatalf("connect %+v %v", res, err)
	}
}

// Hits count what a rule acted on; a deleted rule's counter goes with it.
func TestRules_HitsCounted(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	id, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, err := r.l.ConnectURI(a, "tcp://192.0.2.5:80", 0)
		wantErr(t, err, sessions.ErrFiltered)
	}
	tup := tuple("10.0.0.1", 9000, "192.0.2.5", 1234, sessions.TransportTCP)
	m, ok := r.l.MatchRule(1, &tup)
	if !ok || m.ID != id || m.Hits == nil {
		t.Fatalf("match %+v %v", m, ok)
	}
	m.Hits.Add(4) // as a datapath worker counts a run of drops
	if rs := r.l.Rules(); len(rs) != 1 || rs[0].Hits != 7 {
		t.Fatalf("rules %+v, want 7 hits", rs)
	}
	// Counters survive the rebuild another rule causes.
	if _, err := r.l.AddRule(sessions.Rule{Transport: sessions.TransportUDP, Action: sessions.RuleAllow}); err != nil {
		t.Fatal(err)
	}
	if rs := r.l.Rules(); rs[0].Hits != 7 || rs[1].Hits != 0 {
		t.Fatalf("rules %+v", rs)
	}
	wantErr(t, r.l.DelRule(id), nil)
	id2, _ := r.l.AddRule(sessions.Rule{Transport: sessions.TransportTCP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop})
	for _, ri := range r.l.Rules() {
		if ri.ID == id2 && ri.Hits != 0 {
			t.Fatalf("re-added rule starts at %d hits", ri.Hits)
		}
	}
}

// refMatch is Rule's documented matching, the slow way.
func refMatch(rules []sessions.RuleInfo, t *sessions.FiveTuple) (uint32, bool) {
	var best *sessions.RuleInfo
	bits := func(p netip.Prefix) int { return max(p.Bits(), 0) } // the invalid prefix: any address
	better := func(a, b *sessions.RuleInfo) bool {               // a beats b
		if bits(a.Remote) != bits(b.Remote) {
			return bits(a.Remote) > bits(b.Remote)
		}
		if bits(a.Local) != bits(b.Local) {
			return bits(a.Local) > bits(b.Local)
		}
		if (a.RemotePort != 0) != (b.RemotePort != 0) {
			return a.RemotePort != 0
		}
		if (a.LocalPort != 0) != (b.LocalPort != 0) {
			return a.LocalPort != 0
		}
		return a.ID < b.ID
	}
	la, ra := sessions.AddrFrom(t.Local, t.Family), sessions.AddrFrom(t.Remote, t.Family)
	for i := range rules {
		x := &rules[i]
		if x.Transport != t.Proto || (x.RemotePort != 0 && x.RemotePort != t.RemotePort) || (x.LocalPort != 0 && x.LocalPort != t.LocalPort) {
			continue
		}
		if (x.Local.IsValid() && !x.Local.Contains(la)) || (x.Remote.IsValid() && !x.Remote.Contains(ra)) {
			continue
		}
		if best == nil || better(x, best) {
			best = x
		}
	}
	if best == nil {
		return 0, false
	}
	return best.ID, true
}

// The remote-prefix index (tables of many prefix lengths) and the plain
// walk (few) both answer what the documented matching answers.
func TestRules_MatchAgainstReference(t *testing.T) {
	for _, c := range []struct {
		name    string
		n       int
		lens4   []int
		lens6   []int
		locals  bool
		indexed bool
	}{
		{"FewLengths", 300, []int{0, 24}, []int{64}, false, false},
		{"ManyLengths", 3000, []int{0, 1, 7, 8, 12, 15, 16, 17, 20, 23, 24, 28, 31, 32}, []int{0, 8, 16, 17, 32, 48, 64, 127, 128}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			rnd := rand.New(rand.NewPCG(7, uint64(c.n)))
			// Addresses from a small pool, so that rules overlap.
			v4 := func() netip.Addr {
				return netip.AddrFrom4([4]byte{byte(10 + rnd.IntN(3)), byte(rnd.IntN(4)), byte(rnd.IntN(4)), byte(rnd.IntN(8))})
			}
			v6 := func() netip.Addr {
				var b [16]byte
				b[0], b[1], b[2], b[7], b[15] = 0xfd, byte(rnd.IntN(3)), byte(rnd.IntN(3)), byte(rnd.IntN(3)), byte(rnd.IntN(4))
				return netip.AddrFrom16(b)
			}
			seen := map[string]bool{}
			var rules []sessions.Rule
			for len(rules) < c.n {
				ru := sessions.Rule{Transport: []sessions.Transport{sessions.TransportUDP, sessions.TransportTCP}[rnd.IntN(2)],
					Action: sessions.RuleAction(1 + rnd.IntN(2))}
				six := rnd.IntN(3) == 0
				if six {
					ru.Remote = netip.PrefixFrom(v6(), c.lens6[rnd.IntN(len(c.lens6))]).Masked()
					if c.locals && rnd.IntN(3) == 0 {
						ru.Local = netip.PrefixFrom(v6(), 64).Masked()
					}
				} else {
					ru.Remote = netip.PrefixFrom(v4(), c.lens4[rnd.IntN(len(c.lens4))]).Masked()
					if c.locals && rnd.IntN(3) == 0 {
						ru.Local = netip.PrefixFrom(v4(), 8*rnd.IntN(5)).Masked()
					}
				}
				if ru.Remote.Bits() == 0 && rnd.IntN(2) == 0 {
					ru.Remote = netip.Prefix{} // any address, both families
				}
				if rnd.IntN(4) == 0 {
					ru.RemotePort = uint16(1 + rnd.IntN(3))
				}
				if rnd.IntN(4) == 0 {
					ru.LocalPort = uint16(1 + rnd.IntN(3))
				}
				k := fmt.Sprint(ru.Transport, ru.Local, ru.Remote, ru.LocalPort, ru.RemotePort)
				if seen[k] {
					continue
				}
				seen[k] = true
				rules = append(rules, ru)
			}
			if _, err := r.l.AddRules(rules); err != nil {
				t.Fatal(err)
			}
			if got := sessions.RuleTableIndexed(r.l.GlobalRules(1), sessions.Family4); got != c.indexed {
				t.Fatalf("v4 table indexed: %v, want %v", got, c.indexed)
			}
			if got := sessions.RuleTableIndexed(r.l.GlobalRules(2), sessions.Family6); got != c.indexed {
				t.Fatalf("v6 table indexed: %v, want %v", got, c.indexed)
			}
			listed := r.l.Rules()
			hits := 0
			for i := 0; i < 20000; i++ {
				six := rnd.IntN(3) == 0
				var tup sessions.FiveTuple
				fib := sessions.FIBID(1)
				if six {
					tup = sessions.FiveTuple{Local: sessions.AddrBytes(v6()), Remote: sessions.AddrBytes(v6()), Family: sessions.Family6}
					fib = 2
				} else {
					tup = sessions.FiveTuple{Local: sessions.AddrBytes(v4()), Remote: sessions.AddrBytes(v4()), Family: sessions.Family4}
				}
				tup.LocalPort, tup.RemotePort = uint16(rnd.IntN(4)), uint16(rnd.IntN(4))
				tup.Proto = rules[rnd.IntN(len(rules))].Transport
				wantID, wantOK := refMatch(listed, &tup)
				m, ok := r.l.MatchRule(fib, &tup)
				if ok && !r.l.GlobalRules(fib).MayMatch(&tup) {
					t.Fatalf("tuple %+v: matched %d, but MayMatch says no rule can", tup, m.ID)
				}
				if ok != wantOK || m.ID != wantID {
					t.Fatalf("tuple %+v: matched %d %v (%+v), want %d %v (%+v)", tup, m.ID, ok, listed[m.ID-1], wantID, wantOK, listed[wantID-1])
				}
				if ok {
					hits++
				}
			}
			if hits < 1000 {
				t.Fatalf("only %d of 20000 tuples matched: the test exercises too little", hits)
			}
			tup := sessions.FiveTuple{Local: sessions.AddrBytes(v4()), Remote: sessions.AddrBytes(v4()), Family: sessions.Family4, Proto: sessions.TransportUDP}
			if a := testing.AllocsPerRun(100, func() { r.l.GlobalRules(1).Match(&tup) }); a != 0 {
				t.Fatalf("Match allocates %v", a)
			}
		})
	}
}

// LookupAppListener finds the named app's listener for a packet: its exact
// bind, else its wildcard bind, never another app's.
func TestLookupAppListener(t *testing.T) {
	r := newRig(t)
	a, b := r.attach(0), r.attach(0)
	ha := r.bind(a, "udp://10.0.0.1:9000")
	hb := r.bind(b, "udp://0.0.0.0:9000")
	tup := tuple("10.0.0.1", 9000, "192.0.2.1", 5, sessions.TransportUDP)
	for _, c := range []struct {
		app  sessions.AppID
		want sessions.Handle
	}{{a, ha}, {b, hb}} {
		ln, ok := r.l.LookupAppListener(1, &tup, c.app)
		if !ok || ln.Handle != c.want {
			t.Fatalf("app %d: %+v %v", c.app, ln, ok)
		}
	}
	other := tuple("10.0.0.9", 9000, "192.0.2.1", 5, sessions.TransportUDP) // a's exact bind is not for it
	if _, ok := r.l.LookupAppListener(1, &other, a); ok {
		t.Fatal("a's exact bind found for another address")
	}
	if _, ok := r.l.LookupAppListener(1, &tup, r.attach(0)); ok {
		t.Fatal("an app with no listener found one")
	}
	if a := testing.AllocsPerRun(100, func() { r.l.LookupAppListener(1, &tup, b) }); a != 0 {
		t.Fatalf("allocates %v", a)
	}
}

// The IPv6 remote-prefix index filters on bits 16 to 31 too: rules that
// all start with fd00: rule out an fd00: address whose next 16 bits none of
// them has, without a probe; the addresses they contain still match.
func TestRules_IPv6IndexSecondStage(t *testing.T) {
	r := newRig(t)
	var rules []sessions.Rule
	for i, l := range []int{20, 32, 48, 64} {
		a := netip.AddrFrom16([16]byte{0xfd, 0, 0x10 + byte(i), 0, 7: byte(i)})
		rules = append(rules, sessions.Rule{Transport: sessions.TransportUDP, Remote: netip.PrefixFrom(a, l).Masked(), Action: sessions.RuleDrop})
	}
	if _, err := r.l.AddRules(rules); err != nil {
		t.Fatal(err)
	}
	rt := r.l.GlobalRules(2)
	if !sessions.RuleTableIndexed(rt, sessions.Family6) {
		t.Fatal("v6 table not indexed")
	}
	tup := func(a netip.Addr) sessions.FiveTuple {
		return sessions.FiveTuple{Local: sessions.AddrBytes(netip.MustParseAddr("fd00::2")), Remote: sessions.AddrBytes(a),
			Proto: sessions.TransportUDP, Family: sessions.Family6, LocalPort: 9000, RemotePort: 5}
	}
	for i, ru := range rules {
		in := tup(ru.Remote.Addr().Next())
		if m, ok := rt.Match(&in); !ok || !rt.MayMatch(&in) || m.ID != uint32(i+1) {
			t.Fatalf("%v: matched %+v %v, may match %v", ru.Remote, m, ok, rt.MayMatch(&in))
		}
	}
	out := tup(netip.MustParseAddr("fd00:7777::1")) // first 16 bits shared, next 16 bits in no rule
	if rt.MayMatch(&out) {
		t.Fatal("fd00:7777::1: the index lets the rules through")
	}
	if _, ok := rt.Match(&out); ok {
		t.Fatal("fd00:7777::1 matched")
	}
}
