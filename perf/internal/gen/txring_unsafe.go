package gen

import (
	"sync/atomic"
	"unsafe"
)

// The status word of a ring slot is shared with the kernel: it is read and
// written with atomics (the kernel orders its frame reads after seeing
// TP_STATUS_SEND_REQUEST, and releases the slot with a store we must see).

func statusWord(ring []byte, off int) *uint32 {
	_ = ring[off+3]
	return (*uint32)(unsafe.Pointer(&ring[off]))
}

func loadStatus(ring []byte, off int) uint32 { return atomic.LoadUint32(statusWord(ring, off)) }

func storeStatus(ring []byte, off int, v uint32) { atomic.StoreUint32(statusWord(ring, off), v) }
