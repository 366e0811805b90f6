package sessions_test

import (
	"net/netip"
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
		{Transport: tcp, Remote: pfx("192.0.2.0/25"), Action: sessions.RuleDrop, Tag: "rmt25dup"},                      // 6 (loses to 4: older wins)
		{Transport: tcp, Remote: pfx("192.0.2.0/24"), Local: pfx("10.0.0.0/8"), Action: sessions.RuleAllow, Tag: "l8"}, // 7
		{Transport: tcp, Remote: pfx("2001:db8::/32"), Action: sessions.RuleDrop, Tag: "v6"},                           // 8
		{Transport: sessions.TransportUDP, Remote: pfx("192.0.2.0/24"), Action: sessions.RuleDrop, Tag: "udp"},         // 9
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
