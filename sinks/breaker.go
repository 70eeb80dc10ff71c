package sinks

import (
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerConfig configures the circuit breaker around the sink's requests
// (sony/gobreaker's two-step breaker). Zero values mean the defaults.
type BreakerConfig struct {
	FailureRatio     float64       // open when this share of requests failed in the interval; default 0.5
	MinRequests      uint32        // ...and at least this many were made; default 10
	Interval         time.Duration // closed-state counting window; default 60s
	OpenTimeout      time.Duration // how long the breaker stays open before probing; default 30s
	HalfOpenRequests uint32        // probes allowed while half-open, each one small batch; default 1
}

func (c *BreakerConfig) setDefaults() {
	if c.FailureRatio == 0 {
		c.FailureRatio = 0.5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 10
	}
	if c.Interval == 0 {
		c.Interval = 60 * time.Second
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = 30 * time.Second
	}
	if c.HalfOpenRequests == 0 {
		c.HalfOpenRequests = 1
	}
}

// Validate names every invalid setting by its config key.
func (c BreakerConfig) Validate() error {
	var errs []error
	if c.FailureRatio <= 0 || c.FailureRatio > 1 {
		errs = append(errs, fmt.Errorf("circuit_breaker.failure_ratio must be in (0, 1], got %v", c.FailureRatio))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("circuit_breaker.interval must be positive, got %v", c.Interval))
	}
	if c.OpenTimeout < 0 {
		errs = append(errs, fmt.Errorf("circuit_breaker.open_timeout must be positive, got %v", c.OpenTimeout))
	}
	return errors.Join(errs...)
}

// ErrBreakerOpen is what the writer reports while the breaker holds
// requests back.
var ErrBreakerOpen = gobreaker.ErrOpenState

// probeBatchSize is the largest batch sent as a half-open probe.
const probeBatchSize = 10

// errNotSent tells the breaker a permitted request was not made.
var errNotSent = errors.New("not sent")

// breakerVerdict is what one request means for sink health: nil for a
// success, an error for a failure. Fatal (4xx) entries are the records'
// fault, not the destination's, and context cancellation is shutdown: both
// count as success or are excluded, never as failures.
func breakerVerdict(err error, shuttingDown bool, failed map[int]error) error {
	if err == nil {
		return nil
	}
	if shuttingDown {
		return errNotSent
	}
	for _, ferr := range failed {
		if Classify(ferr) != Fatal {
			return err
		}
	}
	return nil
}

func (w *Writer) newBreaker(cfg BreakerConfig) {
	w.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "sink",
		MaxRequests: cfg.HalfOpenRequests,
		Interval:    cfg.Interval,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.Requests >= cfg.MinRequests && float64(c.TotalFailures) >= cfg.FailureRatio*float64(c.Requests)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errNotSent) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			w.stats.BreakerTransitions.Add(1)
			w.stats.BreakerState.Store(int32(to))
			if to == gobreaker.StateOpen {
				w.breakerOpenedAt.Store(w.now().UnixNano())
			}
			w.log.Warn("circuit breaker state changed", "from", from.String(), "to", to.String())
		},
	})
	w.breakerTimeout = cfg.OpenTimeout
}

// BreakerState returns the breaker's state: "closed", "half-open", "open",
// or "none" without a breaker.
func (w *Writer) BreakerState() string {
	if w.breaker == nil {
		return "none"
	}
	return w.breaker.State().String()
}
