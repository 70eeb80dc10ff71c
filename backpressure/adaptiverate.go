package backpressure

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/spillway-io/spillway/field"
)

// AdaptiveRateConfig is the config of kind adaptive_rate (sink.rate_limit).
// Zero values mean the default given on each field.
type AdaptiveRateConfig struct {
	Kind Kind `yaml:"kind"` // adaptive_rate
	// Unit is what the rate counts: records (default) or bytes.
	Unit string `yaml:"unit"`
	// InitialRate is the rate, in units per second, before the first
	// congestion signal; 0 (default) sends without a limit until the
	// destination first throttles, then paces at what it took.
	InitialRate float64 `yaml:"initial_rate"`
	// MinRate is the floor of the rate; default 1 unit per second.
	MinRate float64 `yaml:"min_rate"`
	// MaxRate caps the rate; 0 (default) leaves it uncapped.
	MaxRate float64 `yaml:"max_rate"`
	// DecreaseFactor multiplies the rate the destination took when it
	// throttles; default 0.9, in (0, 1).
	DecreaseFactor float64 `yaml:"decrease_factor"`
	// RecoveryTime is how long the rate takes to climb back to a plateau
	// just below where the destination last throttled; it then stays
	// there and probes beyond slowly, faster the longer nothing is
	// throttled (CUBIC's K), and up to four times more slowly while
	// throttles keep coming at the same rate. Default 10s.
	RecoveryTime time.Duration `yaml:"recovery_time"`
	// DecreaseOn says which outcomes slow down: throttles (429/503,
	// Retry-After) only, or all (default): throttles, timeouts and
	// retryable failures.
	DecreaseOn string `yaml:"decrease_on"`
	// Burst is how many units may go out at once after a quiet spell;
	// 0 (default) is one batch (BatchBurst, else the first request's
	// size) or PacingSlack of the rate, whichever is more, so sends are
	// evenly spaced.
	Burst int `yaml:"burst"`
	// BatchBurst is the writer's batch in units, the default burst; set
	// by the registry, not configured.
	BatchBurst int `yaml:"-"`
	// Scope is whose rates initial_rate, max_rate and a live limit are:
	// one worker's (worker, default) or the consumer group's (group),
	// each worker applying the share of them its partitions give it
	// (Shared).
	Scope Scope `yaml:"scope"`
}

// ApplyDefaults fills the zero fields. Idempotent.
func (c *AdaptiveRateConfig) ApplyDefaults() {
	c.Kind = cmp.Or(c.Kind, KindAdaptiveRate)
	c.Unit = cmp.Or(c.Unit, "records")
	c.MinRate = cmp.Or(c.MinRate, 1)
	c.DecreaseFactor = cmp.Or(c.DecreaseFactor, 0.9)
	c.RecoveryTime = cmp.Or(c.RecoveryTime, 10*time.Second)
	c.DecreaseOn = cmp.Or(c.DecreaseOn, "all")
	c.Scope = cmp.Or(c.Scope, ScopeWorker)
}

// Validate reports every invalid field, with paths relative to the
// rate_limit section.
func (c AdaptiveRateConfig) Validate() error {
	c.ApplyDefaults()
	var l field.List
	if c.Kind != KindAdaptiveRate {
		l.Add("kind", "must be %q, got %q", KindAdaptiveRate, c.Kind)
	}
	l.OneOf("unit", c.Unit, "records", "bytes")
	l.OneOf("decrease_on", c.DecreaseOn, "throttles", "all")
	l.OneOf("scope", string(c.Scope), string(ScopeWorker), string(ScopeGroup))
	finite := func(key string, v float64) bool {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			l.Add(key, "must be a finite number not below 0, got %v", v)
			return false
		}
		return true
	}
	if finite("initial_rate", c.InitialRate) && finite("min_rate", c.MinRate) && c.MinRate == 0 {
		l.Add("min_rate", "must be positive, got 0")
	}
	if finite("max_rate", c.MaxRate) && c.MaxRate > 0 {
		if c.MaxRate < c.MinRate {
			l.Add("max_rate", "must not be below min_rate (%v), got %v", c.MinRate, c.MaxRate)
		}
		if c.InitialRate > c.MaxRate {
			l.Add("initial_rate", "must not exceed max_rate (%v), got %v", c.MaxRate, c.InitialRate)
		}
	}
	if !(c.DecreaseFactor > 0 && c.DecreaseFactor < 1) {
		l.Add("decrease_factor", "must be in (0, 1), got %v", c.DecreaseFactor)
	}
	l.PositiveDur("recovery_time", c.RecoveryTime)
	if c.Burst < 0 {
		l.Add("burst", "must not be negative, got %d", c.Burst)
	}
	return l.Err()
}

