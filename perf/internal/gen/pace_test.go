package gen

import (
	"testing"
	"time"
)

// TestPacer checks that a paced loop gets about rate × time frames, in
// batches no larger than asked, and a flat-out one all it asks for.
func TestPacer(t *testing.T) {
	if n := newPacer(0).allow(300); n != 300 {
		t.Errorf("flat out: allowed %d of 300", n)
	}
	p := newPacer(10000)
	var got uint64
	for time.Since(p.start) < 100*time.Millisecond {
		n := p.allow(64)
		if n > 64 {
			t.Fatalf("allowed %d of a batch of 64", n)
		}
		got += n
	}
	// Never ahead of the rate; behind it only by what a descheduled
	// goroutine missed at the end (a loaded machine), so the lower bound
	// is loose.
	el := time.Since(p.start)
	if most := uint64(10000*el.Seconds()) + 1; got > most || got < most/2 || got != p.submitted {
		t.Errorf("10,000/s for %v allowed %d (submitted %d), want at most %d and at least half", el, got, p.submitted, most)
	}
}
