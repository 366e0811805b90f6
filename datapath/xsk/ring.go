package xsk

import "sync/atomic"

// ring is the index half of one AF_XDP ring: pointers to the producer,
// consumer and flags words in the mapped ring, and cached copies of both
// indices. The slots live beside it in the Socket, typed by ring kind.
//
// For a ring the application produces on (fill, tx), cachedProd is the
// next slot to write and equals the published producer after submit;
// cachedCons is the last consumer index read from the kernel. For a ring it
// consumes from (rx, completion), cachedCons is the next slot to read and
// cachedProd the last producer index read from the kernel. Indices are
// free-running uint32 counters; slot i is at i&mask.
type ring struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32

	cachedProd uint32
	cachedCons uint32
}

// free returns how many slots up to n the producer may write, reloading the
// consumer index only when the cached copy does not show n free slots.
func (r *ring) free(n uint32) uint32 {
	f := r.size - (r.cachedProd - r.cachedCons)
	if f < n {
		r.cachedCons = atomic.LoadUint32(r.consumer)
		f = r.size - (r.cachedProd - r.cachedCons)
		if f > r.size { // a consumer index ahead of us: never from a sane kernel
			f = 0
		}
	}
	return min(f, n)
}

// submit publishes n written slots.
func (r *ring) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// peek returns how many entries up to n are ready to read, reloading the
// producer index only when the cached copy shows fewer than n.
func (r *ring) peek(n uint32) uint32 {
	e := r.cachedProd - r.cachedCons
	if e < n {
		r.cachedProd = atomic.LoadUint32(r.producer)
		e = r.cachedProd - r.cachedCons
		if e > r.size { // clamp what a confused producer could claim
			e = r.size
		}
	}
	return min(e, n)
}

// release gives n read entries back to the producer.
func (r *ring) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// needWakeup reports whether the kernel set XDP_RING_NEED_WAKEUP.
func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&xdpRingNeedWakeup != 0
}

// pendingProduced is, for a ring the application produces on, how many
// submitted entries the kernel has not consumed yet.
func (r *ring) pendingProduced() uint32 {
	return r.cachedProd - atomic.LoadUint32(r.consumer)
}

// pendingConsumable is, for a ring the application consumes from, how many
// entries the kernel has produced that the application has not released.
func (r *ring) pendingConsumable() uint32 {
	return atomic.LoadUint32(r.producer) - r.cachedCons
}
