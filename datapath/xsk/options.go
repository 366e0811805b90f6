package xsk

import (
	"fmt"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Mode chooses between copy and zero-copy.
type Mode uint8

// Modes.
const (
	// ModeAuto lets the kernel use zero-copy when the driver supports it
	// and copy mode otherwise.
	ModeAuto Mode = iota
	// ModeCopy forces copy mode (XDP_COPY).
	ModeCopy
	// ModeZeroCopy requires zero-copy (XDP_ZEROCOPY); Open fails with
	// ErrNotSupported when the driver cannot.
	ModeZeroCopy
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Defaults for zero Options fields.
const (
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
)

// Options shape a Socket. Zero fields take the defaults.
type Options struct {
	// NumFrames is the number of UMEM frames. With the default sizes half
	// of them fit in the fill ring and the rest stay free for transmit.
	NumFrames int
	// FrameSize is the UMEM chunk size: 2048 or 4096.
	FrameSize int
	// RingSize is the number of entries of each of the four rings, a
	// power of two.
	RingSize int
	// Headroom is reserved by the kernel in front of every received
	// packet, after its own XDP_PACKET_HEADROOM.
	Headroom int
	// Mode chooses copy or zero-copy.
	Mode Mode
	// NeedWakeup binds with XDP_USE_NEED_WAKEUP (see the package doc).
	NeedWakeup bool
	// MultiBuffer binds with XDP_USE_SG: a packet larger than a frame
	// arrives as a chain of descriptors (see the package doc). Where the
	// kernel or the driver refuses it, the socket is bound without it
	// (Socket.MultiBuffer says which).
	MultiBuffer bool
}

func (o Options) withDefaults() (Options, error) {
	if o.NumFrames == 0 {
		o.NumFrames = DefaultNumFrames
	}
	if o.FrameSize == 0 {
		o.FrameSize = DefaultFrameSize
	}
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	switch {
	case o.NumFrames < 1 || o.NumFrames > 1<<24:
		return o, fmt.Errorf("NumFrames %d: %w", o.NumFrames, ErrInvalidOptions)
	case o.FrameSize != 2048 && o.FrameSize != 4096:
		return o, fmt.Errorf("FrameSize %d (want 2048 or 4096): %w", o.FrameSize, ErrInvalidOptions)
	case o.RingSize < 1 || o.RingSize > 1<<20 || bits.OnesCount(uint(o.RingSize)) != 1:
		return o, fmt.Errorf("RingSize %d (want a power of two): %w", o.RingSize, ErrInvalidOptions)
	case o.Headroom < 0 || o.Headroom+unix.XDP_PACKET_HEADROOM+128 > o.FrameSize:
		return o, fmt.Errorf("Headroom %d does not leave room in a %d-byte frame: %w", o.Headroom, o.FrameSize, ErrInvalidOptions)
	case o.Mode > ModeZeroCopy:
		return o, fmt.Errorf("Mode %d: %w", o.Mode, ErrInvalidOptions)
	}
	return o, nil
}
