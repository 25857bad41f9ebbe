package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Stats summarizes the durations of sequential sessions. It travels as
// JSON from the gateway child to the parent (durations in nanoseconds).
type Stats struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Mean time.Duration `json:"mean_ns"`
	Max  time.Duration `json:"max_ns"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest sample with at least p% of the samples at or below
// it. It returns 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The small epsilon keeps float error (99.9/100*1000 = 999.0000000000001)
	// from pushing an exact rank up by one.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Summarize computes the statistics of samples, which it does not modify.
// No samples give the zero Stats.
func Summarize(samples []time.Duration) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Stats{
		N:    len(s),
		P50:  percentile(s, 50),
		P99:  percentile(s, 99),
		Mean: sum / time.Duration(len(s)),
		Max:  s[len(s)-1],
	}
}

// MeasureLatency runs warmup+n sessions one after the other with once and
// summarizes the durations of the last n. It stops at the first failure (an
// error naming the session) or when ctx ends (ctx's error).
func MeasureLatency(ctx context.Context, warmup, n int, once func(context.Context) error) (Stats, error) {
	samples := make([]time.Duration, 0, n)
	for i := range warmup + n {
		if err := ctx.Err(); err != nil {
			return Stats{}, err
		}
		start := time.Now()
		if err := once(ctx); err != nil {
			return Stats{}, fmt.Errorf("session %d of %d: %w", i+1, warmup+n, err)
		}
		if i >= warmup {
			samples = append(samples, time.Since(start))
		}
	}
	return Summarize(samples), nil
}
