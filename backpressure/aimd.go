package backpressure

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/spillway-io/spillway/field"
)

// AIMDConfig configures AIMD. Zero values take the defaults given on each
// field: Flink's (CongestionControlRateLimitingStrategy with
// AIMDScalingStrategy as AsyncSinkWriter builds it) and, for the
// latency-aware mode, Vector's.
type AIMDConfig struct {
	// MaxBatchSize is the writer's max_batch_size: it sizes the default
	// MaxLimit and caps MaxBatchSize. Required unless MaxLimit is set.
	MaxBatchSize int
	// MaxInFlightRequests is the writer's max_in_flight_requests: requests
	// beyond it are refused too (0 = no cap on requests), and it sizes the
	// default MaxLimit.
	MaxInFlightRequests int
	MaxLimit            int     // Flink's rate threshold; default MaxBatchSize × MaxInFlightRequests
	InitialLimit        int     // records in flight allowed at start; default MaxLimit (Flink's builder takes MaxBatchSize; starting at full speed avoids a slow ramp)
	MinLimit            int     // floor; default 1
	Increase            int     // records added per clean completion; default 10
	DecreaseFactor      float64 // limit multiplier on throttling, timeouts, failed entries; default 0.5, in (0, 1)
	// LatencyTolerance > 0 turns on the latency-aware mode: a smoothed RTT
	// above the baseline RTT by more than this fraction (0.5 = 50%) is
	// congestion. 0 = off.
	LatencyTolerance float64
	// LatencyDecreaseFactor is the limit multiplier on latency congestion,
	// gentler than DecreaseFactor: a growing queue is a milder signal than
	// a refusal, and halving would idle the sink; default 0.9 (Vector's
	// decrease_ratio), in (0, 1).
	LatencyDecreaseFactor float64
	// LatencySmoothing is the EWMA weight of each latency sample, in
	// (0, 1]; default 0.3.
	LatencySmoothing float64
}

