package backpressure

import (
	"math"
	"strings"
	"testing"
	"time"
)

// t0 is an arbitrary start for tests that pass time in.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func newRate(t *testing.T, cfg AdaptiveRateConfig) *AdaptiveRate {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	return newAdaptiveRate(t0, cfg)
}

func batch(n int) Request { return Request{Records: n, Bytes: 100 * n} }

// deliver sends and completes, successfully, one request of n records at
// each step from start, every step, until end.
func deliver(a *AdaptiveRate, start, end time.Time, step time.Duration, n int) time.Time {
	for now := start; now.Before(end); now = now.Add(step) {
		if a.TryAcquireAt(now, batch(n)) {
			a.CompleteAt(now.Add(time.Millisecond), Result{Request: batch(n), Latency: time.Millisecond})
		}
	}
	return end
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }

// TestAdaptiveRateFirstThrottle: unlimited until the destination throttles,
// then paced at what it took over the last second, not what was sent, and
// growing carefully; the next throttle, a second later, sets the rate to
// DecreaseFactor times what it took then and the plateau halfway back up.
//
// (A throttle after less than a second of sending is a short sample; see
// TestAdaptiveRateShortSample.)
func TestAdaptiveRateFirstThrottle(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{Burst: 500})
	for i := range 100 { // 100 requests of 500 at once: no limit yet
		if !a.TryAcquireAt(t0, batch(500)) {
			t.Fatalf("request %d refused before any throttle", i)
		}
	}
	// The destination took 20 of them (10,000 records) in the second that
	// followed, then throttled.
	for i := range 20 {
		now := t0.Add(time.Duration(i+1) * 50 * time.Millisecond)
		a.CompleteAt(now, Result{Request: batch(500), Latency: now.Sub(t0)})
	}
	at := t0.Add(time.Second)
	a.CompleteAt(at, Result{Request: batch(500), Throttled: true, Latency: at.Sub(t0)})
	if got := a.Rate(); !near(got, 10000, 0.001) {
		t.Fatalf("rate after the first throttle %.0f, want what it took in that second (10,000)", got)
	}
	// The other requests of that burst throttle too: already answered for.
	for range 10 {
		a.CompleteAt(at.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Latency: at.Sub(t0)})
	}
	if got := a.Rate(); !near(got, 10000, 0.001) {
		t.Errorf("rate %.0f after throttles of requests sent before the decrease, want 10,000 still", got)
	}
	// Two seconds of sending at the rate, after the Retry-After pause: it
	// grows a fifth a second at most (slow start would double).
	now := deliver(a, at.Add(time.Second), at.Add(3*time.Second), 10*time.Millisecond, 100)
	if got := a.Rate(); got <= 10000 || got > 10000*1.2*1.2 {
		t.Fatalf("rate %.0f after 2 s of the careful climb from 10,000, want above it and at most 1.2² times it", got)
	}
	took := a.delivered.rate(now)
	a.CompleteAt(now, Result{Request: batch(100), Throttled: true, Latency: time.Millisecond})
	if got := a.Rate(); !near(got, 0.9*took, 0.001) {
		t.Errorf("rate %.0f after the careful climb's throttle, want 0.9 × what it took (%.0f)", got, took)
	}
	if got := a.wMax; !near(got, 0.95*took, 0.001) {
		t.Errorf("plateau %.0f after the careful climb's throttle, want halfway back up (%.0f)", got, 0.95*took)
	}
	if a.RetryBatchSize() != 0 {
		t.Errorf("batch size %d after an overload, want no opinion on what the destination takes (0)", a.RetryBatchSize())
	}
	// Past slow start, new batches carry BatchSpan of the rate.
	if got, want := a.MaxBatchSize(), int(a.Rate()*BatchSpan.Seconds()); got != want {
		t.Errorf("new batches of %d records at %.0f/s, want BatchSpan of the rate (%d)", got, a.Rate(), want)
	}
}

