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
// (each worker adapting alone) the lowest worker got 22–34% of its share
// in the benchmark, a fifth to a third of the highest.
func TestGroupAdaptiveRateFindsShares(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_FAIRSHARE") == "" {
		// Not reliable yet (issue 9 is open): in one of four CI runs (no
		// -race, beside real Kafka) the workers got 33–168% of their
		// shares, as unfair as adapting alone.
		t.Skip("fair shares do not converge reliably yet (one CI run in four: 33–168% of the shares); SPILLWAY_TEST_FAIRSHARE=1 runs it")
	}
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
	// (72.8% of C once in CI, 83.6% alone) but not fairness.
	if r.goodput < 0.6 {
		t.Errorf("goodput %.1f%% of C, want at least 60%%", 100*r.goodput)
	}
	if r.throttled > 0.1 {
		t.Errorf("%.1f%% of requests answered 429, want at most 10%%", 100*r.throttled)
	}
	// Alone, the lowest worker got a fifth to a third of what the highest
	// got in the benchmark.
	if r.workerHi <= 0 || r.workerLo/r.workerHi < 0.5 {
		t.Errorf("workers got %.0f–%.0f%% of their share, want the lowest at least half of the highest", 100*r.workerLo, 100*r.workerHi)
	}
	if r.win.Dups != 0 {
		t.Errorf("%d duplicates", r.win.Dups)
	}
}
