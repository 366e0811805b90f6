package xsk

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const xdpRingNeedWakeup = unix.XDP_RING_NEED_WAKEUP

// Desc describes one frame on the wire: its UMEM address (where the packet
// starts, headroom included), its length, and the options word of the
// kernel descriptor.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// Frame states; see the package doc.
const (
	stateFree uint8 = iota
	stateFill
	stateApp
	stateTx
	numStates
)

// Socket is one AF_XDP socket with its own UMEM. See the package doc for
// ownership and concurrency.
type Socket struct {
	fd          int
	ifindex     int
	queue       int
	opts        Options
	zeroCopy    bool
	multiBuffer bool
	umem        []byte
	ringMem     [4][]byte // fill, completion, rx, tx mappings, for munmap
	frameShift  uint
	frameMask   uint64 // FrameSize-1
	numFrames   uint32

	fill, comp, rx, tx ring
	fillSlots          []uint64
	compSlots          []uint64
	rxSlots            []unix.XDPDesc
	txSlots            []unix.XDPDesc

	free   []uint64 // free list of frame base addresses, used as a stack
	state  []uint8  // per frame, indexed by addr >> frameShift
	counts [numStates]uint32

	pfd [1]unix.PollFd

	closed bool

	// Counters, written by the owner and read by Stats from any goroutine.
	nReceived, nTransmitted, nCompleted, nFilled atomic.Uint64
	nTxKicks, nRxWakeups, nKickErrors, nBadDescs atomic.Uint64
}

// Open creates an AF_XDP socket with its UMEM and rings, binds it to queue
// of the interface ifindex, and fills the fill ring. The interface is looked
// up in the network namespace of the calling thread. The socket receives
// only what an XDP program attached to the interface redirects into an
// XSKMAP entry holding FD().
//
// The kernel releases a closed socket's hold on its queue asynchronously: an
// Open on the same queue right after Close may fail with ErrBusy for a few
// milliseconds, and a caller that reopens should retry.
func Open(ifindex, queue int, opts Options) (*Socket, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if ifindex <= 0 || queue < 0 {
		return nil, fmt.Errorf("open: ifindex %d queue %d: %w", ifindex, queue, ErrInvalidOptions)
	}
	s := &Socket{fd: -1, ifindex: ifindex, queue: queue, opts: o, numFrames: uint32(o.NumFrames)}
	if err := s.open(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open xsk on ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return s, nil
}

func (s *Socket) open() error {
	o := s.opts
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return sysErr("socket", err)
	}
	s.fd = fd
	size := o.NumFrames * o.FrameSize
	s.umem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return sysErr("mmap umem", err)
	}
	if err := setUmemReg(fd, s.umem, uint32(o.FrameSize), uint32(o.Headroom)); err != nil {
		return umemRegErr(err, size)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, o.RingSize); err != nil {
			return sysErr("set ring size", err)
		}
	}
	off, err := getMmapOffsets(fd)
	if err != nil {
		return sysErr("get mmap offsets", err)
	}
	for i, pgoff := range ringPgoff {
		length := int(ringOffsets(off, i).Desc) + o.RingSize*int(ringSlotSize[i])
		mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return sysErr("mmap ring", err)
		}
		s.ringMem[i] = mem
	}
	if err := s.mapRings(off); err != nil {
		return err
	}
	s.initFrames()

	var flags uint16
	switch o.Mode {
	case ModeCopy:
		flags |= unix.XDP_COPY
	case ModeZeroCopy:
		flags |= unix.XDP_ZEROCOPY
	}
	if o.NeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)}
	if o.MultiBuffer {
		sa.Flags |= unix.XDP_USE_SG
		err = unix.Bind(fd, sa)
		sa.Flags &^= unix.XDP_USE_SG
		if err == nil {
			s.multiBuffer = true
		} else if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			// No multi-buffer support: before Linux 6.6, or a
			// zero-copy driver without it.
			err = unix.Bind(fd, sa)
		}
	} else {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		if errors.Is(err, unix.EINVAL) && o.Mode == ModeZeroCopy {
			// Drivers without zero-copy support refuse XDP_ZEROCOPY with
			// EOPNOTSUPP; some paths report EINVAL.
			return fmt.Errorf("bind: %w (%w)", ErrNotSupported, err)
		}
		return sysErr("bind", err)
	}
	if v, err := getOptions(fd); err == nil {
		s.zeroCopy = v&unix.XDP_OPTIONS_ZEROCOPY != 0
	}
	s.pfd[0] = unix.PollFd{Fd: int32(fd)}
	s.Fill()
	return nil
}

