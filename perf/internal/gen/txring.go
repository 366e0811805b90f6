package gen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Layout of a TPACKET_V2 transmit ring slot: a struct tpacket2_hdr (whose
// first word is tp_status and second tp_len), then the frame at
// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const (
	tpacket2HdrLen = 32
	slotDataOff    = tpacket2HdrLen // TPACKET_ALIGN(32) == 32
	tpLenOff       = 4

	defaultBatch      = 128
	defaultRingFrames = 4096
	ringBlockSize     = 1 << 16
)

// Config is a generator's configuration.
type Config struct {
	FrameSpec
	// IfIndex is the interface to send on, in the namespace New runs in.
	IfIndex int
	// Rate is the target in packets per second; 0 sends flat out.
	Rate uint64
	// Batch is the most frames handed to the kernel per sendto; 0 means 128.
	Batch int
	// RingFrames is the number of ring slots (a power of two); 0 means 4096.
	RingFrames int
}

// Generator sends pre-built frames through an AF_PACKET transmit ring.
type Generator struct {
	fd        int
	ring      []byte // the mmap'd ring; slots are frameSize apart
	frameSize int
	nslots    int
	frameLen  int
	rate      uint64
	batch     int

	// Ring cursors, owned by the goroutine in Run.
	head     int // next slot to fill
	tail     int // oldest slot handed to the kernel and not yet reaped
	inflight int

	sent   atomic.Uint64 // frames the kernel took off the ring and released
	errs   atomic.Uint64 // frames the kernel rejected (TP_STATUS_WRONG_FORMAT)
	kicks  atomic.Uint64 // sendto calls
	kickEr atomic.Uint64 // sendto calls that failed with a transient error
}

// frames checks what both generators need of cfg and builds its frames.
func (cfg Config) frames() ([][]byte, error) {
	if cfg.IfIndex <= 0 {
		return nil, fmt.Errorf("%w: ifindex %d", ErrBadConfig, cfg.IfIndex)
	}
	return BuildFrames(cfg.FrameSpec)
}

// New opens the socket and its ring on cfg.IfIndex in the calling thread's
// network namespace and writes the frames into every slot.
func New(cfg Config) (*Generator, error) {
	frames, err := cfg.frames()
	if err != nil {
		return nil, err
	}
	if cfg.Batch <= 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.RingFrames <= 0 {
		cfg.RingFrames = defaultRingFrames
	}
	frameSize := 2048
	if cfg.FrameLen()+slotDataOff > frameSize {
		return nil, fmt.Errorf("%w: frame of %d bytes does not fit a slot", ErrBadConfig, cfg.FrameLen())
	}
	perBlock := ringBlockSize / frameSize
	if cfg.RingFrames%perBlock != 0 || cfg.RingFrames&(cfg.RingFrames-1) != 0 {
		return nil, fmt.Errorf("%w: ring frames %d must be a power of two and a multiple of %d", ErrBadConfig, cfg.RingFrames, perBlock)
	}
	if cfg.Batch > cfg.RingFrames/2 {
		cfg.Batch = cfg.RingFrames / 2
	}

	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: receives nothing
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	g := &Generator{fd: fd, frameSize: frameSize, nslots: cfg.RingFrames, frameLen: cfg.FrameLen(), rate: cfg.Rate, batch: cfg.Batch}
	fail := func(what string, err error) (*Generator, error) {
		g.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("set TPACKET_V2", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		return fail("set PACKET_QDISC_BYPASS", err)
	}
	// Best effort: the ring, not the send buffer, should bound what is in flight.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20)
	req := unix.TpacketReq{
		Block_size: ringBlockSize,
		Block_nr:   uint32(cfg.RingFrames / perBlock),
		Frame_size: uint32(frameSize),
		Frame_nr:   uint32(cfg.RingFrames),
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail("set PACKET_TX_RING", err)
	}
	ring, err := unix.Mmap(fd, 0, int(req.Block_size*req.Block_nr), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap tx ring", err)
	}
	g.ring = ring
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: cfg.IfIndex}); err != nil {
		return fail("bind packet socket", err)
	}
	for i := range g.nslots {
		off := i * frameSize
		copy(ring[off+slotDataOff:off+frameSize], frames[i%len(frames)])
		putLen(ring, off, uint32(g.frameLen))
		storeStatus(ring, off, unix.TP_STATUS_AVAILABLE)
	}
	return g, nil
}

