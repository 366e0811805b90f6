package app

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
)

// ctEndOf makes a cut-through segment of size bytes with two 4096-byte
// fifos, lets hostile (when set) rewrite it as the peer would before this
// end maps it, and maps it as newCTEnd does with the sizes and offsets the
// daemon gave. The caller closes the end (when there is one) and the
// segment.
func ctEndOf(t *testing.T, size int, tr flow.Transport, hostile func(seg *fifo.Segment, c2s, s2c *fifo.Fifo)) (*end, *fifo.Segment, error) {
	t.Helper()
	seg, err := fifo.CreateSegment(fifo.SegmentOptions{Name: "ct", Size: size})
	if err != nil {
		t.Fatal(err)
	}
	c2s, err := seg.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	s2c, err := seg.AllocFifo(4096)
	if err != nil {
		t.Fatal(err)
	}
	if hostile != nil {
		hostile(seg, c2s, s2c)
	}
	segFD, err := unix.FcntlInt(uintptr(seg.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peerFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	info := &api.SessionInfo{Handle: 1, Rx: api.FifoRef{Offset: c2s.Offset(), Size: 4096}, Tx: api.FifoRef{Offset: s2c.Offset(), Size: 4096},
		Local: flow.Endpoint{Transport: tr}, Remote: flow.Endpoint{Transport: tr}, CutThrough: true}
	e, err := newCTEnd(info, segFD, peerFD)
	return e, seg, err
}

// TestCutThroughFifosMustNotOverlap: a cut-through segment whose first
// fifo's header the peer rewrote to twice its size (the segment has room
// for it past the second's end) is refused as the end maps it: its rx
// fifo would cover the tx fifo, and the app would read what it writes. The
// same segment as made is taken.
func TestCutThroughFifosMustNotOverlap(t *testing.T) {
	grow := func(seg *fifo.Segment, c2s, _ *fifo.Fifo) {
		binary.NativeEndian.PutUint32(seg.Bytes()[c2s.Offset()+fifo.FifoOffSize:], 8192)
	}
	for _, hostile := range []bool{false, true} {
		var edit func(*fifo.Segment, *fifo.Fifo, *fifo.Fifo)
		if hostile {
			edit = grow
		}
		e, seg, err := ctEndOf(t, 128+2*(fifo.FifoHeaderSize+4096)+8192, flow.TransportTCP, edit)
		switch {
		case hostile && (err == nil || !errors.Is(err, ErrProtocol)):
			t.Errorf("an rx fifo grown over the tx fifo: %v, want a protocol error", err)
		case !hostile && err != nil:
			t.Errorf("the segment as made: %v", err)
		}
		if e != nil {
			e.close()
		}
		seg.Close()
	}
}

// TestCutThroughFifoSizesAreTheDaemons: a cut-through segment whose tx
// fifo's header the peer rewrote to 64 bytes before this end mapped it
// (every datagram over 16 bytes would then fail as too long, not as a
// broken session) is refused: the sizes are the ones the daemon gave. The
// segment as made is taken, and its descriptor closed once mapped (a
// session costs the app one descriptor, the peer's eventfd).
func TestCutThroughFifoSizesAreTheDaemons(t *testing.T) {
	shrink := func(seg *fifo.Segment, _, s2c *fifo.Fifo) {
		binary.NativeEndian.PutUint32(seg.Bytes()[s2c.Offset()+fifo.FifoOffSize:], 64)
	}
	for _, hostile := range []bool{false, true} {
		var edit func(*fifo.Segment, *fifo.Fifo, *fifo.Fifo)
		if hostile {
			edit = shrink
		}
		e, seg, err := ctEndOf(t, 128+2*(fifo.FifoHeaderSize+4096), flow.TransportUDP, edit)
		switch {
		case hostile && (err == nil || !errors.Is(err, ErrProtocol)):
			t.Errorf("a tx fifo shrunk to 64 bytes: %v, want a protocol error", err)
		case !hostile && err != nil:
			t.Errorf("the segment as made: %v", err)
		case !hostile && e.seg.FD() != -1:
			t.Errorf("the mapped segment keeps descriptor %d", e.seg.FD())
		}
		if e != nil {
			e.close()
		}
		seg.Close()
	}
}
