package main

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// summary is the median, minimum and maximum of a set of measurements. N
// is how many there were; a summary of none has N 0 and no meaningful
// figures.
type summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// summarize returns the summary of xs. The median of an even count is the
// mean of the two middle values.
func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// ok reports whether the summary has any measurement.
func (s summary) ok() bool { return s.N > 0 }

// nearestRank returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p % of the values
// at or below it. It returns 0 for an empty slice.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// ratio returns a/b, and false when either is missing or b is 0.
func ratio(a, b summary) (float64, bool) {
	if !a.ok() || !b.ok() || b.Median == 0 {
		return 0, false
	}
	return a.Median / b.Median, true
}

// num formats v with digits decimals, or "-" when !ok.
func num(v float64, digits int, ok bool) string {
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', digits, 64)
}

// med formats the median of s with digits decimals, "-" for none.
func med(s summary, digits int) string { return num(s.Median, digits, s.ok()) }

// span formats the range of s as "min–max", "-" for none.
func span(s summary, digits int) string {
	if !s.ok() {
		return "-"
	}
	return num(s.Min, digits, true) + "–" + num(s.Max, digits, true)
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
