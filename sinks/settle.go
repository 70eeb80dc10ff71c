package sinks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// settle decides what becomes of each record of a request that returned
// err (timedOut: after request_timeout), whose failed entries are
// failedIdx (see failedEntries; nil when err is nil or ctx ended): delivered records are acknowledged, retryable ones go
// back for retry with backoff, fatal ones and those out of attempts are
// dead-lettered.
func (w *Writer) settle(ctx context.Context, batch segment, err error, timedOut bool, failedIdx map[int]error, whole bool) {
	recs := batch.recs
	if err == nil {
		w.complete(recs)
		return
	}
	if ctx.Err() != nil {
		// Shutting down: abandon the batch. Its records are not acknowledged
		// and will be re-delivered after restart.
		w.release(recs)
		return
	}
	w.stats.FailedRequests.Add(1)
	if timedOut && w.cfg.FailOnTimeout {
		w.mu.Lock()
		w.failLocked(fmt.Errorf("fail_on_timeout: %w", err))
		w.mu.Unlock()
		w.release(recs)
		return
	}

	for _, ferr := range failedIdx {
		if Classify(ferr) == Misconfigured {
			// Wrong for every record: stop the job; the records stay
			// unacknowledged and are delivered after the fix.
			w.mu.Lock()
			w.failLocked(fmt.Errorf("sink configuration fault, stopping (records are kept and re-delivered after a fix): %w", ferr))
			w.mu.Unlock()
			w.release(recs)
			return
		}
	}

	// Entries refused together, as one request, with a fatal answer: only
	// bisecting tells which of them are bad.
	var refused []bool // by index; nil: none to bisect
	if w.cfg.Retry.IsolateBadRecords == IsolateBisect {
		n := 0
		for i := range recs {
			if ferr, failed := failedIdx[i]; failed && Classify(ferr) == Fatal && (whole || refusedWithRequest(ferr)) {
				if refused == nil {
					refused = make([]bool, len(recs))
				}
				refused[i] = true
				n++
			}
		}
		if n == len(recs) && len(recs) > 1 {
			w.bisect(batch, failedIdx[0])
			return
		}
		if n < 2 {
			refused = nil // one record refused alone is dead-lettered
		}
	}

	attempts := batch.attempts + 1
	var ok []pipeline.Record
	retry := segment{retry: true, attempts: attempts, seq: batch.seq, epoch: batch.epoch}
	// Entries refused only because of others in their request go again at
	// once, with the attempts they had; so do those to bisect.
	resend := segment{retry: true, attempts: batch.attempts, epoch: batch.epoch}
	split := segment{retry: true, attempts: batch.attempts, epoch: batch.epoch}
	type dead struct {
		recs  []pipeline.Record
		class string
		err   error
	}
	var deads []dead
	groupOf := map[string]int{}
	addDead := func(r pipeline.Record, class string, err error) {
		k := class + "\x00" + err.Error()
		i, seen := groupOf[k]
		if !seen {
			i = len(deads)
			groupOf[k] = i
			deads = append(deads, dead{class: class, err: err})
		}
		deads[i].recs = append(deads[i].recs, r)
	}
	var wait time.Duration
	var splitErr error
	for i, r := range recs {
		ferr, failed := failedIdx[i]
		if !failed {
			ok = append(ok, r)
			continue
		}
		// Throttling is the destination asking to slow down, not a failure
		// of the record: it does not use up attempts. Entries of one batch
		// can fail differently, so each record keeps its own count.
		failures := 0
		if batch.failures != nil {
			failures = batch.failures[i]
		}
		class := Classify(ferr)
		if class == Retryable {
			failures++
		}
		switch {
		case refused != nil && refused[i]:
			splitErr = cmp.Or(splitErr, ferr)
			split.add(batch.seq+uint64(i), r, failures)
		case class == Resend:
			resend.add(batch.seq+uint64(i), r, failures)
		case class == Fatal:
			addDead(r, "fatal", ferr)
		case class == Retryable && failures >= w.cfg.Retry.MaxAttempts:
			addDead(r, "retries_exhausted", ferr)
		default:
			wait = max(wait, w.backoff(attempts), retryAfter(ferr))
			retry.add(batch.seq+uint64(i), r, failures)
		}
	}
	if len(ok) > 0 {
		w.complete(ok)
	}
	if len(retry.recs) > 0 {
		w.stats.Retried.Add(int64(len(retry.recs)))
		w.log.Debug("retrying entries", "records", len(retry.recs), "after", wait, "attempt", attempts, "err", err)
		kind := "retried_records"
		if Classify(failedIdx[firstFailed(failedIdx)]) == Throttled {
			kind = "throttled_records"
		}
		w.failures.note(w.log, w.now(), kind, int64(len(retry.recs)), "last_error", err.Error(), "next_attempt_after", wait)
		retry.notBefore = w.now().Add(wait)
		retry.enq = retry.notBefore
		w.mu.Lock()
		if kind == "throttled_records" && retry.notBefore.After(w.holdUntil) {
			w.holdUntil = retry.notBefore // nothing new before the wait ends
		}
		w.pushRetryLocked(retry)
		w.mu.Unlock()
	}
	if len(split.recs) > 0 {
		w.bisect(split, splitErr)
	}
	if len(resend.recs) > 0 {
		w.stats.Resent.Add(int64(len(resend.recs)))
		w.failures.note(w.log, w.now(), "resent_records", int64(len(resend.recs)), "last_error", err.Error())
		resend.notBefore = w.now()
		resend.enq = resend.notBefore
		w.mu.Lock()
		w.pushRetryLocked(resend)
		w.signalLocked()
		w.mu.Unlock()
	}
	for _, d := range deads {
		if derr := w.deadLetter(ctx, d.recs, d.class, d.err, attempts); derr != nil {
			w.dropFailed(ctx, d.recs, derr)
		}
	}
}

