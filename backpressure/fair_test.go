package backpressure

import (
	"testing"
	"time"
)

// TestAdaptiveRateFairShare drives two group-scoped rates through the
// same outcomes, one told a fair share: below it, it climbs to it faster
// than the curve; above it, it grows no further than FairSlack times it,
// and a throttle brings it down to it; nothing falls without a throttle.
func TestAdaptiveRateFairShare(t *testing.T) {
	t0 := time.Unix(1000, 0)
	newRate := func(rate float64) *AdaptiveRate {
		cfg := AdaptiveRateConfig{InitialRate: rate, Scope: ScopeGroup}
		cfg.ApplyDefaults()
		a := newAdaptiveRate(t0, cfg)
		// On the flat part of the curve, around what it was throttled at.
		a.slow, a.wMax, a.decrease = false, rate, t0
		return a
	}
	// deliver completes requests of 10 records every 10ms for d, as fast
	// as the rate delivers them (enough for 2 × took not to bind).
	deliver := func(a *AdaptiveRate, from time.Time, d time.Duration) time.Time {
		for at := from; at.Before(from.Add(d)); at = at.Add(10 * time.Millisecond) {
			a.CompleteAt(at, Result{Request: Request{Records: 10}})
		}
		return from.Add(d)
	}

	// Below the fair share.
	plain, fair := newRate(100), newRate(100)
	fair.setFairAt(t0, 1000)
	deliver(plain, t0, 2*time.Second)
	deliver(fair, t0, 2*time.Second)
	if p, f := plain.Rate(), fair.Rate(); f < 2*p || f > 1000 {
		t.Errorf("below a fair share of 1000 after 2s: rate %v (without: %v), want at least twice as fast, at most the share", f, p)
	}

	// Above the fair share: no growth beyond FairSlack × it, no fall
	// without a throttle.
	big := newRate(1000)
	big.setFairAt(t0, 500)
	at := deliver(big, t0, time.Second)
	if r := big.Rate(); r != 1000 {
		t.Errorf("above a fair share of 500 without a throttle: rate %v, want 1000 (unchanged)", r)
	}
	big.setFairAt(at, 500)
	big.CompleteAt(at, Result{Request: Request{Records: 10}, Failed: 10, Throttled: true, Latency: time.Millisecond})
	if r := big.Rate(); r != 500 {
		t.Errorf("throttled above a fair share of 500: rate %v, want 500", r)
	}
	deliver(big, at.Add(time.Millisecond), 3*time.Second)
	if r := big.Rate(); r > 500*FairSlack+1e-9 {
		t.Errorf("growth above a fair share of 500: rate %v, want at most %v", r, 500*FairSlack)
	}

	// The share lapses.
	lapsed := newRate(1000)
	lapsed.setFairAt(t0, 500)
	lapsed.CompleteAt(t0.Add(FairFor+time.Second), Result{Request: Request{Records: 10}, Failed: 10, Throttled: true, Latency: time.Millisecond})
	if r := lapsed.Rate(); r == 500 {
		t.Errorf("a fair share older than FairFor still applied: rate %v", r)
	}
}
