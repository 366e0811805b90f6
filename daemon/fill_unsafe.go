package daemon

import (
	"sync/atomic"
	"unsafe"

	"github.com/xsessiond/xsessiond/fifo"
)

// fifoUsed reads how many bytes are queued in f from the indices in its
// shared header, without touching either side's private state, so it may
// run while the fifo's producer and consumer work. A value the peer made
// inconsistent reads as the fifo's size.
func fifoUsed(f *fifo.Fifo) (used, size uint32) {
	if f == nil || f.Segment() == nil {
		return 0, 0
	}
	b := f.Segment().Bytes()
	off := int(f.Offset())
	if off < 0 || off+fifo.FifoHeaderSize > len(b) {
		return 0, f.Size()
	}
	// The head first: the tail read after it is at or past it, however
	// far the consumer went meanwhile (read the other way round, a head
	// that passed the tail read before made the fifo look full).
	head := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off+fifo.FifoOffHead])))
	tail := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off+fifo.FifoOffTail])))
	used = tail - head
	if used > f.Size() {
		used = f.Size()
	}
	return used, f.Size()
}
