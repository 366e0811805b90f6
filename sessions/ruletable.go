package sessions

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"
	"sync/atomic"
)

// The rules tables as the datapath and connects read them: immutable,
// grouped by prefix lengths, with an index of the groups
// that can match, and per-rule hit counters.

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

// RuleHits counts the packets and connects a rule acted on. It outlives
// the snapshots the rule appears in, for as long as the rule exists. Safe
// for concurrent use.
type RuleHits struct{ n atomic.Uint64 }

// Add counts n hits; a nil RuleHits counts nothing.
func (h *RuleHits) Add(n uint64) {
	if h != nil {
		h.n.Add(n)
	}
}

// Load returns the hits counted so far.
func (h *RuleHits) Load() uint64 {
	if h == nil {
		return 0
	}
	return h.n.Load()
}

type ruleEntry struct {
	id    uint32
	lport uint16
	rport uint16
	act   RuleAction
	app   AppID
	hits  *RuleHits
}

// ruleGroup holds the rules of one family and transport with the same
// pair of prefix lengths, keyed by their masked addresses: IPv4 ones by
// both addresses in one word (local in the high half), which the map hashes
// fastest.
type ruleGroup struct {
	rmtLen, lclLen uint8
	proto          Transport
	m              map[ruleKey][]ruleEntry // IPv6; each list in tie-break order
	m4             map[uint64]uint32       // IPv4, while building: index in heads4
	heads4         []ruleHead              // IPv4: the rules of each key
	mask4          uint64                  // IPv4: the key4 mask of the group's prefix lengths
	slots4         []slot4                 // IPv4: open addressing from key4 to heads4, at most half full
	shift4         uint8                   // 64 - log2(len(slots4))
}

// slot4 is a slot of a group's IPv4 table: a key and 1 + its index in
// heads4 (0: empty).
type slot4 struct {
	k uint64
	i uint32
}

// slotHash picks the first slot of an IPv4 key.
func slotHash(k uint64, shift uint8) uint64 { return (k * 0x9e3779b97f4a7c15) >> shift }

// buildSlots turns m4 into slots4: one cache line per probe mostly, where
// a Go map takes several.
func (g *ruleGroup) buildSlots() {
	n := uint64(8)
	for n < 2*uint64(len(g.m4)) {
		n <<= 1
	}
	g.slots4 = make([]slot4, n)
	g.shift4 = uint8(64 - (63 - lzcnt(n)))
	for k, i := range g.m4 {
		h := slotHash(k, g.shift4)
		for g.slots4[h].i != 0 {
			h = (h + 1) & (n - 1)
		}
		g.slots4[h] = slot4{k: k, i: i + 1}
	}
	g.m4 = nil
}

// lookup4 returns the rules of IPv4 key k, or nil.
func (g *ruleGroup) lookup4(k uint64) *ruleHead {
	mask := uint64(len(g.slots4) - 1)
	for h := slotHash(k, g.shift4); ; h = (h + 1) & mask {
		sl := &g.slots4[h]
		if sl.i == 0 {
			return nil
		}
		if sl.k == k {
			return &g.heads4[sl.i-1]
		}
	}
}

func lzcnt(x uint64) int { return bits.LeadingZeros64(x) }

// ruleHead holds the rules of one IPv4 key: the first (in tie-break
// order) in the map's slot, the others behind it.
type ruleHead struct {
	first ruleEntry
	more  []ruleEntry
}

// addr4 is both IPv4 addresses of t in one word, local in the high half.
func addr4(t *FiveTuple) uint64 {
	return uint64(binary.BigEndian.Uint32(t.Local[:4]))<<32 | uint64(binary.BigEndian.Uint32(t.Remote[:4]))
}

func key4(lcl, rmt *[16]byte, lclLen, rmtLen uint8) uint64 {
	return uint64(binary.BigEndian.Uint32(lcl[:4])&mask32(lclLen))<<32 | uint64(binary.BigEndian.Uint32(rmt[:4])&mask32(rmtLen))
}

func mask32(bits uint8) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// lenSet is a set of remote prefix lengths, 0 to 128.
type lenSet [3]uint64

