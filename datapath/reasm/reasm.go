package reasm

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"time"

	"github.com/xsessiond/xsessiond/flow"
)

// Key names the datagram a fragment belongs to, as the kernel keys its
// fragment queues.
type Key struct {
	Src, Dst [16]byte // flow.AddrBytes form: IPv4 in the first 4 bytes, the rest zero
	ID       uint32   // identification: 16 bits for IPv4, 32 for IPv6
	Ifindex  uint32   // the receiving interface
	Family   uint8    // flow.Family4 or flow.Family6
	Proto    uint8    // IPv4 protocol; 0 for IPv6, whose key has none
}

// Result says what Add did with a fragment. Values from BadFragment on are
// drop reasons: the fragment was not kept.
type Result uint8

// Add outcomes. The names returned by String are used as counter labels.
const (
	Pending          Result = iota // kept; the datagram waits for more fragments
	Done                           // kept, and it completed the datagram
	Duplicate                      // inside data already held: ignored, the datagram waits on
	BadFragment                    // IPv6 fragment with more following and an end not a multiple of 8, or an offset no IP header can carry
	TooLong                        // the datagram ends beyond the caller's limit; the datagram is discarded
	Corrupt                        // conflicting last fragment, data beyond the last end, or an empty fragment; the datagram is discarded
	Overlap                        // overlaps data already held (RFC 5722); the datagram is discarded
	TooManyFragments               // more than Config.MaxFragments fragments; the datagram is discarded
	NoBuffer                       // every buffer holds a completed datagram waiting for Release
	numResults
)

// NumResults is the number of Result values, for arrays of counters indexed
// by Result.
const NumResults = int(numResults)

var resultNames = [numResults]string{
	Pending:          "reasm-pending",
	Done:             "reasm-done",
	Duplicate:        "reasm-duplicate",
	BadFragment:      "reasm-bad-fragment",
	TooLong:          "reasm-too-long",
	Corrupt:          "reasm-corrupt",
	Overlap:          "reasm-overlap",
	TooManyFragments: "reasm-too-many-fragments",
	NoBuffer:         "reasm-no-buffer",
}

func (r Result) String() string {
	if r < numResults {
		return resultNames[r]
	}
	return "reasm-unknown"
}

// Dropped reports whether r is a drop reason.
func (r Result) Dropped() bool { return r >= BadFragment }

// Config bounds a Reassembler. New replaces zero fields with the defaults.
type Config struct {
	// MaxDatagrams is the number of datagrams being reassembled at once
	// (default 64). A new one beyond it evicts the oldest.
	MaxDatagrams int
	// MaxFragments is the number of fragments one datagram may have
	// (default 128: the largest UDP datagram over IPv4 cut for Linux's
	// smallest path MTU, min_pmtu's 552 bytes, has 125; Linux bounds only
	// the memory).
	MaxFragments int
	// Timeout is how long an IPv4 datagram may take from its first
	// fragment received to its completion (default 30 s, the kernel's
	// net.ipv4.ipfrag_time).
	Timeout time.Duration
	// Timeout6 is the same for an IPv6 datagram (default 60 s, the
	// kernel's net.ipv6.ip6frag_time).
	Timeout6 time.Duration
}

// Defaults for Config's zero fields.
const (
	DefaultMaxDatagrams = 64
	DefaultMaxFragments = 128
	DefaultTimeout      = 30 * time.Second
	DefaultTimeout6     = 60 * time.Second
	// MaxTimeout bounds both timeouts: a longer one is taken as this.
	MaxTimeout = 24 * time.Hour
)

// BufferSize is the size of one reassembly buffer: any datagram an IP
// header can describe fits.
const BufferSize = 1 << 16

// maxIPv6End is the largest end an IPv6 fragment may have (IPV6_MAXPLEN).
const maxIPv6End = 65535

// Stats are the counters of a Reassembler. Fragments counts every fragment
// given to Add, and each fragment is counted once more under the Result Add
// returned for it: Reassembled for Done, Duplicates, or Drops for the drop
// reasons (Pending is what is left). Killed, Evicted and TimedOut count
// datagrams, not fragments.
type Stats struct {
	Fragments   uint64             // fragments given to Add
	Reassembled uint64             // datagrams completed
	Duplicates  uint64             // fragments ignored as duplicates
	Drops       [NumResults]uint64 // fragments dropped, indexed by their Result
	Killed      uint64             // datagrams discarded because of a fragment (TooLong, Corrupt, Overlap, TooManyFragments)
	Evicted     uint64             // datagrams discarded to make room for a new one
	TimedOut    uint64             // datagrams discarded by Expire
	InFlight    int                // datagrams being reassembled now
	Held        int                // bytes of fragment data held by them now
}