// Ring numbering in ringMem and the tables below.
const (
	ringFill = iota
	ringComp
	ringRx
	ringTx
)

var (
	ringPgoff    = [4]int64{unix.XDP_UMEM_PGOFF_FILL_RING, unix.XDP_UMEM_PGOFF_COMPLETION_RING, unix.XDP_PGOFF_RX_RING, unix.XDP_PGOFF_TX_RING}
	ringSlotSize = [4]uintptr{sizeofAddr, sizeofAddr, sizeofDesc, sizeofDesc}
)

func ringOffsets(off unix.XDPMmapOffsets, i int) unix.XDPRingOffset {
	switch i {
	case ringFill:
		return off.Fr
	case ringComp:
		return off.Cr
	case ringRx:
		return off.Rx
	}
	return off.Tx
}

// mapRings points the rings at s.ringMem with the kernel's offsets and
// reads their indices.
func (s *Socket) mapRings(off unix.XDPMmapOffsets) error {
	n := uint32(s.opts.RingSize)
	rings := [4]*ring{&s.fill, &s.comp, &s.rx, &s.tx}
	for i, r := range rings {
		p, ok := mapRing(r, s.ringMem[i], ringOffsets(off, i), n, ringSlotSize[i])
		if !ok {
			return fmt.Errorf("map ring: kernel offsets outside the mapping: %w", ErrNotSupported)
		}
		switch i {
		case ringFill:
			s.fillSlots = addrSlots(p, n)
		case ringComp:
			s.compSlots = addrSlots(p, n)
		case ringRx:
			s.rxSlots = descSlots(p, n)
		case ringTx:
			s.txSlots = descSlots(p, n)
		}
	}
	// The rings start empty; read the indices anyway so the cached copies
	// agree with whatever the mapping holds.
	s.fill.cachedProd = atomic.LoadUint32(s.fill.producer)
	s.fill.cachedCons = atomic.LoadUint32(s.fill.consumer)
	s.tx.cachedProd = atomic.LoadUint32(s.tx.producer)
	s.tx.cachedCons = atomic.LoadUint32(s.tx.consumer)
	s.rx.cachedCons = atomic.LoadUint32(s.rx.consumer)
	s.rx.cachedProd = s.rx.cachedCons
	s.comp.cachedCons = atomic.LoadUint32(s.comp.consumer)
	s.comp.cachedProd = s.comp.cachedCons
	return nil
}

// initFrames puts every frame on the free list.
func (s *Socket) initFrames() {
	o := s.opts
	s.frameMask = uint64(o.FrameSize - 1)
	s.frameShift = 0
	for sz := o.FrameSize; sz > 1; sz >>= 1 {
		s.frameShift++
	}
	s.free = make([]uint64, o.NumFrames)
	for i := range s.free {
		// Hand out low addresses first: pop from the end.
		s.free[i] = uint64(o.NumFrames-1-i) << s.frameShift
	}
	s.state = make([]uint8, o.NumFrames)
	s.counts = [numStates]uint32{stateFree: s.numFrames}
}

// Close unbinds the socket and releases the fd, the rings and the UMEM. It
// is safe to call more than once.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	// Close the socket first so the kernel stops touching the UMEM.
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, sysErr("close", err))
		}
		s.fd = -1
	}
	for i, m := range s.ringMem {
		if m != nil {
			if err := unix.Munmap(m); err != nil {
				errs = append(errs, sysErr("munmap ring", err))
			}
			s.ringMem[i] = nil
		}
	}
	s.fillSlots, s.compSlots, s.rxSlots, s.txSlots = nil, nil, nil, nil
	s.fill, s.comp, s.rx, s.tx = ring{}, ring{}, ring{}, ring{}
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			errs = append(errs, sysErr("munmap umem", err))
		}
		s.umem = nil
	}
	return errors.Join(errs...)
}

