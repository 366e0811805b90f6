package datapath

import "time"

// A worker sets the pure SYNs it receives (SYN without ACK, RST or FIN:
// a peer opening a connection) aside, behind the other packets of its
// queue. A SYN costs the TCP stack several microseconds (a listener's
// handshake, a SYN-ACK to send) where the kernel's SYN cookies take about
// one, so in a SYN flood every segment of an established connection
// waited behind thousands of them. Set aside, a loop's SYNs go to the
// stack after the other packets of its batch: all of them once the rx
// ring is drained, synShare a loop while it is not. A SYN that finds
// synQueueLen waiting is dropped and counted (syn-backlog), as a kernel
// listener drops SYNs past its backlog; the peer sends it again a second
// later. synQueueLen is the rx ring's default size: a thousand clients
// connecting at once lose none.
//
// A SYN is overtaken by nothing else of its connection: until it is
// answered the peer sends nothing more on it.

const (
	synQueueLen = 2048 // SYNs a worker holds
	synMaxLen   = 128  // the longest SYN set aside (IP header on); a longer one (data on it) goes at once
	synShare    = 8    // SYNs handed to the stack per loop while the rx ring keeps frames
)

// synQueue is a ring of SYNs, each copied out of its frame.
type synQueue struct {
	buf        [synQueueLen][synMaxLen]byte
	n          [synQueueLen]uint8
	head, size int
	out        [][]byte // the SYNs of one hand-over (pop)
}

// push copies the SYN pkt in; false when the queue is full.
func (q *synQueue) push(pkt []byte) bool {
	if q.size == synQueueLen {
		return false
	}
	i := (q.head + q.size) % synQueueLen
	q.n[i] = uint8(copy(q.buf[i][:], pkt))
	q.size++
	return true
}

// pop takes up to max SYNs off the queue, oldest first. The slices stay
// valid until the next push.
func (q *synQueue) pop(max int) [][]byte {
	q.out = q.out[:0]
	for ; max > 0 && q.size > 0; max-- {
		q.out = append(q.out, q.buf[q.head][:q.n[q.head]])
		q.head = (q.head + 1) % synQueueLen
		q.size--
	}
	return q.out
}

// isSyn reports whether the TCP packet of frame f, its TCP header at l4,
// is a pure SYN.
func isSyn(f []byte, l4 int) bool {
	return l4+14 <= len(f) && f[l4+13]&(tcpFlagSYN|tcpFlagACK|tcpFlagRST|tcpFlagFIN) == tcpFlagSYN
}

// synBacklogFull reports whether the worker holds synQueueLen SYNs
// already, and then drops the SYN of frame f (counted, and captured).
func (w *worker) synBacklogFull(f []byte) bool {
	if w.syns == nil || w.syns.size < synQueueLen {
		return false
	}
	w.c.Drops[dropSynBacklog]++
	w.capFlush()
	w.cap.rxDrop(w.q, f, nil, dropSynBacklog)
	return true
}

// setSynAside queues the SYN ip (IP header on, right before the TCP
// header) behind the batch's other packets, unless it is longer than
// synMaxLen (data on it): then it reports false and goes with them.
func (w *worker) setSynAside(ip []byte) bool {
	if len(ip) > synMaxLen {
		return false
	}
	if w.syns == nil {
		w.syns = new(synQueue) // the worker's first SYN
	}
	if !w.syns.push(ip) {
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
	k := nbKey{addr: w.pkt.Src, fam: w.pkt.Family}
	if e, ok := w.tx.nb[k]; ok && e.res.ok {
		return
	}
	w.e.res.get(k, time.Now())
}

// injectSyns hands SYNs set aside to the stack: all of them when the
// loop drained the rx ring (drained), synShare otherwise.
func (w *worker) injectSyns(drained bool) {
	n := synShare
	if drained {
		n = synQueueLen
	}
	w.e.tcp.inject(w, w.syns.pop(n))
}