// run is a stretch [start,end) of contiguous fragments, as the kernel's
// frag runs: fragments appended at the tail extend the tail's run, all
// others start runs of their own.
type run struct {
	start, end int32
}

// queue is one datagram being reassembled. It holds no pointers, so that
// resetting and moving it costs no write barriers.
type queue struct {
	key     Key
	hash    uint64 // hash of key, for the table
	created int64  // time of the first fragment, ns
	expires int64  // created + its family's timeout
	buf     int32  // index of its buffer in Reassembler.bufs
	runBase int32  // its runs are runStore[runBase : runBase+nruns], sorted by start, disjoint
	nruns   int32
	tailEnd int32 // end of the highest fragment, and of the last run
	length  int32 // the datagram's end as known so far
	meat    int32 // bytes held
	nfrags  int32 // fragments kept
	prev    int32 // its family's creation-order list: older queue, or -1
	next    int32 // its family's creation-order list: newer queue, or -1
	live    bool  // in the table
	firstIn bool  // the fragment at offset 0 is held
	lastIn  bool  // the last fragment is held: length is final
	tooLong bool  // some fragment ended beyond the caller's limit
}

// Reassembler reassembles the fragments one worker receives. It is not safe
// for concurrent use.
type Reassembler struct {
	cfg     Config
	timeout [2]int64 // cfg.Timeout and Timeout6 in ns

	queues []queue
	freeQ  []int32 // indices of queues not in use
	table  []int32 // open addressing, linear probing: queue index+1, 0 empty
	mask   uint64  // len(table)-1
	seed   uint64  // hash seed
	last   int32   // the queue the previous fragment went to, or -1
	// oldest and newest are the head and tail of each family's list of
	// queues in creation order ([0] IPv4, [1] IPv6), or -1: within a
	// family, creation order is expiry order.
	oldest   [2]int32
	newest   [2]int32
	deadline int64    // the earliest expiry of the queues in use (a list's head's); MaxInt64 when none
	inFlight int      // queues in use
	held     int      // bytes held by queues in use
	bufs     [][]byte // every buffer allocated, at most 2×MaxDatagrams
	free     []int32  // indices in bufs of the buffers ready for a new queue
	done     []int32  // indices in bufs of the datagrams completed since Release
	nbufs    int      // len(bufs)
	runStore []run    // MaxFragments runs for each queue

	st Stats
}

