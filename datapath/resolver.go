package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/nsbind"
)

// Resolver cache lifetimes.
const (
	resolvedTTL = 5 * time.Second        // a resolved next hop is asked again after this, its stale entry marked used (lookup)
	failedTTL   = 500 * time.Millisecond // a failed one is retried after this
	// resolveWait bounds one resolution's wait for the kernel's verdict:
	// a usable entry, or a failed one once its probes went unanswered
	// (three a second apart by default). Waiting for the verdict, not
	// less, is what lets a connect held for that next hop hear at once
	// that it is unreachable, as a kernel socket's does.
	resolveWait  = 5 * time.Second
	maxResolving = 8 // resolutions in flight
)

// nbKey names a destination: its address in AddrBytes form and family,
// and the source address its packets leave from when it is known (zero
// otherwise: the route's), which the kernel's policy rules may route by
// (ip rule from ADDR), as they route a kernel socket bound to it.
type nbKey struct {
	addr [16]byte
	src  [16]byte
	fam  uint8
}

func (k nbKey) Addr() netip.Addr { return flow.AddrFrom(k.addr, k.fam) }

// Src is the source address of k, invalid when none is known.
func (k nbKey) Src() netip.Addr {
	if k.src == ([16]byte{}) {
		return netip.Addr{}
	}
	return flow.AddrFrom(k.src, k.fam)
}

// withSrc returns k with source src (none for an invalid or unspecified
// one).
func (k nbKey) withSrc(src netip.Addr) nbKey {
	k.src = [16]byte{}
	if src.IsValid() && !src.IsUnspecified() {
		k.src = flow.AddrBytes(src)
	}
	return k
}

// nbResult is what the resolver knows of a destination: the next hop's
// MAC and the source address the route gives, or that it failed.
type nbResult struct {
	mac     [6]byte
	src     netip.Addr
	ok      bool // mac and src are usable
	failed  bool // no route, or the neighbour did not resolve
	noRoute bool
	// unreachable: the kernel's entry of the next hop failed (its ARP or
	// ND went unanswered), as a kernel socket's connect hears of it.
	unreachable bool
	at          time.Time  // when it was resolved
	pending     bool       // a resolution is in flight
	mtu         int        // the route's MTU when below the interface's (a learned path MTU); 0: none
	broadcast   bool       // a broadcast address of the link: mac is the broadcast MAC (nsbind.Route.Broadcast)
	multicast   bool       // a multicast group: sent through the kernel path (see txState.send), mac the group's
	local       bool       // an address of this host (a local route, through lo): sent through the kernel path, which delivers it to the host's sockets
	nh          netip.Addr // the next hop whose MAC mac is; of a failed one, the next hop that did not resolve
	// dirty: the next hop changed while a resolution was in flight, which
	// may have read it before: what it stores is asked again (stale).
	dirty bool
	// stale: asked again at the next get, though resolved at at.
	stale bool
	// probing: the kernel had no usable entry for the next hop and
	// probes it (ARP, ND), which an unanswered one takes seconds to fail.
	probing bool
}

// failedHop reports whether the kernel's verdict on the next hop is that
// it is unreachable: with no resolution in flight that may overturn it,
// or given less than failedTTL ago. While a later one is in flight (the
// resolver asked the kernel to probe a failed entry again), a packet for
// that next hop is held, as the kernel holds one queued on a failed
// entry, so that a peer that came back is reached.
func (r nbResult) failedHop(now time.Time) bool {
	return r.unreachable && (!r.pending || (!r.at.IsZero() && now.Sub(r.at) < failedTTL))
}

// resolver turns destinations into next-hop MACs off the workers' path:
// route lookups and neighbour reads are netlink round trips, and
// resolution waits for the kernel's ARP/ND. Workers keep their own cache
// and come here (one mutex) only on a miss or after its lifetime; a miss
// queues a request and returns at once. The resolver goroutine runs up to
// maxResolving resolutions at a time.
type resolver struct {
	ns      *nsbind.Namespace
	ifindex int
	req     chan nbKey

	mu sync.Mutex // guards m and byHop
	m  map[nbKey]*nbResult
	// byHop indexes m's entries by their next hop (nbResult.nh), so that
	// a neighbour's change touches its destinations alone: a flood of
	// destinations (SYN-ACKs to spoofed sources of a large subnet) must
	// not make every neighbour event a walk of all of them.
	byHop map[netip.Addr]map[nbKey]*nbResult
	// gen counts the changes of next hops the resolver followed (changed):
	// a worker drops its own cache when it moves.
	gen atomic.Uint64

	lookups, resolved, failures, dropped atomic.Uint64
}