// TestAdaptiveRateShortSample: a throttle 100ms into sending says little
// about the rate (the destination's burst dominates): the rate becomes what
// was delivered, counted over a whole second (a floor), and slow start finds
// the rest.
func TestAdaptiveRateShortSample(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{Burst: 500})
	for range 8 {
		a.TryAcquireAt(t0, batch(500))
	}
	for i := range 4 { // 2,000 records in 100ms: the destination's burst
		at := t0.Add(time.Duration(i+1) * 25 * time.Millisecond)
		a.CompleteAt(at, Result{Request: batch(500), Latency: at.Sub(t0)})
	}
	at := t0.Add(100 * time.Millisecond)
	a.CompleteAt(at, Result{Request: batch(500), Throttled: true, Latency: at.Sub(t0)})
	// 2,000 records in 0.1s count as 2,000/s, not 20,000/s.
	if got := a.Rate(); got != 2000 {
		t.Fatalf("rate %.0f after a throttle 100ms in, want 2,000 (what was delivered, over a second)", got)
	}
	// Slow start: it doubles each second the destination keeps up.
	now := at.Add(time.Second) // the Retry-After pause
	for end := now.Add(2 * time.Second); now.Before(end); now = now.Add(10 * time.Millisecond) {
		if a.TryAcquireAt(now, batch(100)) {
			a.CompleteAt(now, Result{Request: batch(100), Latency: time.Millisecond})
		}
	}
	if got := a.Rate(); got < 6000 {
		t.Errorf("rate %.0f after 2s of slow start from 2,000, want about 8,000", got)
	}
}

// TestAdaptiveRatePaces: at rate r with a burst of one batch, after a quiet
// spell one batch goes at once and the next after batch/r; Admit says how
// long.
func TestAdaptiveRatePaces(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{InitialRate: 1000, Burst: 100})
	now := t0.Add(time.Hour) // a long quiet spell
	if !a.TryAcquireAt(now, batch(100)) {
		t.Fatal("first batch after a quiet spell refused")
	}
	if a.TryAcquireAt(now, batch(100)) {
		t.Fatal("a second batch went at once: the burst is one batch")
	}
	if ok, wait := a.Admit(now, batch(100)); ok || wait != 100*time.Millisecond {
		t.Fatalf("Admit = %v, %v; want refused for 100ms (100 records at 1,000/s)", ok, wait)
	}
	if !a.TryAcquireAt(now.Add(100*time.Millisecond), batch(100)) {
		t.Fatal("batch refused once the rate had earned it")
	}
}

// TestAdaptiveRatePacingSlack: with the default burst, a rate at which a
// batch takes less than PacingSlack lets PacingSlack of it go at once, so
// that a send the scheduler wakes late does not lose its tokens; at a rate
// where a batch takes longer, the burst stays one batch.
func TestAdaptiveRatePacingSlack(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{InitialRate: 200000})
	now := t0.Add(time.Hour)
	for i := range 4 { // 10 ms of 200,000/s: 2,000 records, four batches
		if !a.TryAcquireAt(now, batch(500)) {
			t.Fatalf("batch %d of a quiet spell's burst refused at 200,000/s", i)
		}
	}
	if a.TryAcquireAt(now, batch(500)) {
		t.Fatal("a fifth batch went at once: the burst is 10 ms of the rate")
	}
	slow := newRate(t, AdaptiveRateConfig{InitialRate: 1000})
	if !slow.TryAcquireAt(now, batch(500)) || slow.TryAcquireAt(now, batch(500)) {
		t.Fatal("at 1,000/s a quiet spell let other than one batch of 500 go at once")
	}
	// As the registry builds it (the writer's batch as the default burst):
	// the same; a configured burst is kept as it is.
	reg := newRate(t, AdaptiveRateConfig{InitialRate: 200000, BatchBurst: 500})
	for i := range 4 {
		if !reg.TryAcquireAt(now, batch(500)) {
			t.Fatalf("batch %d of a quiet spell's burst refused at 200,000/s with BatchBurst 500", i)
		}
	}
	set := newRate(t, AdaptiveRateConfig{InitialRate: 200000, Burst: 500})
	if !set.TryAcquireAt(now, batch(500)) || set.TryAcquireAt(now, batch(500)) {
		t.Fatal("burst: 500 configured at 200,000/s let other than one batch go at once")
	}
}

