package sessions

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// RuleAction is what a matching rule does.
type RuleAction uint8

// Rule actions.
const (
	RuleDrop    RuleAction = iota + 1 // refuse: connects fail with ErrFiltered, packets are dropped
	RuleAllow                         // let through to the normal lookup
	RuleForward                       // hand to the app Rule.App (its listener)
)

func (a RuleAction) String() string {
	switch a {
	case RuleDrop:
		return "drop"
	case RuleAllow:
		return "allow"
	case RuleForward:
		return "forward"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Rule is a masked 5-tuple rule of a session rules table.
//
// Local is this host's side and Remote the peer's: for a connect, Remote is
// the destination and Local the connecting app's side (its address is not
// known yet, so only rules with a Local of length 0 can match a connect);
// for a packet received from the wire, Local is its destination. A zero
// netip.Prefix means any address; a zero port means any port. When neither
// prefix is set the rule applies to both families; when both are set they
// must be of the same family.
//
// Scope says which tables hold the rule: ScopeLocal, the local table of
// Namespace (consulted by connects of local-scope apps); ScopeGlobal, the
// global tables of Namespace's FIBs (consulted by connects of global-scope
// apps and by the datapath); both flags, both. Zero means ScopeGlobal.
//
// Matching is longest-prefix: among the rules of a table whose prefixes
// contain the addresses, whose ports are zero or equal and whose transport
// is equal, the winner has the longest Remote prefix; then the longest Local
// prefix; then a set RemotePort beats a zero one; then a set LocalPort beats
// a zero one; then the rule added first (lowest ID) wins.
type Rule struct {
	Transport  Transport
	Local      netip.Prefix
	Remote     netip.Prefix
	LocalPort  uint16
	RemotePort uint16
	Action     RuleAction
	App        AppID // with RuleForward: the app to forward to
	Scope      Scope
	Namespace  string
	Tag        string
}

// RuleInfo is a rule as listed, with its ID.
type RuleInfo struct {
	ID uint32 `json:"id"`
	Rule
}

// RuleMatch is the result of a rule lookup.
type RuleMatch struct {
	ID     uint32
	Action RuleAction
	App    AppID
}

// sameMatch reports whether a and b match the same packets and connects in
// the same tables (everything but action, app and tag).
func (r Rule) sameMatch(o Rule) bool {
	return r.Transport == o.Transport && r.Local == o.Local && r.Remote == o.Remote &&
		r.LocalPort == o.LocalPort && r.RemotePort == o.RemotePort &&
		r.Scope == o.Scope && r.Namespace == o.Namespace
}

// normalize checks r and returns it with masked prefixes and a set scope.
func (r Rule) normalize() (Rule, error) {
	switch r.Transport {
	case TransportTCP, TransportUDP, TransportSCTP:
	default:
		return r, fmt.Errorf("rule transport %v: %w", r.Transport, ErrInvalidValue)
	}
	switch r.Action {
	case RuleDrop, RuleAllow:
		r.App = 0
	case RuleForward:
	default:
		return r, fmt.Errorf("rule action %v: %w", r.Action, ErrInvalidValue)
	}
	if r.Scope == 0 {
		r.Scope = ScopeGlobal
	}
	if r.Scope&^(ScopeGlobal|ScopeLocal) != 0 {
		return r, fmt.Errorf("rule scope %#x: %w", uint8(r.Scope), ErrInvalidValue)
	}
	for _, p := range []*netip.Prefix{&r.Local, &r.Remote} {
		if !p.IsValid() {
			*p = netip.Prefix{}
			continue
		}
		if p.Addr().Zone() != "" {
			return r, fmt.Errorf("rule prefix %v has a zone: %w", *p, ErrInvalidValue)
		}
		if p.Addr().Is4In6() {
			bits := p.Bits() - 96
			if bits < 0 {
				return r, fmt.Errorf("rule prefix %v: %w", *p, ErrInvalidValue)
			}
			*p = netip.PrefixFrom(p.Addr().Unmap(), bits)
		}
		*p = p.Masked()
	}
	if r.Local.IsValid() && r.Remote.IsValid() && r.Local.Addr().Is4() != r.Remote.Addr().Is4() {
		return r, fmt.Errorf("rule prefixes %v and %v are of different families: %w", r.Local, r.Remote, ErrInvalidValue)
	}
	return r, nil
}

// families returns the families r applies to.
func (r Rule) families() []uint8 {
	switch {
	case r.Local.IsValid():
		return []uint8{familyOf(r.Local.Addr())}
	case r.Remote.IsValid():
		return []uint8{familyOf(r.Remote.Addr())}
	}
	return []uint8{Family4, Family6}
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return Family4
	}
	return Family6
}

func prefixBits(p netip.Prefix) uint8 {
	if !p.IsValid() {
		return 0
	}
	return uint8(p.Bits())
}

// ruleKey is a rule's masked addresses, transport and family.
type ruleKey struct {
	lcl, rmt [16]byte
	proto    Transport
	fam      uint8
}

// maskAddr keeps the first bits bits of a 16-byte key address.
func maskAddr(a *[16]byte, bits uint8) (m [16]byte) {
	hi := binary.BigEndian.Uint64(a[0:8])
	lo := binary.BigEndian.Uint64(a[8:16])
	switch {
	case bits == 0:
		hi, lo = 0, 0
	case bits < 64:
		hi &= ^uint64(0) << (64 - bits)
		lo = 0
	case bits < 128:
		lo &= ^uint64(0) << (128 - bits)
	}
	binary.BigEndian.PutUint64(m[0:8], hi)
	binary.BigEndian.PutUint64(m[8:16], lo)
	return m
}

type ruleEntry struct {
	id    uint32
	lport uint16
	rport uint16
	act   RuleAction
	app   AppID
}

// ruleGroup holds the rules of one family with the same pair of prefix
// lengths, keyed by their masked addresses.
type ruleGroup struct {
	rmtLen, lclLen uint8
	m              map[ruleKey][]ruleEntry // each list in tie-break order
}

// ruleSet is an immutable rules table, its groups in match order.
type ruleSet struct {
	groups [2][]ruleGroup // [0] IPv4, [1] IPv6
	n      int
}

func famIndex(fam uint8) int {
	if fam == Family6 {
		return 1
	}
	return 0
}

func buildRuleSet(rules []RuleInfo) *ruleSet {
	if len(rules) == 0 {
		return nil
	}
	type gk struct {
		fam            uint8
		rmtLen, lclLen uint8
	}
	groups := map[gk]map[ruleKey][]ruleEntry{}
	for _, r := range rules {
		for _, fam := range r.families() {
			g := gk{fam, prefixBits(r.Remote), prefixBits(r.Local)}
			m := groups[g]
			if m == nil {
				m = map[ruleKey][]ruleEntry{}
				groups[g] = m
			}
			k := ruleKey{proto: r.Transport, fam: fam}
			if r.Local.IsValid() {
				k.lcl = AddrBytes(r.Local.Addr())
			}
			if r.Remote.IsValid() {
				k.rmt = AddrBytes(r.Remote.Addr())
			}
			m[k] = append(m[k], ruleEntry{id: r.ID, lport: r.LocalPort, rport: r.RemotePort, act: r.Action, app: r.App})
		}
	}
	s := &ruleSet{n: len(rules)}
	for g, m := range groups {
		for _, l := range m {
			slices.SortFunc(l, func(a, b ruleEntry) int {
				if c := cmp.Compare(b2i(b.rport != 0), b2i(a.rport != 0)); c != 0 {
					return c
				}
				if c := cmp.Compare(b2i(b.lport != 0), b2i(a.lport != 0)); c != 0 {
					return c
				}
				return cmp.Compare(a.id, b.id)
			})
		}
		fi := famIndex(g.fam)
		s.groups[fi] = append(s.groups[fi], ruleGroup{rmtLen: g.rmtLen, lclLen: g.lclLen, m: m})
	}
	for fi := range s.groups {
		slices.SortFunc(s.groups[fi], func(a, b ruleGroup) int {
			if c := cmp.Compare(b.rmtLen, a.rmtLen); c != 0 {
				return c
			}
			return cmp.Compare(b.lclLen, a.lclLen)
		})
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// match returns the winning rule for a tuple, as Rule documents. It does
// not allocate.
func (s *ruleSet) match(t *FiveTuple) (RuleMatch, bool) {
	if s == nil {
		return RuleMatch{}, false
	}
	for gi := range s.groups[famIndex(t.Family)] {
		g := &s.groups[famIndex(t.Family)][gi]
		k := ruleKey{lcl: maskAddr(&t.Local, g.lclLen), rmt: maskAddr(&t.Remote, g.rmtLen), proto: t.Proto, fam: t.Family}
		for _, e := range g.m[k] {
			if (e.rport == 0 || e.rport == t.RemotePort) && (e.lport == 0 || e.lport == t.LocalPort) {
				return RuleMatch{ID: e.id, Action: e.act, App: e.app}, true
			}
		}
	}
	return RuleMatch{}, false
}

// ruleTableID names one rules table: a namespace's local table or a FIB's
// global table.
type ruleTableID struct {
	local bool
	ns    string // local tables
	fib   FIBID  // global tables
}

// ruleSnap is the published state of all rules tables. Immutable.
type ruleSnap struct {
	tables map[ruleTableID]*ruleSet
}

func (p *ruleSnap) table(id ruleTableID) *ruleSet {
	if p == nil {
		return nil
	}
	return p.tables[id]
}