// FD returns the socket's file descriptor, for an XSKMAP entry or an
// external poller; -1 after Close.
func (s *Socket) FD() int { return s.fd }

// IfIndex and Queue return what the socket is bound to.
func (s *Socket) IfIndex() int { return s.ifindex }

// Queue returns the queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// ZeroCopy reports whether the kernel bound the socket in zero-copy mode.
func (s *Socket) ZeroCopy() bool { return s.zeroCopy }

// FrameSize is the size of a UMEM frame: a received descriptor's Len is at
// most that.
func (s *Socket) FrameSize() int { return int(s.frameMask + 1) }

// MultiBuffer reports whether the socket is bound with XDP_USE_SG: then a
// received descriptor with DescContinued set in its Options is followed by
// the next part of the same packet.
func (s *Socket) MultiBuffer() bool { return s.multiBuffer }

// DescContinued (XDP_PKT_CONTD) in a received Desc's Options: the packet
// goes on in the next descriptor.
const DescContinued = unix.XDP_PKT_CONTD

// Options returns the options the socket was opened with, defaults filled
// in.
func (s *Socket) Options() Options { return s.opts }

// Fill moves free frames onto the fill ring, as many as fit, and returns how
// many it moved. It never wakes the kernel: Receive and Poll do. The kernel
// holds at most RingSize frames (on the fill ring, the device's, and the rx
// ring): a backlog on the rx ring frees room on the fill ring, but the
// frames beyond RingSize stay free for transmit.
func (s *Socket) Fill() int {
	if s.closed {
		return 0
	}
	held := s.counts[stateFill]
	if held >= s.fill.size {
		return 0
	}
	n := s.fill.free(min(uint32(len(s.free)), s.fill.size-held))
	if n == 0 {
		return 0
	}
	idx := s.fill.cachedProd
	top := len(s.free)
	for i := uint32(0); i < n; i++ {
		a := s.free[top-1-int(i)]
		s.fillSlots[(idx+i)&s.fill.mask] = a
		s.state[a>>s.frameShift] = stateFill
	}
	s.free = s.free[:top-int(n)]
	s.counts[stateFree] -= n
	s.counts[stateFill] += n
	s.fill.submit(n)
	s.nFilled.Add(uint64(n))
	return int(n)
}

// Receive moves up to len(descs) received frames from the rx ring into descs
// and returns how many it stored. The frames now belong to the caller, who
// reads them with Frame and gives them back with Free, FreeDescs or
// Transmit. When nothing was received and the kernel asked for a wakeup on
// the fill ring, Receive wakes it.
func (s *Socket) Receive(descs []Desc) int {
	if s.closed {
		return 0
	}
	n := s.rx.peek(uint32(len(descs)))
	if n == 0 {
		if s.opts.NeedWakeup && s.fill.needWakeup() {
			s.nRxWakeups.Add(1)
			unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		}
		return 0
	}
	idx := s.rx.cachedCons
	j := 0
	for i := uint32(0); i < n; i++ {
		d := &s.rxSlots[(idx+i)&s.rx.mask]
		f := d.Addr >> s.frameShift
		if f >= uint64(s.numFrames) || s.state[f] != stateFill ||
			uint64(d.Len) > s.frameMask+1-(d.Addr&s.frameMask) {
			s.nBadDescs.Add(1)
			continue
		}
		s.state[f] = stateApp
		descs[j] = Desc{Addr: d.Addr, Len: d.Len, Options: d.Options}
		j++
	}
	s.rx.release(n)
	s.counts[stateFill] -= uint32(j)
	s.counts[stateApp] += uint32(j)
	s.nReceived.Add(uint64(j))
	return j
}

// Frame returns the bytes of the frame d describes, a slice of the UMEM, or
// nil when d does not lie inside one frame. The slice is valid until the
// frame is given back.
func (s *Socket) Frame(d Desc) []byte {
	f := d.Addr >> s.frameShift
	if s.umem == nil || f >= uint64(s.numFrames) || uint64(d.Len) > s.frameMask+1-(d.Addr&s.frameMask) {
		return nil
	}
	return s.umem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)]
}

