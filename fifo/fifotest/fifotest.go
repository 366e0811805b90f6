// Package fifotest has helpers for tests of code built on package fifo:
// heap-backed segments that need no memfd, two independent views of one
// fifo (as the daemon and an app each have), raw access to a fifo's shared
// header to play a misbehaving peer, a file descriptor count for leak
// checks, and an eventfd's counter. Everything made here is released in
// tb.Cleanup.
package fifotest

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/fifo"
)

// Segment returns an owned heap-backed segment of size bytes (FD is -1).
func Segment(tb testing.TB, size int) *fifo.Segment {
	tb.Helper()
	s, err := fifo.NewHeapSegment(tb.Name(), size)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// MemfdSegment returns an owned memfd segment of size bytes.
func MemfdSegment(tb testing.TB, size int) *fifo.Segment {
	tb.Helper()
	s, err := fifo.CreateSegment(fifo.SegmentOptions{Name: tb.Name(), Size: size})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Pair allocates a fifo of size bytes in a new heap segment and returns two
// views of it: owner, as AllocFifo returned it, and peer, attached with
// FifoAt as another process would. Each keeps its own private indices, so
// using owner as the producer and peer as the consumer (or the reverse)
// exercises the same path as two processes.
func Pair(tb testing.TB, size uint32) (owner, peer *fifo.Fifo) {
	tb.Helper()
	owner, peer, err := HeapPair(tb.Name(), size)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { owner.Segment().Close() })
	return owner, peer
}

// HeapPair is Pair for code that must not fail a test, such as a callback
// on a goroutine of the code under test: it returns its error, and its
// segment is not closed when the test ends (a heap segment needs no
// closing: the garbage collector frees it).
func HeapPair(name string, size uint32) (owner, peer *fifo.Fifo, err error) {
	s, err := fifo.NewHeapSegment(name, fifo.SegmentHeaderSize+fifo.FifoHeaderSize+int(size))
	if err != nil {
		return nil, nil, err
	}
	if owner, err = s.AllocFifo(size); err != nil {
		return nil, nil, err
	}
	peer, err = s.FifoAt(owner.Offset())
	return owner, peer, err
}

// View returns another view of f, attached with FifoAt.
func View(tb testing.TB, f *fifo.Fifo) *fifo.Fifo {
	tb.Helper()
	v, err := f.Segment().FifoAt(f.Offset())
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// Header returns f's shared header bytes (fifo.FifoHeaderSize of them).
// Writing them plays a peer that ignores the protocol.
func Header(f *fifo.Fifo) []byte {
	off := int(f.Offset())
	return f.Segment().Bytes()[off : off+fifo.FifoHeaderSize]
}

// Data returns f's shared data bytes.
func Data(f *fifo.Fifo) []byte {
	off := int(f.Offset()) + fifo.FifoHeaderSize
	return f.Segment().Bytes()[off : off+int(f.Size())]
}

// SetTail overwrites the shared producer index, as a misbehaving producer
// could. It is not an atomic store; use it only while no other goroutine
// uses the fifo.
func SetTail(f *fifo.Fifo, v uint32) {
	binary.NativeEndian.PutUint32(Header(f)[fifo.FifoOffTail:], v)
}

// SetHead overwrites the shared consumer index, as a misbehaving consumer
// could (same caveat as SetTail).
func SetHead(f *fifo.Fifo, v uint32) {
	binary.NativeEndian.PutUint32(Header(f)[fifo.FifoOffHead:], v)
}

// Tail and Head read the shared indices.
func Tail(f *fifo.Fifo) uint32 { return binary.NativeEndian.Uint32(Header(f)[fifo.FifoOffTail:]) }

// Head reads the shared consumer index.
func Head(f *fifo.Fifo) uint32 { return binary.NativeEndian.Uint32(Header(f)[fifo.FifoOffHead:]) }

// EventfdCount reads (and resets) an eventfd's counter without blocking;
// 0 when it was zero.
func EventfdCount(tb testing.TB, fd int) uint64 {
	tb.Helper()
	var b [8]byte
	n, err := unix.Read(fd, b[:])
	if err == unix.EAGAIN {
		return 0
	}
	if err != nil || n != 8 {
		tb.Fatalf("read eventfd: %d, %v", n, err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

// PoisonEventfd does to eventfd fd what a hostile holder of it can: it
// empties the counter, makes the open file (shared by every holder)
// blocking, and fills the counter to the limit, so that a write of 1 on
// any descriptor of it would block.
func PoisonEventfd(tb testing.TB, fd int) {
	tb.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil && err != unix.EAGAIN {
		tb.Fatalf("empty the eventfd: %v", err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		tb.Fatalf("make the eventfd blocking: %v", err)
	}
	binary.NativeEndian.PutUint64(b[:], 1<<64-2)
	if _, err := unix.Write(fd, b[:]); err != nil {
		tb.Fatalf("fill the eventfd: %v", err)
	}
}

// SendWithin runs q.Send(ev) and fails the test when it errs or has not
// returned within d (a producer that blocked).
func SendWithin(tb testing.TB, q *fifo.EventQueue, ev fifo.Event, d time.Duration) {
	tb.Helper()
	sent := make(chan error, 1)
	go func() { sent <- q.Send(ev) }()
	select {
	case err := <-sent:
		if err != nil {
			tb.Fatalf("send: %v", err)
		}
	case <-time.After(d):
		tb.Fatalf("send: blocked for %v", d)
	}
}
