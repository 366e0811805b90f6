package sessions

import "testing"

// TestHandleZeroNeverGiven: worker 0's first handle is not 0, which the
// protocol's filters take for none (a capture of one session); its index
// 0 is never given, and a freed handle comes back as before.
func TestHandleZeroNeverGiven(t *testing.T) {
	l := &Layer{pools: map[uint32]*indexPool{}, sess: map[Handle]*session{}}
	h := l.newHandleLocked(0)
	if h == 0 {
		t.Fatal("worker 0's first handle is 0")
	}
	l.freeHandleLocked(h)
	if again := l.newHandleLocked(0); again != h {
		t.Errorf("a freed handle %#x came back as %#x", uint64(h), uint64(again))
	}
	if h1 := l.newHandleLocked(1); h1 == 0 || h1.Worker() != 1 || h1.Index() != 0 {
		t.Errorf("worker 1's first handle %#x, want index 0 of worker 1", uint64(h1))
	}
}