// AdaptiveRate paces requests at a rate it adapts to what the destination
// takes: for an API that enforces a rate (a token bucket with a small
// burst, 429 with Retry-After), which a limit on requests in flight (AIMD)
// cannot express, since a fast answer lets any number of requests a second
// through.
//
// Sends are paced: a request waits until the rate has earned its size, and
// at most Burst units (by default one request, or PacingSlack of the rate
// when that is more) go out at once, so after a
// pause (Retry-After, which the writer waits out) sending resumes at the
// rate, not in a burst. Before the first congestion signal the rate is
// InitialRate, or unlimited, and doubles each second the destination keeps
// up (slow start).
//
// On a throttle the rate becomes DecreaseFactor times what the destination
// took over the last second of sending (not what was sent, which
// overshoots), at most once per round of feedback: outcomes of requests
// sent before the decrease are not counted again. A sample shorter than a
// second (the first burst, a throttle soon after a pause) only sets a floor
// (what got through, counted over a whole second) from which slow start
// finds the rest. Only a request refused as a whole counts: entries
// throttled inside an otherwise delivered request (a 207) concern those
// records, which the writer retries.
//
// The first slow start ramps up from nothing, so the second its throttle
// measures is below what the destination takes: the rate goes on from what
// it took at a quarter of slow start's pace (careful), and the next
// throttle, after a second of sending at or beyond the capacity, is the
// first measure of it (HyStart++'s conservative slow start, RFC 9406, does
// the like for TCP).
//
// After a decrease the rate climbs back along a cubic curve (as TCP CUBIC
// does): quickly at first, flat around a plateau reached after
// RecoveryTime, then probing beyond, slowly at first. The plateau is below
// what the destination took: that second included the burst the
// destination had saved, drained by the overshoot that ended in the
// throttle, the more of it the faster the rate was growing. So it is a
// quarter of the way down to the decreased rate after a throttle on the
// curve, halfway after one in a careful climb, and what it took after one
// in a slow start from a floor (whose ramp offsets the burst). Throttles
// in a row within SteadySpread of one another mean the capacity holds
// still: each makes the probe beyond the plateau twice as slow (up to four
// times), so a fixed quota is probed, and throttles, rarely. After the
// probe's time scale without a throttle (RecoveryTime, doubled as said)
// the capacity found is stale: slow start probes again, carefully. A
// writer throttled below its last plateau plateaus lower, leaving room to
// others sharing the destination (CUBIC's fast convergence). With
// decrease_on all a timeout or a request that failed whole halves the rate
// and restarts slow start. The rate never grows beyond twice what is being
// delivered, so an idle period does not build up an unbounded rate.
//
// It also adapts the batch size: a rate-limit throttle (not one saying the
// destination is unavailable, a 503: an outage must not shrink batches to
// one record) with nothing delivered since the last one, though the
// destination had the Retry-After pause to refill, means the request is
// larger than its burst; MaxBatchSize halves
// (down to one record), the pacing burst follows, the rate stays, and
// RetryBatchSize makes the writer split the throttled request too. After
// a minute without a throttle the batch size doubles back.
//
// Create it with NewAdaptiveRate; it is safe for concurrent use, and a Gate.
type AdaptiveRate struct {
	mu    sync.Mutex
	cfg   AdaptiveRateConfig // MinRate and MaxRate follow SetLimits and SetShare
	base  AdaptiveRateConfig // as built: what SetLimits(Limits{}) restores
	live  float64            // the live limit in the unit; 0: none
	share float64            // of the group's rates (scope group); 0: not set, 1
	sig   Signal

	limited  bool      // false: no limit yet (initial_rate 0, before the first throttle)
	rate     float64   // units per second
	tokens   float64   // may be negative (debt)
	last     time.Time // of tokens
	burst    float64   // units; 0 until a request was seen (one request's worth)
	slow     bool      // slow start: double per second
	careful  bool      // slow start at carefulPace of the doubling
	steady   int       // throttles in a row within SteadySpread, up to maxSteady
	lastTook float64   // what the destination took at the last throttle; 0: not measured yet (the first throttle goes careful)
	grown    time.Time // last growth step
	wMax     float64   // the plateau: at or just below what the destination took at the last throttle; 0 = unknown
	decrease time.Time // time of the last decrease
	resumed  time.Time // first admission after the last decrease: sending restarted
	okSince  bool      // a request succeeded since the last decrease

	delivered window // units delivered, last second

	batchCap     int       // 0: no opinion; else the largest batch in records
	lastShrink   time.Time // of batchCap
	lastThrottle time.Time

	waited time.Time // last time a request had to wait for the rate (share.go)
	fair   float64   // the group's fair share for this worker; 0: none (share.go)
	fairAt time.Time // when fair was set
}

