package fifo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// SegmentOptions configure CreateSegment.
type SegmentOptions struct {
	Name string // for the memfd name (/proc/PID/fd) and the segment header
	Size int    // bytes; rounded up to the page (or huge page) size
	// NoDump excludes the segment from this process's core dumps
	// (MADV_DONTDUMP).
	NoDump bool
	// HugePages asks for a hugetlbfs-backed memfd (MFD_HUGETLB). When the
	// kernel has no huge pages to give, the segment falls back to normal
	// pages; HugePages and HugePagesErr on the segment say what happened.
	HugePages bool
}

// Segment is a shared memory segment: a sealed memfd mapped shared, which
// starts with a SegmentHeaderSize-byte header and holds fifos.
//
// A segment made by CreateSegment (or NewHeapSegment) is owned: this process
// allocates and frees its fifos, and keeps the allocator's state in private
// memory, never reading it back from the segment. A segment attached with
// MapSegment is mapped: it can only attach to fifos (FifoAt).
//
// Close unmaps the segment: every Fifo of the segment must be out of use
// before it is called, or the next access faults. The methods are safe for
// concurrent use.
type Segment struct {
	name    string
	fd      int // -1 for heap segments
	mem     []byte
	m       mapping // zero for heap segments
	owner   bool
	huge    bool
	hugeErr error
	nodump  bool

	mu sync.Mutex // guards the fields below; Manager.mu is taken before it
	// closed is set by Close.
	closed bool
	// free lists the free extents of an owned segment, sorted by offset,
	// adjacent extents merged.
	free []extent
	// allocs maps the offset of every fifo allocated here (owned segments)
	// to its data size and allocation number.
	allocs     map[uint32]fifoAlloc
	allocBytes int64
	index      uint32
	evq        uint32 // offset of the event queue's fifo, 0 if none
}

type extent struct{ off, len uint32 }

// CreateSegment creates, sizes, seals and maps a memfd segment and writes
// its header. The segment's file descriptor (FD) is close-on-exec; pass it
// to apps with SCM_RIGHTS.
func CreateSegment(opts SegmentOptions) (*Segment, error) {
	if opts.Size <= 0 || opts.Size > MaxSegmentSize {
		return nil, fmt.Errorf("create segment %q: size %d: %w", opts.Name, opts.Size, ErrInvalidSize)
	}
	var s *Segment
	var hugeErr error
	if opts.HugePages {
		var err error
		s, err = createMemfdSegment(opts, true)
		if err != nil {
			hugeErr = fmt.Errorf("huge pages unavailable, using normal pages: %w", err)
		}
	}
	if s == nil {
		var err error
		s, err = createMemfdSegment(opts, false)
		if err != nil {
			return nil, err
		}
		s.hugeErr = hugeErr
	}
	if opts.NoDump {
		if err := unix.Madvise(s.mem, unix.MADV_DONTDUMP); err != nil {
			s.Close()
			return nil, fmt.Errorf("create segment %q: madvise(MADV_DONTDUMP): %w", opts.Name, err)
		}
		s.nodump = true
	}
	s.initOwned()
	return s, nil
}

func createMemfdSegment(opts SegmentOptions, huge bool) (*Segment, error) {
	align := unix.Getpagesize()
	flags := unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	if huge {
		align = hugePageSize()
		flags |= unix.MFD_HUGETLB
	}
	size := (opts.Size + align - 1) &^ (align - 1)
	if size < MinSegmentSize {
		size = MinSegmentSize
	}
	if size > MaxSegmentSize {
		return nil, fmt.Errorf("create segment %q: size %d: %w", opts.Name, size, ErrInvalidSize)
	}
	name := "xsessiond:" + opts.Name
	if len(name) > 200 {
		name = name[:200]
	}
	fd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return nil, fmt.Errorf("create segment %q: memfd_create: %w", opts.Name, err)
	}
	fail := func(what string, err error) (*Segment, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("create segment %q: %s: %w", opts.Name, what, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fail("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS,
		unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal", err)
	}
	m, err := mapSegmentFile(fd, size, align)
	if err != nil {
		return fail("map", err)
	}
	if huge {
		// Hugetlb pages are taken at fault time for MAP_SHARED mappings
		// only if they were reserved at mmap; touching the header makes
		// a shortage show up here rather than as SIGBUS later.
		m.mem[0] = 0
	}
	return &Segment{name: opts.Name, fd: fd, mem: m.mem, m: m, owner: true, huge: huge}, nil
}

// hugePageSize reads the default huge page size, 2 MiB if unknown.
func hugePageSize() int {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/hugepages", &st); err == nil && st.Type == unix.HUGETLBFS_MAGIC && st.Bsize > 0 {
		return int(st.Bsize)
	}
	return 2 << 20
}

