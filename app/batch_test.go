package app

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// heapEnd makes an end whose rx fifo lives in a heap segment, and returns
// a producer view of that fifo.
func heapEnd(t *testing.T, size uint32) (*end, *fifo.Fifo) {
	t.Helper()
	seg, err := fifo.NewHeapSegment("test", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	f, err := seg.AllocFifo(size)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := seg.FifoAt(f.Offset())
	if err != nil {
		t.Fatal(err)
	}
	return &end{h: 7, rx: cons, signalFD: -1, dgram: true}, f
}

func TestPeekBatchWrap(t *testing.T) {
	e, prod := heapEnd(t, 256)
	from := netip.MustParseAddrPort("10.77.0.1:4000")
	var hdr fifo.DgramHeader
	toHeader(&hdr, netip.AddrPort{}, from)
	msgs := make([]Message, 4)
	for round := range 40 {
		var sent [][]byte
		for i := range 3 {
			p := bytes.Repeat([]byte{byte(round), byte(i)}, 1+(round*7+i*13)%20)
			if err := prod.EnqueueDgram(&hdr, p); err != nil {
				break
			}
			sent = append(sent, p)
		}
		n, used, err := peekBatch(e, msgs, true)
		if err != nil || n != len(sent) {
			t.Fatalf("round %d: %d datagrams, %v; want %d", round, n, err, len(sent))
		}
		for i, m := range msgs[:n] {
			got := append(append([]byte(nil), m.Payload...), m.More...)
			if !bytes.Equal(got, sent[i]) || m.Remote != from || m.Session != 0 {
				t.Fatalf("round %d datagram %d: %x from %v", round, i, got, m.Remote)
			}
		}
		if err := e.rx.Release(used); err != nil {
			t.Fatal(err)
		}
	}
	// A cut-through end tags datagrams with its session.
	if err := prod.EnqueueDgram(&hdr, []byte("x")); err != nil {
		t.Fatal(err)
	}
	n, _, err := peekBatch(e, msgs, false)
	if err != nil || n != 1 || msgs[0].Session != 7 || msgs[0].Remote.IsValid() {
		t.Fatalf("cut-through: %d %v %+v", n, err, msgs[0])
	}
}

func TestPeekBatchCorrupt(t *testing.T) {
	e, prod := heapEnd(t, 256)
	var hdr fifo.DgramHeader
	if err := prod.EnqueueDgram(&hdr, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	// A peer that rewrites the length to more than is queued.
	b := prod.Segment().Bytes()
	binary.NativeEndian.PutUint32(b[int(prod.Offset())+fifo.FifoHeaderSize+fifo.DgramOffLen:], 1000)
	msgs := make([]Message, 4)
	if _, _, err := peekBatch(e, msgs, true); !errors.Is(err, fifo.ErrCorrupt) {
		t.Fatalf("length past the data: %v", err)
	}
}

func TestSliceAt(t *testing.T) {
	a, b := []byte("abcd"), []byte("efgh")
	for _, c := range []struct {
		off, n int
		x, y   string
	}{{0, 2, "ab", ""}, {2, 2, "cd", ""}, {3, 3, "d", "ef"}, {4, 2, "ef", ""}, {6, 2, "gh", ""}} {
		x, y := sliceAt(a, b, c.off, c.n)
		if string(x) != c.x || string(y) != c.y {
			t.Errorf("sliceAt(%d, %d) = %q %q", c.off, c.n, x, y)
		}
	}
	var h [3]byte
	copyAt(h[:], a, b, 3)
	if string(h[:]) != "def" {
		t.Errorf("copyAt: %q", h)
	}
}

func TestDeadline(t *testing.T) {
	d := newDeadline()
	if isClosed(d.wait()) {
		t.Fatal("no deadline passed")
	}
	d.set(time.Now().Add(-time.Second))
	if !isClosed(d.wait()) {
		t.Fatal("a past deadline has not passed")
	}
	d.set(time.Time{})
	if isClosed(d.wait()) {
		t.Fatal("a cleared deadline passed")
	}
	d.set(time.Now().Add(20 * time.Millisecond))
	c := d.wait()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline never passed")
	}
	// Extending a deadline that is pending leaves the waiters waiting.
	d.set(time.Now().Add(time.Hour))
	c = d.wait()
	d.set(time.Now().Add(2 * time.Hour))
	if isClosed(c) || isClosed(d.wait()) {
		t.Fatal("an extended deadline passed")
	}
	d.stop()
}

func TestHeaderRoundTrip(t *testing.T) {
	var h fifo.DgramHeader
	for _, ap := range []string{"10.0.0.1:53", "[fd77::2]:9000"} {
		want := netip.MustParseAddrPort(ap)
		toHeader(&h, netip.MustParseAddrPort("0.0.0.0:9"), want)
		if got := fromHeader(&h); got != want || h.LocalPort != 9 {
			t.Errorf("%s: got %v (local port %d)", ap, got, h.LocalPort)
		}
	}
	h.Family = 9
	if fromHeader(&h).IsValid() {
		t.Error("a bad family gave an address")
	}
}
