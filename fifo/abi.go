package fifo

import "encoding/binary"

// The byte layout shared with apps (see ABI.md). Every multi-byte field is
// in the host's native byte order; offsets are in bytes.

// ABIVersion is the version of the layout below. A segment whose header
// carries another version is refused by MapSegment.
const ABIVersion = 1

// Segment header.
const (
	SegmentMagic      = 0x4d475358 // "XSGM" in little-endian byte order
	SegmentHeaderSize = 128        // the header occupies [0, 128) of a segment

	SegOffMagic       = 0  // u32 SegmentMagic
	SegOffVersion     = 4  // u16 ABIVersion
	SegOffHeaderSize  = 6  // u16 SegmentHeaderSize
	SegOffSize        = 8  // u64 segment size in bytes (the memfd's size)
	SegOffFifoHdrSize = 16 // u32 FifoHeaderSize
	SegOffFlags       = 20 // u32 SegFlag* bits (informational)
	SegOffAllocStart  = 24 // u32 first offset fifos are allocated at (SegmentHeaderSize)
	SegOffEventQueue  = 28 // u32 offset of the app event queue's fifo; 0: none in this segment
	SegOffAllocBytes  = 32 // u64 bytes allocated to fifos, headers included (informational)
	SegOffAllocCount  = 40 // u32 fifos allocated (informational)
	SegOffIndex       = 44 // u32 the segment's index in its manager
	SegOffName        = 64 // [64]byte name, NUL-padded
	SegNameLen        = 64
)

// Segment header flags.
const (
	SegFlagHugePages = 1 << 0 // backed by huge pages (MFD_HUGETLB)
	SegFlagNoDump    = 1 << 1 // excluded from core dumps in the creating process
)

// Fifo header: FifoHeaderSize bytes at the fifo's offset, followed by its
// data. Four 64-byte cache lines: what never changes, the producer's index,
// the consumer's index, and the event and notification flags.
const (
	FifoMagic      = 0x46465358 // "XSFF" in little-endian byte order
	FifoHeaderSize = 256
	CacheLine      = 64

	FifoOffMagic      = 0   // u32 FifoMagic
	FifoOffSize       = 4   // u32 data size in bytes, a power of two
	FifoOffSelf       = 8   // u32 the header's own offset in the segment
	FifoOffGen        = 12  // u32 the allocation's number, never 0 (FifoOffClose)
	FifoOffTail       = 64  // u32 producer index (written by the producer only)
	FifoOffHead       = 128 // u32 consumer index (written by the consumer only)
	FifoOffHasEvent   = 192 // u32 0 or 1: the consumer has been signalled
	FifoOffWantDeqNtf = 196 // u32 DeqNotify* bits the producer asks for
	FifoOffHasDeqNtf  = 200 // u32 0 or 1: a one-shot notification was reported
	FifoOffClose      = 204 // u32 0, or FifoOffGen's value: the producer closed the stream after what it queued
	FifoOffTaken      = 208 // u32 0, or FifoOffGen's value: an accepted session's app took it (Accept returned it)
)

// Fifo sizes.
const (
	MinFifoSize = 64      // smallest data size of a fifo
	MaxFifoSize = 1 << 30 // largest data size of a fifo
)

// Segment sizes.
const (
	MinSegmentSize = 4096
	// MaxSegmentSize keeps every offset in a segment within 32 bits.
	MaxSegmentSize = 1<<32 - 1<<21
)

// DeqNotify are the dequeue notifications a producer can ask the consumer
// for (FifoOffWantDeqNtf).
type DeqNotify uint32

// Dequeue notification requests.
const (
	DeqNotifyAlways  DeqNotify = 1 << 0 // after every dequeue that removed data
	DeqNotifyIfFull  DeqNotify = 1 << 1 // once, when a dequeue takes the fifo out of full
	DeqNotifyIfEmpty DeqNotify = 1 << 2 // once, when a dequeue leaves the fifo empty
	deqNotifyAll               = DeqNotifyAlways | DeqNotifyIfFull | DeqNotifyIfEmpty
)

