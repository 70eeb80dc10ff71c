package sinks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// Run sends batches until ctx is cancelled, then waits for in-flight
// requests (whose contexts are cancelled too; their records stay
// unacknowledged and will be re-delivered). It returns the fatal error that
// stopped the job, or nil after ctx was cancelled.
func (w *Writer) Run(ctx context.Context) error {
	defer w.flushSummaries()
	var wg sync.WaitGroup
	defer wg.Wait()
	// On a fatal error, in-flight requests are cancelled before waiting.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		w.sweepAbandonedLocked()
		now := w.now()
		held := time.Duration(0) // > 0: an admission holds due data back this long
		refused := false
		for w.inflight < w.cfg.MaxInFlightRequests {
			// Before every batch too: a blocking admission may keep this
			// loop going for as long as records come.
			w.sweepAbandonedLocked()
			batch, ok := w.takeLocked(now, w.batchLimitLocked())
			if !ok {
				break
			}
			if batch.epoch != w.abandon.Epoch() && w.dropAbandonedLocked(&batch) {
				continue // nothing left to send in this batch
			}
			done, wait, err := w.admitLocked(ctx, &now, batch)
			if err != nil {
				// Shutting down while an admission held the batch: it is
				// abandoned and re-delivered later.
				w.mu.Unlock()
				w.release(batch.recs)
				return nil
			}
			if wait != 0 {
				// Refused: keep the data, first in line, and ask again after
				// the wait or at the next change.
				w.untakeLocked(batch)
				refused, held = true, max(wait, 0)
				break
			}
			w.inflight++
			w.stats.InFlightRequests.Add(1)
			held := w.holdLanesLocked(batch.recs)
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.submit(ctx, batch, done, held)
			}()
		}
		var next time.Time
		switch {
		case held > 0:
			next = now.Add(held)
		case !refused: // after a refusal until a change, only a change helps
			next = w.nextDeadlineLocked(now)
		}
		switch {
		case held > 0:
			w.task.Set(pipeline.Backpressured) // an admission holds due data back
		case w.inflight >= w.cfg.MaxInFlightRequests && w.bufCount >= w.cfg.MaxBatchSize:
			w.task.Set(pipeline.Backpressured) // full batches wait for a request slot
		case w.inflight > 0:
			w.task.Set(pipeline.Busy)
		default:
			w.task.Set(pipeline.Idle)
		}
		w.mu.Unlock()

		if !next.IsZero() {
			timer.Reset(max(next.Sub(now), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// flushSummaries logs what the summaries counted since their last lines.
func (w *Writer) flushSummaries() {
	now := w.now()
	w.failures.flush(w.log, now)
	w.deadLettered.flush(w.log, now)
	if w.breaker != nil {
		w.breaker.transitions.flush(w.log, now)
	}
}

// batchLimitLocked is the largest next batch the admissions let through,
// 0 for no bound.
func (w *Writer) batchLimitLocked() int {
	if len(w.admissions) == 0 {
		return 0
	}
	retry := len(w.retries) > 0
	limit := 0
	for _, a := range w.admissions {
		if m := a.MaxBatch(retry); m > 0 && (limit == 0 || m < limit) {
			limit = m
		}
	}
	return limit
}

// admitLocked asks every admission, in order, to admit batch. It returns
// the function reporting the request's outcome to all of them (nil
// without admissions) and wait 0, or, when one refuses, the wait it asked
// for (positive or WaitChange) after telling those already asked that the
// request is not made. An admission that answers WaitBlock is waited for
// with w.mu released and now is read again; err is ctx's error when ctx
// ended meanwhile.
func (w *Writer) admitLocked(ctx context.Context, now *time.Time, batch segment) (done func(Outcome), wait time.Duration, err error) {
	if len(w.admissions) == 0 {
		return nil, 0, nil
	}
	w.cur = Batch{Records: batch.recs, Bytes: batch.bytes, Retry: batch.retry}
	defer func() { w.cur = Batch{} }() // keep no reference to the records
	var first func(Outcome)
	var rest []func(Outcome) // allocated only with several admissions
	for _, a := range w.admissions {
		d, wait := a.TryAdmit(*now, &w.cur)
		if d == nil && wait == WaitBlock {
			if b, ok := a.(BlockingAdmission); ok {
				w.task.Set(pipeline.Backpressured)
				w.mu.Unlock()
				d, err = b.Admit(ctx, &w.cur)
				w.mu.Lock()
				*now = w.now()
			}
		}
		if d == nil {
			if first != nil {
				first(Outcome{NotSent: true})
			}
			for _, g := range rest {
				g(Outcome{NotSent: true})
			}
			if err != nil {
				return nil, 0, err
			}
			if wait <= 0 {
				wait = WaitChange
			}
			return nil, wait, nil
		}
		if first == nil {
			first = d
		} else {
			rest = append(rest, d)
		}
	}
	if rest == nil {
		return first, 0, nil
	}
	all := append([]func(Outcome){first}, rest...)
	return func(o Outcome) {
		for _, d := range all {
			d(o)
		}
	}, 0, nil
}

// submit sends one batch, reports its outcome to the admissions (done may
// be nil) and settles each record; then its lanes (held) are free.
func (w *Writer) submit(ctx context.Context, batch segment, done func(Outcome), held []lane) {
	w.stats.Requests.Add(1)
	var start time.Time
	if done != nil || w.observer != nil {
		start = w.now()
	}
	rctx, cancel := context.WithTimeoutCause(ctx, w.cfg.RequestTimeout, ErrRequestTimeout)
	err := w.sink.WriteBatch(rctx, batch.recs)
	timedOut := err != nil && errors.Is(context.Cause(rctx), ErrRequestTimeout)
	cancel()
	w.observe(ctx, batch, start, err) // observe.go
	var failed map[int]error
	whole := false
	if err != nil && ctx.Err() == nil {
		if timedOut {
			err = fmt.Errorf("%w after %v: %w", ErrRequestTimeout, w.cfg.RequestTimeout, err)
		}
		failed, whole = failedEntries(err, len(batch.recs))
	}
	if done != nil {
		o := Outcome{NotSent: err != nil && ctx.Err() != nil, TimedOut: timedOut, Latency: w.now().Sub(start)}
		unavailable := true
		for _, ferr := range failed {
			switch Classify(ferr) {
			case Throttled:
				o.Throttled = true
				o.Failed++
				var te *ThrottledError
				if errors.As(ferr, &te) && !te.Unavailable {
					unavailable = false
				}
			case Retryable:
				o.Failed++
			}
		}
		o.Unavailable = o.Throttled && unavailable
		done(o)
	}
	w.settle(ctx, batch, err, timedOut, failed, whole)
	w.mu.Lock()
	w.releaseLanesLocked(held)
	w.inflight--
	w.stats.InFlightRequests.Add(-1)
	w.signalLocked()
	w.mu.Unlock()
}
