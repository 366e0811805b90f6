package sessions

import (
	"fmt"
	"net/netip"
	"strings"
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
	Hits uint64 `json:"hits"` // packets and connects the rule acted on
}

// RuleMatch is the result of a rule lookup.
type RuleMatch struct {
	ID     uint32
	Action RuleAction
	App    AppID
	Hits   *RuleHits // the rule's counter: whoever acts on the match counts it
}

// sameMatch reports whether a and b match the same packets and connects in
// the same tables (everything but action, app and tag).
func (r Rule) sameMatch(o Rule) bool {
	return r.Transport == o.Transport && r.Local == o.Local && r.Remote == o.Remote &&
		r.LocalPort == o.LocalPort && r.RemotePort == o.RemotePort &&
		r.Scope == o.Scope && r.Namespace == o.Namespace
}

// words writes r as the words of ctl rule add (proto, local and remote
// prefix and port, action, app, scope, namespace, tag), leaving out the
// parts that are zero, for error messages: "proto udp remote 192.0.2.0/24
// 53 action drop tag t1". A zero prefix with a port set is written "any";
// a namespace or tag that is not one plain word is quoted.
func (r Rule) words() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proto %v", r.Transport)
	for _, side := range []struct {
		name string
		p    netip.Prefix
		port uint16
	}{{"local", r.Local, r.LocalPort}, {"remote", r.Remote, r.RemotePort}} {
		switch {
		case side.p.IsValid():
			fmt.Fprintf(&b, " %s %v %d", side.name, side.p, side.port)
		case side.port != 0:
			fmt.Fprintf(&b, " %s any %d", side.name, side.port)
		}
	}
	fmt.Fprintf(&b, " action %v", r.Action)
	if r.Action == RuleForward || r.App != 0 {
		fmt.Fprintf(&b, " app %d", r.App)
	}
	switch r.Scope {
	case 0, ScopeGlobal:
	case ScopeGlobal | ScopeLocal:
		b.WriteString(" scope both")
	default:
		fmt.Fprintf(&b, " scope %v", r.Scope)
	}
	if r.Namespace != "" {
		fmt.Fprintf(&b, " ns %s", plainWord(r.Namespace))
	}
	if r.Tag != "" {
		fmt.Fprintf(&b, " tag %s", plainWord(r.Tag))
	}
	return b.String()
}

// plainWord returns s as it is when it is printable ASCII without spaces
// or quotes, else quoted.
func plainWord(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '\'' {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
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
