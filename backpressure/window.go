package backpressure

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/spillway-io/spillway/field"
)

// SlidingWindowConfig sets a SlidingWindow's limits. A zero limit leaves
// that dimension unlimited; at least one must be positive.
type SlidingWindowConfig struct {
	Window  time.Duration // window length; default 1s
	Records int           // records per window; 0 = records unlimited
	Bytes   int           // bytes per window; 0 = bytes unlimited
}

func (c *SlidingWindowConfig) setDefaults() {
	if c.Window == 0 {
		c.Window = time.Second
	}
}

func (c SlidingWindowConfig) validate(p string, e *field.List) {
	if c.Window < 0 {
		e.Add(join(p, "window"), "must be positive, got %v", c.Window)
	}
	c.validateLimits(p, e)
}

func (c SlidingWindowConfig) validateLimits(p string, e *field.List) {
	if c.Records < 0 {
		e.Add(join(p, "records_per_window"), "must not be negative, got %d", c.Records)
	}
	if c.Bytes < 0 {
		e.Add(join(p, "bytes_per_window"), "must not be negative, got %d", c.Bytes)
	}
	if c.Records == 0 && c.Bytes == 0 {
		e.Add(join(p, "records_per_window"), "a sliding window needs records_per_window or bytes_per_window")
	}
}

// SlidingWindow admits at most a configured number of records and bytes
// per window, smoothly: it keeps the counts of the current and the
// previous fixed window and estimates the sliding count as
//
//	previous × (1 − elapsed fraction of the current window) + current
//
// (the sliding window counter of Cloudflare's and Kong's rate limiters).
// A saturated stream is admitted at an even pace rather than a burst at
// each window start; only the first window after an idle period can be
// used at once. Admissions beyond a window's limit (an oversized request,
// RegisterInFlight without ShouldBlock) carry over into the next windows,
// so the long-run rate holds. A request larger than the limit passes once
// the window is empty.
//
// Waiters are not queued (see TokenBucket). Create it with
// NewSlidingWindow; it is safe for concurrent use.
type SlidingWindow struct {
	mu     sync.Mutex
	window time.Duration
	origin time.Time // start of window 0
	idx    int64     // index of the current window
	rec    counter
	byt    counter
	sig    Signal
}

// counter is one dimension of a SlidingWindow.
type counter struct {
	limit int64 // 0 = unlimited
	prev  int64 // counted in the previous window
	cur   int64 // counted in the current window
}

var _ Gate = (*SlidingWindow)(nil)

// NewSlidingWindow returns an empty SlidingWindow whose windows start now.
func NewSlidingWindow(cfg SlidingWindowConfig) (*SlidingWindow, error) {
	var e field.List
	cfg.validate("", &e)
	if err := e.Err(); err != nil {
		return nil, fmt.Errorf("sliding window: %w", err)
	}
	cfg.setDefaults()
	return &SlidingWindow{
		window: cfg.Window,
		origin: time.Now(),
		rec:    counter{limit: int64(cfg.Records)},
		byt:    counter{limit: int64(cfg.Bytes)},
	}, nil
}

// SetLimit changes the limits per window (zero = unlimited; at least one
// must be positive). Counts so far are kept; blocked Acquire calls are
// woken to recompute their wait, so the change takes effect at once.
func (w *SlidingWindow) SetLimit(records, bytes int) error {
	var e field.List
	SlidingWindowConfig{Records: records, Bytes: bytes}.validateLimits("", &e)
	if err := e.Err(); err != nil {
		return fmt.Errorf("sliding window: %w", err)
	}
	w.mu.Lock()
	w.rec.limit, w.byt.limit = int64(records), int64(bytes)
	w.mu.Unlock()
	w.sig.Notify()
	return nil
}

// Limit returns the current configuration.
func (w *SlidingWindow) Limit() SlidingWindowConfig {
	w.mu.Lock()
	defer w.mu.Unlock()
	return SlidingWindowConfig{Window: w.window, Records: int(w.rec.limit), Bytes: int(w.byt.limit)}
}

// TryAcquire admits req if the sliding counts leave room for it now.
func (w *SlidingWindow) TryAcquire(req Request) bool {
	w.mu.Lock()
	ok, _ := w.tryLocked(time.Now(), req)
	w.mu.Unlock()
	return ok
}

// TryAcquireAt is TryAcquire at time now; calls should use non-decreasing
// times.
func (w *SlidingWindow) TryAcquireAt(now time.Time, req Request) bool {
	w.mu.Lock()
	ok, _ := w.tryLocked(now, req)
	w.mu.Unlock()
	return ok
}

// Acquire blocks until req fits or ctx ends.
func (w *SlidingWindow) Acquire(ctx context.Context, req Request) error {
	return Acquire(ctx, w, req)
}

// Complete does nothing: a sliding window does not look at outcomes.
func (w *SlidingWindow) Complete(Result) {}

// MaxBatchSize is the record limit per window (0 when records are
// unlimited).
func (w *SlidingWindow) MaxBatchSize() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.rec.limit)
}

