package fifo

import "errors"

// Sentinel errors. Fifo data operations return these values themselves (never
// wrapped), so the hot path allocates nothing; segment and manager calls wrap
// them as "verb: %w".
var (
	// ErrCorrupt reports that the peer left the fifo's shared state
	// inconsistent: an index out of range, a datagram or event record whose
	// header does not fit what is queued. It concerns that fifo only.
	ErrCorrupt = errors.New("fifo: corrupt shared state")
	// ErrNoSpace reports that the data does not fit in the free space now.
	ErrNoSpace = errors.New("fifo: no space")
	// ErrEmpty reports that nothing is queued (at the offset asked for).
	ErrEmpty = errors.New("fifo: empty")
	// ErrShortBuffer reports that a datagram does not fit in the caller's
	// buffer; the datagram is left in the fifo.
	ErrShortBuffer = errors.New("fifo: buffer too short for datagram")
	// ErrTooLarge reports a datagram (or batch) that can never fit in the
	// fifo, even when it is empty.
	ErrTooLarge = errors.New("fifo: datagram larger than fifo")
	// ErrInvalidLength reports a length or offset argument out of range
	// (negative, or more than is queued or free).
	ErrInvalidLength = errors.New("fifo: invalid length")

	// ErrSegmentFull reports that a fifo does not fit in a segment.
	ErrSegmentFull = errors.New("fifo: segment full")
	// ErrInvalidSize reports a fifo or segment size that is not allowed.
	ErrInvalidSize = errors.New("fifo: invalid size")
	// ErrBadSegment reports a segment whose header or file does not
	// validate (wrong magic, ABI version, size, or missing seals).
	ErrBadSegment = errors.New("fifo: bad segment")
	// ErrBadFifo reports a fifo header that does not validate, or an offset
	// that names no fifo.
	ErrBadFifo = errors.New("fifo: bad fifo")
	// ErrNotOwner reports an allocation on a segment this process mapped
	// but did not create.
	ErrNotOwner = errors.New("fifo: segment not owned by this process")
	// ErrTooManySegments reports that a manager reached MaxSegments.
	ErrTooManySegments = errors.New("fifo: segment limit reached")
	// ErrFifoMemoryLimit reports that a manager reached MaxFifoMemory.
	ErrFifoMemoryLimit = errors.New("fifo: fifo memory limit reached")
	// ErrClosed reports use of a closed segment, manager or event queue.
	ErrClosed = errors.New("fifo: closed")
)
