package app

import (
	"testing"
	"time"
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
		a := &App{readSpin: budget}
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
