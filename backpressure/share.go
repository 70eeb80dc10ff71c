package backpressure

import (
	"fmt"
	"math"
	"time"
)

// Scope says whose limits a strategy's rates are: one worker's (the
// default) or the whole consumer group's.
type Scope string

// The scopes of a rate (the key scope of token_bucket, adaptive_rate and a
// multi-tier global tier).
const (
	ScopeWorker Scope = "worker"
	ScopeGroup  Scope = "group"
)

// Shared is an optional ability of a Strategy, found by type assertion:
// its rates may be declared for the whole consumer group (scope: group),
// and each worker then applies its share of them. The job sets the share
// on every assignment and revocation: the fraction of the group's
// partitions this worker owns, so the workers' rates add up to the group's
// limit with no coordinator. A live limit (LimitSetter) of a group-scoped
// strategy is a group limit too, split the same way. TokenBucket,
// AdaptiveRate, MultiTier (its global tier) and Composite have it.
type Shared interface {
	// GroupScoped reports whether the rates are the group's.
	GroupScoped() bool
	// SetShare sets the share of the group's rates this worker applies,
	// in (0, 1], waking blocked Acquire calls. It fails, changing
	// nothing, on a share outside that range or when the strategy is not
	// group-scoped.
	SetShare(share float64) error
	// Share returns the share applied: 1 until SetShare.
	Share() float64
}

// checkShare is SetShare's argument check.
func checkShare(scoped bool, share float64) error {
	if !scoped {
		return fmt.Errorf("share: the strategy's rates are one worker's (scope %s), not the group's", ScopeWorker)
	}
	if !(share > 0 && share <= 1) || math.IsNaN(share) {
		return fmt.Errorf("share: must be in (0, 1], got %v", share)
	}
	return nil
}

// GroupScoped implements Shared.
func (tb *TokenBucket) GroupScoped() bool { return tb.base.Scope == ScopeGroup }

// SetShare implements Shared: the rates (configured or live) times share;
// the bursts stay as configured, one batch by default.
func (tb *TokenBucket) SetShare(share float64) error {
	if err := checkShare(tb.GroupScoped(), share); err != nil {
		return err
	}
	tb.mu.Lock()
	tb.share = share
	tb.applyLocked()
	tb.mu.Unlock()
	tb.sig.Notify()
	return nil
}

// Share implements Shared.
func (tb *TokenBucket) Share() float64 {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.shareLocked()
}

func (tb *TokenBucket) shareLocked() float64 {
	if tb.share == 0 {
		return 1
	}
	return tb.share
}

// applyLocked sets the buckets from the configured rates, the live limit
// and the share.
func (tb *TokenBucket) applyLocked() {
	cfg := tb.base
	if v := tb.live.RecordsPerSecond; v > 0 {
		if cfg.RecordsPerSecond == 0 {
			cfg.RecordBurst = 0
		}
		cfg.RecordsPerSecond = v
	}
	if v := tb.live.BytesPerSecond; v > 0 {
		if cfg.BytesPerSecond == 0 {
			cfg.ByteBurst = 0
		}
		cfg.BytesPerSecond = v
	}
	s := tb.shareLocked()
	cfg.RecordsPerSecond *= s
	cfg.BytesPerSecond *= s
	tb.set(time.Now(), cfg)
}

// GroupScoped implements Shared.
func (a *AdaptiveRate) GroupScoped() bool { return a.base.Scope == ScopeGroup }

// SetShare implements Shared: the cap of the rate (max_rate, or a live
// limit) and initial_rate are the group's, times share. A rate found while
// holding another share is scaled to the new one at once: the partitions
// a worker gave away took their part of the group's rate with them, and
// those it got bring theirs (the fair shares, Fair, then even out what
// remains).
func (a *AdaptiveRate) SetShare(share float64) error {
	if err := checkShare(a.GroupScoped(), share); err != nil {
		return err
	}
	a.mu.Lock()
	old := a.share
	a.share = share
	now := time.Now()
	switch {
	case a.base.InitialRate > 0 && a.decrease.IsZero():
		// No feedback yet: start at the share of the group's initial rate.
		a.setRateLocked(now, a.base.InitialRate*share)
	case old > 0 && old != share && a.limited && !a.slow:
		// (In slow start the rate is a floor still being probed, not
		// what the destination was found to take: it is not scaled.)
		a.setRateLocked(now, a.rate*share/old)
		a.wMax *= share / old
		a.lastTook *= share / old
		a.fair = 0 // computed for the old share
	}
	a.applyLimitsLocked(now)
	a.mu.Unlock()
	a.sig.Notify()
	return nil
}

