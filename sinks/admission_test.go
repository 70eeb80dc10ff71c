package sinks_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// fakeAdmission admits or refuses as decide says and records what it was
// asked and told.
type fakeAdmission struct {
	mu       sync.Mutex
	maxNew   int                                               // MaxBatch for new batches
	maxRetry int                                               // MaxBatch for retries
	decide   func(now time.Time, b *sinks.Batch) time.Duration // 0 admits; nil admits all
	asked    [][]int64                                         // offsets of every batch asked about
	retries  []bool                                            // whether each was a retry
	outcomes []sinks.Outcome                                   // one per admitted request, in completion order
	twice    int                                               // done functions called more than once
}

func (a *fakeAdmission) MaxBatch(retry bool) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if retry {
		return a.maxRetry
	}
	return a.maxNew
}

func (a *fakeAdmission) TryAdmit(now time.Time, b *sinks.Batch) (func(sinks.Outcome), time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var offs []int64
	for _, r := range b.Records {
		offs = append(offs, r.Origin.Offset)
	}
	a.asked = append(a.asked, offs)
	a.retries = append(a.retries, b.Retry)
	if a.decide != nil {
		if wait := a.decide(now, b); wait != 0 {
			return nil, wait
		}
	}
	called := false
	return func(o sinks.Outcome) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if called {
			a.twice++
		}
		called = true
		a.outcomes = append(a.outcomes, o)
	}, 0
}

func (a *fakeAdmission) set(f func(*fakeAdmission)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// snapshot returns what the admission saw so far. Outcomes reported twice
// fail the test.
func (a *fakeAdmission) snapshot() (asked [][]int64, retries []bool, outcomes []sinks.Outcome) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.twice > 0 {
		panic("an admission's done function was called more than once")
	}
	return slices.Clone(a.asked), slices.Clone(a.retries), slices.Clone(a.outcomes)
}

// TestAdmissionWait: an admission that refuses with a duration holds the
// due batch back that long; the writer keeps the records, asks again when
// the wait ends (not before: it does not poll) and then sends them, in
// order, with the sink stage counted as backpressured meanwhile.
func TestAdmissionWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		open := t0.Add(3 * time.Second)
		adm := &fakeAdmission{decide: func(now time.Time, _ *sinks.Batch) time.Duration {
			if now.Before(open) {
				return open.Sub(now)
			}
			return 0
		}}
		cfg := sinks.Config{MaxBatchSize: 5, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}
		h := startWith(t, newSink(), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(adm)})
		h.write(records(h.acks, 0, 5, 10))
		synctest.Wait()
		asked0, _, _ := adm.snapshot()
		time.Sleep(3*time.Second - time.Nanosecond)
		synctest.Wait()
		h.wantCalls()
		if asked, _, _ := adm.snapshot(); len(asked0) == 0 || len(asked) != len(asked0) {
			t.Fatalf("asked %d times, then %d more while refused for 3s, want none more", len(asked0), len(asked)-len(asked0))
		}
		if b := h.w.Stats().Buffered.Load(); b != 5 {
			t.Fatalf("buffered %d while refused, want the 5 records kept", b)
		}
		if tt := h.w.TaskTime(); tt.Backpressured < 2*time.Second {
			t.Errorf("task time %+v, want backpressured while the admission held data back", tt)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		h.wantCalls(span(0, 5))
		if at := h.sink.snapshot()[0].at; !at.Equal(open) {
			t.Errorf("sent at %v, want when the wait ended (%v)", at.Sub(t0), open.Sub(t0))
		}
		h.acks.acked(t, span(0, 5)...)
		if _, _, outs := adm.snapshot(); len(outs) != 1 || outs[0] != (sinks.Outcome{}) {
			t.Errorf("outcomes %+v, want one clean outcome", outs)
		}
	})
}

// TestAdmissionWaitChange: refused until a change, the writer does not
// poll; the next change (here a Write) makes it ask again, and the batch
// it kept goes before the newer records.
func TestAdmissionWaitChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		closed := true
		adm := &fakeAdmission{decide: func(time.Time, *sinks.Batch) time.Duration {
			if closed {
				return sinks.WaitChange
			}
			return 0
		}}
		cfg := sinks.Config{MaxBatchSize: 3, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Millisecond}
		h := startWith(t, newSink(), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(adm)})
		h.write(records(h.acks, 0, 3, 10))
		synctest.Wait()
		asked0, _, _ := adm.snapshot()
		time.Sleep(time.Hour)
		synctest.Wait()
		h.wantCalls()
		if asked, _, _ := adm.snapshot(); len(asked0) == 0 || len(asked) != len(asked0) {
			t.Fatalf("asked %d times, then %d more in an hour without a change, want none more", len(asked0), len(asked)-len(asked0))
		}
		adm.set(func(a *fakeAdmission) { closed = false })
		h.write(records(h.acks, 3, 3, 10))
		h.flush()
		h.wantCalls(span(0, 3), span(3, 3))
		h.acks.acked(t, span(0, 6)...)
	})
}