// NewHeapSegment returns an owned segment in ordinary Go memory, with no
// file descriptor (FD returns -1). It behaves as a memfd segment within one
// process; tests and in-process peers use it (see fifo/fifotest).
func NewHeapSegment(name string, size int) (*Segment, error) {
	if size <= 0 || size > MaxSegmentSize {
		return nil, fmt.Errorf("create heap segment %q: size %d: %w", name, size, ErrInvalidSize)
	}
	size = (size + 4095) &^ 4095
	s := &Segment{name: name, fd: -1, mem: heapMemory(size), owner: true}
	s.initOwned()
	return s, nil
}

// initOwned writes the header of a new owned segment and sets up its
// allocator.
func (s *Segment) initOwned() {
	ne := binary.NativeEndian
	h := s.mem[:SegmentHeaderSize]
	clear(h)
	ne.PutUint16(h[SegOffVersion:], ABIVersion)
	ne.PutUint16(h[SegOffHeaderSize:], SegmentHeaderSize)
	ne.PutUint64(h[SegOffSize:], uint64(len(s.mem)))
	ne.PutUint32(h[SegOffFifoHdrSize:], FifoHeaderSize)
	var flags uint32
	if s.huge {
		flags |= SegFlagHugePages
	}
	if s.nodump {
		flags |= SegFlagNoDump
	}
	ne.PutUint32(h[SegOffFlags:], flags)
	ne.PutUint32(h[SegOffAllocStart:], SegmentHeaderSize)
	copy(h[SegOffName:SegOffName+SegNameLen-1], s.name)
	// The magic goes last: a header with the magic is complete.
	u32At(h, SegOffMagic).Store(SegmentMagic)
	s.free = []extent{{off: SegmentHeaderSize, len: uint32(len(s.mem) - SegmentHeaderSize)}}
	s.allocs = make(map[uint32]fifoAlloc)
}

// MapSegment maps a segment received from its owner and validates its
// header and seals. On success the segment owns fd (Close closes it); on
// error the caller still does. The segment can attach to fifos (FifoAt) but
// not allocate them.
func MapSegment(fd int) (*Segment, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("map segment: fstat: %w", err)
	}
	size := st.Size
	if size < MinSegmentSize || size > MaxSegmentSize {
		return nil, fmt.Errorf("map segment: file size %d: %w", size, ErrBadSegment)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("map segment: get seals: %w (%w)", ErrBadSegment, err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		// Without the seal, anyone holding the file could shrink it
		// under our mapping and turn accesses into SIGBUS.
		return nil, fmt.Errorf("map segment: not sealed against shrinking: %w", ErrBadSegment)
	}
	align := unix.Getpagesize()
	huge := false
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Type == unix.HUGETLBFS_MAGIC && sfs.Bsize > 0 {
		align, huge = int(sfs.Bsize), true
	}
	if size%int64(align) != 0 {
		return nil, fmt.Errorf("map segment: size %d not a multiple of %d: %w", size, align, ErrBadSegment)
	}
	m, err := mapSegmentFile(fd, int(size), align)
	if err != nil {
		return nil, fmt.Errorf("map segment: %w", err)
	}
	s := &Segment{fd: fd, mem: m.mem, m: m, huge: huge}
	if err := s.validateHeader(); err != nil {
		m.unmap()
		return nil, fmt.Errorf("map segment: %w", err)
	}
	return s, nil
}

