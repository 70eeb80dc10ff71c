package backpressure

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// AIMDConfig configures AIMD. Zero values take the defaults given on each
// field, which are Flink's (CongestionControlRateLimitingStrategy with
// AIMDScalingStrategy, as AsyncSinkWriter builds it).
type AIMDConfig struct {
	// MaxBatchSize is the writer's max_batch_size: the default initial
	// limit and a cap on MaxBatchSize. Required unless InitialLimit and
	// MaxLimit are both set.
	MaxBatchSize int
	// MaxInFlightRequests is the writer's max_in_flight_requests: requests
	// beyond it are refused too (0 = no cap on requests), and it sizes the
	// default MaxLimit.
	MaxInFlightRequests int
	InitialLimit        int     // records in flight allowed at start; default MaxBatchSize
	MaxLimit            int     // Flink's rate threshold; default MaxBatchSize × MaxInFlightRequests (MaxBatchSize if that is 0)
	MinLimit            int     // floor; default 1
	Increase            int     // records added per clean completion; default 10
	DecreaseFactor      float64 // limit multiplier on congestion; default 0.5, in (0, 1)
	// LatencyTolerance > 0 turns on the latency-aware mode: a completion
	// whose smoothed RTT exceeds the baseline RTT by more than this fraction
	// (0.5 = 50%) counts as congestion, as in Vector's adaptive request
	// concurrency. 0 = off.
	LatencyTolerance float64
	// LatencySmoothing is the EWMA weight of each latency sample, in
	// (0, 1]; default 0.3.
	LatencySmoothing float64
}

func (c *AIMDConfig) setDefaults() {
	if c.InitialLimit == 0 {
		c.InitialLimit = c.MaxBatchSize
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = c.MaxBatchSize * max(c.MaxInFlightRequests, 1)
	}
	if c.MinLimit == 0 {
		c.MinLimit = 1
	}
	if c.Increase == 0 {
		c.Increase = 10
	}
	if c.DecreaseFactor == 0 {
		c.DecreaseFactor = 0.5
	}
	if c.LatencySmoothing == 0 {
		c.LatencySmoothing = 0.3
	}
}

// validate checks the fields a user sets (p names the config section);
// MaxBatchSize and MaxInFlightRequests come from the writer and are
// checked by NewAIMD.
func (c AIMDConfig) validate(p string, e *fieldErrors) {
	nonNeg := func(key string, v int) {
		if v < 0 {
			e.add(join(p, key), "must not be negative, got %d", v)
		}
	}
	nonNeg("initial_limit", c.InitialLimit)
	nonNeg("max_limit", c.MaxLimit)
	nonNeg("min_limit", c.MinLimit)
	nonNeg("increase", c.Increase)
	if c.DecreaseFactor < 0 || c.DecreaseFactor >= 1 || math.IsNaN(c.DecreaseFactor) {
		e.add(join(p, "decrease_factor"), "must be above 0 and below 1, got %v", c.DecreaseFactor)
	}
	if c.LatencyTolerance < 0 || math.IsNaN(c.LatencyTolerance) || math.IsInf(c.LatencyTolerance, 0) {
		e.add(join(p, "latency_tolerance"), "must be a finite number not below 0, got %v", c.LatencyTolerance)
	}
	if c.LatencySmoothing < 0 || c.LatencySmoothing > 1 || math.IsNaN(c.LatencySmoothing) {
		e.add(join(p, "latency_smoothing"), "must be above 0 and at most 1, got %v", c.LatencySmoothing)
	}
	if c.LatencySmoothing != 0 && c.LatencyTolerance == 0 {
		e.add(join(p, "latency_smoothing"), "only with latency_tolerance")
	}
	if c.MinLimit > 0 && c.MaxLimit > 0 && c.MinLimit > c.MaxLimit {
		e.add(join(p, "min_limit"), "must not exceed max_limit (%d), got %d", c.MaxLimit, c.MinLimit)
	}
	if c.InitialLimit > 0 && c.MaxLimit > 0 && c.InitialLimit > c.MaxLimit {
		e.add(join(p, "initial_limit"), "must not exceed max_limit (%d), got %d", c.MaxLimit, c.InitialLimit)
	}
	if c.InitialLimit > 0 && c.MinLimit > 0 && c.InitialLimit < c.MinLimit {
		e.add(join(p, "initial_limit"), "must not be below min_limit (%d), got %d", c.MinLimit, c.InitialLimit)
	}
}

