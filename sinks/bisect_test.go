package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// refuseIfContains refuses, as a whole and fatally, any batch holding one of
// the bad offsets, as an API answering 400 for a batch with an invalid
// record does; its error names the first bad record it holds.
func refuseIfContains(bad ...int64) behaviour {
	return func(_ context.Context, b []pipeline.Record) error {
		for _, r := range b {
			if slices.Contains(bad, r.Origin.Offset) {
				return sinks.AsFatal(fmt.Errorf("400: record %d is invalid", r.Origin.Offset))
			}
		}
		return nil
	}
}

// TestWriterBisect: a batch refused as a whole is split until only the
// records refused alone are left; those are dead-lettered one by one with
// their own error, every other record is delivered exactly once, and the
// halves are the same on every run (stable idempotency keys).
func TestWriterBisect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int
		bad      []int64
		inflight int
		requests int // exactly, for a batch of n
	}{
		{"one bad of 8", 8, []int64{3}, 1, 7},          // 8 | 4 4 | 2 2 | 1 1
		{"two bad of 8", 8, []int64{3, 6}, 1, 11},      // 8 | 4 4 | 2 2 2 2 | 1 1 1 1 of the bad pairs
		{"all bad of 4", 4, []int64{0, 1, 2, 3}, 2, 7}, // 2n-1
		{"one bad of 7", 7, []int64{6}, 4, 7},          // 7 | 3 4 | 2 2 | 1 1
		{"single record", 1, []int64{0}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var runs [][][]int64
			for range 2 {
				synctest.Test(t, func(t *testing.T) {
					dlq := &fakeDLQ{}
					cfg := sinks.Config{MaxBatchSize: tc.n, MaxInFlightRequests: tc.inflight, MaxTimeInBuffer: time.Hour}
					sink := newSink()
					sink.def = refuseIfContains(tc.bad...)
					h := start(t, sink, cfg, dlq)
					h.write(records(h.acks, 0, tc.n, 10))
					h.flush()
					if got := dlq.offsets(); !slices.Equal(got, tc.bad) {
						t.Errorf("dead-lettered %v, want %v", got, tc.bad)
					}
					for _, s := range dlq.snapshot() {
						if len(s.offs) != 1 {
							t.Errorf("dead-lettered %v together, want one record per send", s.offs)
							continue
						}
						want := fmt.Sprintf("400: record %d is invalid", s.offs[0])
						if s.f.Class != "fatal" || s.f.Err.Error() != want || s.f.Attempts != 1 {
							t.Errorf("record %d: failure %+v, want fatal %q after 1 attempt", s.offs[0], s.f, want)
						}
					}
					for o := range int64(tc.n) {
						n := sink.delivered[o]
						if slices.Contains(tc.bad, o) {
							n = 1 - n // dead-lettered, never delivered
						}
						if n != 1 {
							t.Errorf("offset %d delivered %d times", o, sink.delivered[o])
						}
					}
					h.acks.acked(t, span(0, int64(tc.n))...)
					calls := sink.offsets()
					if len(calls) != tc.requests {
						t.Errorf("%d requests %v, want %d", len(calls), calls, tc.requests)
					}
					// Every split makes two requests.
					if got, want := h.w.Stats().Bisected.Load(), int64(len(calls)-1)/2; got != want {
						t.Errorf("Stats.Bisected = %d, want %d", got, want)
					}
					runs = append(runs, byFirstOffsetAndLen(calls))
				})
			}
			if !slices.EqualFunc(runs[0], runs[1], slices.Equal) {
				t.Errorf("the halves differ between runs: %v and %v", runs[0], runs[1])
			}
		})
	}
}

// byFirstOffsetAndLen sorts batches by first offset, then length.
func byFirstOffsetAndLen(calls [][]int64) [][]int64 {
	out := slices.Clone(calls)
	slices.SortFunc(out, func(a, b []int64) int {
		if a[0] != b[0] {
			return int(a[0] - b[0])
		}
		return len(a) - len(b)
	})
	return out
}

