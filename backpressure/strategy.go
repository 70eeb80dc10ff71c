package backpressure

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Part is one topic-partition's share of a request.
type Part struct {
	Topic     string
	Partition int32
	Records   int
	Bytes     int
}

// Request is one request the writer is about to send: its size in records
// and bytes and, optionally, how it splits across topic-partitions (needed
// only by MultiTier's topic and partition tiers). Parts may be nil.
type Request struct {
	Records int
	Bytes   int
	Parts   []Part
}

// Result is the outcome of an admitted request, reported with Complete.
// Request must be the request that was admitted (in-flight accounting
// subtracts it). Failed counts entries that failed for a reason the
// destination may cure by slowing down (retryable failures, throttled
// entries); entries rejected on their own merits (fatal, malformed) should
// not be counted. Throttled means the destination asked to slow down;
// TimedOut that the request hit its timeout. Latency is the time from send
// to outcome; zero means unknown.
type Result struct {
	Request   Request
	Failed    int
	Throttled bool
	TimedOut  bool
	Latency   time.Duration
}

// congested reports whether r is a congestion signal for AIMD.
func (r Result) congested() bool { return r.Throttled || r.TimedOut || r.Failed > 0 }

// Strategy decides when requests may be sent: Flink's RateLimitingStrategy
// (FLIP-242) with a context-aware Acquire. Every implementation in this
// package is safe for concurrent use.
type Strategy interface {
	// TryAcquire admits req if the strategy allows it now and registers it
	// in flight; it never blocks.
	TryAcquire(req Request) bool
	// Acquire blocks until req is admitted (and registers it in flight) or
	// ctx ends, in which case it returns ctx.Err() and nothing is
	// registered. It waits on timers and completion signals, never by
	// polling, and is woken by runtime limit changes.
	Acquire(ctx context.Context, req Request) error
	// Complete registers the outcome of an admitted request. Call it exactly
	// once per admitted request, whatever the outcome.
	Complete(res Result)
	// MaxBatchSize is the largest batch, in records, the writer should form
	// now; 0 means no opinion.
	MaxBatchSize() int
}

// TryAcquirerAt is an optional ability of a Strategy, found by type
// assertion: TryAcquireAt(now, req) is TryAcquire at time now, for a
// caller that has read the clock already (the writer reads it once per
// loop). It saves a clock read per request, about 40 ns on the machines
// of FACTS.md, half of a token bucket's cost. Times passed should not
// decrease. Every strategy of this package has it.
type TryAcquirerAt interface {
	TryAcquireAt(now time.Time, req Request) bool
}

// gate is what the strategies of this package implement on top of
// Strategy so that Composite and MultiTier can acquire several of them
// all-or-nothing at one instant and wait on all of them without polling.
type gate interface {
	Strategy
	TryAcquirerAt
	// admitAt reports whether req could be admitted at now. When it cannot,
	// wait is how long until it could if nothing else changed, or never
	// when only an event (a completion, a limit change) can admit it.
	admitAt(now time.Time, req Request) (ok bool, wait time.Duration)
	// takeAt registers req in flight at now, admitted or not (a token bucket
	// goes into debt, AIMD over its limit).
	takeAt(now time.Time, req Request)
	// try admits req if allowed, atomically with respect to other callers
	// of the same strategy, reading the clock itself.
	try(req Request) (ok bool, wait time.Duration)
	// watch subscribes ch (on) to, or unsubscribes it (off) from, every
	// change that can make req admissible sooner than its wait says: limit
	// changes, completions.
	watch(req Request, ch chan struct{}, on bool)
}

// never is the wait of a request that only an event can admit.
const never time.Duration = -1

// combineWait merges the waits of two refusing gates: the request can pass
// only once both allow it, so the longer wait wins and never dominates.
func combineWait(a, b time.Duration) time.Duration {
	if a == never || b == never {
		return never
	}
	return max(a, b)
}

// acquire is the blocking loop shared by every strategy: try, and if
// refused wait for the timer the strategy asked for, a change signal from
// one of the strategies involved, or the end of ctx.
func acquire(ctx context.Context, g gate, req Request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if g.TryAcquire(req) { // the fast path: admitted at once
		return nil
	}
	ch := make(chan struct{}, 1)
	g.watch(req, ch, true)
	defer g.watch(req, ch, false)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		// Tried again after subscribing, so a change between the first try
		// and watch is not missed.
		ok, wait := g.try(req)
		if ok {
			return nil
		}
		var tc <-chan time.Time
		if wait != never {
			wait = max(wait, time.Nanosecond)
			if t == nil {
				t = time.NewTimer(wait)
			} else {
				t.Reset(wait)
			}
			tc = t.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-tc:
		}
	}
}

// signal wakes the goroutines waiting in Acquire (of this strategy or of a
// Composite or MultiTier containing it) when its state changes. Notifying
// costs one atomic load while nobody waits.
type signal struct {
	n    atomic.Int32
	mu   sync.Mutex
	subs []chan struct{}
}

func (s *signal) watch(ch chan struct{}, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.subs = append(s.subs, ch)
		s.n.Add(1)
		return
	}
	for i, c := range s.subs {
		if c == ch {
			last := len(s.subs) - 1
			s.subs[i] = s.subs[last]
			s.subs[last] = nil
			s.subs = s.subs[:last]
			s.n.Add(-1)
			return
		}
	}
}

func (s *signal) notify() {
	if s.n.Load() == 0 {
		return
	}
	s.mu.Lock()
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// durationFor is how long a deficit of tokens takes to refill at perSecond,
// rounded up to the nanosecond so that the deficit is covered by then.
func durationFor(deficit, perSecond float64) time.Duration {
	if deficit <= 0 {
		return 0
	}
	d := math.Ceil(deficit / perSecond * 1e9)
	if d >= math.MaxInt64 {
		return never
	}
	return time.Duration(d)
}

// Unlimited admits every request at once. It measures the cost of
// consulting a strategy and stands in where no limit is configured. Its
// zero value is ready to use and it is safe for concurrent use.
type Unlimited struct{}

var _ gate = Unlimited{}

// TryAcquire admits req.
func (Unlimited) TryAcquire(Request) bool { return true }

// TryAcquireAt admits req.
func (Unlimited) TryAcquireAt(time.Time, Request) bool { return true }

// Acquire admits req unless ctx is already done.
func (Unlimited) Acquire(ctx context.Context, _ Request) error { return ctx.Err() }

// Complete does nothing.
func (Unlimited) Complete(Result) {}

// MaxBatchSize has no opinion.
func (Unlimited) MaxBatchSize() int { return 0 }

// ShouldBlock never blocks.
func (Unlimited) ShouldBlock(Request) bool { return false }

// RegisterInFlight does nothing.
func (Unlimited) RegisterInFlight(Request) {}

// RegisterCompleted does nothing.
func (Unlimited) RegisterCompleted(Result) {}

func (Unlimited) admitAt(time.Time, Request) (bool, time.Duration) { return true, 0 }
func (Unlimited) takeAt(time.Time, Request)                        {}
func (Unlimited) try(Request) (bool, time.Duration)                { return true, 0 }
func (Unlimited) watch(Request, chan struct{}, bool)               {}