var _ Gate = (*AdaptiveRate)(nil)

// carefulPace is how fast a careful climb grows, as a share of slow
// start's doubling a second: a quarter (HyStart++'s divisor), 19% a second.
const carefulPace = 0.25

// SteadySpread is how close, as a share, what the destination took at a
// throttle must be to what it took at the one before for the two to count
// as the same capacity (AdaptiveRate probes beyond a steady capacity more
// slowly). It is wider than the measure's own noise, a few percent, and
// narrower than the change a halved or doubled quota makes.
const SteadySpread = 0.15

// maxSteady bounds AdaptiveRate.steady: the probe beyond a steady capacity
// is at most 2^maxSteady times slower.
const maxSteady = 2

// KindAdaptiveRate names AdaptiveRate in configuration.
const KindAdaptiveRate Kind = "adaptive_rate"

// NewAdaptiveRate returns an AdaptiveRate at cfg's initial rate.
func NewAdaptiveRate(cfg AdaptiveRateConfig) (*AdaptiveRate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("adaptive rate: %w", err)
	}
	cfg.ApplyDefaults()
	return newAdaptiveRate(time.Now(), cfg), nil
}

func newAdaptiveRate(now time.Time, cfg AdaptiveRateConfig) *AdaptiveRate {
	a := &AdaptiveRate{cfg: cfg, base: cfg, last: now, grown: now, slow: true, burst: float64(cmp.Or(cfg.Burst, cfg.BatchBurst))}
	if cfg.InitialRate > 0 {
		a.limited, a.rate = true, cfg.InitialRate
	}
	a.applyLimitsLocked(now)
	return a
}

// applyLimitsLocked sets the cap of the rate from max_rate or the live
// limit, times the share when the rates are the group's. A rate above the
// cap, or no rate yet, falls to it at once; the rate adapts below it.
func (a *AdaptiveRate) applyLimitsLocked(now time.Time) {
	capRate := cmp.Or(a.live, a.base.MaxRate)
	if a.base.Scope == ScopeGroup {
		capRate *= a.shareLocked()
	}
	a.cfg.MaxRate, a.cfg.MinRate = capRate, a.base.MinRate
	if capRate > 0 {
		a.cfg.MinRate = min(a.base.MinRate, capRate)
		if !a.limited || a.rate > capRate {
			a.setRateLocked(now, capRate)
		}
	}
}

// units is the size of req in the configured unit.
func (a *AdaptiveRate) units(req Request) float64 {
	if a.cfg.Unit == "bytes" {
		return float64(req.Bytes)
	}
	return float64(req.Records)
}

// Unit returns what the rate counts: "records" or "bytes".
func (a *AdaptiveRate) Unit() string { return a.cfg.Unit }

// Rate returns the current rate in units per second; 0 while unlimited.
func (a *AdaptiveRate) Rate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.limited {
		return 0
	}
	return a.rate
}

// SetRate sets the current rate, in units per second (clamped to min_rate
// and max_rate), from which adaptation goes on, and wakes blocked Acquire
// calls. A rate of 0 or less is an error and changes nothing.
func (a *AdaptiveRate) SetRate(r float64) error {
	if !(r > 0) || math.IsInf(r, 0) {
		return fmt.Errorf("adaptive rate: rate must be a positive finite number, got %v", r)
	}
	a.mu.Lock()
	a.setRateLocked(time.Now(), r)
	a.mu.Unlock()
	a.sig.Notify()
	return nil
}

// refillLocked brings tokens up to now.
func (a *AdaptiveRate) refillLocked(now time.Time, need float64) {
	if a.burst == 0 {
		a.burst = need // one request's worth, learnt from the first request
	}
	if dt := now.Sub(a.last).Seconds(); dt > 0 {
		a.tokens = min(a.tokens+dt*a.rate, max(a.burstLocked(), need))
		a.last = now
	}
}