// TestAdmissionOrder: admissions are asked in order and all must admit; a
// refusal by a later one tells the earlier ones the request was not made.
// Each admitted request's outcome reaches every admission exactly once.
func TestAdmissionOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := &fakeAdmission{}
		refusals := 1
		second := &fakeAdmission{decide: func(time.Time, *sinks.Batch) time.Duration {
			if refusals > 0 {
				refusals--
				return time.Second
			}
			return 0
		}}
		cfg := sinks.Config{MaxBatchSize: 2, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}
		h := startWith(t, newSink(), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(first), sinks.WithAdmission(second)})
		h.write(records(h.acks, 0, 2, 10))
		h.flush()
		h.wantCalls(span(0, 2))
		fAsked, _, fOut := first.snapshot()
		sAsked, _, sOut := second.snapshot()
		if len(fAsked) != 2 || len(sAsked) != 2 {
			t.Fatalf("asked first %d and second %d times, want 2 each", len(fAsked), len(sAsked))
		}
		if len(fOut) != 2 || !fOut[0].NotSent || fOut[1].NotSent {
			t.Errorf("first admission's outcomes %+v, want not sent, then sent", fOut)
		}
		if len(sOut) != 1 || sOut[0].NotSent {
			t.Errorf("second admission's outcomes %+v, want one sent", sOut)
		}
	})
}

// TestAdmissionOutcome: the outcome counts retryable and throttled entries
// (not fatal ones), says when the request timed out, whether the throttle
// said the destination is unavailable, and a request cut short by shutdown
// is reported not sent.
func TestAdmissionOutcome(t *testing.T) {
	t.Run("unavailable", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			adm := &fakeAdmission{}
			down := &sinks.ThrottledError{Err: errors.New("503"), RetryAfter: time.Second, Unavailable: true}
			cfg := sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}
			h := startWith(t, newSink(failAll(down)), cfg, &fakeDLQ{}, []sinks.WriterOption{sinks.WithAdmission(adm)})
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			if _, _, outs := adm.snapshot(); len(outs) != 2 || !outs[0].Throttled || !outs[0].Unavailable {
				t.Fatalf("outcomes %+v, want throttled and unavailable first", outs)
			}
		})
	})
	t.Run("failed entries", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			adm := &fakeAdmission{}
			mixed := func(context.Context, []pipeline.Record) error {
				return &sinks.BatchError{Failed: []sinks.EntryError{
					{Index: 0, Err: sinks.AsFatal(errRejected)},
					{Index: 1, Err: errUnavailable},
					{Index: 2, Err: throttleErr(time.Second)},
				}}
			}
			cfg := sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}
			h := startWith(t, newSink(mixed), cfg, &fakeDLQ{}, []sinks.WriterOption{sinks.WithAdmission(adm)})
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			_, retries, outs := adm.snapshot()
			if len(outs) != 2 || outs[0].Failed != 2 || !outs[0].Throttled || outs[0].Unavailable || outs[0].TimedOut || outs[0].NotSent {
				t.Fatalf("outcomes %+v, want 2 failed and throttled (a rate limit), then a clean retry", outs)
			}
			if outs[1] != (sinks.Outcome{}) {
				t.Errorf("retry's outcome %+v, want clean", outs[1])
			}
			if !slices.Equal(retries, []bool{false, true}) {
				t.Errorf("retry flags %v, want a new batch then a retry", retries)
			}
		})
	})
	t.Run("timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			adm := &fakeAdmission{}
			cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour, RequestTimeout: time.Second}
			h := startWith(t, newSink(hang), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(adm)})
			h.write(records(h.acks, 0, 2, 10))
			h.flush()
			_, _, outs := adm.snapshot()
			if len(outs) != 2 || !outs[0].TimedOut || outs[0].Failed != 2 || outs[0].Latency != time.Second {
				t.Fatalf("outcomes %+v, want a timed-out request of 2 failed entries after 1s", outs)
			}
		})
	})
	t.Run("shutdown", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			adm := &fakeAdmission{}
			cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour}
			h := startWith(t, newSink(hang), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(adm)})
			h.write(records(h.acks, 0, 2, 10))
			synctest.Wait()
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			_, _, outs := adm.snapshot()
			if len(outs) != 1 || !outs[0].NotSent || outs[0].Failed != 0 {
				t.Fatalf("outcomes %+v, want one not sent", outs)
			}
			h.acks.acked(t)
		})
	})
}

