package datapath

import (
	"encoding/binary"
	"math/bits"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// ruleCacheBits sizes a worker's rule decision cache: 1<<ruleCacheBits
// entries of one cache line each (64 KiB, 16 pages), allocated with the
// first rules table the worker sees.
const ruleCacheBits = 10

// ruleCache is a worker's memory of what the FIB's global rules table said
// about recent 5-tuples: the winning rule, or that none matched. A flow's
// datagrams then pay one probe of a direct-mapped table instead of the
// table's match, whatever the number of rules. Tuples the table's index
// rules out (RuleTable.MayMatch) skip the cache: they cost no more than
// the check. It serves one table: a new
// table (rules are published as immutable snapshots) starts a new
// generation, which empties every entry at once.
//
// When nearly every lookup misses (a flood of new flows, e.g. spoofed
// sources), probing and filling an entry that is never asked again costs
// more than it saves: two cache lines touched per datagram besides the
// table's own. The cache then steps aside (bypass): the table answers
// directly, and one lookup in ruleCacheSample still goes through the
// entries, so that it notices when the flows repeat again. Owned by the
// worker; not safe for concurrent use; no allocation after the first
// table.
type ruleCache struct {
	rt    *sessions.RuleTable // the table the entries were matched in; holding it keeps its address from being reused
	gen   uint32              // the generation of rt; entries of another one are empty (0 is never current)
	ents  []ruleCacheEntry    // 1<<ruleCacheBits, nil until a table is seen
	fills uint64              // answers the table gave (misses and bypassed lookups); the others came from the entries

	bypass        bool   // the table answers directly but for one lookup in ruleCacheSample
	skip          uint32 // bypass: lookups since the last one that went through the entries
	looks, misses uint32 // this window's lookups through the entries and how many missed
	bypassed      uint64 // lookups the table answered directly (bypass)
}

// The cache's bypass policy: over each window of ruleCacheWindow lookups
// through the entries, it steps aside when more than 7 in 8 missed, and
// (sampling one lookup in ruleCacheSample meanwhile) comes back when fewer
// than 3 in 4 of the samples missed.
const (
	ruleCacheWindow = 1024
	ruleCacheSample = 32
)

// ruleCacheEntry is one cached verdict: a 5-tuple as five words (both
// addresses, then ports, transport and family: see match) and the rule
// that won for it (act 0: none did).
type ruleCacheEntry struct {
	k    [5]uint64
	gen  uint32
	id   uint32
	app  sessions.AppID
	act  sessions.RuleAction
	hits *sessions.RuleHits
}

// use makes rt the table the cache answers for. A different table than
// the current one (nil included) empties the cache.
func (c *ruleCache) use(rt *sessions.RuleTable) {
	if rt == c.rt {
		return
	}
	c.rt = rt
	c.bypass, c.skip, c.looks, c.misses = false, 0, 0, 0
	if rt == nil {
		return
	}
	if c.ents == nil {
		c.ents = make([]ruleCacheEntry, 1<<ruleCacheBits)
	}
	c.gen++
	if c.gen == 0 {
		clear(c.ents)
		c.gen = 1
	}
}

// match returns the winning rule of the current table (use) for t, as
// sessions.RuleTable.Match does, from the cache when it holds t. The
// table must not be nil.
func (c *ruleCache) match(t *flow.FiveTuple) (sessions.RuleMatch, bool) {
	if c.bypass {
		if c.skip++; c.skip < ruleCacheSample {
			c.bypassed++
			c.fills++
			return c.rt.Match(t)
		}
		c.skip = 0
	}
	if !c.rt.MayMatch(t) {
		return sessions.RuleMatch{}, false
	}
	c.looks++
	if c.looks == ruleCacheWindow {
		c.window()
	}
	// The key in five words (in registers, not an array on the stack):
	// both addresses, then ports, transport and family.
	l0, l1 := binary.LittleEndian.Uint64(t.Local[0:8]), binary.LittleEndian.Uint64(t.Local[8:16])
	r0, r1 := binary.LittleEndian.Uint64(t.Remote[0:8]), binary.LittleEndian.Uint64(t.Remote[8:16])
	p := uint64(t.LocalPort) | uint64(t.RemotePort)<<16 | uint64(t.Proto)<<32 | uint64(t.Family)<<40
	h := l0 ^ bits.RotateLeft64(l1, 17) ^ bits.RotateLeft64(r0, 32) ^ bits.RotateLeft64(r1, 47) ^ bits.RotateLeft64(p, 7)
	e := &c.ents[(h*0x9e3779b97f4a7c15)>>(64-ruleCacheBits)]
	if e.gen == c.gen && e.k[0] == l0 && e.k[2] == r0 && e.k[4] == p && e.k[1] == l1 && e.k[3] == r1 {
		return sessions.RuleMatch{ID: e.id, Action: e.act, App: e.app, Hits: e.hits}, e.act != 0
	}
	c.misses++
	return c.fill(e, t, [5]uint64{l0, l1, r0, r1, p})
}

// window ends a window of lookups through the entries: the bypass policy
// above. The window's last lookup is counted in the next one.
func (c *ruleCache) window() {
	if c.bypass {
		c.bypass = c.misses*4 >= (ruleCacheWindow-1)*3
	} else {
		c.bypass = c.misses*8 > (ruleCacheWindow-1)*7
	}
	c.skip, c.looks, c.misses = 0, 1, 0
}

// fill asks the table about t and keeps the answer in e under key k.
func (c *ruleCache) fill(e *ruleCacheEntry, t *flow.FiveTuple, k [5]uint64) (sessions.RuleMatch, bool) {
	c.fills++
	m, ok := c.rt.Match(t)
	if !ok {
		m = sessions.RuleMatch{}
	}
	*e = ruleCacheEntry{k: k, gen: c.gen, id: m.ID, app: m.App, act: m.Action, hits: m.Hits}
	return m, ok
}