// TestAdaptiveRateCubicRecovery: after a throttle on the curve, where the
// destination took T, the rate climbs from 0.9 T back to a plateau W a
// quarter of the way down (0.975 T) over RecoveryTime, stays near it, and
// probes beyond only after.
func TestAdaptiveRateCubicRecovery(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{InitialRate: 10000, Burst: 100})
	a.slow, a.decrease = false, t0                                         // on the curve, as after a throttle
	now := deliver(a, t0, t0.Add(2*time.Second), 10*time.Millisecond, 100) // 10,000/s delivered
	took := a.delivered.rate(now)
	a.CompleteAt(now, Result{Request: batch(100), Throttled: true, Latency: time.Millisecond})
	if r := a.Rate(); !near(r, 0.9*took, 0.001) {
		t.Fatalf("rate %.0f after the throttle, want 0.9 × what it took (%.0f)", r, took)
	}
	w := a.wMax
	if !near(w, 0.975*took, 0.001) || !near(took, 10000, 0.02) {
		t.Fatalf("W = %.0f from a throttle at %.0f, want 0.975 × it, about 9,750", w, took)
	}
	rateAt := func(d time.Duration) float64 {
		end := now.Add(d)
		// Send at the current rate, as the writer would.
		for cur := now; cur.Before(end); cur = cur.Add(5 * time.Millisecond) {
			if a.TryAcquireAt(cur, batch(100)) {
				a.CompleteAt(cur, Result{Request: batch(100), Latency: time.Millisecond})
			}
		}
		now = end
		return a.Rate()
	}
	if r := rateAt(5 * time.Second); r <= 0.9*w || r >= w {
		t.Errorf("rate %.0f halfway through recovery, want between 0.9 W and W (%.0f)", r, w)
	}
	if r := rateAt(5 * time.Second); !near(r, w, 0.01) {
		t.Errorf("rate %.0f after the recovery time, want W = %.0f within 1%%", r, w)
	}
	if r := rateAt(2 * time.Second); !near(r, w, 0.02) {
		t.Errorf("rate %.0f 2s past the recovery time, want still about W (flat part)", r)
	}
	if r := rateAt(8 * time.Second); r <= 1.05*w {
		t.Errorf("rate %.0f 10s past the recovery time, want probing beyond W (%.0f)", r, w)
	}
}

// TestAdaptiveRateSteadyCapacity: a throttle within SteadySpread of what
// the destination took at the one before means the capacity holds still:
// the probe beyond the plateau is twice as slow, and slow start comes back
// after twice the recovery time past the plateau, not once; a throttle
// farther off resets it.
func TestAdaptiveRateSteadyCapacity(t *testing.T) {
	run := func(lastTook float64) (*AdaptiveRate, time.Time) {
		a := newRate(t, AdaptiveRateConfig{InitialRate: 10000, Burst: 100})
		a.slow, a.decrease, a.lastTook = false, t0, lastTook
		now := deliver(a, t0, t0.Add(2*time.Second), 10*time.Millisecond, 100)
		a.CompleteAt(now, Result{Request: batch(100), Throttled: true, Latency: time.Millisecond})
		return a, now
	}
	// Sends at up to 20,000/s, enough for the rate to grow, until d after
	// the throttle.
	sendFor := func(a *AdaptiveRate, from time.Time, d time.Duration) {
		for cur := from; cur.Before(from.Add(d)); cur = cur.Add(5 * time.Millisecond) {
			if a.TryAcquireAt(cur, batch(100)) {
				a.CompleteAt(cur, Result{Request: batch(100), Latency: time.Millisecond})
			}
		}
	}
	steady, at := run(10200)
	fresh, at2 := run(0)
	far, at3 := run(13000)
	if steady.steady != 1 || fresh.steady != 0 || far.steady != 0 {
		t.Fatalf("steady = %d, %d, %d after throttles at 2%%, none and 30%% from the last; want 1, 0, 0", steady.steady, fresh.steady, far.steady)
	}
	w := steady.wMax
	// 19 s after the throttle, 9 s past the plateau.
	sendFor(steady, at, 19*time.Second)
	sendFor(fresh, at2, 19*time.Second)
	sendFor(far, at3, 19*time.Second)
	if r := steady.Rate(); r > 1.02*w {
		t.Errorf("steady capacity: rate %.0f 9 s past the plateau, want at most 1.02 W (%.0f): the probe is twice as slow", r, w)
	}
	if r := fresh.Rate(); r < 1.05*w {
		t.Errorf("first throttle: rate %.0f 9 s past the plateau, want probing beyond 1.05 W (%.0f)", r, w)
	}
	// 22 s after: the fresh one probes in slow start again; the steady one
	// not before 30 s.
	sendFor(steady, at.Add(19*time.Second), 3*time.Second)
	sendFor(fresh, at2.Add(19*time.Second), 3*time.Second)
	if !fresh.slow || !fresh.careful {
		t.Error("first throttle: not in a careful slow start 2 recovery times after it")
	}
	if steady.slow {
		t.Error("steady capacity: back in slow start 2 recovery times after the throttle, want 3")
	}
}