// TestAdmissionBatchLimit: an admission bounds new batches; a retry goes
// whole, keeping its composition, unless the admission bounds retries too,
// and then goes in prefixes of the bound, oldest first.
func TestAdmissionBatchLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxRetry int
		want     [][]int64
	}{
		{"retries whole", 0, [][]int64{span(0, 6), span(0, 6), span(6, 3), span(9, 3)}},
		{"retries bounded", 4, [][]int64{span(0, 6), span(0, 4), span(4, 2), span(6, 3), span(9, 3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				adm := &fakeAdmission{}
				cfg := sinks.Config{MaxBatchSize: 6, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour,
					Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
				h := startWith(t, newSink(failAll(errUnavailable)), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(adm)})
				h.write(records(h.acks, 0, 6, 10))
				synctest.Wait() // the first batch of 6 failed; it waits as a retry
				adm.set(func(a *fakeAdmission) { a.maxNew, a.maxRetry = 3, tc.maxRetry })
				h.write(records(h.acks, 6, 6, 10))
				h.flush()
				h.wantCalls(tc.want...)
				h.acks.acked(t, span(0, 12)...)
			})
		})
	}
}

// TestAdmissionShutdownWhileBlocked: Run ends while a blocking admission
// holds a batch; the records stay unacknowledged and the admissions asked
// before learn the request was not made.
func TestAdmissionShutdownWhileBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := &fakeAdmission{}
		st := &fakeStrategy{refuse: 1, gate: make(chan struct{})}
		cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour}
		h := startWith(t, newSink(), cfg, nil, []sinks.WriterOption{sinks.WithAdmission(before), sinks.WithAdmission(sinks.StrategyAdmission(st))})
		h.write(records(h.acks, 0, 2, 10))
		synctest.Wait()
		if err := h.stop(); err != nil {
			t.Fatalf("Run = %v", err)
		}
		h.wantCalls()
		h.acks.acked(t)
		if _, _, outs := before.snapshot(); len(outs) != 1 || !outs[0].NotSent {
			t.Errorf("outcomes %+v, want one not sent", outs)
		}
		if n := st.completions(); n != 0 {
			t.Errorf("%d completions reported to a strategy that admitted nothing", n)
		}
	})
}

// fakeStrategy is a backpressure.Strategy that refuses TryAcquire the
// first refuse times, lets Acquire through one request per token on gate,
// and records every completion.
type fakeStrategy struct {
	refuse   int
	gate     chan struct{}
	maxBatch int

	mu       sync.Mutex
	tried    []backpressure.Request
	acquired int
	results  []backpressure.Result
}

func (s *fakeStrategy) TryAcquire(req backpressure.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tried = append(s.tried, req)
	if s.refuse > 0 {
		s.refuse--
		return false
	}
	return true
}

func (s *fakeStrategy) Acquire(ctx context.Context, req backpressure.Request) error {
	select {
	case <-s.gate:
		s.mu.Lock()
		s.acquired++
		s.mu.Unlock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *fakeStrategy) Complete(res backpressure.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, res)
}

func (s *fakeStrategy) MaxBatchSize() int { return s.maxBatch }

func (s *fakeStrategy) completions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.results)
}

