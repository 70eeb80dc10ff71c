package backpressure

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-io/spillway/field"
	"golang.org/x/time/rate"
)

// TokenBucketConfig sets a TokenBucket's rates. A zero rate leaves that
// dimension unlimited; at least one must be positive.
type TokenBucketConfig struct {
	RecordsPerSecond float64 // records refilled per second; 0 = records unlimited
	BytesPerSecond   float64 // bytes refilled per second; 0 = bytes unlimited
	RecordBurst      int     // bucket size in records; default one second's worth (at least 1)
	ByteBurst        int     // bucket size in bytes; default one second's worth (at least 1)
	// Scope is whose rates these are: one worker's (empty or worker) or
	// the consumer group's (group; see Shared).
	Scope Scope
}

func (c *TokenBucketConfig) setDefaults() {
	if c.RecordBurst == 0 && c.RecordsPerSecond > 0 {
		c.RecordBurst = burstFor(c.RecordsPerSecond)
	}
	if c.ByteBurst == 0 && c.BytesPerSecond > 0 {
		c.ByteBurst = burstFor(c.BytesPerSecond)
	}
}

func burstFor(perSecond float64) int { return int(min(max(math.Ceil(perSecond), 1), math.MaxInt32)) }

func (c TokenBucketConfig) validate(p string, e *field.List) {
	rate := func(key string, v float64) {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			e.Add(join(p, key), "must be a finite number not below 0, got %v", v)
		}
	}
	rate("records_per_second", c.RecordsPerSecond)
	rate("bytes_per_second", c.BytesPerSecond)
	if c.RecordsPerSecond == 0 && c.BytesPerSecond == 0 {
		e.Add(join(p, "records_per_second"), "a token bucket needs records_per_second or bytes_per_second")
	}
	burst := func(key string, v int, perSecond float64, rateKey string) {
		switch {
		case v < 0:
			e.Add(join(p, key), "must not be negative, got %d", v)
		case v > 0 && perSecond == 0:
			e.Add(join(p, key), "only with %s", rateKey)
		}
	}
	burst("record_burst", c.RecordBurst, c.RecordsPerSecond, "records_per_second")
	burst("byte_burst", c.ByteBurst, c.BytesPerSecond, "bytes_per_second")
}

// TokenBucket limits records per second and bytes per second with two
// token buckets (golang.org/x/time/rate limiters); a request passes when
// both hold enough tokens and then takes from both, or from neither.
//
// A request larger than a bucket's burst passes once that bucket is full
// and leaves it in debt for the excess, which later requests wait out: the
// long-run rate holds and nothing deadlocks.
//
// Waiters are not queued: they are woken when tokens should suffice (or on
// SetRate) and race for them, so a stream of small TryAcquire calls can
// delay a large Acquire. The writer, a single caller, is not affected.
//
// Create it with NewTokenBucket; it is safe for concurrent use.
type TokenBucket struct {
	// Why not rate.Limiter alone: a Limiter admits nothing larger than its
	// burst (AllowN refuses, WaitN fails), cannot check without taking
	// (needed to take from two buckets, or several tiers, all-or-nothing),
	// and its WaitN computes the delay once at the old rate, so SetLimit
	// neither shortens nor wakes a wait in progress. The limiters keep the
	// token state; admission across both, debt for oversized requests and
	// the wait loop (timer or SetRate, whichever first) are written here.
	mu   sync.Mutex // serialises try (check-then-take across both buckets) and SetRate
	rec  bucket
	byt  bucket
	cfg  TokenBucketConfig // guarded by mu
	base TokenBucketConfig // as built, defaults applied: what SetLimits(Limits{}) restores
	live Limits            // guarded by mu: set by SetLimits
	// share of the group's rates (scope group), guarded by mu; 0: not
	// set, 1.
	share float64
	sig   Signal
}

// bucket is one dimension of a TokenBucket. Its fields are atomic so the
// single-bucket fast path takes no lock of ours.
type bucket struct {
	lim   atomic.Pointer[rate.Limiter] // nil while the dimension is unlimited
	burst atomic.Int64                 // stored before lim is published
}

var _ Gate = (*TokenBucket)(nil)

// NewTokenBucket returns a TokenBucket with full buckets.
func NewTokenBucket(cfg TokenBucketConfig) (*TokenBucket, error) {
	var e field.List
	cfg.validate("", &e)
	if err := e.Err(); err != nil {
		return nil, fmt.Errorf("token bucket: %w", err)
	}
	tb := &TokenBucket{}
	tb.set(time.Now(), cfg)
	tb.base = tb.cfg
	return tb, nil
}

func (tb *TokenBucket) set(now time.Time, cfg TokenBucketConfig) {
	cfg.setDefaults()
	tb.rec.set(now, cfg.RecordsPerSecond, cfg.RecordBurst)
	tb.byt.set(now, cfg.BytesPerSecond, cfg.ByteBurst)
	tb.cfg = cfg
}

func (b *bucket) set(now time.Time, perSecond float64, burst int) {
	lim := b.lim.Load()
	switch {
	case perSecond == 0:
		b.lim.Store(nil)
		b.burst.Store(0)
	case lim == nil:
		// A bucket that starts limiting starts full.
		b.burst.Store(int64(burst))
		b.lim.Store(rate.NewLimiter(rate.Limit(perSecond), burst))
	default:
		lim.SetBurstAt(now, burst)
		lim.SetLimitAt(now, rate.Limit(perSecond))
		b.burst.Store(int64(burst))
	}
}

