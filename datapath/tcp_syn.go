package datapath

import (
	"math/bits"
	"time"
)

// A worker sets the pure SYNs it receives (SYN without ACK, RST or FIN:
// a peer opening a connection) aside, behind the other packets of its
// queue. A SYN costs the TCP stack several microseconds (a listener's
// handshake, a SYN-ACK to send) where the kernel's SYN cookies take about
// one, so in a SYN flood every segment of an established connection
// waited behind thousands of them. Set aside, a loop's SYNs go to the
// stack after the other packets of its batch: all of them once the rx
// ring is drained, synShare a loop while it is not. A SYN that finds
// synQueueLen waiting, or synPortShare to its destination port, is dropped
// and counted (syn-backlog), as a kernel listener drops SYNs past its
// backlog; the peer sends it again a second later. A thousand clients
// connecting at once lose none, and a flood of one port leaves half the
// queue to the others.
//
// Once more than synPressure SYNs wait, as in a flood, they go at most
// TCPConfig.SynRate a second (past a burst of synBurst): every SYN gVisor
// answers takes CPU its established connections then wait for. Paced at
// 10,000 a second, a flood of 10,000 SYNs in about 100 ms from another
// process held up an established connection's 16 KiB echo for 7-19 ms,
// against 39-74 ms unpaced (a kernel server: 3-7 ms).
//
// A SYN is overtaken by nothing else of its connection: until it is
// answered the peer sends nothing more on it.

const (
	synQueueLen  = 4096            // SYNs a worker holds
	synPortShare = synQueueLen / 2 // of them, SYNs to one destination port (its bucket) at most
	synBuckets   = 64              // destination ports are counted in this many buckets
	synMaxLen    = 128             // the longest SYN set aside (IP header on); a longer one (data on it) goes at once
	synShare     = 8               // SYNs handed to the stack per loop while the rx ring keeps frames
	synPressure  = 256             // SYNs waiting past which they are paced (TCPConfig.SynRate)
	synBurst     = 64              // SYNs a paced worker may hand over at once
)

// synQueue holds SYNs, each copied out of its frame into a slot, in one
// list per bucket of destination ports: pop serves the buckets in turn,
// so that a SYN to a port nobody floods waits behind one SYN of the
// flooded port's at most, not behind all of them.
type synQueue struct {
	buf         [synQueueLen][synMaxLen]byte
	n           [synQueueLen]uint8  // the SYN's length
	next        [synQueueLen]uint16 // the next slot of the slot's bucket, or of the free list
	first, last [synBuckets]uint16  // each bucket's slots, oldest first
	per         [synBuckets]uint16  // and their number
	busy        uint64              // bit b: bucket b holds SYNs
	turn        uint8               // the bucket pop serves first
	free        uint16              // the free slots' list (synNone: empty)
	fresh       uint16              // slots [fresh, synQueueLen) were never used
	size        int
	out         [][]byte // the SYNs of one hand-over (pop)
}

const synNone = 0xffff

func newSynQueue() *synQueue { return &synQueue{free: synNone} }

// synBucket is the bucket of destination port port.
func synBucket(port uint16) uint8 { return uint8(port * 40503 >> 10) } // the top 6 bits: synBuckets

// room reports whether the queue takes a SYN to port.
func (q *synQueue) room(port uint16) bool {
	return q.size < synQueueLen && q.per[synBucket(port)] < synPortShare
}

// push copies the SYN pkt, to port, in; false when there is no room.
func (q *synQueue) push(pkt []byte, port uint16) bool {
	if !q.room(port) {
		return false
	}
	i := q.free
	if i == synNone {
		i = q.fresh
		q.fresh++
	} else {
		q.free = q.next[i]
	}
	q.n[i] = uint8(copy(q.buf[i][:], pkt))
	b := synBucket(port)
	if q.per[b] == 0 {
		q.first[b] = i
		q.busy |= 1 << b
	} else {
		q.next[q.last[b]] = i
	}
	q.last[b] = i
	q.per[b]++
	q.size++
	return true
}