// WithDefaults returns c with its zero (or negative) fields set to the
// defaults.
func (c Config) WithDefaults() Config {
	if c.MaxDatagrams <= 0 {
		c.MaxDatagrams = DefaultMaxDatagrams
	}
	if c.MaxFragments <= 0 {
		c.MaxFragments = DefaultMaxFragments
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout6 <= 0 {
		c.Timeout6 = DefaultTimeout6
	}
	c.Timeout, c.Timeout6 = min(c.Timeout, MaxTimeout), min(c.Timeout6, MaxTimeout)
	return c
}

// New returns a Reassembler bounded by cfg. Buffers are allocated when
// first needed.
func New(cfg Config) *Reassembler {
	cfg = cfg.WithDefaults()
	n := cfg.MaxDatagrams
	tsize := 4
	for tsize < 2*n {
		tsize <<= 1
	}
	r := &Reassembler{
		cfg:      cfg,
		timeout:  [2]int64{int64(cfg.Timeout), int64(cfg.Timeout6)},
		queues:   make([]queue, n),
		freeQ:    make([]int32, n),
		table:    make([]int32, tsize),
		mask:     uint64(tsize - 1),
		seed:     rand.Uint64() | 1,
		last:     -1,
		oldest:   [2]int32{-1, -1},
		newest:   [2]int32{-1, -1},
		deadline: math.MaxInt64,
		bufs:     make([][]byte, 0, 2*n),
		free:     make([]int32, 0, 2*n),
		done:     make([]int32, 0, 2*n),
		runStore: make([]run, n*cfg.MaxFragments),
	}
	for i := range r.queues {
		r.queues[i].runBase = int32(i * cfg.MaxFragments)
		r.freeQ[i] = int32(n - 1 - i)
	}
	return r
}

// Config returns the bounds in use, defaults filled in.
func (r *Reassembler) Config() Config { return r.cfg }

// MemoryBound returns the most bytes the Reassembler's buffers can take:
// 2×MaxDatagrams buffers of BufferSize bytes (MaxDatagrams in flight, as
// many completed and waiting for Release). The fixed bookkeeping allocated
// by New (a few bytes per queue and per fragment slot) is not included.
func (r *Reassembler) MemoryBound() int { return 2 * r.cfg.MaxDatagrams * BufferSize }

// Stats returns the counters.
func (r *Reassembler) Stats() Stats {
	s := r.st
	s.InFlight = r.inFlight
	s.Held = r.held
	return s
}

// Add takes one fragment of the datagram k: its data starts at offset bytes
// into the datagram, more is its more-fragments flag, and maxEnd is the
// largest end the datagram's data may have (65,535 less the IPv4 header
// length, or less the length of the IPv6 extension headers before the
// fragment header). now is the time in ns on any monotonic clock.
//
// Add copies data; the caller keeps it. With Done it returns the
// reassembled datagram, in a buffer of the Reassembler that stays valid
// until Release; with any other Result it returns nil. A fragment that is
// not one (at offset 0 with no more following) comes back as it is: Add
// returns data itself with Done and touches no queue, as the kernel passes
// such a packet through.
//
// A fragment dropped before its queue is looked up leaves the queue as it
// was: BadFragment, NoBuffer, and TooLong for an IPv6 fragment ending beyond
// 65,535. Corrupt, Overlap and TooManyFragments discard the queue, and so
// does TooLong for a datagram found, on its last byte, to end beyond maxEnd
// (a fragment ending beyond maxEnd is kept until then, as the kernel keeps
// it).
func (r *Reassembler) Add(k *Key, offset int, more bool, data []byte, maxEnd int, now int64) ([]byte, Result) {
	r.st.Fragments++
	if qi := r.last; qi >= 0 && more {
		// The next fragment of the datagram of the previous one, in
		// order, with more to follow: what a sender's fragments mostly
		// are. The general path below would do the same, with more tests.
		q := &r.queues[qi]
		end := offset + len(data)
		if offset == int(q.tailEnd) && q.nruns == 1 && !q.lastIn && end&7 == 0 && end <= maxEnd &&
			int(q.nfrags) < r.cfg.MaxFragments && len(data) > 0 && sameKey(&q.key, k) {
			q.nfrags++
			e := int32(end)
			r.runStore[q.runBase].end = e
			q.tailEnd = e
			q.length = max(q.length, e)
			copy(r.bufs[q.buf][offset:end], data)
			q.meat += e - int32(offset)
			r.held += len(data)
			return nil, Pending
		}
	}
	if offset == 0 && !more {
		r.st.Reassembled++
		return data, Done
	}
	if offset < 0 || offset > maxIPv6End || offset&7 != 0 {
		return nil, r.drop(BadFragment)
	}
	end := offset + len(data)
	if more && end&7 != 0 {
		if k.Family == flow.Family6 {
			return nil, r.drop(BadFragment)
		}
		end &^= 7
	}
	if k.Family == flow.Family6 && end > maxIPv6End {
		return nil, r.drop(TooLong)
	}

	qi := r.last
	if qi < 0 || !sameKey(&r.queues[qi].key, k) {
		h := r.hash(k)
		qi = r.lookup(k, h)
		if qi < 0 {
			if qi = r.create(k, h, now); qi < 0 {
				return nil, r.drop(NoBuffer)
			}
		}
		r.last = qi
	}
	q := &r.queues[qi]

	e := int32(end)
	off := int32(offset)
	if !more {
		if e < q.length || (q.lastIn && e != q.length) {
			return nil, r.kill(qi, Corrupt)
		}
		q.lastIn = true
		q.length = e
	} else if e > q.length {
		if q.lastIn {
			return nil, r.kill(qi, Corrupt)
		}
		q.length = e
	}
	if e == off {
		return nil, r.kill(qi, Corrupt)
	}

	// Where the fragment goes among the runs: appended to the tail run,
	// a new run at position at, or a duplicate or overlap.
	n := int(q.nruns)
	at := n
	appendTail := false
	if n > 0 {
		if q.tailEnd < e {
			if off < q.tailEnd {
				return nil, r.kill(qi, Overlap)
			}
			appendTail = off == q.tailEnd
		} else {
			runs := r.runStore[q.runBase : int(q.runBase)+n]
			at = 0
			for at < n && runs[at].end <= off {
				at++
			}
			// runs[at] is the first run ending after off; at < n since
			// e <= tailEnd and the fragment is not empty.
			rs := runs[at]
			if e > rs.start {
				if off >= rs.start && e <= rs.end {
					r.st.Duplicates++
					return nil, Duplicate
				}
				return nil, r.kill(qi, Overlap)
			}
		}
	}
	if int(q.nfrags) >= r.cfg.MaxFragments {
		return nil, r.kill(qi, TooManyFragments)
	}
	q.nfrags++
	if appendTail {
		r.runStore[int(q.runBase)+n-1].end = e
	} else {
		// n < MaxFragments: there is room for one more run.
		runs := r.runStore[q.runBase : int(q.runBase)+n+1]
		copy(runs[at+1:], runs[at:n])
		runs[at] = run{off, e}
		q.nruns++
	}
	if e > q.tailEnd {
		q.tailEnd = e
	}
	if end > maxEnd {
		q.tooLong = true
	}
	if end <= BufferSize {
		copy(r.bufs[q.buf][offset:end], data[:end-offset])
	}
	q.meat += e - off
	r.held += end - offset
	if off == 0 {
		q.firstIn = true
	}
	if !q.firstIn || !q.lastIn || q.meat != q.length {
		return nil, Pending
	}
	if q.tooLong {
		return nil, r.kill(qi, TooLong)
	}
	buf := r.bufs[q.buf][:q.length]
	r.done = append(r.done, q.buf)
	r.remove(qi)
	r.st.Reassembled++
	return buf, Done
}

// drop counts a fragment dropped for res and returns res.
func (r *Reassembler) drop(res Result) Result {
	r.st.Drops[res]++
	return res
}

// kill discards queue qi because of a fragment dropped for res.
func (r *Reassembler) kill(qi int32, res Result) Result {
	r.st.Killed++
	r.discard(qi)
	return r.drop(res)
}

// discard removes queue qi and returns its buffer to the pool.
func (r *Reassembler) discard(qi int32) {
	r.free = append(r.free, r.queues[qi].buf)
	r.remove(qi)
}

// Release gives the buffers of the datagrams completed since the previous
// Release back to the pool. The slices Add returned must not be used after.
func (r *Reassembler) Release() {
	r.free = append(r.free, r.done...)
	r.done = r.done[:0]
}

// Expire discards the datagrams whose first fragment arrived their
// family's timeout (Timeout, Timeout6) or more before now, and returns how
// many. It costs one comparison while none is due.
func (r *Reassembler) Expire(now int64) int {
	if now < r.deadline {
		return 0
	}
	n := 0
	for f := range r.oldest {
		for r.oldest[f] >= 0 && now >= r.queues[r.oldest[f]].expires {
			r.discard(r.oldest[f])
			n++
		}
	}
	r.st.TimedOut += uint64(n)
	return n
}

// famIndex is the index of k's family in Reassembler.timeout, oldest and
// newest.
func famIndex(k *Key) int {
	if k.Family == flow.Family6 {
		return 1
	}
	return 0
}

// setDeadline sets the deadline to the earlier of the two lists' heads'
// expiries.
func (r *Reassembler) setDeadline() {
	r.deadline = math.MaxInt64
	for _, qi := range r.oldest {
		if qi >= 0 {
			r.deadline = min(r.deadline, r.queues[qi].expires)
		}
	}
}

// create starts a queue for k and returns its index, or -1 when no buffer
// can be had.
func (r *Reassembler) create(k *Key, h uint64, now int64) int32 {
	if r.inFlight == r.cfg.MaxDatagrams {
		r.evictOldest()
	}
	var buf int32
	switch {
	case len(r.free) > 0:
	case r.nbufs < 2*r.cfg.MaxDatagrams:
		r.bufs = append(r.bufs, make([]byte, BufferSize))
		r.free = append(r.free, int32(r.nbufs))
		r.nbufs++
	case r.inFlight > 0:
		// Every other buffer holds a completed datagram: take the
		// oldest queue's.
		r.evictOldest()
	default:
		return -1
	}
	buf = r.free[len(r.free)-1]
	r.free = r.free[:len(r.free)-1]
	qi := r.freeQ[len(r.freeQ)-1]
	r.freeQ = r.freeQ[:len(r.freeQ)-1]
	q := &r.queues[qi]
	f := famIndex(k)
	*q = queue{key: *k, hash: h, created: now, expires: now + r.timeout[f], buf: buf, runBase: q.runBase, prev: r.newest[f], next: -1, live: true}
	if r.newest[f] >= 0 {
		r.queues[r.newest[f]].next = qi
	} else {
		r.oldest[f] = qi
		r.deadline = min(r.deadline, q.expires)
	}
	r.newest[f] = qi
	r.inFlight++
	r.insert(qi, h)
	return qi
}

// evictOldest discards the oldest queue, of either family. One must be
// in use.
func (r *Reassembler) evictOldest() {
	qi := r.oldest[0]
	if o := r.oldest[1]; qi < 0 || (o >= 0 && r.queues[o].created < r.queues[qi].created) {
		qi = o
	}
	r.st.Evicted++
	r.discard(qi)
}

// remove takes queue qi out of the table and the creation-order list. Its
// buffer must have been handed on.
func (r *Reassembler) remove(qi int32) {
	q := &r.queues[qi]
	r.delete(qi, q.hash)
	f := famIndex(&q.key)
	if q.prev >= 0 {
		r.queues[q.prev].next = q.next
	} else {
		r.oldest[f] = q.next
		r.setDeadline()
	}
	if q.next >= 0 {
		r.queues[q.next].prev = q.prev
	} else {
		r.newest[f] = q.prev
	}
	r.held -= int(q.meat)
	r.inFlight--
	q.live = false
	q.key = Key{}
	r.freeQ = append(r.freeQ, qi)
	if r.last == qi {
		r.last = -1
	}
}

// sameKey reports whether a and b are equal, comparing eight bytes at a
// time.
func sameKey(a, b *Key) bool {
	le := binary.LittleEndian
	return a.ID == b.ID &&
		le.Uint64(a.Src[0:8]) == le.Uint64(b.Src[0:8]) &&
		le.Uint64(a.Src[8:16]) == le.Uint64(b.Src[8:16]) &&
		le.Uint64(a.Dst[0:8]) == le.Uint64(b.Dst[0:8]) &&
		le.Uint64(a.Dst[8:16]) == le.Uint64(b.Dst[8:16]) &&
		a.Ifindex == b.Ifindex && a.Family == b.Family && a.Proto == b.Proto
}

// hash mixes the fields of k with the Reassembler's seed.
func (r *Reassembler) hash(k *Key) uint64 {
	h := r.seed
	h = mix(h, binary.LittleEndian.Uint64(k.Src[0:8]))
	h = mix(h, binary.LittleEndian.Uint64(k.Src[8:16]))
	h = mix(h, binary.LittleEndian.Uint64(k.Dst[0:8]))
	h = mix(h, binary.LittleEndian.Uint64(k.Dst[8:16]))
	h = mix(h, uint64(k.ID)|uint64(k.Ifindex)<<32)
	h = mix(h, uint64(k.Family)|uint64(k.Proto)<<8)
	return h
}

// mix folds v into h.
func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>31
}