// burstLocked is the burst in units: the configured one; by default one
// batch or PacingSlack of the rate, whichever is more, and no more than a
// batch once batches were found too large for the destination (then its
// burst is smaller too).
func (a *AdaptiveRate) burstLocked() float64 {
	b := a.burst
	if a.cfg.Burst == 0 {
		b = max(b, a.rate*PacingSlack.Seconds())
	}
	if a.batchCap > 0 && a.cfg.Unit != "bytes" {
		return min(b, float64(a.batchCap))
	}
	return b
}

// Admit reports whether req may go at now, and otherwise how long until the
// rate has earned it.
func (a *AdaptiveRate) Admit(now time.Time, req Request) (bool, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.admitLocked(now, req)
}

func (a *AdaptiveRate) admitLocked(now time.Time, req Request) (bool, time.Duration) {
	if !a.limited {
		return true, 0
	}
	need := a.units(req)
	a.refillLocked(now, need)
	// A request larger than the burst goes when the bucket is full.
	deficit := need - a.tokens
	if deficit <= 0 {
		return true, 0
	}
	a.waited = now
	return false, durationFor(deficit, a.rate)
}

// Take charges req at now, into debt if need be.
func (a *AdaptiveRate) Take(now time.Time, req Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.limited {
		return
	}
	need := a.units(req)
	a.refillLocked(now, need)
	a.tokens -= need
	a.markSentLocked(now)
}

// markSentLocked notes the first admission after a decrease: the start of
// the sending period whose deliveries measure the destination.
func (a *AdaptiveRate) markSentLocked(now time.Time) {
	if a.resumed.IsZero() || a.resumed.Before(a.decrease) {
		a.resumed = now
	}
}

// TryAcquireAt admits and charges req at now if the rate allows it.
func (a *AdaptiveRate) TryAcquireAt(now time.Time, req Request) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ok, _ := a.admitLocked(now, req)
	if ok {
		if a.limited {
			a.tokens -= a.units(req)
		}
		a.markSentLocked(now)
	}
	return ok
}

// TryAcquire is TryAcquireAt(time.Now(), req).
func (a *AdaptiveRate) TryAcquire(req Request) bool { return a.TryAcquireAt(time.Now(), req) }

// Acquire blocks until the rate admits req or ctx ends.
func (a *AdaptiveRate) Acquire(ctx context.Context, req Request) error {
	return Acquire(ctx, a, req)
}

// Watch subscribes ch to rate increases and SetRate.
func (a *AdaptiveRate) Watch(_ Request, ch chan<- struct{}, on bool) { a.sig.Watch(ch, on) }

// Complete adapts the rate to res.
func (a *AdaptiveRate) Complete(res Result) { a.CompleteAt(time.Now(), res) }

// CompleteAt is Complete at time now.
func (a *AdaptiveRate) CompleteAt(now time.Time, res Result) {
	a.mu.Lock()
	faster := a.completeLocked(now, res)
	a.mu.Unlock()
	if faster {
		a.sig.Notify()
	}
}

