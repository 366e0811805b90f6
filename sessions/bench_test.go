package sessions_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

var sink uint32

// BenchmarkLookupListener looks up 10,000 listeners of one FIB, half
// bound to an exact address and half to the wildcard address, with hits
// of both kinds.
func BenchmarkLookupListener(b *testing.B) {
	b.Run("10k", func(b *testing.B) { benchLookupListener(b, 10000) })
}

func benchLookupListener(b *testing.B, n int) {
	r := newRig(b)
	var addrs []netip.Addr
	for i := 0; i < 100; i++ {
		a := netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})
		r.view.Add(2, 1, a)
		addrs = append(addrs, a)
	}
	app := r.attach(sessions.ScopeGlobal)
	var tuples []sessions.FiveTuple
	for i := 0; i < n; i++ {
		port := uint16(1000 + i/2)
		a := addrs[i%len(addrs)]
		e := ep(sessions.TransportUDP, a, port)
		if i%2 == 1 {
			e.Addr = zero4
		}
		if _, err := r.l.Bind(app, e); err != nil {
			b.Fatal(err)
		}
		// A packet to a: the exact bind for even i, the wildcard for odd
		// i (whose port has no exact bind on a... unless even i took it).
		tuples = append(tuples, sessions.FiveTuple{Local: sessions.AddrBytes(a), LocalPort: port, Remote: sessions.AddrBytes(remote),
			RemotePort: 5000, Proto: sessions.TransportUDP, Family: sessions.Family4})
		if i%2 == 1 {
			tuples[i].Local = sessions.AddrBytes(addrs[(i+1)%len(addrs)])
		}
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	order := make([]int32, 1<<16)
	for i := range order {
		order[i] = int32(rnd.IntN(n))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ln, ok := r.l.LookupListener(1, &tuples[order[i&(len(order)-1)]])
		if !ok {
			b.Fatal("miss")
		}
		sink += uint32(ln.Handle)
	}
}

// BenchmarkRuleMatch matches tuples against 10,000 global rules with
// remote prefixes of lengths 8 to 32 and local prefixes of 0 or 24.
func BenchmarkRuleMatch(b *testing.B) {
	b.Run("10k", func(b *testing.B) { benchRuleMatch(b, 10000) })
}

func benchRuleMatch(b *testing.B, n int) {
	r := newRig(b)
	rnd := rand.New(rand.NewPCG(5, 5))
	lens := []int{8, 16, 20, 24, 28, 32}
	rules := make([]sessions.Rule, n)
	var tuples []sessions.FiveTuple
	seen := map[sessions.Rule]bool{}
	for i := 0; i < len(rules); {
		a := netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))})
		ru := sessions.Rule{Transport: sessions.TransportTCP, Remote: netip.PrefixFrom(a, lens[rnd.IntN(len(lens))]).Masked()}
		if rnd.IntN(3) == 0 {
			ru.Local = netip.PrefixFrom(addrA, 24).Masked()
		}
		if rnd.IntN(5) == 0 {
			ru.RemotePort = uint16(rnd.IntN(1024))
		}
		if seen[ru] { // one rule per match: draw again
			continue
		}
		seen[ru] = true
		ru.Action = sessions.RuleAction(i%2 + 1)
		rules[i] = ru
		tuples = append(tuples, sessions.FiveTuple{Local: sessions.AddrBytes(addrA), LocalPort: 80, Remote: sessions.AddrBytes(a),
			RemotePort: ru.RemotePort, Proto: sessions.TransportTCP, Family: sessions.Family4})
		i++
	}
	if _, err := r.l.AddRules(rules); err != nil {
		b.Fatal(err)
	}
	order := make([]int32, 1<<16)
	for i := range order {
		order[i] = int32(rnd.IntN(n))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m, ok := r.l.MatchRule(1, &tuples[order[i&(len(order)-1)]])
		if !ok {
			b.Fatal("miss")
		}
		sink += m.ID
	}
}