// SetRate changes the rates and bursts at once (zero bursts take their
// defaults). Tokens already in a bucket are kept, capped at the new burst;
// the new rate applies from now on, and blocked Acquire calls are woken to
// recompute their wait, so the change takes effect within one refill
// period. It returns an error, changing nothing, if cfg is invalid.
func (tb *TokenBucket) SetRate(cfg TokenBucketConfig) error {
	var e field.List
	cfg.validate("", &e)
	if err := e.Err(); err != nil {
		return fmt.Errorf("token bucket: %w", err)
	}
	tb.mu.Lock()
	tb.set(time.Now(), cfg)
	tb.mu.Unlock()
	tb.sig.Notify()
	return nil
}

// Rate returns the current configuration, defaults applied.
func (tb *TokenBucket) Rate() TokenBucketConfig {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.cfg
}

// TryAcquire admits req if both buckets hold enough tokens now.
func (tb *TokenBucket) TryAcquire(req Request) bool {
	return tb.TryAcquireAt(time.Now(), req)
}

// TryAcquireAt is TryAcquire at time now; use it to read the clock once
// per batch. Calls should use non-decreasing times.
func (tb *TokenBucket) TryAcquireAt(now time.Time, req Request) bool {
	// One bucket involved and no debt to create: the Limiter alone is
	// atomic, no lock of ours is needed.
	rl, bl := tb.rec.lim.Load(), tb.byt.lim.Load()
	if bl == nil && rl != nil && int64(req.Records) <= tb.rec.burst.Load() {
		return rl.AllowN(now, req.Records)
	}
	if rl == nil && bl != nil && int64(req.Bytes) <= tb.byt.burst.Load() {
		return bl.AllowN(now, req.Bytes)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if rl != nil && bl != nil && int64(req.Records) <= tb.rec.burst.Load() && int64(req.Bytes) <= tb.byt.burst.Load() {
		// Both buckets, no debt: check one, take from the other (which
		// checks as it takes), then take from the first. Three calls into
		// the limiters instead of four.
		if ok, _ := tb.byt.admits(now, req.Bytes); !ok || !rl.AllowN(now, req.Records) {
			return false
		}
		tb.byt.take(now, req.Bytes) // cannot fail but to a concurrent Composite: then in debt
		return true
	}
	ok, _ := tb.Admit(now, req)
	if ok {
		tb.Take(now, req)
	}
	return ok
}

// Acquire blocks until both buckets admit req or ctx ends.
func (tb *TokenBucket) Acquire(ctx context.Context, req Request) error {
	return Acquire(ctx, tb, req)
}

// Complete does nothing: a token bucket does not look at outcomes.
func (tb *TokenBucket) Complete(Result) {}

// MaxBatchSize is the record burst (0 when records are unlimited): a
// larger batch would put the bucket into debt.
func (tb *TokenBucket) MaxBatchSize() int {
	if tb.rec.lim.Load() == nil {
		return 0
	}
	return int(tb.rec.burst.Load())
}

// ShouldBlock reports whether req would be refused now.
func (tb *TokenBucket) ShouldBlock(req Request) bool {
	ok, _ := tb.Admit(time.Now(), req)
	return !ok
}

// RegisterInFlight takes req's tokens, going into debt if they are not
// there (Flink's registerInFlightRequest after shouldBlock).
func (tb *TokenBucket) RegisterInFlight(req Request) { tb.Take(time.Now(), req) }

// RegisterCompleted does nothing.
func (tb *TokenBucket) RegisterCompleted(Result) {}

// Admit reports whether both buckets hold enough tokens for req at now
// (are full, for a request larger than a burst) and otherwise how long
// until they will.
func (tb *TokenBucket) Admit(now time.Time, req Request) (bool, time.Duration) {
	ok1, w1 := tb.rec.admits(now, req.Records)
	ok2, w2 := tb.byt.admits(now, req.Bytes)
	if ok1 && ok2 {
		return true, 0
	}
	return false, max(w1, w2)
}

// admits reports whether the bucket holds n tokens at now (is full, when n
// exceeds the burst) and otherwise how long until it will.
func (b *bucket) admits(now time.Time, n int) (bool, time.Duration) {
	lim := b.lim.Load()
	if lim == nil || n <= 0 {
		return true, 0
	}
	need := float64(min(int64(n), b.burst.Load()))
	deficit := need - lim.TokensAt(now)
	if deficit <= 0 {
		return true, 0
	}
	return false, durationFor(deficit, float64(lim.Limit()))
}

// Take removes req's tokens at now, leaving a bucket in debt if they are
// not there.
func (tb *TokenBucket) Take(now time.Time, req Request) {
	tb.rec.take(now, req.Records)
	tb.byt.take(now, req.Bytes)
}

// take removes n tokens, leaving the bucket in debt if they are not there.
// A Limiter reserves at most burst tokens per call but lets reservations
// run up debt, so the excess is reserved in burst-sized parts.
func (b *bucket) take(now time.Time, n int) {
	lim := b.lim.Load()
	if lim == nil || n <= 0 {
		return
	}
	burst := max(b.burst.Load(), 1)
	if int64(n) <= burst && lim.AllowN(now, n) {
		return
	}
	for left := int64(n); left > 0; {
		c := min(left, burst)
		lim.ReserveN(now, int(c))
		left -= c
	}
}

// Watch subscribes ch to SetRate.
func (tb *TokenBucket) Watch(_ Request, ch chan<- struct{}, on bool) { tb.sig.Watch(ch, on) }