// AIMD is congestion control over the records in flight (Flink's
// CongestionControlRateLimitingStrategy): a request is admitted while the
// records in flight plus its own stay within the limit (and the requests
// in flight below MaxInFlightRequests). A clean completion raises the limit
// by Increase up to MaxLimit; a throttled, timed-out or partly failed one
// multiplies it by DecreaseFactor down to MinLimit. In the latency-aware
// mode a rising RTT is congestion too.
//
// Two departures from Flink, both to keep a throttle storm from collapsing
// the limit and the writer from stalling: the limit is decreased at most
// once per round trip (congestion reported by requests that were already
// in flight at the last decrease is ignored, as TCP's fast recovery does,
// and so are their clean completions), and a request is always admitted
// when nothing is in flight, however large (a retried batch may exceed a
// limit that shrank meanwhile).
//
// MaxBatchSize follows the limit. Acquire waits for completions or
// SetLimit, never for time. Create it with NewAIMD; it is safe for
// concurrent use.
type AIMD struct {
	mu        sync.Mutex
	cfg       AIMDConfig // defaults applied
	limit     int
	inReq     int
	inRec     int
	recovery  int     // completions to ignore, from requests in flight at the last decrease
	rtt       float64 // EWMA of latency, ns; 0 = no sample yet
	baseRTT   float64 // baseline: lowest rtt, drifting towards rtt
	increases int64
	decreases int64
	wmax      int     // limit before the last decrease; 0 = none (or forgotten)
	acc       float64 // fractional increase above wmax
	variant   int     // exploration: 0 = full, 1 = flink, 2 = no wmax
	sig       signal
}

var _ gate = (*AIMD)(nil)

// NewAIMD returns an AIMD at cfg.InitialLimit.
func NewAIMD(cfg AIMDConfig) (*AIMD, error) {
	var e fieldErrors
	cfg.validate("", &e)
	if cfg.MaxBatchSize < 0 {
		e.add("max_batch_size", "must not be negative, got %d", cfg.MaxBatchSize)
	}
	if cfg.MaxInFlightRequests < 0 {
		e.add("max_in_flight_requests", "must not be negative, got %d", cfg.MaxInFlightRequests)
	}
	if cfg.MaxBatchSize == 0 && (cfg.InitialLimit == 0 || cfg.MaxLimit == 0) {
		e.add("max_batch_size", "required unless initial_limit and max_limit are set")
	}
	if err := e.err(); err != nil {
		return nil, fmt.Errorf("aimd: %w", err)
	}
	cfg.setDefaults()
	// Defaults derived from the writer's settings must agree with the
	// limits set explicitly.
	cfg.MinLimit = min(cfg.MinLimit, cfg.MaxLimit)
	cfg.InitialLimit = min(max(cfg.InitialLimit, cfg.MinLimit), cfg.MaxLimit)
	return &AIMD{cfg: cfg, limit: cfg.InitialLimit}, nil
}

// AIMDStats is a snapshot of an AIMD's state.
type AIMDStats struct {
	Limit            int           // records allowed in flight now
	InFlightRequests int           //
	InFlightRecords  int           //
	Increases        int64         // additive increases so far
	Decreases        int64         // multiplicative decreases so far
	RTT              time.Duration // latency EWMA (latency-aware mode; else of clean completions with a latency)
	BaselineRTT      time.Duration // the RTT congestion is measured against
}

// Stats returns a snapshot of the state.
func (a *AIMD) Stats() AIMDStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AIMDStats{
		Limit: a.limit, InFlightRequests: a.inReq, InFlightRecords: a.inRec,
		Increases: a.increases, Decreases: a.decreases,
		RTT: time.Duration(a.rtt), BaselineRTT: time.Duration(a.baseRTT),
	}
}

// Limit returns the records allowed in flight now.
func (a *AIMD) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}

// SetLimit sets the records allowed in flight, clamped to [MinLimit,
// MaxLimit] (to restore a saved state, or to intervene), and wakes blocked
// Acquire calls. The change takes effect at once.
func (a *AIMD) SetLimit(n int) {
	a.mu.Lock()
	a.limit = min(max(n, a.cfg.MinLimit), a.cfg.MaxLimit)
	a.mu.Unlock()
	a.sig.notify()
}

// SetMaxLimit changes MaxLimit (at least 1; MinLimit follows it down) and
// clamps the limit to it.
func (a *AIMD) SetMaxLimit(n int) {
	a.mu.Lock()
	a.cfg.MaxLimit = max(n, 1)
	a.cfg.MinLimit = min(a.cfg.MinLimit, a.cfg.MaxLimit)
	a.limit = min(a.limit, a.cfg.MaxLimit)
	a.mu.Unlock()
	a.sig.notify()
}

// TryAcquire admits req if it fits in the limit now.
func (a *AIMD) TryAcquire(req Request) bool {
	a.mu.Lock()
	ok := a.admitsLocked(req)
	if ok {
		a.inReq++
		a.inRec += max(req.Records, 0)
	}
	a.mu.Unlock()
	return ok
}

// Acquire blocks until req fits, which only a completion or SetLimit can
// bring about, or ctx ends.
func (a *AIMD) Acquire(ctx context.Context, req Request) error { return acquire(ctx, a, req) }