// add appends r, at write position seq, with its failures so far, to a
// retry segment being built.
func (s *segment) add(seq uint64, r pipeline.Record, failures int) {
	if len(s.recs) == 0 {
		s.seq = seq
	}
	s.recs = append(s.recs, r)
	s.failures = append(s.failures, failures)
	s.bytes += r.Size()
}

// refusedWithRequest reports whether err is an entry's share of its
// request's failure (a *RequestError), not a verdict about the entry.
func refusedWithRequest(err error) bool {
	var re *RequestError
	return errors.As(err, &re)
}

// bisect handles a request the destination refused as a whole with a
// fatal answer, which says only that some record of it is bad: the batch
// is split in halves, each sent again at once as a batch of its own, so
// that, recursively, only records refused when sent alone are
// dead-lettered, each with its own answer. A half's composition depends
// only on the batch, so its idempotency key is the same on every run.
// The halves keep the batch's attempts: a refusal is not a failed
// delivery. A destination that refuses every record costs up to 2n-1
// requests for a batch of n (errors.isolate_bad_records: none turns this
// off).
func (w *Writer) bisect(batch segment, err error) {
	w.stats.Bisected.Add(1)
	w.failures.note(w.log, w.now(), "batches_split", 1, "records", len(batch.recs), "last_error", err.Error())
	mid := len(batch.recs) / 2
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, part := range [2][2]int{{0, mid}, {mid, len(batch.recs)}} {
		half := segment{
			recs:      batch.recs[part[0]:part[1]:part[1]],
			seq:       batch.seq + uint64(part[0]),
			attempts:  batch.attempts,
			notBefore: now,
			enq:       now,
			retry:     true,
			epoch:     batch.epoch,
		}
		if batch.failures != nil {
			half.failures = batch.failures[part[0]:part[1]:part[1]]
		}
		for i := range half.recs {
			half.bytes += half.recs[i].Size()
		}
		w.pushRetryLocked(half)
	}
	w.signalLocked()
}

// firstFailed is the lowest failed index.
func firstFailed(failed map[int]error) int {
	first := -1
	for i := range failed {
		if first < 0 || i < first {
			first = i
		}
	}
	return first
}

// failedEntries maps the index of each failed entry of a batch of n to its
// error. A *BatchError is trusted only when it names at least one entry and
// every index is inside the batch; otherwise nothing can be known to be
// delivered and every entry counts as failed with err, and whole is true:
// the answer was about the request, not about its entries.
func failedEntries(err error, n int) (failed map[int]error, whole bool) {
	failed = make(map[int]error, n)
	var be *BatchError
	if errors.As(err, &be) && len(be.Failed) > 0 {
		valid := true
		for _, f := range be.Failed {
			if f.Index < 0 || f.Index >= n {
				valid = false
				break
			}
			ferr := f.Err
			if ferr == nil {
				ferr = err
			}
			failed[f.Index] = ferr
		}
		if valid {
			return failed, false
		}
		clear(failed)
	}
	for i := range n {
		failed[i] = err
	}
	return failed, true
}

// dropFailed gives up on records that could not be dead-lettered: they
// stay unacknowledged (re-delivered after a restart) and their credit
// returns. The job fails with err unless ctx ended, which is a shutdown,
// not a sink failure.
func (w *Writer) dropFailed(ctx context.Context, recs []pipeline.Record, err error) {
	if ctx.Err() == nil {
		w.mu.Lock()
		w.failLocked(err)
		w.mu.Unlock()
	}
	w.release(recs)
}

// deadLetter hands recs, which failed with cause, to the dead-letter queue
// and acknowledges them once it stored them. When it did not (errors.tolerance
// none, no queue, the queue failed) it returns the error that fails the
// job, naming the first record, and the records stay unacknowledged.
func (w *Writer) deadLetter(ctx context.Context, recs []pipeline.Record, class string, cause error, attempts int) error {
	f := pipeline.Failure{Class: class, Err: cause, Attempts: attempts, Details: details(cause)}
	if err := w.dlq.Send(ctx, recs, f); err != nil {
		o := recs[0].Origin
		if len(recs) == 1 {
			return fmt.Errorf("record %s/%d@%d: %w", o.Topic, o.Partition, o.Offset, err)
		}
		return fmt.Errorf("%d records from %s/%d@%d: %w", len(recs), o.Topic, o.Partition, o.Offset, err)
	}
	o := recs[0].Origin
	w.deadLettered.note(w.log, w.now(), class, int64(len(recs)), "attempts", attempts,
		"topic", o.Topic, "partition", o.Partition, "offset", o.Offset, "last_error", cause.Error())
	n, b := w.creditOf(recs)
	pipeline.AckAll(recs) // recs must not be read after this (see complete)
	w.stats.DeadLettered.Add(int64(n))
	w.releaseN(n, b)
	return nil
}

// backoff is exponential with equal jitter: half fixed, half random.
func (w *Writer) backoff(attempt int) time.Duration {
	d := w.cfg.Retry.RetryBackoff << min(attempt-1, 30)
	if d <= 0 || d > w.cfg.Retry.MaxRetryBackoff {
		d = w.cfg.Retry.MaxRetryBackoff
	}
	half := d / 2
	return half + rand.N(half+1)
}