// Sent is the number of frames the kernel has taken off the ring and
// released (handed to the device; the device may still drop them).
func (g *Generator) Sent() uint64 { return g.sent.Load() }

// Errors is the number of frames the kernel rejected as malformed.
func (g *Generator) Errors() uint64 { return g.errs.Load() }

// Kicks returns the number of sendto calls and how many failed transiently
// (ENOBUFS, EAGAIN, EINTR: the frames stay queued and go out with the next).
func (g *Generator) Kicks() (calls, failed uint64) { return g.kicks.Load(), g.kickEr.Load() }

// Run sends until ctx is done, then waits (up to a second) for the frames in
// flight, and returns. It returns an error only when the socket fails.
func (g *Generator) Run(ctx context.Context) error {
	pace := newPacer(g.rate)
	for ctx.Err() == nil {
		n := pace.allow(uint64(g.batch))
		if n == 0 {
			continue
		}
		if k := g.fill(int(n)); uint64(k) < n {
			pace.submitted -= n - uint64(k) // the ring was full: those go later
		}
		if err := g.kick(); err != nil {
			return err
		}
		g.reap()
	}
	deadline := time.Now().Add(time.Second)
	for g.inflight > 0 && time.Now().Before(deadline) {
		if err := g.kick(); err != nil {
			return err
		}
		g.reap()
	}
	return nil
}

// fill marks up to n free slots for sending and returns how many.
func (g *Generator) fill(n int) int {
	k := 0
	for k < n && g.inflight < g.nslots {
		storeStatus(g.ring, g.head*g.frameSize, unix.TP_STATUS_SEND_REQUEST)
		g.head = (g.head + 1) & (g.nslots - 1)
		g.inflight++
		k++
	}
	return k
}

// kick asks the kernel to send every slot marked for sending. The call
// blocks until the frames it took have been released.
func (g *Generator) kick() error {
	g.kicks.Add(1)
	err := unix.Sendto(g.fd, nil, 0, nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		g.kickEr.Add(1)
		return nil
	default:
		return fmt.Errorf("send from tx ring: %w", err)
	}
}

// reap counts the slots the kernel has released, oldest first.
func (g *Generator) reap() {
	var sent, bad uint64
	for g.inflight > 0 {
		off := g.tail * g.frameSize
		st := loadStatus(g.ring, off)
		if st&(unix.TP_STATUS_SEND_REQUEST|unix.TP_STATUS_SENDING) != 0 {
			break
		}
		if st&unix.TP_STATUS_WRONG_FORMAT != 0 {
			bad++
		} else {
			sent++
		}
		storeStatus(g.ring, off, unix.TP_STATUS_AVAILABLE)
		g.tail = (g.tail + 1) & (g.nslots - 1)
		g.inflight--
	}
	if sent > 0 {
		g.sent.Add(sent)
	}
	if bad > 0 {
		g.errs.Add(bad)
	}
}

func putLen(ring []byte, off int, n uint32) {
	binary.NativeEndian.PutUint32(ring[off+tpLenOff:], n)
}

// Close unmaps the ring and closes the socket. Run must have returned.
func (g *Generator) Close() error {
	var errs []error
	if g.ring != nil {
		errs = append(errs, unix.Munmap(g.ring))
		g.ring = nil
	}
	if g.fd >= 0 {
		errs = append(errs, unix.Close(g.fd))
		g.fd = -1
	}
	return errors.Join(errs...)
}