// Complete takes res's request out of flight and adjusts the limit.
func (a *AIMD) Complete(res Result) {
	a.mu.Lock()
	a.completeLocked(res)
	a.mu.Unlock()
	a.sig.notify()
}

// MaxBatchSize is the current limit, at most the writer's max batch size.
func (a *AIMD) MaxBatchSize() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.MaxBatchSize > 0 {
		return min(a.limit, a.cfg.MaxBatchSize)
	}
	return a.limit
}

// ShouldBlock reports whether req would be refused now.
func (a *AIMD) ShouldBlock(req Request) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.admitsLocked(req)
}

// RegisterInFlight counts req in flight, fitting or not.
func (a *AIMD) RegisterInFlight(req Request) { a.takeAt(time.Time{}, req) }

// RegisterCompleted is Complete.
func (a *AIMD) RegisterCompleted(res Result) { a.Complete(res) }

func (a *AIMD) admitsLocked(req Request) bool {
	if a.inReq == 0 {
		return true
	}
	if a.cfg.MaxInFlightRequests > 0 && a.inReq >= a.cfg.MaxInFlightRequests {
		return false
	}
	return a.inRec+max(req.Records, 0) <= a.limit
}

func (a *AIMD) completeLocked(res Result) {
	a.inReq = max(a.inReq-1, 0)
	a.inRec = max(a.inRec-max(res.Request.Records, 0), 0)
	congested := res.congested()
	if !congested && res.Latency > 0 {
		congested = a.sampleLocked(float64(res.Latency))
	}
	if a.variant == 1 {
		if congested {
			a.limit = max(a.cfg.MinLimit, int(math.Round(float64(a.limit)*a.cfg.DecreaseFactor)))
			a.decreases++
		} else if a.limit < a.cfg.MaxLimit {
			a.limit = min(a.limit+a.cfg.Increase, a.cfg.MaxLimit)
			a.increases++
		}
		return
	}
	switch {
	case a.recovery > 0:
		a.recovery--
	case congested:
		base := a.limit
		if a.variant == 3 {
			// As TCP's ssthresh = FlightSize/2: decrease from what was in
			// flight, which is less than the limit when batches do not
			// fill it.
			base = min(a.limit, a.inRec+max(res.Request.Records, 0))
		}
		a.wmax = base
		a.acc = 0
		a.limit = max(a.cfg.MinLimit, int(math.Round(float64(base)*a.cfg.DecreaseFactor)))
		a.recovery = a.inReq
		a.decreases++
	case a.limit >= a.cfg.MaxLimit:
	case a.variant == 2 || a.wmax == 0 || a.limit+a.cfg.Increase <= a.wmax:
		a.limit = min(a.limit+a.cfg.Increase, a.cfg.MaxLimit)
		a.increases++
	default:
		// Near or above the last congestion point: Increase per round
		// trip (a limit's worth of completed records), not per request.
		a.acc += float64(a.cfg.Increase) * float64(max(res.Request.Records, 1)) / float64(a.limit)
		if a.acc >= 1 {
			step := int(a.acc)
			a.acc -= float64(step)
			a.limit = min(a.limit+step, a.cfg.MaxLimit)
			a.increases++
		}
		if a.limit >= 2*a.wmax {
			a.wmax = 0 // capacity has grown: probe fast again
		}
	}
}

// sampleLocked folds a latency sample (ns) into the RTT EWMA and reports
// congestion in the latency-aware mode. The baseline is the lowest EWMA
// seen, drifting up towards the current one at 1/16 of the smoothing
// weight, so that a lasting change in the sink's latency becomes the new
// normal instead of holding the limit at its floor.
func (a *AIMD) sampleLocked(ns float64) bool {
	alpha := a.cfg.LatencySmoothing
	if a.rtt == 0 {
		a.rtt, a.baseRTT = ns, ns
		return false
	}
	a.rtt += alpha * (ns - a.rtt)
	if a.rtt < a.baseRTT {
		a.baseRTT = a.rtt
	} else {
		a.baseRTT += alpha / 16 * (a.rtt - a.baseRTT)
	}
	return a.cfg.LatencyTolerance > 0 && a.rtt > a.baseRTT*(1+a.cfg.LatencyTolerance)
}

func (a *AIMD) try(req Request) (bool, time.Duration) {
	if a.TryAcquire(req) {
		return true, 0
	}
	return false, never
}

func (a *AIMD) admitAt(_ time.Time, req Request) (bool, time.Duration) {
	if a.ShouldBlock(req) {
		return false, never
	}
	return true, 0
}

func (a *AIMD) takeAt(_ time.Time, req Request) {
	a.mu.Lock()
	a.inReq++
	a.inRec += max(req.Records, 0)
	a.mu.Unlock()
}

func (a *AIMD) watch(_ Request, ch chan struct{}, on bool) { a.sig.watch(ch, on) }