// validateHeader checks the header of a mapped segment and copies what it
// needs into private fields.
func (s *Segment) validateHeader() error {
	ne := binary.NativeEndian
	h := s.mem[:SegmentHeaderSize]
	if m := u32At(h, SegOffMagic).Load(); m != SegmentMagic {
		return fmt.Errorf("magic %#x: %w", m, ErrBadSegment)
	}
	if v := ne.Uint16(h[SegOffVersion:]); v != ABIVersion {
		return fmt.Errorf("ABI version %d, want %d: %w", v, ABIVersion, ErrBadSegment)
	}
	if hs := ne.Uint16(h[SegOffHeaderSize:]); hs != SegmentHeaderSize {
		return fmt.Errorf("header size %d: %w", hs, ErrBadSegment)
	}
	if sz := ne.Uint64(h[SegOffSize:]); sz != uint64(len(s.mem)) {
		return fmt.Errorf("header size field %d, file %d: %w", sz, len(s.mem), ErrBadSegment)
	}
	if fh := ne.Uint32(h[SegOffFifoHdrSize:]); fh != FifoHeaderSize {
		return fmt.Errorf("fifo header size %d: %w", fh, ErrBadSegment)
	}
	if as := ne.Uint32(h[SegOffAllocStart:]); as != SegmentHeaderSize {
		return fmt.Errorf("allocation start %d: %w", as, ErrBadSegment)
	}
	s.index = ne.Uint32(h[SegOffIndex:])
	s.evq = ne.Uint32(h[SegOffEventQueue:])
	name := h[SegOffName : SegOffName+SegNameLen]
	n := 0
	for n < len(name) && name[n] != 0 {
		n++
	}
	s.name = string(name[:n])
	return nil
}

// FD returns the segment's file descriptor, -1 for a heap segment. It stays
// owned by the segment.
func (s *Segment) FD() int { return s.fd }

// DropFD closes the segment's file descriptor and keeps its mapping, for
// a segment whose descriptor nothing needs once mapped: every descriptor
// a process holds counts against its limit. FD returns -1 after.
func (s *Segment) DropFD() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("segment %q: close: %w", s.name, err)
	}
	return nil
}

// Size returns the segment's size in bytes.
func (s *Segment) Size() int { return len(s.mem) }

// Name returns the segment's name.
func (s *Segment) Name() string { return s.name }

// Owned reports whether this process created the segment and allocates its
// fifos.
func (s *Segment) Owned() bool { return s.owner }

// HugePages reports whether the segment is backed by huge pages.
func (s *Segment) HugePages() bool { return s.huge }

// HugePagesErr returns why huge pages were asked for and not used (the
// segment then uses normal pages), or nil.
func (s *Segment) HugePagesErr() error { return s.hugeErr }

// Index returns the segment's index in its manager (0 for the first), as
// written in its header.
func (s *Segment) Index() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

// EventQueueOffset returns the offset of the event queue recorded in the
// segment's header, 0 if there is none. In a mapped segment the value comes
// from the owner; OpenEventQueue validates it.
func (s *Segment) EventQueueOffset() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evq
}

// Bytes returns the whole segment, header included. Writing it bypasses the
// fifo protocol; tests use it to play a misbehaving peer.
func (s *Segment) Bytes() []byte { return s.mem }

// Allocated returns the bytes allocated to fifos in an owned segment,
// fifo headers included.
func (s *Segment) Allocated() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allocBytes
}

// Fifos returns the number of fifos allocated in an owned segment.
func (s *Segment) Fifos() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.allocs)
}

