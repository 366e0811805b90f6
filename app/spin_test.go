package app

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestYieldFloor: the shortest yield timed is the floor, and a yield
// shorter than spinFutileFactor times it is futile.
func TestYieldFloor(t *testing.T) {
	var f yieldFloor
	for i, c := range []struct {
		d      time.Duration
		futile bool
	}{
		{10 * time.Microsecond, true}, // the first is its own floor
		{100 * time.Microsecond, false},
		{29 * time.Microsecond, true},
		{2 * time.Microsecond, true}, // a new floor
		{7 * time.Microsecond, false},
		{5 * time.Microsecond, true},
	} {
		if got := f.note(c.d); got != c.futile {
			t.Errorf("yield %d of %v: futile %v, want %v (floor %v)", i, c.d, got, c.futile, time.Duration(f.ns.Load()))
		}
	}
	if got := time.Duration(f.ns.Load()); got != 2*time.Microsecond {
		t.Errorf("floor %v, want 2µs", got)
	}
}

// TestSpinnerOff: a negative ReadSpin never yields.
func TestSpinnerOff(t *testing.T) {
	a := &App{readSpin: -1}
	var sp spinner
	if sp.next(a) {
		t.Fatal("spinner with ReadSpin < 0 asked for a look")
	}
	if sp.yields != 0 || a.ReadStats().Spins != 0 {
		t.Fatalf("yields %d, stats %+v", sp.yields, a.ReadStats())
	}
}

// TestSpinnerBounded: a spin that never finds anything ends: after
// spinMaxFutile futile yields, the budget or spinMaxYields yields, however
// the host schedules.
func TestSpinnerBounded(t *testing.T) {
	for _, budget := range []time.Duration{time.Microsecond, DefaultReadSpin, time.Hour} {
		a := &App{readSpin: budget, stolenAt: time.Hour}
		var sp spinner
		looks := 0
		for sp.next(a) {
			looks++
			if looks > spinMaxYields {
				t.Fatalf("budget %v: more than %d looks", budget, spinMaxYields)
			}
		}
		if looks == 0 {
			t.Errorf("budget %v: no look at all", budget)
		}
		if st := a.ReadStats(); st.Spins != 1 || st.SpinHits != 0 {
			t.Errorf("budget %v: stats %+v, want one spin and no hit", budget, st)
		}
	}
}

// TestSpinnerOneAtATime: while one read of an App spins, another sleeps
// at once; after the first ended (either way), the next may spin.
func TestSpinnerOneAtATime(t *testing.T) {
	a := &App{readSpin: time.Hour, stolenAt: time.Hour}
	var first, second spinner
	if !first.next(a) {
		t.Fatal("first spinner did not spin")
	}
	if second.next(a) {
		t.Fatal("second spinner spun beside the first")
	}
	first.hit(a)
	var third spinner
	if !third.next(a) {
		t.Fatal("no spin after the first found data")
	}
	for third.next(a) {
	}
	var fourth spinner
	if !fourth.next(a) {
		t.Fatal("no spin after the third gave up")
	}
	fourth.hit(a)
	if st := a.ReadStats(); st.Spins != 3 || st.SpinHits != 2 {
		t.Fatalf("stats %+v, want 3 spins and 2 hits", st)
	}
}

// TestSpinnerBackoff: spinMissMax spins in a row that found nothing make
// the next spinBackoff reads sleep without a spin; a hit resets the count.
func TestSpinnerBackoff(t *testing.T) {
	// A yield a loaded machine holds for long (the other packages' tests)
	// would end a spin as stolen (TestSpinnerStolen): out of reach here.
	a := &App{readSpin: time.Nanosecond, stolenAt: time.Hour}
	miss := func() bool {
		var sp spinner
		spun := false
		for sp.next(a) {
			spun = true
		}
		return spun
	}
	for i := range spinMissMax - 1 {
		if !miss() {
			t.Fatalf("read %d did not spin", i)
		}
	}
	var sp spinner
	if !sp.next(a) {
		t.Fatal("no spin before the last miss")
	}
	sp.hit(a) // resets the misses
	for i := range spinMissMax {
		if !miss() {
			t.Fatalf("read %d after a hit did not spin", i)
		}
	}
	for i := range spinBackoff {
		if miss() {
			t.Fatalf("read %d of the backoff spun", i)
		}
	}
	if !miss() {
		t.Fatal("no spin after the backoff")
	}
}

// TestSpinnerStolen: a yield that a CPU-bound thread on the same CPU holds
// through its slice ends spinning: it is counted and the spin ends after
// the caller's look; the first only ends its spin, and a second within
// spinStolenWindow makes the next reads sleep at once (spinBackoff)
// instead of yielding it another slice.
func TestSpinnerStolen(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024; i++ {
		if was.IsSet(i) {
			cpu = i
		}
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &was)
	// The CPU-bound thread, on the same CPU.
	var stop atomic.Bool
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		started <- unix.SchedSetaffinity(0, &one)
		for n := 0; !stop.Load(); n++ {
		}
	}()
	defer func() { stop.Store(true); <-done }()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	a := &App{readSpin: time.Hour}
	// Spins until n yields were stolen, each ending its spin.
	stealUntil := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for a.ReadStats().SpinsStolen < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d yields stolen in 10s beside a CPU-bound thread, want %d (stats %+v)", a.ReadStats().SpinsStolen, n, a.ReadStats())
			}
			var sp spinner
			for sp.next(a) {
				if a.ReadStats().SpinsStolen >= n {
					if sp.next(a) {
						t.Fatal("the spin went on after a stolen yield")
					}
					break
				}
			}
		}
	}
	stealUntil(1)
	if sp := (spinner{}); !sp.next(a) {
		t.Fatal("the read after a single stolen yield did not spin")
	} else {
		sp.hit(a)
	}
	a.lastStolen.Store(int64(time.Since(spinEpoch))) // the next stolen yield is within spinStolenWindow
	stealUntil(2)
	spins := a.ReadStats().Spins
	for i := 0; i < spinBackoff; i++ {
		var sp spinner
		if sp.next(a) {
			t.Fatalf("read %d after a stolen yield spun", i)
		}
	}
	if st := a.ReadStats(); st.Spins != spins {
		t.Fatalf("spins went from %d to %d in the backoff", spins, st.Spins)
	}
}
