package integration

import (
	"os"
	"testing"
	"time"
)

// TestGroupAdaptiveRateFindsShares (issue 9): four workers of one consumer
// group (3 of 12 partitions each) share a rate-limited gateway of C
// records/s (a token bucket holding C/10, 429 with Retry-After: 1) through
// adaptive_rate with scope group: together they find C, and each worker its
// share of it, measured by the gateway over a window after a warm-up.
// BenchmarkRateLimitedAPI/group4 measures the same at more capacities and
// against the contenders; this test keeps a floor: without scope group
// (each worker adapting alone) the lowest worker got 5–73% of its share
// in the benchmark, a thirtieth to a half of the highest.
func TestGroupAdaptiveRateFindsShares(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four jobs against a rate-limited gateway for 25 s; without -short it runs")
	}
	const c, workers = 4000, 4
	ct := rlContender{name: "adaptive_rate_group", rateLimit: func(int, int) string { return "kind: adaptive_rate\nscope: group" }}
	p := rlParams{warm: 12 * time.Second, window: 12 * time.Second}
	r := rlGroup(t, ct, c, p, workers)
	for _, f := range r.failures {
		t.Error(f)
	}
	t.Logf("four workers, C = %d: goodput %.1f%% of C, 429 %.1f%% of %d requests; workers %.0f–%.0f%% of their share (C/4)",
		c, 100*r.goodput, 100*r.throttled, r.win.Requests, 100*r.workerLo, 100*r.workerHi)
	// Floors, not goals (the benchmark has those): the test runs with
	// -race beside other packages' tests on two cores, which costs goodput
	// (66–89% of C with -race alone, 81–94% without) but not fairness.
	if r.goodput < 0.6 {
		t.Errorf("goodput %.1f%% of C, want at least 60%%", 100*r.goodput)
	}
	if r.throttled > 0.1 {
		t.Errorf("%.1f%% of requests answered 429, want at most 10%%", 100*r.throttled)
	}
	// Alone, the lowest worker got a thirtieth to a half of what the
	// highest got in the benchmark.
	if r.workerHi <= 0 || r.workerLo/r.workerHi < 0.5 {
		t.Errorf("workers got %.0f–%.0f%% of their share, want the lowest at least half of the highest", 100*r.workerLo, 100*r.workerHi)
	}
	if t.Failed() || os.Getenv("SPILLWAY_RATELIMIT_TIMELINE") != "" {
		t.Logf("per second since the start: %s", r.timeline)
		t.Logf("each worker's goodput per second:%s", r.workers)
	}
	if r.win.Dups != 0 {
		t.Errorf("%d duplicates", r.win.Dups)
	}
}