// TestAdaptiveRateShrinksBatches: a destination whose burst is smaller than
// a batch throttles the same request again after the pause; the batch size
// halves, retries included, and grows back after a minute without a
// throttle.
func TestAdaptiveRateShrinksBatches(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{Burst: 500})
	a.TryAcquireAt(t0, batch(500))
	a.CompleteAt(t0.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Latency: time.Millisecond})
	if a.MaxBatchSize() != 0 {
		t.Fatal("one throttle shrank the batch")
	}
	// Retry-After: 1, then the same 500 records again.
	at := t0.Add(time.Second + 10*time.Millisecond)
	a.TryAcquireAt(at, batch(500))
	a.CompleteAt(at.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Latency: time.Millisecond})
	if got, retry := a.MaxBatchSize(), a.RetryBatchSize(); got != 250 || retry != 250 {
		t.Fatalf("batch size %d, retry batch size %d after two throttles in a row; want 250, 250", got, retry)
	}
	now := deliver(a, at.Add(2*time.Second), at.Add(62*time.Second), 100*time.Millisecond, 250)
	deliver(a, now, now.Add(time.Second), 100*time.Millisecond, 250)
	if got := a.MaxBatchSize(); got != 500 {
		t.Errorf("batch size %d after a minute without throttles, want 500 again", got)
	}
}

// TestAdaptiveRateOutageKeepsBatches: throttles that say the destination
// is unavailable (503), however many in a row with nothing delivered, are
// an outage, not a batch too large for a burst: the batch size stays.
func TestAdaptiveRateOutageKeepsBatches(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{Burst: 500})
	at := t0
	for range 10 {
		a.TryAcquireAt(at, batch(500))
		a.CompleteAt(at.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Unavailable: true, Latency: time.Millisecond})
		at = at.Add(time.Second + 10*time.Millisecond) // Retry-After: 1
	}
	if got := a.MaxBatchSize(); got != 0 {
		t.Errorf("batch size %d after an outage of 503s, want no opinion (0)", got)
	}
	// Nothing was delivered, yet the rate fell only by the factor per
	// round, not to what the destination took (nothing).
	c := newRate(t, AdaptiveRateConfig{Burst: 500, InitialRate: 1000})
	at = t0
	for range 10 {
		c.TryAcquireAt(at, batch(500))
		c.CompleteAt(at.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Unavailable: true, Latency: time.Millisecond})
		at = at.Add(time.Second + 10*time.Millisecond)
	}
	if r, want := c.Rate(), 1000*math.Pow(0.9, 10); !near(r, want, 0.01) {
		t.Errorf("rate %.0f after ten rounds of 503s from 1000, want %.0f (0.9 per round)", r, want)
	}
	// The same with 429s is a batch larger than the burst.
	b := newRate(t, AdaptiveRateConfig{Burst: 500})
	at = t0
	for range 2 {
		b.TryAcquireAt(at, batch(500))
		b.CompleteAt(at.Add(time.Millisecond), Result{Request: batch(500), Throttled: true, Latency: time.Millisecond})
		at = at.Add(time.Second + 10*time.Millisecond)
	}
	if got := b.MaxBatchSize(); got != 250 {
		t.Errorf("batch size %d after two 429s in a row, want 250", got)
	}
}

