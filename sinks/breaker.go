package sinks

import (
	"cmp"
	"errors"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/spillway-io/spillway/field"
)

// BreakerConfig configures the circuit breaker around the sink's requests
// (sony/gobreaker's two-step breaker), the sink.circuit_breaker section of
// a pipeline file. Zero values mean the default given on each field;
// ApplyDefaults is the one place those defaults live.
type BreakerConfig struct {
	// FailureRatio opens the breaker when this share of the requests in
	// the interval failed; default 0.5, in (0, 1].
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinRequests is how many requests the interval needs before the
	// ratio counts; default 10.
	MinRequests int `yaml:"min_requests"`
	// Interval is the closed state's counting window; default 60s.
	Interval time.Duration `yaml:"interval"`
	// OpenTimeout is how long the breaker stays open before probing;
	// default 30s.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// HalfOpenRequests is how many probes, each one small batch, may be out
	// while half-open; default 1.
	HalfOpenRequests int `yaml:"half_open_requests"`
}

// ApplyDefaults replaces each zero field by its default. It is idempotent
// and does not validate.
func (c *BreakerConfig) ApplyDefaults() {
	c.FailureRatio = cmp.Or(c.FailureRatio, 0.5)
	c.MinRequests = cmp.Or(c.MinRequests, 10)
	c.Interval = cmp.Or(c.Interval, 60*time.Second)
	c.OpenTimeout = cmp.Or(c.OpenTimeout, 30*time.Second)
	c.HalfOpenRequests = cmp.Or(c.HalfOpenRequests, 1)
}

// Validate reports every invalid setting, each a *field.Error with a path
// relative to circuit_breaker, joined with errors.Join. Zero fields count
// as their defaults.
func (c BreakerConfig) Validate() error {
	c.ApplyDefaults()
	var l field.List
	if c.FailureRatio < 0 || c.FailureRatio > 1 || math.IsNaN(c.FailureRatio) {
		l.Add("failure_ratio", "must be in (0, 1], got %v", c.FailureRatio)
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"min_requests", c.MinRequests}, {"half_open_requests", c.HalfOpenRequests}} {
		l.Positive(n.key, n.v)
		if n.v > math.MaxUint32 {
			l.Add(n.key, "must be at most %d, got %d", uint32(math.MaxUint32), n.v)
		}
	}
	l.PositiveDur("interval", c.Interval)
	l.PositiveDur("open_timeout", c.OpenTimeout)
	return l.Err()
}

// BreakerState is the state of a writer's circuit breaker.
type BreakerState int32

// The states of a circuit breaker; BreakerNone is a writer without one.
const (
	BreakerNone     BreakerState = iota // no breaker
	BreakerClosed                       // requests flow
	BreakerHalfOpen                     // small probes test the destination
	BreakerOpen                         // nothing is sent; buffered records wait
)

// String returns "none", "closed", "half-open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerNone:
		return "none"
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "unknown"
}

func stateOf(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	case gobreaker.StateOpen:
		return BreakerOpen
	}
	return BreakerClosed
}

// ErrBreakerOpen is what the writer reports while the breaker holds
// requests back.
var ErrBreakerOpen = gobreaker.ErrOpenState

// probeBatchSize is the largest batch sent as a half-open probe.
const probeBatchSize = 10

// Verdicts for the breaker: a request not made is excluded from its
// counts; a failed one counts against the destination.
var (
	errNotSent = errors.New("not sent")
	errFailed  = errors.New("request failed")
)

// breaker is the circuit breaker as an Admission. While it is not closed,
// batches are probe-sized; while it is open it refuses until the open
// timeout ends.
type breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout  time.Duration
	openedAt atomic.Int64 // unix nanos of the last transition to open
	stats    *WriterStats
	// transitions logs state changes as a warning, at most one line per
	// summaryEvery with the count of each transition.
	transitions summary
}

// newBreaker returns a breaker configured by cfg (defaults applied) that
// keeps stats' breaker counters and logs transitions to log.
func newBreaker(cfg BreakerConfig, stats *WriterStats, log *slog.Logger, now func() time.Time) *breaker {
	b := &breaker{timeout: cfg.OpenTimeout, stats: stats,
		transitions: summary{msg: "circuit breaker state changed", level: slog.LevelWarn}}
	minRequests, ratio := uint32(cfg.MinRequests), cfg.FailureRatio
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "sink",
		MaxRequests: uint32(cfg.HalfOpenRequests),
		Interval:    cfg.Interval,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.Requests >= minRequests && float64(c.TotalFailures) >= ratio*float64(c.Requests)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errNotSent) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			stats.BreakerTransitions.Add(1)
			stats.BreakerState.Store(int32(stateOf(to)))
			if to == gobreaker.StateOpen {
				b.openedAt.Store(now().UnixNano())
			}
			// A flapping breaker (open, half-open, open...) gives one line
			// per interval with the count of each transition.
			b.transitions.note(log, now(), from.String()+"->"+to.String(), 1, "state", to.String())
		},
	})
	stats.BreakerState.Store(int32(BreakerClosed))
	return b
}

// MaxBatch bounds every batch, retries included, to a probe while the
// breaker is not closed. (Open, it refuses the batch anyway; bounding it
// there too means a batch formed just before the open timeout ends is a
// probe when TryAdmit finds the breaker half-open.)
func (b *breaker) MaxBatch(bool) int {
	if BreakerState(b.stats.BreakerState.Load()) != BreakerClosed {
		return probeBatchSize
	}
	return 0
}

// TryAdmit asks the breaker for a request. Open, it says how long until
// the open timeout ends; half-open with its probes out, it waits for one
// to complete.
func (b *breaker) TryAdmit(now time.Time, _ *Batch) (func(Outcome), time.Duration) {
	done, err := b.cb.Allow()
	if err != nil {
		b.stats.BreakerRejections.Add(1)
		if errors.Is(err, gobreaker.ErrOpenState) {
			opened := time.Unix(0, b.openedAt.Load())
			return nil, max(opened.Add(b.timeout).Sub(now), time.Millisecond)
		}
		return nil, WaitChange
	}
	return func(o Outcome) { done(verdict(o)) }, 0
}

// verdict is what one request means for the destination's health: fatal
// entries are the records' fault and a request not made says nothing, so
// only retryable and throttled failures count against it.
func verdict(o Outcome) error {
	switch {
	case o.NotSent:
		return errNotSent
	case o.Failed > 0:
		return errFailed
	}
	return nil
}

// state returns the breaker's state.
func (b *breaker) state() BreakerState { return stateOf(b.cb.State()) }
