// Package shmsync has the store that the wake-up handshakes over shared
// memory need: a store ordered before the loads that follow it.
//
// Those handshakes (fifo's event and dequeue-notification flags, a
// worker's sleep flag) are each side storing one word and then loading
// the other side's: a producer publishes its tail, then looks at the
// consumer's event flag; a consumer clears that flag, then looks at the
// tail. They hold only if no load passes the store before it.
// sync/atomic's Store is sequentially consistent, and is such a store,
// except in a build with the race detector on memory outside the Go heap
// (a segment, the sleep-flags page): there it is a plain store on amd64,
// a later load of another word passes it, and both sides can see the
// other's old value, so a consumer sleeps with data queued and nobody
// signals it. Swap is a locked exchange in every build.
package shmsync

import "sync/atomic"

// Store32 stores v at p, ordered before every later load.
func Store32(p *atomic.Uint32, v uint32) {
	if raceEnabled {
		p.Swap(v)
		return
	}
	p.Store(v)
}