// Close unmaps the segment and closes its file descriptor. No Fifo of the
// segment may be used during or after Close.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if err := s.m.unmap(); err != nil {
		errs = append(errs, fmt.Errorf("close segment %q: munmap: %w", s.name, err))
	}
	s.mem = nil
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("close segment %q: close: %w", s.name, err))
		}
		s.fd = -1
	}
	return errors.Join(errs...)
}

// setIndex records the segment's index in its manager.
func (s *Segment) setIndex(i uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = i
	u32At(s.mem, SegOffIndex).Store(i)
}

// AllocFifo allocates a fifo of size data bytes (a power of two between
// MinFifoSize and MaxFifoSize) in an owned segment. It returns
// ErrSegmentFull when the fifo does not fit.
func (s *Segment) AllocFifo(size uint32) (*Fifo, error) {
	if size < MinFifoSize || size > MaxFifoSize || size&(size-1) != 0 {
		return nil, fmt.Errorf("alloc fifo: size %d: %w", size, ErrInvalidSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("alloc fifo: %w", ErrClosed)
	}
	if !s.owner {
		return nil, fmt.Errorf("alloc fifo: %w", ErrNotOwner)
	}
	off, ok := s.allocLocked(FifoHeaderSize + size)
	if !ok {
		return nil, fmt.Errorf("alloc fifo of %d bytes in segment %q: %w", size, s.name, ErrSegmentFull)
	}
	gen := nextFifoGen()
	s.allocs[off] = fifoAlloc{size: size, gen: gen}
	s.allocBytes += int64(FifoHeaderSize + size)
	s.mirrorLocked()
	initFifoHeader(s.mem[off:off+FifoHeaderSize], off, size, gen)
	return newFifo(s, off, size, 0, 0, gen), nil
}

// fifoAlloc is what an owned segment keeps of a fifo it allocated.
type fifoAlloc struct {
	size uint32 // data bytes
	gen  uint32 // the allocation's number (FifoOffGen)
}

// Allocated reports whether f, a view of a fifo of an owned segment, is
// still allocated: the allocation the view was made for, not a later one
// at the same place. It reads the owner's private records, not the shared
// header, which an app may write. A view of another process's segment
// reports false.
func (f *Fifo) Allocated() bool {
	s := f.seg
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.allocs[f.off]
	return s.owner && !s.closed && ok && a.size == f.size && a.gen == f.gen
}

// allocLocked takes n bytes (a multiple of CacheLine) from the first free
// extent that has them.
func (s *Segment) allocLocked(n uint32) (uint32, bool) {
	for i := range s.free {
		e := &s.free[i]
		if e.len < n {
			continue
		}
		off := e.off
		e.off += n
		e.len -= n
		if e.len == 0 {
			s.free = append(s.free[:i], s.free[i+1:]...)
		}
		return off, true
	}
	return 0, false
}

// freeLocked returns [off, off+n) to the free extents, merging neighbours.
func (s *Segment) freeLocked(off, n uint32) {
	i := sort.Search(len(s.free), func(i int) bool { return s.free[i].off > off })
	s.free = append(s.free, extent{})
	copy(s.free[i+1:], s.free[i:])
	s.free[i] = extent{off: off, len: n}
	if i+1 < len(s.free) && s.free[i].off+s.free[i].len == s.free[i+1].off {
		s.free[i].len += s.free[i+1].len
		s.free = append(s.free[:i+1], s.free[i+2:]...)
	}
	if i > 0 && s.free[i-1].off+s.free[i-1].len == s.free[i].off {
		s.free[i-1].len += s.free[i].len
		s.free = append(s.free[:i], s.free[i+1:]...)
	}
}

// mirrorLocked writes the allocator's counters into the header, for the
// app's information only: they are never read back.
func (s *Segment) mirrorLocked() {
	u64At(s.mem, SegOffAllocBytes).Store(uint64(s.allocBytes))
	u32At(s.mem, SegOffAllocCount).Store(uint32(len(s.allocs)))
}

// FreeFifo returns a fifo's memory to its segment for reuse. The fifo must
// be out of use; its header is invalidated so a later FifoAt at its offset
// fails until the memory is allocated again.
func (s *Segment) FreeFifo(f *Fifo) error {
	if f == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("free fifo: %w", ErrClosed)
	}
	if !s.owner {
		return fmt.Errorf("free fifo: %w", ErrNotOwner)
	}
	a, ok := s.allocs[f.off]
	if f.seg != s || !ok || a.size != f.size || a.gen != f.gen {
		return fmt.Errorf("free fifo at %d: not allocated in segment %q: %w", f.off, s.name, ErrBadFifo)
	}
	delete(s.allocs, f.off)
	size := a.size
	s.allocBytes -= int64(FifoHeaderSize + size)
	u32At(s.mem, int(f.off)+FifoOffMagic).Store(0)
	if s.evq == f.off {
		s.evq = 0
		u32At(s.mem, SegOffEventQueue).Store(0)
	}
	s.freeLocked(f.off, FifoHeaderSize+size)
	s.mirrorLocked()
	return nil
}