func newResolver(ns *nsbind.Namespace, ifindex int) *resolver {
	return &resolver{ns: ns, ifindex: ifindex, req: make(chan nbKey, 256), m: map[nbKey]*nbResult{},
		byHop: map[netip.Addr]map[nbKey]*nbResult{}}
}

// setHop moves k's entry e to next hop nh in byHop. With mu held.
func (r *resolver) setHop(k nbKey, e *nbResult, nh netip.Addr) {
	if e.nh == nh {
		return
	}
	if old := r.byHop[e.nh]; old != nil {
		delete(old, k)
		if len(old) == 0 {
			delete(r.byHop, e.nh)
		}
	}
	e.nh = nh
	if nh.IsValid() {
		ks := r.byHop[nh]
		if ks == nil {
			ks = map[nbKey]*nbResult{}
			r.byHop[nh] = ks
		}
		ks[k] = e
	}
}

// get returns what is known of k and asks for a (re)resolution when there
// is nothing, or it is older than its lifetime. A result being refreshed
// stays usable meanwhile.
func (r *resolver) get(k nbKey, now time.Time) nbResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[k]
	if e == nil {
		if len(r.m) > 65536 {
			// A flood of destinations: start over rather than grow.
			clear(r.m)
			clear(r.byHop)
		}
		e = &nbResult{}
		r.m[k] = e
	}
	ttl := resolvedTTL
	if !e.ok {
		ttl = failedTTL
	}
	if !e.pending && (e.at.IsZero() || e.stale || now.Sub(e.at) > ttl) {
		select {
		case r.req <- k:
			e.pending = true
		default:
			r.dropped.Add(1)
		}
	}
	return *e
}

func (r *resolver) run(ctx context.Context) {
	sem := make(chan struct{}, maxResolving)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-r.req:
			// The route and a neighbour the kernel already knows take a
			// netlink round trip each: answer them here, so that
			// destinations nobody answers for, which wait for the kernel
			// in the slots below, never hold up reachable ones.
			res, nh, wait := r.lookup(k)
			if !wait {
				r.store(k, res)
				continue
			}
			r.markProbing(k)
			select {
			case sem <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					r.store(k, r.wait(ctx, nh, res))
				}()
			default:
				// Every slot waits already: the kernel was asked to
				// resolve nh; count it failed for now, so it is asked
				// again after failedTTL, or as soon as the kernel's
				// entry of nh changes (changed).
				if d := testhook.ResolverVerdictPause.Load(); d > 0 {
					time.Sleep(time.Duration(d))
				}
				r.failures.Add(1)
				r.store(k, nbResult{failed: true, unreachable: res.unreachable, at: time.Now(), nh: nh})
				// The kernel's answer may have come since it was
				// asked, its notice finding no entry of nh to wake
				// (the first resolution of k) or k's still in
				// flight: look once, as the notice would have done.
				if mac, st, ok := r.ns.Neighbour(r.ifindex, nh); ok && len(mac) == 6 && st.Usable() {
					r.changed(nsbind.NextHopChange{IP: nh, MAC: mac, Usable: true})
				}
			}
		}
	}
}

func (r *resolver) store(k nbKey, res nbResult) {
	r.mu.Lock()
	if e := r.m[k]; e != nil {
		if e.dirty {
			// The kernel's notice of a change came while this
			// resolution was in flight, which may have read the entry
			// before it: what the notice set stays (workers hold it
			// already), and k is asked again now rather than when a
			// worker's copy expires, which would hand them this
			// resolution's older answer for localTTL meanwhile.
			e.dirty, e.stale, e.pending = false, true, false
			select {
			case r.req <- k:
				e.pending = true
			default:
				r.dropped.Add(1)
			}
			r.mu.Unlock()
			return
		}
		// Workers keep what get returned while the resolution was in
		// flight for localTTL: a next hop that moved (a new MAC the
		// kernel learned when its entry failed and resolved again, a
		// new route) must reach them now, as changed's do. The
		// kernel's notice of the new entry, when it comes after the
		// resolution read it, finds nothing left to change.
		moved := e.ok &&
			(!res.ok || res.mac != e.mac || res.src != e.src || res.mtu != e.mtu || res.broadcast != e.broadcast || res.multicast != e.multicast || res.local != e.local)
		nh := res.nh
		res.nh = e.nh
		*e = res
		r.setHop(k, e, nh)
		if moved {
			r.gen.Add(1)
		}
	}
	r.mu.Unlock()
}

