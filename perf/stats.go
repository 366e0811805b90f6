package main

import (
	"math"
	"slices"
	"time"
)

// Summary is the median, min and max of a figure over repetitions. N counts
// the repetitions that produced a value; with N == 0 the other fields are 0
// and mean "no data".
type Summary struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summarize returns the median, min and max of the finite values in xs
// (NaN and infinities, from a repetition that measured nothing, are left
// out). The median of an even count is the mean of the two middle values.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{}
	}
	slices.Sort(v)
	s := Summary{Min: v[0], Max: v[len(v)-1], N: len(v)}
	if m := len(v) / 2; len(v)%2 == 1 {
		s.Median = v[m]
	} else {
		s.Median = (v[m-1] + v[m]) / 2
	}
	return s
}

// Ratio is a/b of two medians, or NaN when either has no data or b is 0.
func Ratio(a, b Summary) float64 {
	if a.N == 0 || b.N == 0 || b.Median == 0 {
		return math.NaN()
	}
	return a.Median / b.Median
}

// Percentile returns the p-quantile (0 < p <= 1) of sorted samples by the
// nearest-rank method, or 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// CDFPoint is one point of an empirical distribution: the share of samples
// at or below Micros.
type CDFPoint struct {
	Micros   float64 `json:"us"`
	Fraction float64 `json:"fraction"`
}

// CDF reduces sorted samples to at most n points, evenly spaced in rank,
// always keeping the largest sample.
func CDF(sorted []time.Duration, n int) []CDFPoint {
	if len(sorted) == 0 || n <= 0 {
		return nil
	}
	step := max(1, len(sorted)/n)
	pts := make([]CDFPoint, 0, n+1)
	for i := step - 1; i < len(sorted); i += step {
		pts = append(pts, CDFPoint{Micros: us(sorted[i]), Fraction: float64(i+1) / float64(len(sorted))})
	}
	if last := len(sorted) - 1; (last+1)%step != 0 {
		pts = append(pts, CDFPoint{Micros: us(sorted[last]), Fraction: 1})
	}
	return pts
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