func (a *AdaptiveRate) completeLocked(now time.Time, res Result) (faster bool) {
	units := a.units(res.Request)
	// A rate limit refuses a request as a whole; entries throttled or
	// failing inside an otherwise delivered request (a 207) are about
	// those records, and the writer retries them.
	whole := res.Request.Records > 0 && res.Failed >= res.Request.Records
	throttled := res.Throttled && (whole || res.Failed == 0)
	failed := a.cfg.DecreaseOn == "all" && (res.TimedOut || whole)
	sent := now.Add(-res.Latency)
	if !throttled && !failed {
		if n := res.Request.Records; n > 0 && res.Failed < n {
			a.delivered.add(now, units*float64(n-res.Failed)/float64(n))
			if !sent.Before(a.decrease) {
				a.okSince = true
			}
		}
		if a.batchCap > 0 && now.Sub(a.lastThrottle) >= time.Minute && now.Sub(a.lastShrink) >= time.Minute {
			a.batchCap *= 2 // nothing throttled for a minute: try larger batches again
			a.lastShrink = now
			if a.batchCap >= 1<<20 {
				a.batchCap = 0
			}
		}
		return a.growLocked(now)
	}
	// Once per round: the outcomes of requests sent before the last
	// decrease were already answered for.
	if !a.decrease.IsZero() && sent.Before(a.decrease) {
		return false
	}
	if throttled {
		a.lastThrottle = now
		if !a.decrease.IsZero() && !a.okSince && res.Request.Records > 1 && !res.Unavailable {
			// Nothing got through since the last throttle, though the
			// destination had the Retry-After pause to refill: this request
			// is larger than its burst. Halve the batch; the rate is not
			// the problem.
			a.batchCap = max(1, min(res.Request.Records, cmp.Or(a.batchCap, res.Request.Records))/2)
			a.lastShrink = now
			a.decrease = now
			return false
		}
	}
	// What the destination took over the last second of sending.
	active := now.Sub(a.resumed)
	took := a.delivered.rate(now)
	if throttled && res.Unavailable {
		// Down or overloaded as a whole (503): what it took meanwhile says
		// nothing of its capacity, and falling to it would crawl back from
		// nearly nothing in slow start after an outage. The rate falls by
		// the factor once per round instead; Retry-After pauses sending.
		switch {
		case a.limited:
			a.setRateLocked(now, a.rate*a.cfg.DecreaseFactor)
		case took > 0:
			a.setRateLocked(now, took*a.cfg.DecreaseFactor)
		}
		a.decrease, a.grown, a.okSince = now, now, false
		if a.tokens > 0 {
			a.tokens = 0
		}
		return false
	}
	switch {
	case failed && !throttled:
		a.setRateLocked(now, cmp.Or(min(a.rate, took), a.rate, units)/2)
		a.slow = true
	case active < time.Second || took <= 0 || (a.limited && took < a.rate/4):
		// Too short a sample (the first burst, a throttle soon after a
		// pause, or a second that was mostly a pause): what it took, over
		// a whole second, is a floor of what it takes; find the rest in
		// slow start.
		a.setRateLocked(now, max(took, units))
		a.slow, a.wMax = true, 0
	case a.slow && a.lastTook == 0 && !a.careful:
		// The first slow start: the rate grew all through the second
		// measured, so what the destination took (all of what was sent
		// until the throttle) is below what it takes. Go on from there,
		// carefully, until a throttle after a second at or beyond it.
		if a.limited {
			took = min(a.rate, took)
		}
		a.setRateLocked(now, took)
		a.careful, a.wMax, a.lastTook = true, 0, took
	default:
		if a.limited {
			took = min(a.rate, took)
		}
		if a.lastTook > 0 && math.Abs(took-a.lastTook) <= SteadySpread*a.lastTook {
			a.steady = min(a.steady+1, maxSteady)
		} else {
			a.steady = 0
		}
		a.lastTook = took
		prev := a.wMax
		switch df := a.cfg.DecreaseFactor; {
		case a.careful:
			a.wMax = took * (1 + df) / 2
		case a.slow:
			a.wMax = took
		default:
			a.wMax = took * (3 + df) / 4
		}
		if took < prev-units {
			// Throttled below the plateau, by more than one request (the
			// measure's grain): others share the destination and want
			// more. Plateau lower, so they get it (CUBIC's fast
			// convergence).
			a.wMax *= (1 + a.cfg.DecreaseFactor) / 2
		}
		a.setRateLocked(now, took*a.cfg.DecreaseFactor)
		a.slow, a.careful = false, false
	}
	if f := a.fairLocked(now); f > 0 && a.rate > f {
		// Throttled above its fair share of the group (share.go): leave the
		// room to the workers below theirs.
		a.setRateLocked(now, f)
		a.wMax = min(a.wMax, f*FairSlack)
	}
	a.decrease, a.grown, a.okSince = now, now, false
	if a.tokens > 0 {
		a.tokens = 0 // no burst into a destination that just said no
	}
	return false
}

