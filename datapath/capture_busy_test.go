package datapath

import (
	"errors"
	"runtime"
	"testing"
)

// TestCaptureBusyAllocatesNothing: a capture refused because one runs
// makes no rings: before, each refusal allocated a ring of every queue
// (DefaultCaptureSlots frames of up to MaxCaptureLen) for the collector.
func TestCaptureBusyAllocatesNothing(t *testing.T) {
	r := newMemRig(t, 1<<20)
	c, err := r.e.StartCapture(CaptureFilter{Slots: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer r.e.StopCapture(c)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const tries = 10
	for range tries {
		if _, err := r.e.StartCapture(CaptureFilter{}); !errors.Is(err, ErrCaptureBusy) {
			t.Fatalf("second capture: %v, want ErrCaptureBusy", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / tries; per > 4<<10 {
		t.Errorf("a refused capture allocated %d bytes, want next to none", per)
	}
}
