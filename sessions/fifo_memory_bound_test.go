package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
)

// TestFifoMemoryHugeBoundIsNoBound: an app of uid 0 (whose bound the
// daemon passes on as the app asked for it) that asks for a fifo memory
// bound of 2^63 bytes or more attaches as with no bound, as one asking
// for that much segment memory does. Before, the bound turned negative on
// its way to the segment manager and the attach failed with ErrNoMemory
// ("negative option"), though no memory was short.
func TestFifoMemoryHugeBoundIsNoBound(t *testing.T) {
	for _, bound := range []uint64{1 << 63, ^uint64(0)} {
		am, err := sessions.FifoMemory{}.NewApp(sessions.AppMemoryOptions{Name: "huge", SegmentSize: 1 << 20,
			MaxFifoMemory: bound, MaxSegmentMemory: bound, EventQueueSize: 16})
		if err != nil {
			t.Fatalf("fifo memory bound %d: %v", bound, err)
		}
		p, _, err := am.AllocPair(4096, 4096)
		if err != nil {
			t.Fatalf("fifo memory bound %d: alloc: %v", bound, err)
		}
		am.FreePair(p)
		if err := am.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
