package datapath

import (
	"runtime"
	"strconv"
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

// TestSpinAdapt: a gap after which the worker slept, shorter than
// IdleSpinMax, lengthens the spin to cover it; longer gaps halve it back
// to IdleSpin; with IdleSpinMax not above IdleSpin it never changes. The
// durations are long enough that a test descheduled for a while on a
// loaded machine still sees the spin it expects.
func TestSpinAdapt(t *testing.T) {
	var spinners atomic.Int32
	const base, most = 50 * time.Millisecond, 2 * time.Second
	p := &pollState{spin: base, spinMax: most, spinners: &spinners, maxSpinners: 1}
	// gap is one datagram loop, a sleep and the next one, gap apart.
	gap := func(p *pollState, d time.Duration) {
		p.worked(1, true)
		p.sleeping()
		p.lastDgram = p.lastDgram.Add(-d)
		p.worked(1, true)
	}
	spinFor := func(p *pollState) time.Duration {
		t.Helper()
		a, d := p.idle()
		if a != idleSpin {
			t.Fatalf("action %d, want a spin", a)
		}
		p.endSpin(false)
		return d
	}
	p.worked(1, true)
	if d := spinFor(p); d > base {
		t.Fatalf("first spin %v, want at most IdleSpin %v", d, base)
	}
	gap(p, 800*time.Millisecond)
	// 1.25 times the gap, plus 1.25 times the microseconds between the two
	// clock readings of gap.
	if d := spinFor(p); d < 900*time.Millisecond || d > 1050*time.Millisecond {
		t.Errorf("after an 800ms gap: spin %v, want about 1s", d)
	}
	gap(p, 1900*time.Millisecond)
	if d := spinFor(p); d < 1900*time.Millisecond || d > most {
		t.Errorf("after a 1.9s gap: spin %v, want up to %v", d, most)
	}
	// A shorter gap does not shorten it.
	gap(p, 200*time.Millisecond)
	if d := spinFor(p); d < 1900*time.Millisecond {
		t.Errorf("after a short gap: spin %v, want it kept", d)
	}
	// Gaps past IdleSpinMax halve it, down to IdleSpin.
	for range 8 {
		gap(p, 10*time.Second)
	}
	if d := spinFor(p); d > base {
		t.Errorf("after long gaps: spin %v, want IdleSpin %v", d, base)
	}
	// A loop that did only TCP work neither spins nor adapts.
	p.worked(1, false)
	p.sleeping()
	p.worked(1, false)
	if p.budget > base {
		t.Errorf("TCP work changed the spin to %v", p.budget)
	}
	// No adaptation with IdleSpinMax at or below IdleSpin.
	q := &pollState{spin: base, spinMax: -1, spinners: &spinners, maxSpinners: 1}
	gap(q, 800*time.Millisecond)
	if d := spinFor(q); d > base {
		t.Errorf("IdleSpinMax < 0: spin %v, want IdleSpin %v", d, base)
	}
}

// TestReserveProcs: running Engines keep GOMAXPROCS at least one above
// their workers, nested, and give it back; a GOMAXPROCS in the environment
// is left alone.
func TestReserveProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	base := runtime.GOMAXPROCS(0)
	check := func(what string, want int) {
		t.Helper()
		if got := runtime.GOMAXPROCS(0); got != want {
			t.Fatalf("%s: GOMAXPROCS %d, want %d", what, got, want)
		}
	}
	r1 := reserveProcs(base + 1)
	check("base+1 workers", base+2)
	r2 := reserveProcs(2)
	check("base+3 workers", base+4)
	if got := baseProcs(); got != base {
		t.Errorf("baseProcs %d, want %d", got, base)
	}
	r1()
	r1() // once
	check("2 workers", max(base, 3))
	r2()
	check("no workers", base)
	t.Setenv("GOMAXPROCS", strconv.Itoa(base))
	r3 := reserveProcs(base + 4)
	check("the variable set", base)
	r3()
}

// TestPollStolenBackoff: a single stolen yield ends its spin only; a
// second within stolenBackoff makes the worker sleep instead of spinning
// for stolenBackoff, then it spins again; two stolen yields further apart
// than that are two single ones.
func TestPollStolenBackoff(t *testing.T) {
	var spinners atomic.Int32
	p := &pollState{spin: time.Hour, spinners: &spinners, maxSpinners: 1}
	p.worked(1, true)
	spin := func(when string) {
		t.Helper()
		a, _ := p.idle()
		if a != idleSpin {
			t.Fatalf("%s: action %d, want spin", when, a)
		}
		p.endSpin(false)
	}
	now := time.Now()
	p.stole(now.Add(-2 * stolenBackoff))
	spin("after a stolen yield")
	p.stole(now.Add(-stolenBackoff / 2))
	spin("right after a stolen yield 1.5 stolenBackoff after the last")
	p.stole(now)
	if a, _ := p.idle(); a != idleSleep {
		t.Fatalf("right after a second stolen yield: action %d, want sleep", a)
	}
	p.noSpinUntil = now.Add(-time.Nanosecond) // stolenBackoff has passed
	spin("after the backoff")
}