// Datagram record: DgramHeaderSize bytes of header, then Len bytes of
// payload, then padding up to the next multiple of DgramAlign.
const (
	DgramHeaderSize = 48
	DgramAlign      = 8

	DgramOffLen        = 0  // u32 payload length
	DgramOffRemotePort = 4  // u16
	DgramOffLocalPort  = 6  // u16
	DgramOffFamily     = 8  // u8 (4 or 6 by the session layer's convention)
	DgramOffFlags      = 9  // u8 DgramFlag* bits
	DgramOffRemote     = 16 // [16]byte
	DgramOffLocal      = 32 // [16]byte
)

// Datagram flags (DgramHeader.Flags). Bits not defined here are written 0
// and ignored.
const (
	// DgramFlagDontFragment, on a datagram an app queues to send: the
	// datapath must not fragment it. It goes out as one IP packet (IPv4:
	// with DF set), or not at all when it does not fit the path MTU.
	DgramFlagDontFragment uint8 = 1 << 0
)

// DgramHeader describes one datagram. Addresses are 16 bytes with an IPv4
// address in the first 4 bytes (the session layer's AddrBytes form); ports
// are in host byte order.
type DgramHeader struct {
	Len        uint32 // payload length; set by the dequeue calls, ignored by the enqueue calls
	Family     uint8
	Flags      uint8 // DgramFlag* bits
	RemotePort uint16
	LocalPort  uint16
	Remote     [16]byte
	Local      [16]byte
}

// DgramRecordSize returns the bytes a datagram with an n-byte payload takes
// in a fifo.
func DgramRecordSize(n int) int {
	return DgramHeaderSize + (n+DgramAlign-1)&^(DgramAlign-1)
}

func (h *DgramHeader) encode(b *[DgramHeaderSize]byte, n uint32) {
	ne := binary.NativeEndian
	ne.PutUint32(b[DgramOffLen:], n)
	ne.PutUint16(b[DgramOffRemotePort:], h.RemotePort)
	ne.PutUint16(b[DgramOffLocalPort:], h.LocalPort)
	b[DgramOffFamily] = h.Family
	b[DgramOffFlags] = h.Flags
	clear(b[DgramOffFlags+1 : DgramOffRemote])
	copy(b[DgramOffRemote:], h.Remote[:])
	copy(b[DgramOffLocal:], h.Local[:])
}

func (h *DgramHeader) decode(b *[DgramHeaderSize]byte) {
	ne := binary.NativeEndian
	h.Len = ne.Uint32(b[DgramOffLen:])
	h.RemotePort = ne.Uint16(b[DgramOffRemotePort:])
	h.LocalPort = ne.Uint16(b[DgramOffLocalPort:])
	h.Family = b[DgramOffFamily]
	h.Flags = b[DgramOffFlags]
	copy(h.Remote[:], b[DgramOffRemote:])
	copy(h.Local[:], b[DgramOffLocal:])
}

// EventType says what an Event is about.
type EventType uint16

// Event types. The numbers are part of the ABI.
const (
	EventAccepted       EventType = 1  // a session arrived on a listener
	EventConnected      EventType = 2  // a connect succeeded
	EventConnectFailed  EventType = 3  // a connect failed
	EventDisconnected   EventType = 4  // the session was closed in order
	EventReset          EventType = 5  // the session was reset
	EventRx             EventType = 6  // data was queued in the session's rx fifo
	EventTx             EventType = 7  // the session's tx fifo has room (a dequeue notification)
	EventSegmentAdded   EventType = 8  // a segment was added to the app's manager
	EventSegmentRemoved EventType = 9  // a segment was removed
	EventUnbound        EventType = 10 // a listener was unbound
	EventBound          EventType = 11 // a listener was bound
	// EventError reports an asynchronous error of a session or
	// listener, as a kernel socket's SO_ERROR: Arg32 is the errno
	// (ECONNREFUSED for a connected session's port unreachable,
	// EHOSTUNREACH, ENETUNREACH, ...; EMSGSIZE for a don't-fragment
	// datagram larger than the path MTU). The session stays open; the
	// app reports the error once, on its next read or write.
	EventError      EventType = 12
	EventPeerClosed EventType = 13 // a stream's peer closed its half: its bytes are all in the rx fifo
	// EventLocalAddr comes just before the accepted or connected event of
	// a session on the wire: the session's local address and port (an
	// accept on a wildcard listener learns the address the peer reached).
	EventLocalAddr EventType = 14
	// EventResetAhead: a stream session on the wire was reset or timed
	// out (Code: why, as EventReset's) while data received before that is
	// still on its way into the rx fifo. Nothing more is sent: the app's
	// writes fail now, its reads take that data first. EventReset follows
	// once the data is all in the rx fifo.
	EventResetAhead EventType = 15
	EventCustom     EventType = 0x8000
)