// Buffer returns the UMEM from addr to the end of its frame, for writing a
// frame to transmit; nil when addr is outside the UMEM.
func (s *Socket) Buffer(addr uint64) []byte {
	f := addr >> s.frameShift
	if s.umem == nil || f >= uint64(s.numFrames) {
		return nil
	}
	end := (f + 1) << s.frameShift
	return s.umem[addr:end:end]
}

// AllocFrames takes up to len(addrs) frames from the free list for the
// caller to fill and Transmit, stores their base addresses in addrs and
// returns how many it took.
func (s *Socket) AllocFrames(addrs []uint64) int {
	if s.closed {
		return 0
	}
	n := min(len(addrs), len(s.free))
	top := len(s.free)
	for i := 0; i < n; i++ {
		a := s.free[top-1-i]
		addrs[i] = a
		s.state[a>>s.frameShift] = stateApp
	}
	s.free = s.free[:top-n]
	s.counts[stateFree] -= uint32(n)
	s.counts[stateApp] += uint32(n)
	return n
}

// Free gives frames the caller owns back to the free list. Any address
// inside a frame names that frame. It returns how many it freed; the others
// (not owned by the caller) are counted in Stats.BadDescs.
func (s *Socket) Free(addrs []uint64) int {
	n := 0
	for _, a := range addrs {
		if s.free1(a) {
			n++
		}
	}
	return n
}

// FreeDescs is Free for the descriptors Receive returned.
func (s *Socket) FreeDescs(descs []Desc) int {
	n := 0
	for i := range descs {
		if s.free1(descs[i].Addr) {
			n++
		}
	}
	return n
}

func (s *Socket) free1(a uint64) bool {
	f := a >> s.frameShift
	if s.closed || f >= uint64(s.numFrames) || s.state[f] != stateApp {
		s.nBadDescs.Add(1)
		return false
	}
	s.state[f] = stateFree
	s.free = append(s.free, a&^s.frameMask) // within capacity NumFrames
	s.counts[stateApp]--
	s.counts[stateFree]++
	return true
}

// Transmit puts frames the caller owns on the tx ring and kicks the kernel
// when needed. It consumes descs from the front and returns how many it
// consumed: a descriptor that does not lie inside one frame owned by the
// caller, or has length 0, is consumed without being sent (counted in
// Stats.BadDescs; a frame the caller owned goes back to the free list).
// Descriptors after the returned count were not touched: the tx ring was
// full, and they still belong to the caller.
func (s *Socket) Transmit(descs []Desc) int {
	if s.closed || len(descs) == 0 {
		return 0
	}
	room := s.tx.free(uint32(len(descs)))
	idx := s.tx.cachedProd
	var put uint32
	i := 0
	for ; i < len(descs) && put < room; i++ {
		d := &descs[i]
		f := d.Addr >> s.frameShift
		if f >= uint64(s.numFrames) || s.state[f] != stateApp {
			s.nBadDescs.Add(1)
			continue
		}
		if d.Len == 0 || uint64(d.Len) > s.frameMask+1-(d.Addr&s.frameMask) {
			s.nBadDescs.Add(1)
			s.free1(d.Addr)
			continue
		}
		s.state[f] = stateTx
		s.txSlots[(idx+put)&s.tx.mask] = unix.XDPDesc{Addr: d.Addr, Len: d.Len, Options: d.Options}
		put++
	}
	if put > 0 {
		s.tx.submit(put)
		s.counts[stateApp] -= put
		s.counts[stateTx] += put
		s.nTransmitted.Add(uint64(put))
		s.kickTx()
	}
	return i
}

// kickTx wakes the kernel's transmit path when it needs it (always, without
// NeedWakeup). Transient refusals (the completion ring is full, another
// sender is active, the link is down) are not errors: the next kick retries.
func (s *Socket) kickTx() {
	if s.opts.NeedWakeup && !s.tx.needWakeup() {
		return
	}
	s.nTxKicks.Add(1)
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
	default:
		s.nKickErrors.Add(1)
	}
}

