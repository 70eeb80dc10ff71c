package sinks

import (
	"context"
	"slices"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/pipeline"
)

// Admission is a gate the writer consults before every request. The
// circuit breaker (WithBreaker) and the rate-limiting strategy
// (WithStrategy) are admissions; WithAdmission adds others. The writer
// asks its admissions in order, once a batch is due: each may bound the
// batch's size, then each must admit it; a request goes out only when all
// did.
//
// MaxBatch and TryAdmit are called from the writer's run loop with its
// lock held: they must be quick, must not block and must not call the
// writer. The done functions TryAdmit and Admit return are called from
// request goroutines, concurrently with the loop.
type Admission interface {
	// MaxBatch is the largest batch, in records, the admission lets
	// through now, or 0 for no bound. retry says the next batch is a
	// retry: the writer resends failed entries whole (the same records,
	// so the same idempotency key) unless an admission bounds retries too,
	// as a breaker does for its small probe.
	MaxBatch(retry bool) int
	// TryAdmit admits b at now without blocking and registers it, and
	// returns the function to call exactly once with the request's
	// outcome. When it refuses, done is nil and wait says when to ask
	// again: after wait when positive; at the writer's next change of
	// state (a request completing, records buffered) for WaitChange; or,
	// for WaitBlock, by blocking in Admit (the admission must implement
	// BlockingAdmission). On a refusal with a wait the writer puts the
	// batch back and keeps its records; on WaitBlock it holds the batch
	// and sends it next, in write order.
	TryAdmit(now time.Time, b *Batch) (done func(Outcome), wait time.Duration)
}

// BlockingAdmission is an Admission that cannot tell how long a refusal
// lasts (a rate-limiting strategy woken by refills, completions and limit
// changes it alone sees): the writer then blocks in Admit.
type BlockingAdmission interface {
	Admission
	// Admit blocks until b is admitted, registers it and returns its done
	// function, or returns ctx's error with nothing registered. It is
	// called without the writer's lock, only after TryAdmit answered
	// WaitBlock for the same batch. It waits on timers and signals, never
	// by polling.
	Admit(ctx context.Context, b *Batch) (done func(Outcome), err error)
}

// Waits an Admission's TryAdmit answers besides a positive duration.
const (
	// WaitChange: only a change the writer sees (a request completing)
	// can admit the batch; the writer asks again then.
	WaitChange time.Duration = -1
	// WaitBlock: the admission cannot say; the writer blocks in its Admit.
	WaitBlock time.Duration = -2
)

// Batch is a request the writer is about to send, as an Admission sees
// it. It is valid only during the call it is passed to; Records must not
// be modified or kept.
type Batch struct {
	Records []pipeline.Record
	Bytes   int  // payload bytes (pipeline.Record.Size), oversized records excluded
	Retry   bool // failed entries sent again

	req    backpressure.Request
	hasReq bool
}

// Request describes the batch for a rate-limiting strategy, with each
// topic-partition's share (records of a batch come in runs per
// partition). It is computed on the first call.
func (b *Batch) Request() backpressure.Request {
	if b.hasReq {
		return b.req
	}
	req := backpressure.Request{Records: len(b.Records), Bytes: b.Bytes}
	for i := range b.Records {
		o := &b.Records[i].Origin
		j := len(req.Parts) - 1
		if j < 0 || req.Parts[j].Topic != o.Topic || req.Parts[j].Partition != o.Partition {
			j = slices.IndexFunc(req.Parts, func(p backpressure.Part) bool { return p.Topic == o.Topic && p.Partition == o.Partition })
			if j < 0 {
				req.Parts = append(req.Parts, backpressure.Part{Topic: o.Topic, Partition: o.Partition})
				j = len(req.Parts) - 1
			}
		}
		req.Parts[j].Records++
		req.Parts[j].Bytes += b.Records[i].Size()
	}
	if b.Bytes == 0 {
		for _, p := range req.Parts {
			req.Bytes += p.Bytes
		}
	}
	b.req, b.hasReq = req, true
	return req
}

// Outcome is what became of an admitted request, as its done function
// learns it.
type Outcome struct {
	// NotSent: the request was admitted but not made (a later admission
	// refused it, or the writer is shutting down). It says nothing of the
	// destination's health.
	NotSent bool
	// Failed counts entries that failed for a reason the destination may
	// cure by slowing down: retryable and throttled ones. Fatal entries
	// are the records' fault and are not counted.
	Failed    int
	Throttled bool // the destination asked to slow down
	// Unavailable: every throttled entry said the destination is down or
	// overloaded as a whole (ThrottledError.Unavailable), not rate
	// limiting.
	Unavailable bool
	TimedOut    bool          // the request hit request_timeout
	Latency     time.Duration // from send to outcome; zero when unknown
}

// StrategyAdmission adapts a rate-limiting strategy (Flink's
// RateLimitingStrategy) to an Admission: it bounds new batches to the
// strategy's MaxBatchSize, admits with TryAcquire (at the writer's clock
// reading when the strategy is a backpressure.TryAcquirerAt), blocks in
// Acquire when refused, and reports each outcome with Complete.
func StrategyAdmission(s backpressure.Strategy) BlockingAdmission {
	a := &strategyAdmission{s: s}
	a.at, _ = s.(backpressure.TryAcquirerAt)
	return a
}

type strategyAdmission struct {
	s  backpressure.Strategy
	at backpressure.TryAcquirerAt // nil: the strategy reads the clock itself
}

func (a *strategyAdmission) MaxBatch(retry bool) int {
	if retry {
		// A retry keeps its composition, unless the strategy found the
		// destination cannot take a request that large at all.
		if r, ok := a.s.(backpressure.RetryBatchSizer); ok {
			return r.RetryBatchSize()
		}
		return 0
	}
	return a.s.MaxBatchSize()
}

func (a *strategyAdmission) TryAdmit(now time.Time, b *Batch) (func(Outcome), time.Duration) {
	req := b.Request()
	var ok bool
	if a.at != nil {
		ok = a.at.TryAcquireAt(now, req)
	} else {
		ok = a.s.TryAcquire(req)
	}
	if !ok {
		return nil, WaitBlock
	}
	return a.done(req), 0
}

func (a *strategyAdmission) Admit(ctx context.Context, b *Batch) (func(Outcome), error) {
	req := b.Request()
	if err := a.s.Acquire(ctx, req); err != nil {
		return nil, err
	}
	return a.done(req), nil
}

func (a *strategyAdmission) done(req backpressure.Request) func(Outcome) {
	return func(o Outcome) {
		// A request not made completes as a clean one: the strategy has no
		// other way to take it out of flight.
		a.s.Complete(backpressure.Result{Request: req, Failed: o.Failed, Throttled: o.Throttled, Unavailable: o.Unavailable, TimedOut: o.TimedOut, Latency: o.Latency})
	}
}
