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
	tail := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off+fifo.FifoOffTail])))
	head := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off+fifo.FifoOffHead])))
	used = tail - head
	if used > f.Size() {
		used = f.Size()
	}
	return used, f.Size()
}
