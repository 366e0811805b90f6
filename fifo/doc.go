// Package fifo owns the shared memory between xsessiond and its apps: memfd
// segments, the per-app segment manager, the single-producer single-consumer
// fifo and its byte layout (a documented ABI), datagram framing, the app event
// queue, and eventfd signalling.
//
// # Segments
//
// CreateSegment makes a memfd (MFD_CLOEXEC|MFD_ALLOW_SEALING, optionally
// MFD_HUGETLB with a fallback to normal pages that HugePagesErr reports),
// sizes it, seals it against shrinking and growing (F_SEAL_SHRINK,
// F_SEAL_GROW, F_SEAL_SEAL) so no holder of the descriptor can turn our
// accesses into SIGBUS, and maps it shared between two inaccessible guard
// regions, optionally excluded from core dumps (MADV_DONTDUMP). Its FD is
// what gets passed to apps; MapSegment is the app side, which checks the
// seals and the segment header before use. A segment starts with a
// SegmentHeaderSize-byte header (magic, ABI version, size, allocator
// counters, the event queue's offset); fifos follow. The allocator (first
// fit over offset-sorted free extents, merged on free) keeps its state in
// the owner's private memory only. NewHeapSegment is the same in Go memory,
// for tests and in-process peers (see fifo/fifotest).
//
// # Manager
//
// A Manager is one app's set of segments. NewManager creates the first
// segment and, if EventQueueCapacity is set, the app's event queue in it
// (its offset is recorded in that segment's header). AllocPair allocates a
// session's rx and tx fifos in one segment, adding a segment of
// AddSegmentSize when none has room and returning it so the caller can pass
// its descriptor to the app; MaxSegments and MaxFifoMemory cap it
// (ErrTooManySegments, ErrFifoMemoryLimit). FreePair returns the memory.
// A fifo is named to the app as a FifoRef: segment index and offset.
//
// # Fifo protocol
//
// The producer owns the tail index and the consumer the head index; each
// sits on its own 64-byte cache line of the fifo header. Indices are
// free-running uint32 counters; tail - head (mod 2^32) is the number of
// bytes queued and must never exceed the size, a power of two; byte i is
// at data[i & (size-1)].
//
//   - Producer: read head with acquire; free = size - (tail - head); write
//     the data; store tail + n with release.
//   - Consumer: read tail with acquire; used = tail - head; read the data;
//     store head + n with release.
//
// sync/atomic operations are sequentially consistent, which includes both.
// The stores of the indices and of the consumer's flags go through
// shmsync.Store32, which is such a store in a race-detector build too,
// where sync/atomic's Store on memory outside the Go heap is not: the
// wake-up handshakes below store one word and then load another.
// Each side keeps its own index privately and never reads it back from
// shared memory; it re-reads the other side's index only when its cached
// copy shows too little data or space.
//
// Events: after queueing, the producer calls SetEvent, which reports whether
// the consumer must be signalled (the has-event flag was clear). The
// consumer clears the flag (ClearEvent) before it sleeps and checks the
// fifo once more, and again whenever a wake-up finds nothing to read: the
// producer's SetEvent may come after the consumer took the data it
// announces, and a flag left set then hides the next data. Dequeue notifications go the other way: the producer
// asks with WantDeqNotify (always, once on leaving full, once on becoming
// empty) and the consumer calls DeqNotify after each dequeue to learn
// whether to notify the producer now.
//
// # Untrusted peers
//
// The other side of a fifo is another process that can write anything into
// the segment. Every Fifo value is a trusted view: it keeps the fifo's
// offset and size and its own index privately, checks every index it reads
// (0 <= tail - head <= size), checks every datagram and event header
// against what is queued, masks every position to the fifo's size, and
// copies a header out of shared memory once before using it. A check that
// fails returns ErrCorrupt for that fifo only and changes nothing. No input
// from the peer can make a call panic or touch memory outside the fifo's
// data; FuzzHostilePeer checks this with guard pages around the fifo. What a
// peer can do is hurt itself: lose or garble its own data, stall its own
// fifos, or get them reported corrupt. Data handed out in place
// (PeekSlices, PeekDgram, Reserve) is shared memory the peer may change
// while it is read.
//
// # Datagrams and events
//
// A datagram fifo carries records of a DgramHeaderSize-byte header (payload
// length, family, ports, 16-byte remote and local addresses) and the
// payload padded to DgramAlign bytes. Datagrams are queued and removed
// whole: one that does not fit is refused (ErrNoSpace, or ErrTooLarge if it
// never can), never split. An EventQueue is a fifo of EventSize-byte Event
// records plus an eventfd; Push queues without signalling and Signal writes
// the eventfd once per batch, only when the consumer is not already
// signalled. The layouts are in ABI.md.
//
// # Closing and concurrency
//
// Segments, Managers and EventQueues must be closed; Close unmaps memory,
// so every Fifo of a segment must be out of use first. Segment, Manager and
// EventQueue methods are safe for concurrent use (lock order: Manager, then
// Segment). A Fifo allows one goroutine making producer calls and one
// making consumer calls at the same time. Data calls return the sentinel
// errors themselves and allocate nothing.
package fifo
