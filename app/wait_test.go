package app

import (
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/fifo"
)

// TestLateSetEvent plays a producer that publishes a datagram and is
// descheduled before its SetEvent, while the reader takes the datagram
// without sleeping and then sleeps for the next one. The late SetEvent
// signals, and the event goroutine (wakeAll) finds nothing due; the next
// datagram, announced as the protocol says, must still wake the reader.
func TestLateSetEvent(t *testing.T) {
	a := &App{done: make(chan struct{}), waiters: map[*waiter]struct{}{}}
	e, prod := heapEnd(t, 4096)
	c := &Conn{a: a, e: e, rd: newHalf(), wr: newHalf(), done: make(chan struct{})}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr fifo.DgramHeader
	signal := func() {
		if prod.SetEvent() {
			a.wakeAll() // what the event goroutine does after the eventfd wakes it
		}
	}
	if err := prod.EnqueueDgram(&hdr, []byte("one")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "one" {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	type result struct {
		s   string
		err error
	}
	got := make(chan result, 1)
	go func() {
		b := make([]byte, 16)
		n, err := c.Read(b)
		got <- result{string(b[:n]), err}
	}()
	for armed := false; !armed; {
		time.Sleep(time.Millisecond)
		a.wmu.Lock()
		armed = len(a.waiters) == 1
		a.wmu.Unlock()
	}
	time.Sleep(20 * time.Millisecond) // past its ClearEvent and last look, asleep
	signal()                          // the late SetEvent of "one"
	if err := prod.EnqueueDgram(&hdr, []byte("two")); err != nil {
		t.Fatal(err)
	}
	signal()
	select {
	case r := <-got:
		if r.err != nil || r.s != "two" {
			t.Fatalf("second read: %q, %v", r.s, r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the reader slept through the second datagram: its wake-up was lost")
	}
}
