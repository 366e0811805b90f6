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
	if got < 900 || got > 1100 || got != p.submitted {
		t.Errorf("10,000/s for 100 ms allowed %d (submitted %d), want about 1,000", got, p.submitted)
	}
}