// growLocked raises the rate after a success: doubling per second in slow
// start, along the cubic curve otherwise; never above twice the delivered
// rate.
func (a *AdaptiveRate) growLocked(now time.Time) bool {
	if !a.limited {
		return false
	}
	dt := now.Sub(a.grown).Seconds()
	if dt <= 0 {
		return false
	}
	a.grown = now
	var target float64
	k := a.cfg.RecoveryTime.Seconds()
	t := now.Sub(a.decrease).Seconds() - k
	probe := k * float64(int(1)<<a.steady) // the time scale beyond the plateau
	switch {
	case a.slow:
		pace := dt
		if a.careful {
			pace *= carefulPace
		}
		target = a.rate * math.Pow(2, pace)
		if a.wMax > 0 && target >= a.wMax {
			target, a.slow, a.careful = a.wMax, false, false
			a.decrease = now.Add(-a.cfg.RecoveryTime) // go on from the flat part of the curve
		}
	case t > probe:
		// The probe's time scale past the plateau without a throttle: the
		// capacity found then is stale (the destination gives more now);
		// find it again, carefully, since it may be just above.
		a.slow, a.careful, a.wMax = true, true, 0
		target = a.rate * math.Pow(2, dt*carefulPace)
	default:
		kk := k
		if t > 0 {
			kk = probe
		}
		c := a.wMax * (1 - a.cfg.DecreaseFactor) / (kk * kk * kk)
		target = max(a.rate, a.wMax+c*t*t*t)
	}
	if f := a.fairLocked(now); f > 0 && a.rate < f {
		// Below its fair share of the group (share.go): climb to it as in
		// slow start, whatever the curve says.
		if climb := min(f, a.rate*math.Pow(2, dt)); climb > target {
			target = climb
			if !a.slow && target > a.wMax {
				// Past the curve's plateau: go on from the flat part of
				// a curve at this rate, as at the end of slow start. On
				// the old curve the rate would sit above it and not grow
				// for up to two recovery times.
				a.wMax, a.decrease = target, now.Add(-a.cfg.RecoveryTime)
			}
		}
	}
	if took := a.delivered.rate(now); took > 0 {
		target = min(target, max(2*took, a.rate))
	}
	if f := a.fairCapLocked(now); f > 0 {
		target = min(target, max(f, a.rate))
	}
	if target <= a.rate {
		return false
	}
	a.setRateLocked(now, target)
	return true
}

func (a *AdaptiveRate) setRateLocked(now time.Time, r float64) {
	a.refillLocked(now, 0)
	r = max(r, a.cfg.MinRate)
	if a.cfg.MaxRate > 0 {
		r = min(r, a.cfg.MaxRate)
	}
	a.rate, a.limited = r, true
}

// MaxBatchSize is the largest new batch, in records: the size the
// destination was found to take, once a throttle with nothing delivered
// since the last one showed a batch was too large, and, with the rate in
// records and past slow start, BatchSpan of the rate; otherwise 0 (no
// opinion).
func (a *AdaptiveRate) MaxBatchSize() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.batchCap
	if a.limited && !a.slow && a.cfg.Unit != "bytes" {
		if g := max(1, int(a.rate*BatchSpan.Seconds())); n == 0 || g < n {
			n = g
		}
	}
	return n
}

// BatchSpan bounds AdaptiveRate's batches, past slow start, to that much
// of the rate: a destination's burst is often a fraction of a second of
// its rate (a tenth, for the gateway of issue 9), and batches of a fixed
// size at a low rate, from one writer or several sharing the destination,
// arrive as bursts that overrun it together though the rate is below its
// capacity (four workers at 2,000 records/s in all, with batches of 125,
// got 69-94% of it; with batches of this span, 90-96%). Slow start keeps
// the writer's batches: it measures the destination, and finer requests
// there changed what it measured.
const BatchSpan = 50 * time.Millisecond

// RetryBatchSize implements RetryBatchSizer: a throttled request larger
// than the destination takes is split when retried.
func (a *AdaptiveRate) RetryBatchSize() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.batchCap // not BatchSpan: a retry keeps its idempotency key whole when it can
}

// RetryBatchSizer is the optional ability of a Strategy that bounds retried
// requests too: the writer resends failed entries whole (the same
// idempotency key) unless RetryBatchSize is positive and smaller, because
// the destination cannot take a request that large at all.
type RetryBatchSizer interface {
	RetryBatchSize() int
}

// window sums units over the last second in 100ms slots: the ten whole
// slots before the current one and the current one, as far as it went.
type window struct {
	slots [11]float64
	at    [11]int64 // the 100ms tick each slot holds
}

const slot = int64(100 * time.Millisecond)

func (w *window) add(now time.Time, v float64) {
	tick := now.UnixNano() / slot
	i := tick % int64(len(w.slots))
	if w.at[i] != tick {
		w.at[i], w.slots[i] = tick, 0
	}
	w.slots[i] += v
}

// rate is the units per second over the last second and the current slot.
func (w *window) rate(now time.Time) float64 {
	tick := now.UnixNano() / slot
	var sum float64
	for i, at := range w.at {
		if tick-at < int64(len(w.slots)) {
			sum += w.slots[i]
		}
	}
	span := time.Second + time.Duration(now.UnixNano()-tick*slot)
	return sum / span.Seconds()
}
