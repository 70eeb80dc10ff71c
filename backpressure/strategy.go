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
	// Unavailable qualifies Throttled: the destination said it is down or
	// overloaded as a whole (HTTP 503), not limiting this client's rate
	// (429), so the request's size is not in question.
	Unavailable bool
	TimedOut    bool
	Latency     time.Duration
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

// Gate is a Strategy that can also be checked without being charged,
// charged without being checked, and waited on. Composite and MultiTier
// take any Gate as a member or tier and acquire all of them
// all-or-nothing at one instant, then wait on all of them without
// polling. Every strategy of this package is a Gate; a strategy written
// elsewhere becomes one by adding Admit, Take and Watch (see the Gate
// example), and can implement its Acquire method with the Acquire
// function and its Watch with a Signal.
//
// Every method must be safe for concurrent use and must not block beyond
// a short critical section.
type Gate interface {
	Strategy
	// TryAcquireAt is Admit and, if admitted, Take, atomically with
	// respect to the gate's other callers: at the same now and with no
	// change in between, it admits exactly when Admit says ok (Acquire
	// relies on it). TryAcquire(req) is TryAcquireAt(time.Now(), req).
	TryAcquirerAt
	// Admit reports whether req could be admitted at now, registering
	// nothing. When it cannot, wait is how long until it could if nothing
	// else changed (positive), or Never when only an event (a completion,
	// a limit change) can admit it.
	Admit(now time.Time, req Request) (ok bool, wait time.Duration)
	// Take registers req in flight at now whether or not Admit would admit
	// it (a token bucket goes into debt, AIMD over its limit). Composite
	// and MultiTier call it after Admit said yes at the same now, and
	// from RegisterInFlight (Flink's two steps) unconditionally.
	Take(now time.Time, req Request)
	// Watch subscribes ch (on) to, or unsubscribes it (off) from, every
	// change that can make req admissible sooner than Admit's wait said:
	// completions, limit changes. On such a change the gate sends on ch
	// without blocking (ch has a buffer of one, so a pending wake-up is
	// enough); Signal does exactly that. A gate that only time can change
	// may do nothing.
	Watch(req Request, ch chan<- struct{}, on bool)
}

// Never is the wait Gate.Admit returns for a request that only an event
// (a completion, a limit change) can admit.
const Never time.Duration = -1

// combineWait merges the waits of two refusing gates: the request can pass
// only once both allow it, so the longer wait wins and Never dominates.
func combineWait(a, b time.Duration) time.Duration {
	if a == Never || b == Never {
		return Never
	}
	return max(a, b)
}

// Acquire blocks until g admits req (and registers it, as g.TryAcquireAt
// does) or ctx ends, in which case it returns ctx.Err() and nothing is
// registered. It is the loop behind the Acquire method of every strategy
// of this package, for a Gate written elsewhere to implement its own with:
// try; if refused, subscribe with g.Watch, then wait for the timer Admit
// asked for, a signal, or the end of ctx, and try again. It never polls:
// a gate whose Admit says Never sleeps until its Watch signals.
//
// Waiters are not queued: a woken Acquire races other callers for the
// gate.
func Acquire(ctx context.Context, g Gate, req Request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if g.TryAcquire(req) { // the fast path: admitted at once
		return nil
	}
	ch := make(chan struct{}, 1)
	g.Watch(req, ch, true)
	defer g.Watch(req, ch, false)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		// Tried again after subscribing, so a change between the first try
		// and Watch is not missed.
		now := time.Now()
		if g.TryAcquireAt(now, req) {
			return nil
		}
		ok, wait := g.Admit(now, req)
		if ok {
			continue // changed since the try: try again at once
		}
		var tc <-chan time.Time
		if wait != Never {
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

// Signal wakes the goroutines waiting on a Gate (in Acquire, of the gate
// itself or of a Composite or MultiTier containing it) when the gate's
// state changes: a Gate's Watch subscribes to it and its setters and
// Complete call Notify. The zero value is ready to use; it is safe for
// concurrent use; Notify costs one atomic load while nobody watches.
type Signal struct {
	n    atomic.Int32
	mu   sync.Mutex
	subs []chan<- struct{}
}

// Watch subscribes ch (on) to, or unsubscribes it (off) from, Notify.
func (s *Signal) Watch(ch chan<- struct{}, on bool) {
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

// Notify sends on every subscribed channel that has room, without
// blocking.
func (s *Signal) Notify() {
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
		return Never
	}
	return time.Duration(d)
}

// Unlimited admits every request at once. It measures the cost of
// consulting a strategy and stands in where no limit is configured. Its
// zero value is ready to use and it is safe for concurrent use.
type Unlimited struct{}

var _ Gate = Unlimited{}

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

// Admit admits req.
func (Unlimited) Admit(time.Time, Request) (bool, time.Duration) { return true, 0 }

// Take does nothing.
func (Unlimited) Take(time.Time, Request) {}

// Watch does nothing: nothing changes.
func (Unlimited) Watch(Request, chan<- struct{}, bool) {}
