package daemon

import (
	"reflect"
	"testing"
)

// TestQueueStatsSub: what clear stats shows afterwards is every counter
// less its value at the clear, the gauges as they are, and a counter
// below its base (a restarted queue) from zero.
func TestQueueStatsSub(t *testing.T) {
	base := QueueStats{RxPackets: 10, TxPackets: 10, Delivered: 10, PartialCsum: 10, TxKernel: 10, TxKernelWaits: 10, TxGSO: 10,
		Fragments: 10, Reassembled: 10, ReasmInFlight: 3, ReasmHeld: 300, Chained: 10, Held: 10, Loops: 10,
		Sleeps: 10, Kicks: 10, Naps: 10, Drops: map[string]uint64{"fifo_full": 10, "no_session": 2},
		XSK: XSKStats{Received: 10, Filled: 10}}
	now := QueueStats{RxPackets: 15, TxPackets: 16, Delivered: 17, PartialCsum: 18, TxKernel: 19, TxKernelWaits: 13, TxGSO: 20,
		Fragments: 21, Reassembled: 22, ReasmInFlight: 1, ReasmHeld: 100, Chained: 23, Held: 24, Loops: 25,
		Sleeps: 26, Kicks: 27, Naps: 4, Drops: map[string]uint64{"fifo_full": 12, "no_session": 2},
		XSK: XSKStats{Received: 30, Filled: 31}}
	want := QueueStats{RxPackets: 5, TxPackets: 6, Delivered: 7, PartialCsum: 8, TxKernel: 9, TxKernelWaits: 3, TxGSO: 10,
		Fragments: 11, Reassembled: 12, ReasmInFlight: 1, ReasmHeld: 100, Chained: 13, Held: 14, Loops: 15,
		Sleeps: 16, Kicks: 17, Naps: 4, Dropped: 2, Drops: map[string]uint64{"fifo_full": 2},
		XSK: XSKStats{Received: 20, Filled: 21}}
	if got := now.sub(base); !reflect.DeepEqual(got, want) {
		t.Errorf("sub:\n got %+v\nwant %+v", got, want)
	}
}
