package api

import (
	"testing"
	"time"
)

// TestOutQueueNeverEmptyStaysSmall: a queue its writer never empties (a
// client that leaves a few replies unread behind the one being written,
// for as long as it is connected) keeps a slice the size of what is
// queued. Before, the slice grew by every message the queue carried until
// it was empty once.
func TestOutQueueNeverEmptyStaysSmall(t *testing.T) {
	q := newOutQueue(nil, time.Second, 64, 1<<20, func(error) {})
	push := func() {
		t.Helper()
		if err := q.push(1, &Error{Code: 1, Message: "no such handle"}, nil, time.Second, false); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		push()
	}
	for range 100_000 {
		push()
		q.mu.Lock()
		it := q.popLocked()
		n := len(q.items) - q.head
		q.mu.Unlock()
		it.done()
		if n != 3 {
			t.Fatalf("%d items queued, want 3", n)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if c := cap(q.items); c > 256 {
		t.Fatalf("the queue's slice holds %d items for 3 queued", c)
	}
	if q.bytes <= 0 {
		t.Fatalf("queued bytes %d for 3 items", q.bytes)
	}
}