// ShouldBlock reports whether req would be refused now.
func (w *SlidingWindow) ShouldBlock(req Request) bool {
	ok, _ := w.Admit(time.Now(), req)
	return !ok
}

// RegisterInFlight counts req in the current window, fitting or not.
func (w *SlidingWindow) RegisterInFlight(req Request) { w.Take(time.Now(), req) }

// RegisterCompleted does nothing.
func (w *SlidingWindow) RegisterCompleted(Result) {}

func (w *SlidingWindow) tryLocked(now time.Time, req Request) (bool, time.Duration) {
	f := w.advanceLocked(now)
	ok1, w1 := w.rec.admits(req.Records, f, w.window)
	ok2, w2 := w.byt.admits(req.Bytes, f, w.window)
	if !ok1 || !ok2 {
		return false, max(w1, w2)
	}
	w.rec.take(req.Records)
	w.byt.take(req.Bytes)
	return true, 0
}

// Admit reports whether req fits at now and otherwise how long until it
// will if nothing else is counted.
func (w *SlidingWindow) Admit(now time.Time, req Request) (bool, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.advanceLocked(now)
	ok1, w1 := w.rec.admits(req.Records, f, w.window)
	ok2, w2 := w.byt.admits(req.Bytes, f, w.window)
	if ok1 && ok2 {
		return true, 0
	}
	return false, max(w1, w2)
}

// Take counts req in the window of now, fitting or not.
func (w *SlidingWindow) Take(now time.Time, req Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.advanceLocked(now)
	w.rec.take(req.Records)
	w.byt.take(req.Bytes)
}

// advanceLocked rolls the windows forward to now and returns the elapsed
// fraction of the current window, in (0, 1]. Windows are closed on the
// right: the instant a window ends still belongs to it, so a stream paced
// to end each window exactly at the limit gets the whole limit (with
// windows closed on the left, the last request of each window would fall
// into the next one and a saturated stream would lose one request per
// window).
func (w *SlidingWindow) advanceLocked(now time.Time) float64 {
	el := now.Sub(w.origin)
	if el <= 0 {
		return 0
	}
	k := int64((el - 1) / w.window)
	if k < w.idx {
		// The clock went backwards (or a caller passed an older time):
		// stay in the current window.
		return 0
	}
	if k > w.idx {
		w.rec.roll(k - w.idx)
		w.byt.roll(k - w.idx)
		w.idx = k
	}
	return float64(el-time.Duration(k)*w.window) / float64(w.window)
}

// roll moves n windows forward. Counts above the limit (from oversized
// requests) carry over: each window absorbs at most limit of them.
func (c *counter) roll(n int64) {
	if c.limit == 0 || n > c.cur/c.limit+1 {
		c.prev, c.cur = 0, 0
		return
	}
	c.prev = min(max(c.cur-(n-1)*c.limit, 0), c.limit)
	c.cur = max(c.cur-n*c.limit, 0)
}

// tolerance absorbs float rounding in the window arithmetic.
const tolerance = 1e-9

// admits reports whether n more fit at elapsed fraction f (the whole limit,
// for a request larger than it) and otherwise how long until they will if
// nothing else is counted.
func (c *counter) admits(n int, f float64, window time.Duration) (bool, time.Duration) {
	if c.limit == 0 || n <= 0 {
		return true, 0
	}
	lim := float64(c.limit)
	need := min(float64(n), lim)
	prev, cur := float64(c.prev), float64(c.cur)
	if prev*(1-f)+cur+need <= lim*(1+tolerance) {
		return true, 0
	}
	// When, counted in windows from the start of the current one, the
	// estimate leaves room for need.
	var at float64
	if cur+need <= lim {
		// Later in this window, as the previous window's weight fades.
		at = 1 - (lim-need-cur)/prev
	} else {
		// In window j after this one, where the carried count c leaves room:
		// c = cur - j×limit ≤ limit - need, with p = min(its predecessor,
		// limit) fading out.
		j := max(1, math.Ceil((cur+need-lim)/lim))
		c := max(cur-j*lim, 0)
		p := min(max(cur-(j-1)*lim, 0), lim)
		var fstar float64
		if p > 0 {
			fstar = max(1-(lim-need-c)/p, 0)
		}
		at = j + fstar
	}
	// Rounded to the nearest nanosecond, not up: a wake-up a nanosecond
	// late would miss the end of a window (see advanceLocked); the
	// tolerance in the check above absorbs the rounding.
	d := math.Round((at - f) * float64(window))
	if d >= math.MaxInt64 {
		return false, Never
	}
	return false, max(time.Duration(d), time.Nanosecond)
}

func (c *counter) take(n int) {
	if c.limit == 0 || n <= 0 {
		return
	}
	c.cur += int64(n)
}

// Watch subscribes ch to SetLimit.
func (w *SlidingWindow) Watch(_ Request, ch chan<- struct{}, on bool) { w.sig.Watch(ch, on) }
