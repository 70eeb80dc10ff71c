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

// TestAdaptiveRateShareScalesRate: a rate found while holding one share of
// the group's partitions is scaled at once when the share changes (a
// worker that gave away three quarters of its partitions gave away three
// quarters of its rate); a rate still probed in slow start is not, and
// the first share only sets the cap.
func TestAdaptiveRateShareScalesRate(t *testing.T) {
	cfg := AdaptiveRateConfig{Scope: ScopeGroup}
	cfg.ApplyDefaults()
	a := newAdaptiveRate(time.Unix(1000, 0), cfg)
	if err := a.SetShare(1); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.limited, a.rate, a.wMax, a.decrease, a.slow = true, 4000, 4400, time.Unix(1000, 0), false
	a.fair = 3000
	a.mu.Unlock()
	if err := a.SetShare(0.25); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	rate, wMax, fair := a.rate, a.wMax, a.fair
	a.mu.Unlock()
	if rate != 1000 || wMax != 1100 || fair != 0 {
		t.Errorf("share 1 → 0.25 at rate 4000 (wMax 4400, fair 3000): rate %v wMax %v fair %v, want 1000 1100 0", rate, wMax, fair)
	}
	if err := a.SetShare(1.0 / 3); err != nil {
		t.Fatal(err)
	}
	if r := a.Rate(); !near(r, 4000.0/3, 1e-9) {
		t.Errorf("share 0.25 → 1/3 at rate 1000: rate %v, want %v", r, 4000.0/3)
	}

	// In slow start the rate is a floor being probed, not what the
	// destination takes: a new share leaves it.
	probing := newAdaptiveRate(time.Unix(1000, 0), cfg)
	if err := probing.SetShare(1); err != nil {
		t.Fatal(err)
	}
	probing.mu.Lock()
	probing.limited, probing.rate = true, 500
	probing.mu.Unlock()
	if err := probing.SetShare(0.25); err != nil {
		t.Fatal(err)
	}
	if r := probing.Rate(); r != 500 {
		t.Errorf("share 1 → 0.25 in slow start at rate 500: rate %v, want 500", r)
	}

	fresh := newAdaptiveRate(time.Unix(1000, 0), cfg)
	if err := fresh.SetShare(0.5); err != nil {
		t.Fatal(err)
	}
	if fresh.limited {
		t.Errorf("first share without max_rate or initial_rate set a rate (%v); want none until feedback", fresh.rate)
	}
}

// TestAdaptiveRateFairClimbPastPlateau: a worker that climbs to its fair
// share past the plateau of its growth curve (found when it held less)
// goes on growing once the share is gone, instead of sitting above the old
// curve for two recovery times.
func TestAdaptiveRateFairClimbPastPlateau(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cfg := AdaptiveRateConfig{Scope: ScopeGroup, InitialRate: 500}
	cfg.ApplyDefaults()
	a := newAdaptiveRate(t0, cfg)
	a.slow, a.wMax, a.decrease = false, 550, t0.Add(-time.Second)
	a.setFairAt(t0, 800)
	at := t0
	for ; at.Before(t0.Add(2 * time.Second)); at = at.Add(10 * time.Millisecond) {
		a.CompleteAt(at, Result{Request: Request{Records: 10}, Latency: time.Millisecond})
	}
	if r := a.Rate(); r < 800 || r > 800*FairSlack {
		t.Fatalf("climbing to a fair share of 800 from 500: rate %v after 2s, want 800 to %v", r, 800*FairSlack)
	}
	a.setFairAt(at, 0) // nobody held back any more
	reached := a.Rate()
	for end := at.Add(5 * time.Second); at.Before(end); at = at.Add(10 * time.Millisecond) {
		a.CompleteAt(at, Result{Request: Request{Records: 10}, Latency: time.Millisecond})
	}
	if r := a.Rate(); r <= reached {
		t.Errorf("5s after reaching its fair share of 800 past a plateau of 550: rate %v, want above %v", r, reached)
	}
}
