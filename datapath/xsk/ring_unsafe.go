package xsk

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapRing points r at the producer, consumer and flags words of mem, a ring
// mapped with the offsets the kernel gave, and returns the slot area. The
// kernel aligns these words; mem outlives r (both die in Close).
func mapRing(r *ring, mem []byte, off unix.XDPRingOffset, size uint32, slotSize uintptr) (unsafe.Pointer, bool) {
	end := uint64(size) * uint64(slotSize)
	if off.Producer+4 > uint64(len(mem)) || off.Consumer+4 > uint64(len(mem)) ||
		off.Flags+4 > uint64(len(mem)) || off.Desc+end > uint64(len(mem)) {
		return nil, false
	}
	r.producer = (*uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.consumer = (*uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.size = size
	r.mask = size - 1
	return unsafe.Pointer(&mem[off.Desc]), true
}

// addrSlots views the slot area of a fill or completion ring.
func addrSlots(p unsafe.Pointer, size uint32) []uint64 {
	return unsafe.Slice((*uint64)(p), size)
}

// descSlots views the slot area of an rx or tx ring.
func descSlots(p unsafe.Pointer, size uint32) []unix.XDPDesc {
	return unsafe.Slice((*unix.XDPDesc)(p), size)
}

const (
	sizeofAddr = unsafe.Sizeof(uint64(0))
	sizeofDesc = unsafe.Sizeof(unix.XDPDesc{})
)