// Share implements Shared.
func (a *AdaptiveRate) Share() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.shareLocked()
}

func (a *AdaptiveRate) shareLocked() float64 {
	if a.share == 0 {
		return 1
	}
	return a.share
}

// GroupScoped implements Shared: the global tier's scope.
func (m *MultiTier) GroupScoped() bool {
	sh, ok := m.global.(Shared)
	return ok && sh.GroupScoped()
}

// SetShare implements Shared: the global tier's share.
func (m *MultiTier) SetShare(share float64) error {
	sh, ok := m.global.(Shared)
	if !ok {
		return checkShare(false, share)
	}
	return sh.SetShare(share)
}

// Share implements Shared: the global tier's share.
func (m *MultiTier) Share() float64 {
	if sh, ok := m.global.(Shared); ok {
		return sh.Share()
	}
	return 1
}

// GroupScoped implements Shared: whether any member is.
func (c *Composite) GroupScoped() bool {
	for _, g := range c.members {
		if sh, ok := g.(Shared); ok && sh.GroupScoped() {
			return true
		}
	}
	return false
}

// SetShare implements Shared: every group-scoped member takes it.
func (c *Composite) SetShare(share float64) error {
	if err := checkShare(c.GroupScoped(), share); err != nil {
		return err
	}
	for _, g := range c.members {
		if sh, ok := g.(Shared); ok && sh.GroupScoped() {
			if err := sh.SetShare(share); err != nil {
				return err
			}
		}
	}
	return nil
}

// Share implements Shared: the first group-scoped member's share.
func (c *Composite) Share() float64 {
	for _, g := range c.members {
		if sh, ok := g.(Shared); ok && sh.GroupScoped() {
			return sh.Share()
		}
	}
	return 1
}

// Fair is an optional ability of a group-scoped strategy that adapts to
// the destination (AdaptiveRate): several workers adapting on their own
// each find a rate, not their share of what the destination takes. The
// job tells each worker the fair share the group's loads give it
// (SetFair), from the loads every worker publishes (Load), and a worker
// above its fair share yields towards it while one below climbs.
type Fair interface {
	// Load returns the rate the worker holds, in units per second (its
	// paced rate, or what it delivered over the last second while it has
	// no rate), and whether it wants more: a request waited for the rate
	// within the last second.
	Load() (rate float64, wantsMore bool)
	// SetFair sets this worker's fair share, in units per second (0: no
	// opinion), for FairFor. Below it the rate climbs to it as in slow
	// start; above it the rate grows no further than FairSlack times it,
	// and a throttle brings it down to it, leaving the room to the workers
	// below theirs. Nothing falls without a throttle: falling to the
	// share at once turned every throttle of one worker into a decrease
	// of the whole group, which then grew back slowly (measured: 48–57%
	// of C instead of 84–93%).
	SetFair(fair float64)
}

// FairSlack is how far above its fair share a worker's rate may be: the
// room through which the group's total still grows, 10% per round of
// fair shares, while the destination takes more.
const FairSlack = 1.1

// FairFor is how long a fair share holds without being renewed.
const FairFor = 3 * time.Second

// Load implements Fair. What a limited worker holds is its rate, not what
// it delivered: after a throttle's pause it delivered less, and shares
// computed from deliveries would ratchet the group down.
func (a *AdaptiveRate) Load() (rate float64, wantsMore bool) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	rate = a.delivered.rate(now)
	if a.limited {
		rate = a.rate
	}
	return rate, !a.waited.IsZero() && now.Sub(a.waited) < time.Second
}

// SetFair implements Fair.
func (a *AdaptiveRate) SetFair(fair float64) { a.setFairAt(time.Now(), fair) }

func (a *AdaptiveRate) setFairAt(now time.Time, fair float64) {
	if !(fair >= 0) || math.IsInf(fair, 0) {
		return
	}
	a.mu.Lock()
	a.fair, a.fairAt = fair, now
	a.mu.Unlock()
}

// fairLocked is the fair share if it is fresh; 0: none.
func (a *AdaptiveRate) fairLocked(now time.Time) float64 {
	if a.fair <= 0 || now.Sub(a.fairAt) > FairFor {
		return 0
	}
	return a.fair
}

// fairCapLocked is the highest rate the fair share lets the rate grow to;
// 0: none.
func (a *AdaptiveRate) fairCapLocked(now time.Time) float64 {
	return a.fairLocked(now) * FairSlack
}
