package main

import (
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{5}, Summary{Median: 5, Min: 5, Max: 5, N: 1}},
		{[]float64{3, 1, 2}, Summary{Median: 2, Min: 1, Max: 3, N: 3}},
		{[]float64{4, 1, 3, 2}, Summary{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{[]float64{7, math.NaN(), 1, math.Inf(1), 4}, Summary{Median: 4, Min: 1, Max: 7, N: 3}},
		{[]float64{math.NaN()}, Summary{}},
		{[]float64{-2, 2}, Summary{Median: 0, Min: -2, Max: 2, N: 2}},
	} {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestRatio(t *testing.T) {
	a, b := Summary{Median: 3, N: 1}, Summary{Median: 2, N: 3}
	if r := Ratio(a, b); r != 1.5 {
		t.Errorf("ratio %v, want 1.5", r)
	}
	for _, tc := range [][2]Summary{{{}, b}, {a, {}}, {a, {Median: 0, N: 1}}} {
		if r := Ratio(tc[0], tc[1]); !math.IsNaN(r) {
			t.Errorf("Ratio(%+v, %+v) = %v, want NaN", tc[0], tc[1], r)
		}
	}
}

func TestPercentileAndCDF(t *testing.T) {
	s := make([]time.Duration, 1000)
	for i := range s {
		s[i] = time.Duration(i+1) * time.Microsecond
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, 1000 * time.Microsecond}, {0.0001, time.Microsecond}} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing should be 0")
	}
	pts := CDF(s, 100)
	if len(pts) != 100 {
		t.Fatalf("%d points, want 100", len(pts))
	}
	if last := pts[len(pts)-1]; last.Fraction != 1 || last.Micros != 1000 {
		t.Errorf("last point %+v, want 1000 µs at 1", last)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Micros < pts[i-1].Micros || pts[i].Fraction <= pts[i-1].Fraction {
			t.Fatalf("CDF not increasing at %d: %+v %+v", i, pts[i-1], pts[i])
		}
	}
	if pts := CDF(s[:7], 3); pts[len(pts)-1].Fraction != 1 {
		t.Errorf("uneven CDF does not end at 1: %+v", pts)
	}
	if got, want := latencyLine(s), "p50 500.0 p99 990.0 p99.9 999.0 µs"; got != want {
		t.Errorf("latencyLine = %q, want %q", got, want)
	}
	if got := latencyLine(nil); got != "no replies" {
		t.Errorf("latencyLine(nil) = %q", got)
	}
}