// lookup returns the index of the queue of k, whose hash is h, or -1.
func (r *Reassembler) lookup(k *Key, h uint64) int32 {
	for i := h & r.mask; ; i = (i + 1) & r.mask {
		v := r.table[i]
		if v == 0 {
			return -1
		}
		if q := &r.queues[v-1]; q.hash == h && sameKey(&q.key, k) {
			return v - 1
		}
	}
}

// insert puts queue qi, whose key hashes to h, in the table.
func (r *Reassembler) insert(qi int32, h uint64) {
	i := h & r.mask
	for r.table[i] != 0 {
		i = (i + 1) & r.mask
	}
	r.table[i] = qi + 1
}

// delete takes queue qi, whose key hashes to h, out of the table, moving
// later entries of its probe chain back so that lookups need no tombstones.
func (r *Reassembler) delete(qi int32, h uint64) {
	i := h & r.mask
	for r.table[i] != qi+1 {
		i = (i + 1) & r.mask
	}
	for j := (i + 1) & r.mask; ; j = (j + 1) & r.mask {
		v := r.table[j]
		if v == 0 {
			break
		}
		home := r.queues[v-1].hash & r.mask
		// The entry at j may move to i unless its home lies cyclically
		// in (i, j].
		if (j-home)&r.mask < (j-i)&r.mask {
			continue
		}
		r.table[i] = v
		i = j
	}
	r.table[i] = 0
}