// TestStrategyAdmission: a refused request blocks the writer on the
// strategy's Acquire, holding the batch (nothing newer overtakes it);
// once admitted it is sent; each request's result, with its
// per-partition shares, is completed exactly once; the strategy's batch
// size bounds new batches only, so a retry keeps its composition.
func TestStrategyAdmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &fakeStrategy{refuse: 1, gate: make(chan struct{})}
		cfg := sinks.Config{MaxBatchSize: 4, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour,
			Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
		h := startWith(t, newSink(failAll(errUnavailable)), cfg, nil, []sinks.WriterOption{sinks.WithStrategy(st)})
		recs := records(h.acks, 0, 4, 10)
		recs[2].Origin.Partition = 2
		h.write(recs)
		time.Sleep(time.Hour)
		synctest.Wait()
		h.wantCalls() // blocked in Acquire
		if tt := h.w.TaskTime(); tt.Backpressured < time.Hour {
			t.Errorf("task time %+v, want backpressured while the strategy blocks", tt)
		}
		h.write(records(h.acks, 4, 4, 10))
		synctest.Wait()
		h.wantCalls()
		st.gate <- struct{}{}
		synctest.Wait()
		h.wantCalls(span(0, 4)) // it fails and waits as a retry

		st.mu.Lock()
		st.maxBatch = 2
		st.mu.Unlock()
		h.flush()
		h.wantCalls(span(0, 4), span(0, 4), span(4, 2), span(6, 2))
		h.acks.acked(t, span(0, 8)...)
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.results) != 4 || st.acquired != 1 {
			t.Fatalf("%d completions and %d blocking acquisitions, want one completion per request (4) and 1", len(st.results), st.acquired)
		}
		first := st.results[0]
		wantReq := backpressure.Request{Records: 4, Bytes: 40, Parts: []backpressure.Part{
			{Topic: "t", Partition: 1, Records: 3, Bytes: 30}, {Topic: "t", Partition: 2, Records: 1, Bytes: 10}}}
		if first.Request.Records != wantReq.Records || first.Request.Bytes != wantReq.Bytes || !slices.Equal(first.Request.Parts, wantReq.Parts) {
			t.Errorf("first request %+v, want %+v", first.Request, wantReq)
		}
		if first.Failed != 4 || first.Throttled || first.TimedOut {
			t.Errorf("first result %+v, want 4 failed", first)
		}
		for _, r := range st.results[1:] {
			if r.Failed != 0 {
				t.Errorf("result %+v, want clean", r)
			}
		}
	})
}

// TestStrategyPacing: a real token bucket paces requests on the fake
// clock: 30 records at 10 records/s with a burst of 10 take 2s.
func TestStrategyPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := backpressure.New(backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 10, RecordBurst: 10}, backpressure.WriterLimits{MaxBatchSize: 5, MaxInFlightRequests: 8})
		if err != nil {
			t.Fatal(err)
		}
		cfg := sinks.Config{MaxBatchSize: 5, MaxTimeInBuffer: time.Hour}
		h := startWith(t, newSink(), cfg, nil, []sinks.WriterOption{sinks.WithStrategy(st)})
		t0 := time.Now()
		h.write(records(h.acks, 0, 30, 10))
		h.flush()
		calls := h.sink.snapshot()
		if len(calls) != 6 {
			t.Fatalf("%d requests, want 6", len(calls))
		}
		if took := calls[5].at.Sub(t0); took < 2*time.Second-time.Millisecond || took > 2*time.Second+100*time.Millisecond {
			t.Errorf("last request after %v, want about 2s at 10 records/s", took)
		}
		h.acks.acked(t, span(0, 30)...)
	})
}

// TestWriterDeadLetterErrors: without a dead-letter queue, or through a
// deadletter.Queue with tolerance none, nothing is stored and the job fails
// with an error naming the first record, the class and why.
func TestWriterDeadLetterErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue func(t *testing.T) pipeline.DeadLetter // nil: none
		why   error
		want  string
	}{
		{"no queue", nil, pipeline.ErrNoDeadLetter, "3 records from t/1@0: fatal failure (no dead-letter queue): 400 rejected"},
		{"tolerance none", func(t *testing.T) pipeline.DeadLetter {
			q, err := deadletter.NewQueue(deadletter.Config{Tolerance: deadletter.ToleranceNone}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return q
		}, deadletter.ErrNotTolerated, "3 records from t/1@0: fatal failure (errors.tolerance none): 400 rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var opts []sinks.WriterOption
				if tc.queue != nil {
					opts = append(opts, sinks.WithDeadLetter(tc.queue(t)))
				}
				// Whole batches are dead-lettered, not bisected: one error for 3 records.
				cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, Retry: noIsolation}
				h := startWith(t, newSink(fatal(errRejected)), cfg, nil, opts)
				h.write(records(h.acks, 0, 3, 10))
				synctest.Wait()
				err := h.w.Err()
				if !errors.Is(err, errRejected) || !errors.Is(err, tc.why) {
					t.Fatalf("Err = %v, want the fatal error and %v", err, tc.why)
				}
				if err.Error() != tc.want {
					t.Errorf("Err = %q, want %q", err, tc.want)
				}
				h.acks.acked(t)
			})
		})
	}
}