// Kick wakes the kernel's transmit path now, whatever the need_wakeup flag
// says, and returns a non-transient error.
func (s *Socket) Kick() error {
	if s.closed {
		return ErrClosed
	}
	s.nTxKicks.Add(1)
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		return nil
	}
	s.nKickErrors.Add(1)
	return sysErr("kick", e)
}

// Complete drains the completion ring, returning sent frames to the free
// list, and returns how many it took back. When frames are still waiting in
// the tx ring it kicks the kernel again (copy mode sends a bounded number
// per kick).
func (s *Socket) Complete() int {
	if s.closed {
		return 0
	}
	total := 0
	for {
		n := s.comp.peek(s.comp.size)
		if n == 0 {
			break
		}
		idx := s.comp.cachedCons
		for i := uint32(0); i < n; i++ {
			a := s.compSlots[(idx+i)&s.comp.mask]
			f := a >> s.frameShift
			if f >= uint64(s.numFrames) || s.state[f] != stateTx {
				s.nBadDescs.Add(1)
				continue
			}
			s.state[f] = stateFree
			s.free = append(s.free, a&^s.frameMask)
			s.counts[stateTx]--
			s.counts[stateFree]++
			total++
		}
		s.comp.release(n)
	}
	if total > 0 {
		s.nCompleted.Add(uint64(total))
	}
	if s.tx.pendingProduced() > 0 {
		s.kickTx()
	}
	return total
}