// TestWriterBisectOnlyWholeFatal: only a fatal answer about the whole
// request is bisected. Per-entry verdicts are trusted as they are, a
// throttled or retryable answer is retried whole, a configuration fault
// stops the job, and isolate_bad_records: none dead-letters the batch.
func TestWriterBisectOnlyWholeFatal(t *testing.T) {
	t.Run("per-entry verdicts", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			sink := newSink(func(context.Context, []pipeline.Record) error {
				return &sinks.BatchError{Failed: []sinks.EntryError{{Index: 1, Err: sinks.AsFatal(errRejected)}, {Index: 2, Err: sinks.AsFatal(errRejected)}}}
			})
			h := start(t, sink, sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}, dlq)
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			h.wantCalls(span(0, 4))
			if got := dlq.offsets(); !slices.Equal(got, []int64{1, 2}) {
				t.Errorf("dead-lettered %v, want [1 2]", got)
			}
			if n := h.w.Stats().Bisected.Load(); n != 0 {
				t.Errorf("Stats.Bisected = %d, want 0", n)
			}
		})
	})
	t.Run("retryable whole", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failAll(errUnavailable)), sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}, &fakeDLQ{})
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			h.wantCalls(span(0, 4), span(0, 4))
			if n := h.w.Stats().Bisected.Load(); n != 0 {
				t.Errorf("Stats.Bisected = %d, want 0", n)
			}
		})
	})
	t.Run("configuration fault", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failAll(sinks.AsConfigError(errors.New("401 unauthorized")))), sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}, &fakeDLQ{})
			h.write(records(h.acks, 0, 4, 10))
			synctest.Wait()
			h.wantCalls(span(0, 4))
			if exited, err := h.exited(); !exited || err == nil {
				t.Fatalf("Run exited %v with %v, want the configuration fault", exited, err)
			}
			h.acks.acked(t)
		})
	})
	t.Run("isolation off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			sink := newSink()
			sink.def = refuseIfContains(2)
			h := start(t, sink, sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour, Retry: noIsolation}, dlq)
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			h.wantCalls(span(0, 4))
			if got := dlq.offsets(); !slices.Equal(got, span(0, 4)) {
				t.Errorf("dead-lettered %v, want the whole batch", got)
			}
		})
	})
	t.Run("a half fails retryably", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			sink := newSink(refuseIfContains(0), failAll(errUnavailable))
			sink.def = refuseIfContains(0)
			cfg := sinks.Config{MaxBatchSize: 4, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour,
				Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
			h := start(t, sink, cfg, dlq)
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			// 0-3 refused; 0-1 fails retryably and comes back after its
			// backoff; 2-3 delivered meanwhile; 0-1 refused; 0 and 1 alone.
			h.wantCalls(span(0, 4), span(0, 2), span(2, 2), span(0, 2), []int64{0}, []int64{1})
			if got := dlq.offsets(); !slices.Equal(got, []int64{0}) {
				t.Errorf("dead-lettered %v, want [0]", got)
			}
			if f := dlq.snapshot()[0].f; f.Attempts != 2 {
				t.Errorf("attempts = %d, want 2 (one retryable failure, one refusal)", f.Attempts)
			}
			h.acks.acked(t, span(0, 4)...)
		})
	})
}

// TestWriterResend: a destination that names the bad records of a batch
// it refused (rejections) gets the others again at once, without a
// backoff, and they keep their attempts.
func TestWriterResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		sink := newSink(func(_ context.Context, b []pipeline.Record) error {
			be := &sinks.BatchError{}
			for i := range b {
				err := sinks.AsResend(errRejected)
				if i == 1 {
					err = sinks.AsFatal(errRejected)
				}
				be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: err})
			}
			return be
		})
		h := start(t, sink, sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}, dlq)
		t0 := time.Now()
		h.write(records(h.acks, 0, 4, 10))
		h.flush()
		if time.Since(t0) != 0 {
			t.Errorf("the rest went %v later, want at once", time.Since(t0))
		}
		h.wantCalls(span(0, 4), []int64{0, 2, 3})
		if got := dlq.offsets(); !slices.Equal(got, []int64{1}) {
			t.Errorf("dead-lettered %v, want [1]", got)
		}
		st := h.w.Stats()
		if st.Resent.Load() != 3 || st.Retried.Load() != 0 {
			t.Errorf("Stats.Resent = %d, Retried = %d, want 3 and 0", st.Resent.Load(), st.Retried.Load())
		}
		h.acks.acked(t, span(0, 4)...)
	})
}

// TestWriterBisectRequestShare: a sink that left one record out of its
// request (it could not encode it) reports the request's fatal answer for
// the rest as a *RequestError: those are bisected, the left-out one is
// dead-lettered as it is.
func TestWriterBisectRequestShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		refuse := refuseIfContains(3)
		sink := newSink()
		sink.def = func(ctx context.Context, b []pipeline.Record) error {
			be := &sinks.BatchError{}
			var sent []int
			for i, r := range b {
				if r.Origin.Offset == 0 {
					be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: sinks.AsFatal(errors.New("value is not valid UTF-8"))})
					continue
				}
				sent = append(sent, i)
			}
			if len(be.Failed) == 0 {
				return refuse(ctx, b)
			}
			var kept []pipeline.Record
			for _, i := range sent {
				kept = append(kept, b[i])
			}
			if err := refuse(ctx, kept); err != nil {
				rerr := sinks.AsRequestError(err)
				for _, i := range sent {
					be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: rerr})
				}
			}
			return be
		}
		h := start(t, sink, sinks.Config{MaxBatchSize: 6, MaxTimeInBuffer: time.Hour}, dlq)
		h.write(records(h.acks, 0, 6, 10))
		h.flush()
		if got := dlq.offsets(); !slices.Equal(got, []int64{0, 3}) {
			t.Errorf("dead-lettered %v, want [0 3]", got)
		}
		for _, o := range []int64{1, 2, 4, 5} {
			if sink.delivered[o] != 1 {
				t.Errorf("offset %d delivered %d times", o, sink.delivered[o])
			}
		}
		h.acks.acked(t, span(0, 6)...)
	})
}