func (c *AIMDConfig) setDefaults() {
	if c.MaxLimit == 0 {
		c.MaxLimit = c.MaxBatchSize * max(c.MaxInFlightRequests, 1)
	}
	if c.InitialLimit == 0 {
		c.InitialLimit = c.MaxLimit
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
	if c.LatencyDecreaseFactor == 0 {
		c.LatencyDecreaseFactor = 0.9
	}
}

// validate checks the fields a user sets (p names the config section);
// MaxBatchSize and MaxInFlightRequests come from the writer and are
// checked by NewAIMD.
func (c AIMDConfig) validate(p string, e *field.List) {
	nonNeg := func(key string, v int) {
		if v < 0 {
			e.Add(join(p, key), "must not be negative, got %d", v)
		}
	}
	nonNeg("initial_limit", c.InitialLimit)
	nonNeg("max_limit", c.MaxLimit)
	nonNeg("min_limit", c.MinLimit)
	nonNeg("increase", c.Increase)
	if c.DecreaseFactor < 0 || c.DecreaseFactor >= 1 || math.IsNaN(c.DecreaseFactor) {
		e.Add(join(p, "decrease_factor"), "must be above 0 and below 1, got %v", c.DecreaseFactor)
	}
	if c.LatencyTolerance < 0 || math.IsNaN(c.LatencyTolerance) || math.IsInf(c.LatencyTolerance, 0) {
		e.Add(join(p, "latency_tolerance"), "must be a finite number not below 0, got %v", c.LatencyTolerance)
	}
	if c.LatencySmoothing < 0 || c.LatencySmoothing > 1 || math.IsNaN(c.LatencySmoothing) {
		e.Add(join(p, "latency_smoothing"), "must be above 0 and at most 1, got %v", c.LatencySmoothing)
	}
	if c.LatencyDecreaseFactor < 0 || c.LatencyDecreaseFactor >= 1 || math.IsNaN(c.LatencyDecreaseFactor) {
		e.Add(join(p, "latency_decrease_factor"), "must be above 0 and below 1, got %v", c.LatencyDecreaseFactor)
	}
	if c.LatencySmoothing != 0 && c.LatencyTolerance == 0 {
		e.Add(join(p, "latency_smoothing"), "only with latency_tolerance")
	}
	if c.LatencyDecreaseFactor != 0 && c.LatencyTolerance == 0 {
		e.Add(join(p, "latency_decrease_factor"), "only with latency_tolerance")
	}
	if c.MinLimit > 0 && c.MaxLimit > 0 && c.MinLimit > c.MaxLimit {
		e.Add(join(p, "min_limit"), "must not exceed max_limit (%d), got %d", c.MaxLimit, c.MinLimit)
	}
	if c.InitialLimit > 0 && c.MaxLimit > 0 && c.InitialLimit > c.MaxLimit {
		e.Add(join(p, "initial_limit"), "must not exceed max_limit (%d), got %d", c.MaxLimit, c.InitialLimit)
	}
	if c.InitialLimit > 0 && c.MinLimit > 0 && c.InitialLimit < c.MinLimit {
		e.Add(join(p, "initial_limit"), "must not be below min_limit (%d), got %d", c.MinLimit, c.InitialLimit)
	}
}

// AIMD is congestion control over the records in flight (Flink's
// CongestionControlRateLimitingStrategy): a request is admitted while the
// records in flight plus its own stay within the limit (and the requests
// in flight below MaxInFlightRequests). A clean completion raises the limit
// by Increase up to MaxLimit; a throttled, timed-out or partly failed one
// multiplies it by DecreaseFactor down to MinLimit.
//
// Departures from Flink, each found necessary in the simulations of
// aimd_test.go (Flink's rule as is kept only 44–62% of the capacity at
// 40 000 records/s and above: each throttled response of one round trip
// halved the limit again, and +10 per request took long to climb back):
//
//   - The limit is decreased at most once per round trip: completions of
//     requests already in flight at a decrease are ignored, as in TCP's fast
//     recovery.
//   - A decrease starts from the records actually in flight when they are
//     fewer than the limit (TCP's ssthresh = FlightSize/2), so a limit that
//     batches do not fill still takes effect.
//   - After a decrease the limit grows by Increase per completion up to
//     where congestion struck, then by Increase per round trip (a limit's
//     worth of completed records) beyond it, and fast again once a quarter
//     above it: quick recovery, gentle probing.
//   - A request is always admitted when nothing is in flight, however large
//     (a retried batch may exceed a limit that shrank meanwhile).
//
// In the latency-aware mode (LatencyTolerance > 0, after Vector's adaptive
// request concurrency) the RTT EWMA is compared with a baseline, the lowest
// EWMA seen: above baseline × (1 + tolerance) is congestion, and the limit
// shrinks by LatencyDecreaseFactor; above half the tolerance the limit
// stops growing. If a latency decrease does not bring the RTT down, the
// sink itself got slower: the RTT becomes the new baseline. This keeps a
// queueing sink's queue short instead of filling it until it throttles.
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
	recovery  int // completions to ignore, from requests in flight at the last decrease
	wmax      int // where congestion struck last; 0 = none (or forgotten)
	acc       float64
	increases int64
	decreases int64

	// Latency-aware mode.
	rtt        float64 // EWMA of latency, ns; 0 = no sample yet
	baseRTT    float64 // lowest rtt; rebased when the sink gets slower
	latencyCut bool    // the last decrease was for latency; watching its effect
	firstRTT   float64 // rtt once that decrease took effect
	lowRTT     float64 // lowest rtt since; 0 = not yet in effect

	sig Signal
}

var _ Gate = (*AIMD)(nil)