// Poll waits up to timeout (negative: forever) for the rx ring to have
// something to read and reports whether it has. With NeedWakeup, the poll
// call itself wakes the kernel's rx and, in copy mode, drives pending
// transmits. An interrupted wait reports false, nil.
func (s *Socket) Poll(timeout time.Duration) (bool, error) {
	if s.closed {
		return false, ErrClosed
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	s.pfd[0].Events = unix.POLLIN
	s.pfd[0].Revents = 0
	_, err := unix.Poll(s.pfd[:], ms)
	if err != nil {
		if err == unix.EINTR {
			return false, nil
		}
		return false, sysErr("poll", err)
	}
	if s.pfd[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		return false, fmt.Errorf("poll: revents %#x: %w", s.pfd[0].Revents, ErrClosed)
	}
	return s.pfd[0].Revents&unix.POLLIN != 0, nil
}

// Stats are the kernel's counters for the socket and the Socket's own.
type Stats struct {
	// From XDP_STATISTICS.
	RxDropped            uint64 // dropped for reasons other than invalid descriptors
	RxInvalidDescs       uint64 // dropped because of invalid fill descriptors
	TxInvalidDescs       uint64 // tx descriptors the kernel rejected
	RxRingFull           uint64 // dropped because the rx ring was full
	RxFillRingEmptyDescs uint64 // times the fill ring was empty when a packet arrived
	TxRingEmptyDescs     uint64 // times the kernel found the tx ring empty

	// The Socket's own, counted in frames or calls.
	Received    uint64 // frames handed to the caller by Receive
	Transmitted uint64 // frames put on the tx ring
	Completed   uint64 // frames taken back from the completion ring
	Filled      uint64 // frames put on the fill ring
	TxKicks     uint64 // sendto wakeups
	RxWakeups   uint64 // recvfrom wakeups for the fill ring
	KickErrors  uint64 // sendto failures that were not transient
	BadDescs    uint64 // descriptors or addresses not acted on (see package doc)
}

// Stats reads the kernel's counters and the Socket's own. It may be called
// from any goroutine, but not concurrently with Close.
func (s *Socket) Stats() (Stats, error) {
	st := Stats{
		Received: s.nReceived.Load(), Transmitted: s.nTransmitted.Load(),
		Completed: s.nCompleted.Load(), Filled: s.nFilled.Load(),
		TxKicks: s.nTxKicks.Load(), RxWakeups: s.nRxWakeups.Load(),
		KickErrors: s.nKickErrors.Load(), BadDescs: s.nBadDescs.Load(),
	}
	fd := s.fd
	if fd < 0 {
		return st, fmt.Errorf("stats: %w", ErrClosed)
	}
	k, err := getStatistics(fd)
	if err != nil {
		return st, sysErr("stats", err)
	}
	st.RxDropped, st.RxInvalidDescs, st.TxInvalidDescs = k.Rx_dropped, k.Rx_invalid_descs, k.Tx_invalid_descs
	st.RxRingFull, st.RxFillRingEmptyDescs, st.TxRingEmptyDescs = k.Rx_ring_full, k.Rx_fill_ring_empty_descs, k.Tx_ring_empty_descs
	return st, nil
}

// Accounting says where the frames are. Free, Fill, App and Tx are the
// frame states (see the package doc) and add up to Total; the ring fields
// break Fill and Tx down by what the rings show at the moment.
type Accounting struct {
	Total uint32
	Free  uint32 // on the free list
	Fill  uint32 // with the kernel for receiving: fill ring, kernel, rx ring
	App   uint32 // owned by the caller
	Tx    uint32 // with the kernel for sending: tx ring, kernel, completion ring

	FillRing uint32 // on the fill ring, not yet taken by the kernel
	RxRing   uint32 // on the rx ring, not yet taken by Receive
	TxRing   uint32 // on the tx ring, not yet taken by the kernel
	CompRing uint32 // on the completion ring, not yet taken by Complete
}

// Accounting reports where the frames are, from the Socket's counters and
// the rings' indices.
func (s *Socket) Accounting() Accounting {
	a := Accounting{
		Total: s.numFrames,
		Free:  s.counts[stateFree], Fill: s.counts[stateFill],
		App: s.counts[stateApp], Tx: s.counts[stateTx],
	}
	if !s.closed {
		a.FillRing = s.fill.pendingProduced()
		a.RxRing = s.rx.pendingConsumable()
		a.TxRing = s.tx.pendingProduced()
		a.CompRing = s.comp.pendingConsumable()
	}
	return a
}

// ErrAccounting is returned by Check when the frame accounting is broken.
var ErrAccounting = errors.New("frame accounting broken")

// Check verifies the frame invariant from scratch: every frame is in exactly
// one state, the state counts add up to NumFrames and match the running
// counters, the free list holds each free frame once and nothing else, and
// the rings hold no more frames than the states say. It walks every frame:
// for tests and debugging, not the data path.
func (s *Socket) Check() error {
	var c [numStates]uint32
	for f, st := range s.state {
		if st >= numStates {
			return fmt.Errorf("check: frame %d in state %d: %w", f, st, ErrAccounting)
		}
		c[st]++
	}
	if c != s.counts {
		return fmt.Errorf("check: states %v, counters %v: %w", c, s.counts, ErrAccounting)
	}
	if sum := c[stateFree] + c[stateFill] + c[stateApp] + c[stateTx]; sum != s.numFrames {
		return fmt.Errorf("check: free %d + fill %d + app %d + tx %d = %d, want %d: %w",
			c[stateFree], c[stateFill], c[stateApp], c[stateTx], sum, s.numFrames, ErrAccounting)
	}
	if uint32(len(s.free)) != c[stateFree] {
		return fmt.Errorf("check: free list has %d entries, %d frames free: %w", len(s.free), c[stateFree], ErrAccounting)
	}
	seen := make([]bool, s.numFrames)
	for _, a := range s.free {
		f := a >> s.frameShift
		if a&s.frameMask != 0 || f >= uint64(s.numFrames) || seen[f] || s.state[f] != stateFree {
			return fmt.Errorf("check: free list entry %#x is misaligned, out of range, repeated or not free: %w", a, ErrAccounting)
		}
		seen[f] = true
	}
	if !s.closed {
		a := s.Accounting()
		if a.FillRing+a.RxRing > a.Fill {
			return fmt.Errorf("check: fill ring %d + rx ring %d > %d frames given for receiving: %w", a.FillRing, a.RxRing, a.Fill, ErrAccounting)
		}
		if a.TxRing+a.CompRing > a.Tx {
			return fmt.Errorf("check: tx ring %d + completion ring %d > %d frames given for sending: %w", a.TxRing, a.CompRing, a.Tx, ErrAccounting)
		}
	}
	return nil
}