// pop takes up to max SYNs off the queue, one from each bucket in turn,
// each bucket's oldest first. The slices stay valid until the next push.
func (q *synQueue) pop(max int) [][]byte {
	q.out = q.out[:0]
	for len(q.out) < max && q.busy != 0 {
		b := (q.turn + uint8(bits.TrailingZeros64(bits.RotateLeft64(q.busy, -int(q.turn))))) % synBuckets
		i := q.first[b]
		q.out = append(q.out, q.buf[i][:q.n[i]])
		q.first[b] = q.next[i]
		if q.per[b]--; q.per[b] == 0 {
			q.busy &^= 1 << b
		}
		q.next[i], q.free = q.free, i
		q.size--
		q.turn = (b + 1) % synBuckets
	}
	return q.out
}

// isSyn reports whether the TCP packet of frame f, its TCP header at l4,
// is a pure SYN.
func isSyn(f []byte, l4 int) bool {
	return l4+14 <= len(f) && f[l4+13]&(tcpFlagSYN|tcpFlagACK|tcpFlagRST|tcpFlagFIN) == tcpFlagSYN
}

// synBacklogFull reports whether the worker's queue has no room for the
// SYN of frame f (to port): synQueueLen SYNs wait, or synPortShare to
// port's bucket, so that a flood of one listener's port leaves room for
// the others'. It drops the SYN then (counted, and captured).
func (w *worker) synBacklogFull(f []byte, port uint16) bool {
	if w.syns == nil || w.syns.room(port) {
		return false
	}
	w.c.Drops[dropSynBacklog]++
	w.capFlush()
	w.cap.rxDrop(w.q, f, nil, dropSynBacklog)
	return true
}

// setSynAside queues the SYN ip (IP header on, right before the TCP
// header; to port) behind the batch's other packets, unless it is longer
// than synMaxLen (data on it): then it reports false and goes with them.
func (w *worker) setSynAside(ip []byte, port uint16) bool {
	if len(ip) > synMaxLen {
		return false
	}
	if w.syns == nil {
		w.syns = newSynQueue() // the worker's first SYN
	}
	if !w.syns.push(ip, port) {
		return false
	}
	w.resolveEarly()
	return true
}

// resolveEarly asks the resolver for the next hop of the SYN's source
// (w.pkt), where its SYN-ACK goes, unless the worker knows it: while the
// SYN waits its turn the lookup is made. (A thousand clients connecting
// at once from a next hop not yet resolved got SYN-ACKs faster than its
// lookup, which took a netlink round trip on a busy host; more than the
// packets a worker sets aside for resolving next hops were dropped, and
// their connections waited a second for the SYN again.)
func (w *worker) resolveEarly() {
	k := nbKey{addr: w.pkt.Src, src: w.pkt.Dst, fam: w.pkt.Family} // the SYN-ACK's way: from the address the SYN reached
	if e, ok := w.tx.nb[k]; ok && e.res.ok {
		return
	}
	w.e.res.get(k, time.Now())
}

// synsQueued returns the SYNs the worker holds.
func (w *worker) synsQueued() int {
	if w.syns == nil {
		return 0
	}
	return w.syns.size
}

// injectSyns hands SYNs set aside to the stack: all of them when the
// loop drained the rx ring (drained), synShare otherwise, and no more
// than the pacer allows. It reports whether it handed any.
func (w *worker) injectSyns(drained bool) bool {
	n := synShare
	if drained {
		n = synQueueLen
	}
	if n = w.synPace.take(n, w.syns.size, w.e.synRate); n == 0 {
		return false
	}
	w.e.tcp.inject(w, w.syns.pop(n))
	return true
}

// synPacer is a token bucket: rate tokens a second, at most synBurst.
type synPacer struct {
	tokens float64
	at     time.Time
}

// take returns how many of the n SYNs a worker would hand over it may,
// with queued waiting: n while queued is at most synPressure (the tokens
// fill meanwhile), else as many as its tokens, which it spends. rate ≤ 0:
// n.
func (p *synPacer) take(n, queued int, rate float64) int {
	if rate <= 0 {
		return n
	}
	now := time.Now()
	p.tokens = min(p.tokens+now.Sub(p.at).Seconds()*rate, synBurst)
	p.at = now
	if queued <= synPressure {
		return n
	}
	n = min(n, int(p.tokens))
	p.tokens -= float64(n)
	return n
}
