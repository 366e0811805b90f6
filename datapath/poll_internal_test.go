package datapath

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestPollPolicy walks one worker's idle policy through its states: sleep
// with no recent work, no spin after work that moved no datagram of an app
// (TCP), spin after datagram work for what is left of the spin budget,
// sleep after a spin that missed, nap while hot, and no spin when the
// Engine's spinners are all taken.
func TestPollPolicy(t *testing.T) {
	var spinners atomic.Int32
	p := &pollState{nap: 50 * time.Microsecond, spin: time.Hour, spinners: &spinners, maxSpinners: 1}
	if a, _ := p.idle(); a != idleSleep {
		t.Fatalf("no work yet: action %d, want sleep", a)
	}
	p.worked(1, false)
	if a, _ := p.idle(); a != idleSleep {
		t.Fatalf("after TCP work: action %d, want sleep", a)
	}
	p.worked(1, true)
	a, d := p.idle()
	if a != idleSpin || d <= 0 || d > time.Hour {
		t.Fatalf("after work: action %d for %v, want a spin of at most an hour", a, d)
	}
	if spinners.Load() != 1 {
		t.Fatalf("%d spinners during a spin", spinners.Load())
	}
	// A second worker of the same Engine finds the spinner's place taken.
	q := &pollState{spin: time.Hour, spinners: &spinners, maxSpinners: 1}
	q.worked(1, true)
	if a, _ := q.idle(); a != idleSleep {
		t.Errorf("second spinner: action %d, want sleep", a)
	}
	p.endSpin(true)
	if spinners.Load() != 0 {
		t.Fatalf("%d spinners after the spin", spinners.Load())
	}
	if a, _ := p.idle(); a != idleSleep {
		t.Errorf("after a missed spin: action %d, want sleep", a)
	}
	// Hot: napHot frames or more per napWindow.
	h := &pollState{nap: 50 * time.Microsecond, spinners: &spinners, maxSpinners: 1}
	h.worked(1, true)
	h.winStart = time.Now().Add(-napWindow)
	h.winFrames = 10 * napHot
	h.worked(1, true)
	if a, d := h.idle(); a != idleNap || d != 50*time.Microsecond {
		t.Errorf("hot: action %d for %v, want a 50µs nap", a, d)
	}
	if maxSpinners(1) != 1 || maxSpinners(2) != 1 || maxSpinners(16) != 15 {
		t.Errorf("maxSpinners 1, 2, 16 = %d, %d, %d", maxSpinners(1), maxSpinners(2), maxSpinners(16))
	}
}
