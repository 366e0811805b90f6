package fifo

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapping is a shared mapping of a segment's file with an inaccessible
// (PROT_NONE) guard region of at least one page on each side, so a stray
// access just outside the segment faults instead of touching other memory.
type mapping struct {
	base   unsafe.Pointer // start of the whole reservation, guards included
	resLen uintptr        // length of the whole reservation
	mem    []byte         // the segment itself
}

// mapSegmentFile maps size bytes of fd shared and read-write at an address
// aligned to align (the page or huge page size), between guard regions.
func mapSegmentFile(fd, size, align int) (mapping, error) {
	a := uintptr(align)
	resLen := uintptr(size) + 3*a
	base, err := unix.MmapPtr(-1, 0, nil, resLen, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return mapping{}, fmt.Errorf("reserve address space: %w", err)
	}
	// The segment starts one alignment unit above the first aligned
	// address, so [addr-align, addr) and [addr+size, addr+size+align) are
	// guard regions inside the reservation.
	first := (uintptr(base) + a - 1) &^ (a - 1)
	addr := unsafe.Add(base, first-uintptr(base)+a)
	p, err := unix.MmapPtr(fd, 0, addr, uintptr(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_FIXED)
	if err != nil {
		_ = unix.MunmapPtr(base, resLen)
		return mapping{}, fmt.Errorf("mmap: %w", err)
	}
	return mapping{base: base, resLen: resLen, mem: unsafe.Slice((*byte)(p), size)}, nil
}

// unmap releases the whole reservation, guards included.
func (m *mapping) unmap() error {
	if m.base == nil {
		return nil
	}
	err := unix.MunmapPtr(m.base, m.resLen)
	m.base, m.mem = nil, nil
	return err
}

// heapMemory returns size bytes of zeroed Go memory aligned to 8 bytes, for
// segments that are not shared with another process.
func heapMemory(size int) []byte {
	words := make([]uint64, (size+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), size)
}

// u32At returns the 32-bit word at mem[off:off+4] for atomic access. off is
// a constant offset within a validated header, so a misaligned or out of
// range offset is a programming error and panics.
func u32At(mem []byte, off int) *atomic.Uint32 {
	b := mem[off : off+4]
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%4 != 0 {
		panic("fifo: misaligned atomic word")
	}
	return (*atomic.Uint32)(p)
}

// u64At is u32At for a 64-bit word.
func u64At(mem []byte, off int) *atomic.Uint64 {
	b := mem[off : off+8]
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%8 != 0 {
		panic("fifo: misaligned atomic word")
	}
	return (*atomic.Uint64)(p)
}
