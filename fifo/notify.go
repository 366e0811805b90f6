package fifo

import "github.com/xsessiond/xsessiond/internal/shmsync"

// SetEvent marks the fifo as having an event for its consumer and reports
// whether the caller should signal the consumer: true only when the flag
// was clear, i.e. the consumer is not already signalled. Call it (producer
// side) after queueing data.
//
// The flag is read first and swapped only when clear, so a producer that
// queues into an already signalled fifo writes nothing to the flag's cache
// line. Both operations are sequentially consistent, as are the tail's
// store and the consumer's ClearEvent (shmsync.Store32); with the tail
// store before SetEvent and the tail load after ClearEvent, either the
// consumer sees the new data or the producer sees the cleared flag and
// signals.
func (f *Fifo) SetEvent() (shouldSignal bool) {
	if f.hasEvent.Load() != 0 {
		return false
	}
	return f.hasEvent.Swap(1) == 0
}

// ClearEvent clears the event flag (consumer side). A consumer that is
// about to wait calls it, then checks MaxDequeue once more before sleeping.
func (f *Fifo) ClearEvent() { shmsync.Store32(f.hasEvent, 0) }

// HasEvent reports whether the event flag is set.
func (f *Fifo) HasEvent() bool { return f.hasEvent.Load() != 0 }

// RequestClose marks the stream closed by its producer: once the consumer
// has taken what was queued before the call, the producer is done with
// the session (a wire TCP session's tx fifo: the daemon sends FIN after
// the data and releases the session, as a Disconnect does). Producer
// side; signal as after queueing data (SetEvent). The mark is the
// allocation's number as the view read it when it was made, so a view
// kept past the fifo's free cannot close the session that allocates the
// memory next. It stays until the fifo is freed.
func (f *Fifo) RequestClose() { f.closeReq.Store(f.gen) }

// CloseRequested reports whether the producer marked the stream closed
// (RequestClose) with this allocation's number. Consumer side: data
// queued before the mark is visible once it returns true.
func (f *Fifo) CloseRequested() bool {
	v := f.closeReq.Load()
	return v != 0 && v == f.gen
}

// MarkTaken records, in the tx fifo of a session accepted on a listener,
// that the app took the session (its Accept returned it), so that the
// daemon counts it out of the listener's backlog. Producer side. Like the
// close mark it is the allocation's number, and stays until the fifo is
// freed.
func (f *Fifo) MarkTaken() { f.taken.Store(f.gen) }

// Taken reports whether the app marked the session taken (MarkTaken) with
// this allocation's number.
func (f *Fifo) Taken() bool {
	v := f.taken.Load()
	return v != 0 && v == f.gen
}

// WantDeqNotify asks the consumer for dequeue notifications (producer
// side) and re-arms the one-shot ones (DeqNotifyIfFull, DeqNotifyIfEmpty).
// Zero cancels every request. A producer that waits for space calls it,
// then checks MaxEnqueue once more before sleeping, as the consumer may
// have dequeued before the request was visible.
func (f *Fifo) WantDeqNotify(w DeqNotify) {
	shmsync.Store32(f.hasDeq, 0)
	shmsync.Store32(f.wantDeq, uint32(w&deqNotifyAll))
}

// DeqNotify is called by the consumer after a dequeue that removed n bytes
// (Dequeue, Drop, Release, DequeueDgram(s), DropDgram) and reports whether
// the producer wants a notification now: always after a dequeue when it
// asked for DeqNotifyAlways; once, until re-armed, when the dequeue took a
// full fifo out of full (DeqNotifyIfFull) or left it empty
// (DeqNotifyIfEmpty). The caller then notifies the producer (for an app's
// tx fifo, an EventTx in its event queue). "Full" means all Size bytes
// queued; a producer of datagrams waiting for room for one record should
// ask for DeqNotifyAlways or DeqNotifyIfEmpty.
func (f *Fifo) DeqNotify(n int) bool {
	w := DeqNotify(f.wantDeq.Load())
	if w == 0 || n <= 0 {
		return false
	}
	if w&DeqNotifyAlways != 0 {
		return true
	}
	used := f.tail.Load() - f.c.head
	if used > f.size {
		return false
	}
	fire := false
	if w&DeqNotifyIfFull != 0 && used < f.size && uint64(used)+uint64(n) >= uint64(f.size) {
		fire = true
	}
	if w&DeqNotifyIfEmpty != 0 && used == 0 {
		fire = true
	}
	return fire && f.hasDeq.CompareAndSwap(0, 1)
}

// Consumed returns the consumer's position: the bytes it has dequeued or
// dropped so far, modulo 2^32 (consumer side). The difference of two
// readings is what a run of dequeues removed, which DeqNotify wants.
func (f *Fifo) Consumed() uint32 { return f.c.head }

// DeqNotified reports, without re-arming it, whether a one-shot dequeue
// notification fired and was not taken yet (TakeDeqNotify).
func (f *Fifo) DeqNotified() bool { return f.hasDeq.Load() == 1 }

// TakeDeqNotify reports whether a one-shot dequeue notification
// (DeqNotifyIfFull, DeqNotifyIfEmpty) fired since it was armed or since the
// last TakeDeqNotify, and re-arms it. It is for a producer's helper that
// learns of notifications by looking at the fifo rather than through the
// signal DeqNotify asked for (several fifos share one signal). A plain load
// comes first: the helper looks at many fifos each time, few of which
// fired, and a failed compare-and-swap still takes the cache line.
func (f *Fifo) TakeDeqNotify() bool {
	return f.hasDeq.Load() == 1 && f.hasDeq.CompareAndSwap(1, 0)
}