// NewAIMD returns an AIMD at cfg.InitialLimit.
func NewAIMD(cfg AIMDConfig) (*AIMD, error) {
	var e field.List
	cfg.validate("", &e)
	if cfg.MaxBatchSize < 0 {
		e.Add("max_batch_size", "must not be negative, got %d", cfg.MaxBatchSize)
	}
	if cfg.MaxInFlightRequests < 0 {
		e.Add("max_in_flight_requests", "must not be negative, got %d", cfg.MaxInFlightRequests)
	}
	if cfg.MaxBatchSize == 0 && cfg.MaxLimit == 0 {
		e.Add("max_batch_size", "required unless max_limit is set")
	}
	if err := e.Err(); err != nil {
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
	RTT              time.Duration // EWMA of the latency of clean completions that report one
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
	a.sig.Notify()
}

// SetMaxLimit changes MaxLimit (at least 1; MinLimit follows it down) and
// clamps the limit to it.
func (a *AIMD) SetMaxLimit(n int) {
	a.mu.Lock()
	a.cfg.MaxLimit = max(n, 1)
	a.cfg.MinLimit = min(a.cfg.MinLimit, a.cfg.MaxLimit)
	a.limit = min(a.limit, a.cfg.MaxLimit)
	a.mu.Unlock()
	a.sig.Notify()
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

// TryAcquireAt is TryAcquire: AIMD does not look at the time.
func (a *AIMD) TryAcquireAt(_ time.Time, req Request) bool { return a.TryAcquire(req) }

// Acquire blocks until req fits, which only a completion or SetLimit can
// bring about, or ctx ends.
func (a *AIMD) Acquire(ctx context.Context, req Request) error { return Acquire(ctx, a, req) }

// Complete takes res's request out of flight and adjusts the limit.
func (a *AIMD) Complete(res Result) {
	a.mu.Lock()
	a.completeLocked(res)
	a.mu.Unlock()
	a.sig.Notify()
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
func (a *AIMD) RegisterInFlight(req Request) { a.Take(time.Time{}, req) }

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
	flight := a.inRec // records in flight before this completion
	a.inReq = max(a.inReq-1, 0)
	a.inRec = max(a.inRec-max(res.Request.Records, 0), 0)
	congested := res.congested()
	latency, hold := false, false
	if !congested && res.Latency > 0 {
		latency, hold = a.sampleLocked(float64(res.Latency))
	}
	if a.recovery > 0 {
		a.recovery--
		return
	}
	if a.latencyCut && a.watchCutLocked(latency) {
		return
	}
	switch {
	case congested || latency:
		factor := a.cfg.DecreaseFactor
		if !congested {
			factor = a.cfg.LatencyDecreaseFactor
		}
		base := a.limit
		if flight > 0 {
			base = min(base, flight)
		}
		a.wmax, a.acc = base, 0
		a.limit = max(a.cfg.MinLimit, int(math.Round(float64(base)*factor)))
		a.recovery = a.inReq
		a.latencyCut, a.lowRTT = !congested, 0
		a.decreases++
	case a.limit >= a.cfg.MaxLimit || hold:
	case a.wmax == 0 || a.limit+a.cfg.Increase <= a.wmax:
		a.limit = min(a.limit+a.cfg.Increase, a.cfg.MaxLimit)
		a.increases++
	default:
		a.acc += float64(a.cfg.Increase) * float64(max(res.Request.Records, 1)) / float64(a.limit)
		if a.acc >= 1 {
			step := int(a.acc)
			a.acc -= float64(step)
			a.limit = min(a.limit+step, a.cfg.MaxLimit)
			a.increases++
		}
		if a.limit >= a.wmax+a.wmax/4 {
			a.wmax = 0 // capacity has grown: probe fast again
		}
	}
}

// watchCutLocked follows the RTT after a decrease made for latency and
// reports whether the completion is fully handled. While the queue drains
// the RTT falls: wait. If it stopped falling but is still high, then if it
// fell noticeably our load is the cause: let the caller decrease again;
// if not, the sink itself got slower: rebase.
func (a *AIMD) watchCutLocked(latency bool) bool {
	switch {
	case !latency:
		a.latencyCut = false
		return false
	case a.lowRTT == 0:
		a.firstRTT, a.lowRTT = a.rtt, a.rtt
		return true
	case a.rtt < a.lowRTT:
		a.lowRTT = a.rtt
		return true
	case a.lowRTT < a.firstRTT*(1-(1-a.cfg.LatencyDecreaseFactor)/4):
		a.latencyCut = false
		return false
	default:
		a.latencyCut = false
		a.baseRTT = a.rtt
		a.wmax = 0 // the sink changed: probe fast again
		return true
	}
}

// sampleLocked folds a latency sample (ns) into the RTT EWMA. In the
// latency-aware mode it reports congestion when the EWMA exceeds the
// baseline by more than the tolerance, and hold when by more than half of
// it (Vector grows only while the RTT is not above its mean).
func (a *AIMD) sampleLocked(ns float64) (congested, hold bool) {
	if a.rtt == 0 {
		a.rtt, a.baseRTT = ns, ns
		return false, false
	}
	a.rtt += a.cfg.LatencySmoothing * (ns - a.rtt)
	a.baseRTT = min(a.baseRTT, a.rtt)
	tol := a.cfg.LatencyTolerance
	if tol == 0 {
		return false, false
	}
	return a.rtt > a.baseRTT*(1+tol), a.rtt > a.baseRTT*(1+tol/2)
}

// Admit reports whether req fits in the limit; when it does not, only a
// completion or a limit change can make it fit (Never).
func (a *AIMD) Admit(_ time.Time, req Request) (bool, time.Duration) {
	if a.ShouldBlock(req) {
		return false, Never
	}
	return true, 0
}

// Take counts req in flight, fitting or not.
func (a *AIMD) Take(_ time.Time, req Request) {
	a.mu.Lock()
	a.inReq++
	a.inRec += max(req.Records, 0)
	a.mu.Unlock()
}

// Watch subscribes ch to completions and limit changes.
func (a *AIMD) Watch(_ Request, ch chan<- struct{}, on bool) { a.sig.Watch(ch, on) }