func (s *lenSet) add(n uint8) { s[n>>6] |= 1 << (n & 63) }

// indexMinLengths is the number of distinct remote prefix lengths of a
// family from which a RuleTable builds its remote-prefix index: below it,
// trying every group costs less than the index's lookup.
const indexMinLengths = 3

// The remote-prefix index says, for the first 16 bits of a remote address,
// which groups can match it, as a set of group numbers (one bit a group,
// nw words a set, in match order): a group whose remote prefixes are 16
// bits or shorter exactly (one of its prefixes contains every address with
// those bits), a longer one as a filter (one of its prefixes starts with
// those bits). Matching then probes only those groups, whatever the number
// of groups, and not the groups of the same prefix lengths whose
// addresses are elsewhere. IPv6 rules mostly share their first 16 bits
// (2001:, fd..:), so their index filters bits 16 to 31 the same way too,
// and a group must pass both. It lives in the famTable (no pointer to
// follow): the lookup is a short chain of dependent loads, which is what
// it costs.

// groupSets returns the group sets that can match remote address a (16
// bytes): those in both (the same set twice for IPv4). The sets are not
// copied: reading a copied array word by word stalls on store forwarding,
// which costs this path more than the rest of the lookup.
func (f *famTable) groupSets(a *[16]byte) (s1, s2 []uint64) {
	nw := int(f.nw)
	s1 = f.sets[int(f.first[uint32(a[0])<<8|uint32(a[1])])*nw:][:nw]
	if f.second == nil {
		return s1, s1
	}
	return s1, f.sets2[int(f.second[uint32(a[2])<<8|uint32(a[3])])*nw:][:nw]
}

// dedupSets turns one set of nw words per 16-bit value (per, 1<<16 sets)
// into an index and its distinct sets, laid end to end.
func dedupSets(per []uint64, nw int) (*[1 << 16]uint16, []uint64) {
	idx := new([1 << 16]uint16)
	var sets []uint64
	seen := map[string]uint16{}
	key := make([]byte, 0, 8*nw)
	for i := range 1 << 16 {
		cur := per[i*nw : (i+1)*nw]
		if i > 0 && slices.Equal(cur, per[(i-1)*nw:i*nw]) {
			idx[i] = idx[i-1]
			continue
		}
		key = key[:0]
		for _, w := range cur {
			key = binary.LittleEndian.AppendUint64(key, w)
		}
		j, ok := seen[string(key)]
		if !ok {
			j = uint16(len(sets) / nw)
			seen[string(key)] = j
			sets = append(sets, cur...)
		}
		idx[i] = j
	}
	return idx, sets
}

// buildIndex builds f's remote-prefix index from its groups (in match
// order). It works on one set per 16-bit value: 512 KiB per 64 groups
// (twice that for IPv6) while it builds; the index keeps the distinct
// sets only.
func (f *famTable) buildIndex(v6 bool) {
	nw := (len(f.groups) + 63) / 64
	per := make([]uint64, nw<<16)
	var per2 []uint64
	short := make([]uint64, nw) // IPv6: groups of remote prefixes of 16 bits or less, which every value of bits 16 to 31 can match
	if v6 {
		per2 = make([]uint64, nw<<16)
	}
	for gi := range f.groups {
		g := &f.groups[gi]
		w, bit := gi>>6, uint64(1)<<(gi&63)
		var his []uint32
		mids := map[uint32]bool{} // IPv6: bits 16 to 31 of the group's remote prefixes
		for k := range g.m {
			his = append(his, uint32(k.rmt[0])<<8|uint32(k.rmt[1]))
			mids[uint32(k.rmt[2])<<8|uint32(k.rmt[3])] = true
		}
		for _, sl := range g.slots4 {
			if sl.i != 0 {
				his = append(his, uint32(sl.k>>16)&0xffff)
			}
		}
		slices.Sort(his)
		for _, hi := range slices.Compact(his) {
			span := uint32(1)
			if g.rmtLen < 16 {
				span = 1 << (16 - g.rmtLen)
			}
			for i := hi &^ (span - 1); i < hi&^(span-1)+span; i++ {
				per[int(i)*nw+w] |= bit
			}
		}
		if !v6 {
			continue
		}
		if g.rmtLen <= 16 {
			short[w] |= bit
			continue
		}
		span := uint32(1)
		if g.rmtLen < 32 {
			span = 1 << (32 - g.rmtLen)
		}
		for mid := range mids {
			for i := mid &^ (span - 1); i < mid&^(span-1)+span; i++ {
				per2[int(i)*nw+w] |= bit
			}
		}
	}
	f.nw = uint32(nw)
	f.first, f.sets = dedupSets(per, nw)
	if v6 {
		for i := range 1 << 16 {
			for w := range nw {
				per2[i*nw+w] |= short[w]
			}
		}
		f.second, f.sets2 = dedupSets(per2, nw)
	}
}