func (t EventType) String() string {
	switch t {
	case EventAccepted:
		return "accepted"
	case EventConnected:
		return "connected"
	case EventConnectFailed:
		return "connect-failed"
	case EventDisconnected:
		return "disconnected"
	case EventReset:
		return "reset"
	case EventRx:
		return "rx"
	case EventTx:
		return "tx"
	case EventSegmentAdded:
		return "segment-added"
	case EventSegmentRemoved:
		return "segment-removed"
	case EventUnbound:
		return "unbound"
	case EventBound:
		return "bound"
	case EventError:
		return "error"
	case EventPeerClosed:
		return "peer-closed"
	case EventLocalAddr:
		return "local-addr"
	case EventResetAhead:
		return "reset-ahead"
	}
	if t >= EventCustom {
		return "custom"
	}
	return "event(?)"
}

// Event record layout: EventSize bytes, laid out as the Event struct.
const (
	EventSize = 64

	EventOffType   = 0  // u16
	EventOffFlags  = 2  // u16
	EventOffArg32  = 4  // u32
	EventOffHandle = 8  // u64
	EventOffArgs   = 16 // [6]u64
	EventNumArgs   = 6
)

// EventFlagCutThrough is set in the Flags of the events of a cut-through
// session.
const EventFlagCutThrough uint16 = 1

// Event is one fixed-size record of an app's event queue. What Flags, Arg32
// and Args mean depends on Type: SessionEvent is the session layer's; RefArg and
// RefFromArg pack a fifo's location into one argument.
type Event struct {
	Type   EventType
	Flags  uint16
	Arg32  uint32 // e.g. a segment index or an error code
	Handle uint64 // the session or listener handle
	Args   [EventNumArgs]uint64
}

// RefArg packs a fifo's segment index and offset into one event argument
// (segment in the upper 32 bits). The size is not packed: the app reads it
// from the fifo header when it attaches.
func RefArg(r FifoRef) uint64 { return uint64(r.Segment)<<32 | uint64(r.Offset) }

// RefFromArg unpacks RefArg. Size is zero.
func RefFromArg(a uint64) FifoRef { return FifoRef{Segment: uint32(a >> 32), Offset: uint32(a)} }

func (e *Event) encode(b []byte) {
	ne := binary.NativeEndian
	_ = b[EventSize-1]
	ne.PutUint16(b[EventOffType:], uint16(e.Type))
	ne.PutUint16(b[EventOffFlags:], e.Flags)
	ne.PutUint32(b[EventOffArg32:], e.Arg32)
	ne.PutUint64(b[EventOffHandle:], e.Handle)
	for i, a := range e.Args {
		ne.PutUint64(b[EventOffArgs+8*i:], a)
	}
}

func (e *Event) decode(b []byte) {
	ne := binary.NativeEndian
	_ = b[EventSize-1]
	e.Type = EventType(ne.Uint16(b[EventOffType:]))
	e.Flags = ne.Uint16(b[EventOffFlags:])
	e.Arg32 = ne.Uint32(b[EventOffArg32:])
	e.Handle = ne.Uint64(b[EventOffHandle:])
	for i := range e.Args {
		e.Args[i] = ne.Uint64(b[EventOffArgs+8*i:])
	}
}
