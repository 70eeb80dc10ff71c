package backpressure

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Stateful is an optional ability of a Strategy, found by type assertion:
// a strategy that learns (AIMD's limit, AdaptiveRate's rate) saves what it
// learnt, so that a restarted worker resumes where the last one was
// instead of at full speed against a destination it had to slow down for.
// AIMD and AdaptiveRate have it.
type Stateful interface {
	// SaveState encodes the learnt state (versioned JSON). Cheap: callers
	// poll it and store it when it changes.
	SaveState() []byte
	// RestoreState sets the learnt state from SaveState's bytes, clamped
	// to the strategy's configured bounds. It fails, changing nothing, on
	// bytes it cannot read (another strategy's, a newer version).
	RestoreState(b []byte) error
}

// Limits is a live upper bound on a strategy's rate, per worker, set at
// runtime (spillway limits set). A zero field leaves that dimension as
// configured; Limits{} goes back to the configured limits.
type Limits struct {
	RecordsPerSecond float64
	BytesPerSecond   float64
}

// LimitSetter is an optional ability of a Strategy, found by type
// assertion: it takes a live limit. What a limit means depends on the
// strategy; TokenBucket and AdaptiveRate have it.
type LimitSetter interface {
	// SetLimits applies l, waking blocked Acquire calls. It fails,
	// changing nothing, when l is invalid or concerns nothing the strategy
	// limits.
	SetLimits(l Limits) error
}

// stateVersion is the version of the state SaveState writes.
const stateVersion = 1

func (l Limits) validate() error {
	for _, v := range []float64{l.RecordsPerSecond, l.BytesPerSecond} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("limits: rates must be finite numbers not below 0, got %v", v)
		}
	}
	return nil
}

type aimdState struct {
	Kind    Kind `json:"kind"`
	Version int  `json:"version"`
	Limit   int  `json:"limit"`
}

// SaveState implements Stateful: the limit.
func (a *AIMD) SaveState() []byte {
	b, _ := json.Marshal(aimdState{Kind: KindAIMD, Version: stateVersion, Limit: a.Limit()})
	return b
}

// RestoreState implements Stateful: SetLimit with the saved limit.
func (a *AIMD) RestoreState(b []byte) error {
	var s aimdState
	if err := decodeState(b, KindAIMD, &s, &s.Kind, &s.Version); err != nil {
		return err
	}
	if s.Limit <= 0 {
		return fmt.Errorf("aimd state: limit must be positive, got %d", s.Limit)
	}
	a.SetLimit(s.Limit)
	return nil
}

// decodeState decodes b into v and checks its kind and version.
func decodeState(b []byte, kind Kind, v any, gotKind *Kind, gotVersion *int) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s state: %w", kind, err)
	}
	if *gotKind != kind {
		return fmt.Errorf("%s state: saved by a strategy of kind %q", kind, *gotKind)
	}
	if *gotVersion != stateVersion {
		return fmt.Errorf("%s state: unsupported version %d", kind, *gotVersion)
	}
	return nil
}

type adaptiveState struct {
	Kind     Kind    `json:"kind"`
	Version  int     `json:"version"`
	Rate     float64 `json:"rate"`               // 0: not limited yet
	Capacity float64 `json:"capacity,omitempty"` // what the destination took when it last throttled
	BatchCap int     `json:"batch_cap,omitempty"`
}

// SaveState implements Stateful: the rate, the capacity found at the last
// throttle and the batch size found to fit.
func (a *AdaptiveRate) SaveState() []byte {
	a.mu.Lock()
	s := adaptiveState{Kind: KindAdaptiveRate, Version: stateVersion, Capacity: a.wMax, BatchCap: a.batchCap}
	if a.limited {
		s.Rate = a.rate
	}
	a.mu.Unlock()
	b, _ := json.Marshal(s)
	return b
}

// RestoreState implements Stateful. The rate resumes at the saved rate
// (within min_rate and max_rate) and climbs back towards the saved
// capacity along the curve that follows a throttle.
func (a *AdaptiveRate) RestoreState(b []byte) error {
	var s adaptiveState
	if err := decodeState(b, KindAdaptiveRate, &s, &s.Kind, &s.Version); err != nil {
		return err
	}
	if s.Rate < 0 || s.Capacity < 0 || s.BatchCap < 0 || math.IsInf(s.Rate, 0) || math.IsInf(s.Capacity, 0) {
		return errors.New("adaptive_rate state: negative or infinite value")
	}
	if s.Rate == 0 {
		return nil // it had not been limited yet
	}
	now := time.Now()
	a.mu.Lock()
	a.setRateLocked(now, s.Rate)
	a.wMax, a.batchCap = s.Capacity, s.BatchCap
	a.slow = a.wMax == 0
	a.careful, a.steady, a.lastTook = false, 0, 0
	a.decrease, a.grown = now, now
	a.mu.Unlock()
	a.sig.Notify()
	return nil
}

// SetLimits implements LimitSetter: a live limit replaces the configured
// rates of the dimensions it sets (bursts stay as configured, or default
// to one second's worth for a dimension the bucket did not limit);
// Limits{} restores the configured rates.
func (tb *TokenBucket) SetLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	tb.mu.Lock()
	tb.live = l
	tb.applyLocked()
	tb.mu.Unlock()
	tb.sig.Notify()
	return nil
}

// SetLimits implements LimitSetter: the limit in the strategy's unit
// (records_per_second for unit records, bytes_per_second for bytes)
// replaces max_rate, so the rate goes on adapting below it; a current rate
// above it (or no limit yet) falls to it at once. A limit only in the
// other unit is an error. Limits{} restores the configured max_rate.
func (a *AdaptiveRate) SetLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	v, other, unit := l.RecordsPerSecond, l.BytesPerSecond, "records"
	if a.cfg.Unit == "bytes" {
		v, other, unit = l.BytesPerSecond, l.RecordsPerSecond, "bytes"
	}
	if v == 0 && other > 0 {
		return fmt.Errorf("limits: adaptive_rate counts %s: set %s_per_second", unit, unit)
	}
	a.mu.Lock()
	a.live = v
	a.applyLimitsLocked(time.Now())
	a.mu.Unlock()
	a.sig.Notify()
	return nil
}

// MaxRate returns the cap of the rate now (a live limit, or max_rate); 0
// when uncapped.
func (a *AdaptiveRate) MaxRate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.MaxRate
}

// SetLimits implements LimitSetter: the global tier takes the limit, when
// it has a rate (a token bucket); topic and partition tiers keep theirs.
func (m *MultiTier) SetLimits(l Limits) error {
	ls, ok := m.global.(LimitSetter)
	if !ok {
		return fmt.Errorf("limits: the multi-tier global tier (%T) has no rate to limit", m.global)
	}
	return ls.SetLimits(l)
}

// SetLimits implements LimitSetter: every member that takes a limit
// applies it (a member that refuses it keeps its own); it fails when none
// does.
func (c *Composite) SetLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	var errs []error
	applied := false
	for _, g := range c.members {
		ls, ok := g.(LimitSetter)
		if !ok {
			continue
		}
		if err := ls.SetLimits(l); err != nil {
			errs = append(errs, err)
		} else {
			applied = true
		}
	}
	if applied {
		return nil
	}
	if len(errs) == 0 {
		return errors.New("limits: no strategy of the composite has a rate to limit")
	}
	return errors.Join(errs...)
}
