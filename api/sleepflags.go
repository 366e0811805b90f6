package api

import (
	"sync/atomic"
	"unsafe"
)

// SleepFlags asks for the daemon's worker sleep flags: a read-only shared
// page, one SleepFlagStride-byte line per datapath worker in worker order,
// whose first 32-bit word (native byte order) is non-zero while that
// worker sleeps in poll(2) and zero while it runs, spins or naps. A worker
// that is not asleep looks at every tx fifo it serves by itself, so an app
// that set a fifo's event flag (SetEvent returned true) writes the
// worker's kick eventfd only when the worker's word is non-zero. The
// flag is read after SetEvent, and the worker sets its word before its
// last look at the fifos: the app sees the word set, or the worker sees
// the event flag.
//
// The reply is a SleepFlagsReply carrying the page's descriptor, a sealed
// memfd of SleepFlagsSize bytes that cannot be mapped writable or written
// to; an Error wrapping flow.ErrNotSupported when the daemon runs no
// datapath (there are no workers to kick then). Protocol 1.3: a client
// sends it only to a daemon whose HelloReply says minor version 3 or more
// (an older one closes the connection on a type it does not know).
type SleepFlags struct{}

// SleepFlagsReply answers SleepFlags and carries the page's descriptor.
// Protocol 1.3.
type SleepFlagsReply struct{}

// The sleep flags page's layout.
const (
	// SleepFlagStride is the bytes of one worker's line.
	SleepFlagStride = 64
	// SleepFlagsSize is the page's size: a line for each of MaxKickFDs
	// workers.
	SleepFlagsSize = MaxKickFDs * SleepFlagStride
)

// SleepFlag returns worker w's word in mem, a mapping of the page
// (len(mem) >= SleepFlagsSize, 0 <= w < MaxKickFDs). A mapping is page
// aligned and the lines SleepFlagStride bytes apart, so each word is
// aligned.
func SleepFlag(mem []byte, w int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[w*SleepFlagStride]))
}

// Type returns TypeSleepFlags.
func (*SleepFlags) Type() Type { return TypeSleepFlags }

// FDs returns 0.
func (*SleepFlags) FDs() int { return 0 }

func (*SleepFlags) encode(*encoder) {}
func (*SleepFlags) decode(*decoder) {}

// Type returns TypeSleepFlagsReply.
func (*SleepFlagsReply) Type() Type { return TypeSleepFlagsReply }

// FDs returns 1: the page's memfd.
func (*SleepFlagsReply) FDs() int { return 1 }

func (*SleepFlagsReply) encode(*encoder) {}
func (*SleepFlagsReply) decode(*decoder) {}