// FifoAt attaches to the fifo whose header is at offset. In an owned
// segment the offset must be one this process allocated, and the size comes
// from the private allocator state. In a mapped segment the header is
// validated: magic, a power-of-two size in range, its own offset, and the
// whole fifo inside the segment. Either way the indices found in the header
// must be consistent (tail - head <= size); the returned Fifo starts from
// them.
func (s *Segment) FifoAt(offset uint32) (*Fifo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("attach fifo: %w", ErrClosed)
	}
	var size, gen uint32
	if s.owner {
		// The owner's records, not what an app may have written.
		a, ok := s.allocs[offset]
		if !ok {
			return nil, fmt.Errorf("attach fifo at %d: no fifo allocated there: %w", offset, ErrBadFifo)
		}
		size, gen = a.size, a.gen
	} else {
		sz, err := s.checkFifoHeader(offset)
		if err != nil {
			return nil, fmt.Errorf("attach fifo at %d: %w", offset, err)
		}
		size = sz
	}
	hdr := s.mem[offset : offset+FifoHeaderSize]
	if !s.owner {
		gen = u32At(hdr, FifoOffGen).Load()
	}
	tail := u32At(hdr, FifoOffTail).Load()
	head := u32At(hdr, FifoOffHead).Load()
	if tail-head > size {
		return nil, fmt.Errorf("attach fifo at %d: indices %d/%d: %w", offset, head, tail, ErrBadFifo)
	}
	return newFifo(s, offset, size, head, tail, gen), nil
}

// checkFifoHeader validates the fifo header at offset in a mapped segment
// and returns the fifo's data size.
func (s *Segment) checkFifoHeader(offset uint32) (uint32, error) {
	segSize := uint64(len(s.mem))
	if offset%CacheLine != 0 || offset < SegmentHeaderSize || uint64(offset)+FifoHeaderSize > segSize {
		return 0, fmt.Errorf("offset out of range: %w", ErrBadFifo)
	}
	hdr := s.mem[offset : offset+FifoHeaderSize]
	if m := u32At(hdr, FifoOffMagic).Load(); m != FifoMagic {
		return 0, fmt.Errorf("magic %#x: %w", m, ErrBadFifo)
	}
	size := u32At(hdr, FifoOffSize).Load()
	if size < MinFifoSize || size > MaxFifoSize || size&(size-1) != 0 {
		return 0, fmt.Errorf("size %d: %w", size, ErrBadFifo)
	}
	if self := u32At(hdr, FifoOffSelf).Load(); self != offset {
		return 0, fmt.Errorf("header names offset %d: %w", self, ErrBadFifo)
	}
	if uint64(offset)+FifoHeaderSize+uint64(size) > segSize {
		return 0, fmt.Errorf("size %d past the segment's end: %w", size, ErrBadFifo)
	}
	return size, nil
}

// setEventQueue records the event queue's offset in the header.
func (s *Segment) setEventQueue(off uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evq = off
	u32At(s.mem, SegOffEventQueue).Store(off)
}
