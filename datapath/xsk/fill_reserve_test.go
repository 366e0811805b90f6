package xsk

import "testing"

// TestFillLeavesTransmitItsFrames: frames the kernel holds on the rx ring
// have left the fill ring, but Fill must not refill it from the frames
// beyond RingSize, which are transmit's: with a backlog on the rx ring,
// an echo's replies would find no frame (and the worker would spin).
func TestFillLeavesTransmitItsFrames(t *testing.T) {
	const ring, frames = 64, 80
	s, k := newFake(t, Options{NumFrames: frames, RingSize: ring})
	pkts := make([][]byte, ring)
	for i := range pkts {
		pkts[i] = make([]byte, 64)
	}
	// The kernel takes every frame of the fill ring and leaves them on
	// the rx ring: the backlog of a worker that was not running.
	if n := k.deliver(pkts); n != ring {
		t.Fatalf("delivered %d, want %d", n, ring)
	}
	s.Fill()
	descs := make([]Desc, 8)
	n := s.Receive(descs)
	s.FreeDescs(descs[:n])
	s.Fill()
	addrs := make([]uint64, frames)
	got := s.AllocFrames(addrs)
	if want := frames - ring; got != want {
		t.Errorf("transmit got %d frames with %d on the rx ring, want %d (the frames beyond the fill ring's)", got, ring-n, want)
	}
	s.Free(addrs[:got])
	// The frames the worker freed do go back to the fill ring.
	if a := s.Accounting(); a.Fill != ring {
		t.Errorf("the kernel holds %d frames, want %d", a.Fill, ring)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