// famTable is the part of a RuleTable for one address family.
type famTable struct {
	groups []ruleGroup // in match order: longest remote, then longest local
	// The remote-prefix index (nil first: none, with fewer than
	// indexMinLengths remote prefix lengths).
	first  *[1 << 16]uint16 // first 16 bits of the remote address -> its set in sets
	second *[1 << 16]uint16 // IPv6: bits 16 to 31 -> its set in sets2; nil for IPv4
	sets   []uint64         // nw words a set, one bit a group
	sets2  []uint64
	nw     uint32
}

// RuleTable is an immutable rules table (a namespace's local table or a
// FIB's global table). A nil *RuleTable holds no rules. Safe for
// concurrent use.
type RuleTable struct {
	fams [2]famTable // [0] IPv4, [1] IPv6
	n    int
}

func famIndex(fam uint8) int {
	if fam == Family6 {
		return 1
	}
	return 0
}

func buildRuleTable(rules []RuleInfo, hits map[uint32]*RuleHits) *RuleTable {
	if len(rules) == 0 {
		return nil
	}
	type gk struct {
		fam            uint8
		proto          Transport
		rmtLen, lclLen uint8
	}
	groups := map[gk]*ruleGroup{}
	for _, r := range rules {
		for _, fam := range r.families() {
			g := gk{fam, r.Transport, prefixBits(r.Remote), prefixBits(r.Local)}
			grp := groups[g]
			if grp == nil {
				grp = &ruleGroup{rmtLen: g.rmtLen, lclLen: g.lclLen, proto: g.proto}
				if fam == Family4 {
					grp.m4 = map[uint64]uint32{}
					grp.mask4 = uint64(mask32(g.lclLen))<<32 | uint64(mask32(g.rmtLen))
				} else {
					grp.m = map[ruleKey][]ruleEntry{}
				}
				groups[g] = grp
			}
			var lcl, rmt [16]byte
			if r.Local.IsValid() {
				lcl = AddrBytes(r.Local.Addr())
			}
			if r.Remote.IsValid() {
				rmt = AddrBytes(r.Remote.Addr())
			}
			e := ruleEntry{id: r.ID, lport: r.LocalPort, rport: r.RemotePort, act: r.Action, app: r.App, hits: hits[r.ID]}
			if fam == Family4 {
				k := key4(&lcl, &rmt, g.lclLen, g.rmtLen)
				i, ok := grp.m4[k]
				if !ok {
					i = uint32(len(grp.heads4))
					grp.m4[k] = i
					grp.heads4 = append(grp.heads4, ruleHead{first: e})
				} else {
					h := &grp.heads4[i]
					h.more = append(h.more, e)
				}
			} else {
				k := ruleKey{lcl: lcl, rmt: rmt, proto: r.Transport, fam: fam}
				grp.m[k] = append(grp.m[k], e)
			}
		}
	}
	s := &RuleTable{n: len(rules)}
	for g, grp := range groups {
		sortEntries := func(l []ruleEntry) {
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
		for _, l := range grp.m {
			sortEntries(l)
		}
		for i := range grp.heads4 {
			h := &grp.heads4[i]
			l := append([]ruleEntry{h.first}, h.more...)
			sortEntries(l)
			h.first, h.more = l[0], nil
			if len(l) > 1 {
				h.more = l[1:]
			}
		}
		if grp.m4 != nil {
			grp.buildSlots()
		}
		f := &s.fams[famIndex(g.fam)]
		f.groups = append(f.groups, *grp)
	}
	for fi := range s.fams {
		f := &s.fams[fi]
		slices.SortFunc(f.groups, func(a, b ruleGroup) int {
			if c := cmp.Compare(b.rmtLen, a.rmtLen); c != 0 {
				return c
			}
			if c := cmp.Compare(b.lclLen, a.lclLen); c != 0 {
				return c
			}
			return cmp.Compare(a.proto, b.proto)
		})
		lens := lenSet{}
		for _, g := range f.groups {
			lens.add(g.rmtLen)
		}
		if bits.OnesCount64(lens[0])+bits.OnesCount64(lens[1])+bits.OnesCount64(lens[2]) >= indexMinLengths {
			f.buildIndex(fi == 1)
		}
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Len returns the number of rules in the table.
func (s *RuleTable) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Match returns the winning rule for a tuple (Local is this host's side),
// as Rule documents. It does not allocate. Its cost grows with the number
// of groups (pairs of prefix lengths) that can match the tuple's remote
// address, not with the number of rules.
func (s *RuleTable) Match(t *FiveTuple) (RuleMatch, bool) {
	if s == nil {
		return RuleMatch{}, false
	}
	f := &s.fams[famIndex(t.Family)]
	var a4 uint64
	if t.Family == Family4 {
		a4 = addr4(t)
	}
	if f.first == nil {
		for gi := range f.groups {
			if m, ok := f.groups[gi].probe(t, a4); ok {
				return m, true
			}
		}
		return RuleMatch{}, false
	}
	s1, s2 := f.groupSets(&t.Remote)
	for w := range s1 {
		for b := s1[w] & s2[w]; b != 0; b &= b - 1 {
			if m, ok := f.groups[w<<6|bits.TrailingZeros64(b)].probe(t, a4); ok {
				return m, true
			}
		}
	}
	return RuleMatch{}, false
}

// MayMatch reports whether a rule of the table could match t: false when
// the table has no rule of t's family or its remote-prefix index rules
// every group out, which costs a few loads; Match then answers no match
// too. A cache of Match's answers asks it first, so that the traffic no
// rule can match takes no cache entry. It does not allocate.
func (s *RuleTable) MayMatch(t *FiveTuple) bool {
	if s == nil {
		return false
	}
	f := &s.fams[famIndex(t.Family)]
	if f.first == nil {
		return len(f.groups) > 0
	}
	s1, s2 := f.groupSets(&t.Remote)
	for w := range s1 {
		if s1[w]&s2[w] != 0 {
			return true
		}
	}
	return false
}

// probe looks t up in the group: its winning rule, if any. a4 is both
// IPv4 addresses of t (addr4) when t is IPv4.
func (g *ruleGroup) probe(t *FiveTuple, a4 uint64) (RuleMatch, bool) {
	if g.proto != t.Proto {
		return RuleMatch{}, false
	}
	var l []ruleEntry
	if g.slots4 != nil {
		h := g.lookup4(a4 & g.mask4)
		if h == nil {
			return RuleMatch{}, false
		}
		if e := &h.first; (e.rport == 0 || e.rport == t.RemotePort) && (e.lport == 0 || e.lport == t.LocalPort) {
			return RuleMatch{ID: e.id, Action: e.act, App: e.app, Hits: e.hits}, true
		}
		l = h.more
	} else {
		l = g.m[ruleKey{lcl: maskAddr(&t.Local, g.lclLen), rmt: maskAddr(&t.Remote, g.rmtLen), proto: t.Proto, fam: t.Family}]
	}
	for _, e := range l {
		if (e.rport == 0 || e.rport == t.RemotePort) && (e.lport == 0 || e.lport == t.LocalPort) {
			return RuleMatch{ID: e.id, Action: e.act, App: e.app, Hits: e.hits}, true
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
	tables map[ruleTableID]*RuleTable
}

func (p *ruleSnap) table(id ruleTableID) *RuleTable {
	if p == nil {
		return nil
	}
	return p.tables[id]
}