// TestAdaptiveRateSlowStart: from an initial rate, the rate doubles each
// second the destination keeps up, and never passes twice what it delivers.
func TestAdaptiveRateSlowStart(t *testing.T) {
	a := newRate(t, AdaptiveRateConfig{InitialRate: 1000, Burst: 10})
	// The writer sends as fast as the rate allows.
	now := t0
	for end := t0.Add(3 * time.Second); now.Before(end); now = now.Add(time.Millisecond) {
		if a.TryAcquireAt(now, batch(10)) {
			a.CompleteAt(now, Result{Request: batch(10), Latency: time.Millisecond})
		}
	}
	if r := a.Rate(); r < 4000 || r > 16000 {
		t.Errorf("rate %.0f after 3s of slow start from 1,000/s, want about 8,000", r)
	}
	// Now the pipeline has little to send: 1,000 records/s.
	for end := now.Add(10 * time.Second); now.Before(end); now = now.Add(10 * time.Millisecond) {
		if a.TryAcquireAt(now, batch(10)) {
			a.CompleteAt(now, Result{Request: batch(10), Latency: time.Millisecond})
		}
	}
	before := a.Rate()
	for end := now.Add(10 * time.Second); now.Before(end); now = now.Add(10 * time.Millisecond) {
		if a.TryAcquireAt(now, batch(10)) {
			a.CompleteAt(now, Result{Request: batch(10), Latency: time.Millisecond})
		}
	}
	if r := a.Rate(); r > before {
		t.Errorf("rate grew from %.0f to %.0f while only 1,000/s were delivered", before, r)
	}
}

// TestAdaptiveRateFailures: with decrease_on all a timeout halves the rate;
// with throttles only it does not.
func TestAdaptiveRateFailures(t *testing.T) {
	for _, c := range []struct {
		on   string
		want float64
	}{{"all", 0.5}, {"throttles", 1}} {
		a := newRate(t, AdaptiveRateConfig{InitialRate: 1000, DecreaseOn: c.on, Burst: 10})
		r0 := a.Rate()
		a.CompleteAt(t0.Add(time.Millisecond), Result{Request: batch(10), TimedOut: true, Latency: time.Millisecond})
		if got := a.Rate(); !near(got, c.want*r0, 0.001) {
			t.Errorf("decrease_on %s: rate %.0f after a timeout, want %.0f", c.on, got, c.want*r0)
		}
	}
}

func TestAdaptiveRateConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  AdaptiveRateConfig
		want string
	}{
		{AdaptiveRateConfig{}, ""},
		{AdaptiveRateConfig{Unit: "requests"}, `unit: must be "records" or "bytes", got "requests"`},
		{AdaptiveRateConfig{DecreaseFactor: 1}, "decrease_factor: must be in (0, 1), got 1"},
		{AdaptiveRateConfig{MinRate: 10, MaxRate: 5}, "max_rate: must not be below min_rate (10), got 5"},
		{AdaptiveRateConfig{InitialRate: 50, MaxRate: 20}, "initial_rate: must not exceed max_rate (20), got 50"},
		{AdaptiveRateConfig{InitialRate: math.Inf(1)}, "initial_rate: must be a finite number not below 0, got +Inf"},
		{AdaptiveRateConfig{DecreaseOn: "errors"}, `decrease_on: must be "throttles" or "all", got "errors"`},
		{AdaptiveRateConfig{Burst: -1}, "burst: must not be negative, got -1"},
		{AdaptiveRateConfig{Scope: "cluster"}, `scope: must be "worker" or "group", got "cluster"`},
		{AdaptiveRateConfig{RecoveryTime: -time.Second}, "recovery_time: must be positive, got -1s"},
	} {
		err := c.cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.cfg, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
	var d AdaptiveRateConfig
	d.ApplyDefaults()
	if d != (AdaptiveRateConfig{Kind: KindAdaptiveRate, Unit: "records", MinRate: 1, DecreaseFactor: 0.9, RecoveryTime: 10 * time.Second, DecreaseOn: "all", Scope: ScopeWorker}) {
		t.Errorf("defaults %+v", d)
	}
}