// markProbing notes that k's next hop is being probed by the kernel.
func (r *resolver) markProbing(k nbKey) {
	r.mu.Lock()
	if e := r.m[k]; e != nil {
		e.probing = true
	}
	r.mu.Unlock()
}

// follow keeps what the resolver knows in step with the kernel's
// neighbours of the interface and its routes, as w reports them, until
// ctx ends: a neighbour's new MAC is taken at once, a neighbour gone or a
// route changed makes the destinations concerned resolve again, so that a
// gateway's failover (a new MAC announced by a gratuitous ARP) or a new
// route moves the frames within milliseconds, not after resolvedTTL.
func (r *resolver) follow(ctx context.Context, w *nsbind.NextHopWatch) {
	w.Run(ctx, r.changed)
}

// changed applies one next-hop change.
func (r *resolver) changed(c nsbind.NextHopChange) {
	r.mu.Lock()
	defer r.mu.Unlock()
	moved := false
	entries := r.byHop[c.IP] // the destinations through c.IP
	if c.Route {
		entries = r.m
	}
	for _, e := range entries {
		switch {
		case c.Route:
		case !e.ok:
			// A next hop that did not resolve in time, or found every
			// slot waiting: its verdict comes here. Usable, it is asked
			// again at the next get instead of after failedTTL; failed,
			// the connects held for it hear that it is unreachable.
			if e.pending {
				continue
			}
			switch {
			case c.Usable:
				e.at = time.Time{}
			case c.Failed && !e.unreachable:
				e.unreachable = true
			default:
				continue
			}
			moved = true
			continue
		case c.Usable:
			if [6]byte(c.MAC) == e.mac {
				continue
			}
			copy(e.mac[:], c.MAC)
			e.at = time.Now()
			e.dirty = e.pending
			moved = true
			continue
		}
		// Resolved again at the next get; usable meanwhile.
		e.at = time.Time{}
		e.dirty = e.pending
		moved = true
	}
	if moved {
		r.gen.Add(1)
	}
}

// lookup asks the kernel for the route to k and the MAC of its next hop.
// When the kernel has no usable neighbour entry it is asked to resolve it,
// and wait reports that the result must come from r.wait with nh, the next
// hop, and res, what is known so far.
func (r *resolver) lookup(k nbKey) (res nbResult, nh netip.Addr, wait bool) {
	r.lookups.Add(1)
	now := time.Now()
	dst := k.Addr()
	rt, err := r.ns.RouteGetFrom(dst, k.Src())
	if err == nil && rt.Local {
		// No frame leaves for it: the kernel delivers a datagram to
		// an address of its own host to the host's sockets, as it
		// does a kernel socket's.
		r.resolved.Add(1)
		return nbResult{ok: true, local: true, at: now, nh: dst}, dst, false
	}
	if err != nil || rt.IfIndex != r.ifindex {
		r.failures.Add(1)
		return nbResult{failed: true, noRoute: true, at: now}, nh, false
	}
	nh = dst
	if rt.Gateway.IsValid() {
		nh = rt.Gateway
	}
	res = nbResult{ok: true, src: rt.Src.Unmap(), at: now, nh: nh, mtu: rt.MTU}
	if rt.Multicast {
		res.multicast, res.mac = true, multicastMAC(dst)
		r.resolved.Add(1)
		return res, nh, false
	}
	if rt.Broadcast {
		// A datagram to it goes to every host of the link, as a kernel
		// socket's with SO_BROADCAST (Go sets it on UDP sockets): through
		// the port's kernel socket (txState.send), which also gives the
		// host's own sockets a copy.
		res.broadcast, res.mac = true, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		r.resolved.Add(1)
		return res, nh, false
	}
	mac, st, ok := r.ns.Neighbour(rt.IfIndex, nh)
	if ok && len(mac) == 6 {
		if st&nsbind.NeighStale != 0 {
			// The frames sent to nh go past the kernel, which never
			// sees them use its entry: say they do, as a kernel
			// socket's next packet would, so that the kernel checks
			// the entry. A neighbour that took a new MAC without a
			// word (no gratuitous ARP or unsolicited NA) leaves the
			// probes at the old one unanswered: the entry fails, is
			// resolved again, and follow brings the new MAC. Else a
			// peer that never sends back stays stale at the old MAC
			// for good, and so do the frames. Once a lookup: about
			// once per resolvedTTL for a destination in use, never
			// for one nothing sends to.
			_ = r.ns.UseNeighbour(rt.IfIndex, nh)
		}
		r.resolved.Add(1)
		copy(res.mac[:], mac)
		return res, nh, false
	}
	// A failed entry is probed again, as the kernel does when a packet
	// comes for it; until that answers, the next hop stays unreachable.
	res.unreachable = st&nsbind.NeighFailed != 0
	if err := r.ns.ResolveNeighbour(rt.IfIndex, nh); err != nil {
		r.failures.Add(1)
		return nbResult{failed: true, unreachable: res.unreachable, at: now, nh: nh}, nh, false
	}
	return res, nh, true
}

// multicastMAC is the Ethernet address of multicast group g: 01:00:5e and
// the group's low 23 bits (RFC 1112), or 33:33 and its low 32 bits
// (RFC 2464).
func multicastMAC(g netip.Addr) [6]byte {
	b := g.As16()
	if g.Is4() {
		return [6]byte{0x01, 0x00, 0x5e, b[13] & 0x7f, b[14], b[15]}
	}
	return [6]byte{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// wait waits for the kernel to resolve next hop nh, for at most
// resolveWait, and completes res with its MAC.
func (r *resolver) wait(ctx context.Context, nh netip.Addr, res nbResult) nbResult {
	wctx, cancel := context.WithTimeout(ctx, resolveWait)
	mac, _, err := r.ns.WaitNeighbour(wctx, r.ifindex, nh)
	cancel()
	if err != nil || len(mac) != 6 {
		r.failures.Add(1)
		return nbResult{failed: true, unreachable: res.unreachable || errors.Is(err, nsbind.ErrNoNeighbour), at: time.Now(), nh: nh}
	}
	r.resolved.Add(1)
	res.at, res.unreachable = time.Now(), false
	copy(res.mac[:], mac)
	return res
}

// ResolverStats count the resolver's work.
type ResolverStats struct {
	Lookups  uint64 `json:"lookups"`
	Resolved uint64 `json:"resolved"`
	Failures uint64 `json:"failures"`
	Dropped  uint64 `json:"dropped_requests"` // requests not queued: the queue was full
	Entries  int    `json:"entries"`
}

func (r *resolver) stats() ResolverStats {
	r.mu.Lock()
	n := len(r.m)
	r.mu.Unlock()
	return ResolverStats{Lookups: r.lookups.Load(), Resolved: r.resolved.Load(), Failures: r.failures.Load(),
		Dropped: r.dropped.Load(), Entries: n}
}

// PathMTU returns the MTU of an IP packet from src to dst as the datapath
// sends it: the interface's, lowered by the route's when the kernel has a
// smaller one (a route's mtu metric, or a path MTU it learned from ICMP),
// read from the kernel now. The route is the one the kernel gives src
// (ip route get DST from SRC: the policy rules of the source choose its
// table), as the workers' is; an invalid or unspecified src (a wildcard
// listener's) is none. The workers read the route's MTU through the
// resolver, so they follow a change within the resolver's lifetimes.
func (e *Engine) PathMTU(src, dst netip.Addr) (int, error) {
	if e.ns == nil {
		return 0, fmt.Errorf("path mtu: no namespace: %w", flow.ErrNotSupported)
	}
	mtu := int(e.mtu.Load())
	if mtu <= 0 {
		mtu = 1500
	}
	rt, err := e.ns.RouteGetFrom(dst.Unmap(), src)
	if err != nil {
		return 0, fmt.Errorf("path mtu: %w", err)
	}
	if rt.MTU > 0 && rt.MTU < mtu {
		mtu = rt.MTU
	}
	return mtu, nil
}
