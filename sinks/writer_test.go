package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// The writer's timers (max_time_in_buffer, retry backoff, request timeout)
// all run on the synctest bubble's fake clock: no test depends on how fast
// the machine is, and times compared below are fake-clock times.

// TestWriterImplementsSink keeps sinks.Writer usable as the pipeline's sink.
func TestWriterImplementsSink(t *testing.T) {
	var _ pipeline.Sink = (*sinks.Writer)(nil)
}

func TestWriterBatchBySize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One request at a time, so the sink sees batches in the order taken.
		h := start(t, newSink(), sinks.Config{MaxBatchSize: 5, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}, nil)
		h.write(records(h.acks, 0, 12, 10))
		synctest.Wait()
		h.wantCalls(span(0, 5), span(5, 5)) // the last 2 wait for more or for their age
		h.acks.acked(t, span(0, 10)...)

		h.flush()
		h.wantCalls(span(0, 5), span(5, 5), span(10, 2))
		h.acks.acked(t, span(0, 12)...)
		st := h.w.Stats()
		if st.Delivered.Load() != 12 || st.Requests.Load() != 3 || st.Buffered.Load() != 0 || st.InFlightRequests.Load() != 0 {
			t.Errorf("stats: delivered %d requests %d buffered %d in flight %d",
				st.Delivered.Load(), st.Requests.Load(), st.Buffered.Load(), st.InFlightRequests.Load())
		}
	})
}

func TestWriterBatchByBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{MaxBatchSize: 100, MaxBatchBytes: 100, MaxRecordBytes: 40, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}
		h := start(t, newSink(), cfg, nil)
		h.write(records(h.acks, 0, 3, 30)) // 90 bytes: below max_batch_bytes
		synctest.Wait()
		h.wantCalls()

		h.write(records(h.acks, 3, 4, 30)) // 210 bytes buffered
		synctest.Wait()
		h.wantCalls(span(0, 3), span(3, 3)) // 90 each: a 4th record would pass 100
		for _, c := range h.sink.snapshot() {
			if c.bytes > 100 {
				t.Errorf("batch of %d bytes exceeds max_batch_bytes 100", c.bytes)
			}
		}
		h.flush()
		h.wantCalls(span(0, 3), span(3, 3), span(6, 1))
		h.acks.acked(t, span(0, 7)...)
	})
}

func TestWriterMaxTimeInBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, newSink(), sinks.Config{MaxBatchSize: 100, MaxTimeInBuffer: 2 * time.Second}, nil)
		t0 := time.Now()
		h.write(records(h.acks, 0, 1, 10))
		time.Sleep(time.Second)
		h.write(records(h.acks, 1, 1, 10))
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		if n := h.sink.numCalls(); n != 0 {
			t.Fatalf("%d requests before the oldest record reached max_time_in_buffer", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		h.wantCalls([]int64{0, 1}) // the age is the oldest record's
		if at := h.sink.snapshot()[0].at.Sub(t0); at != 2*time.Second {
			t.Errorf("partial batch sent after %v, want 2s", at)
		}

		t1 := time.Now()
		h.write(records(h.acks, 2, 1, 10))
		time.Sleep(5 * time.Second)
		synctest.Wait()
		h.wantCalls([]int64{0, 1}, []int64{2})
		if at := h.sink.snapshot()[1].at.Sub(t1); at != 2*time.Second {
			t.Errorf("second partial batch sent after %v, want 2s", at)
		}
		h.acks.acked(t, 0, 1, 2)
	})
}

func TestWriterMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink()
		sink.def = sink.block
		cfg := sinks.Config{MaxBatchSize: 2, MaxInFlightRequests: 3, MaxTimeInBuffer: time.Hour}
		h := start(t, sink, cfg, nil)
		h.write(records(h.acks, 0, 20, 10)) // 10 full batches
		synctest.Wait()
		if now, _ := sink.concurrency(); now != 3 {
			t.Fatalf("%d requests in flight, want max_in_flight_requests 3", now)
		}
		if n := h.w.Stats().InFlightRequests.Load(); n != 3 {
			t.Errorf("Stats.InFlightRequests = %d, want 3", n)
		}
		for range 7 {
			sink.gate <- struct{}{} // complete one request
			synctest.Wait()
			if now, _ := sink.concurrency(); now != 3 {
				t.Fatalf("%d requests in flight after one completed, want 3", now)
			}
		}
		close(sink.gate)
		h.flush()
		if _, peak := sink.concurrency(); peak != 3 {
			t.Errorf("peak concurrency %d, want 3", peak)
		}
		if n := sink.numCalls(); n != 10 {
			t.Errorf("%d requests, want 10", n)
		}
		h.acks.acked(t, span(0, 20)...)
	})
}

func TestWriterWriteBlocksWhenBufferFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink()
		sink.def = sink.block
		cfg := sinks.Config{MaxBatchSize: 2, MaxBufferedRequests: 4, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}
		h := start(t, sink, cfg, nil)
		h.write(records(h.acks, 0, 4, 10)) // 2 in flight + 2 buffered = max_buffered_requests
		synctest.Wait()

		wrote := make(chan error, 1)
		go func() { wrote <- h.w.Write(context.Background(), records(h.acks, 4, 1, 10)) }()
		synctest.Wait()
		select {
		case err := <-wrote:
			t.Fatalf("Write returned %v while max_buffered_requests records were held", err)
		default:
		}
		if n := h.w.Stats().Buffered.Load(); n != 4 {
			t.Errorf("Stats.Buffered = %d, want 4", n)
		}

		sink.gate <- struct{}{} // the first batch completes: 2 credits return
		synctest.Wait()
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatalf("Write = %v", err)
			}
		default:
			t.Fatal("Write still blocked after a batch completed")
		}

		// 3 of 4 held now; a Write of 2 blocks until its context ends.
		ctx, cancel := context.WithCancel(context.Background())
		go func() { wrote <- h.w.Write(ctx, records(h.acks, 5, 2, 10)) }()
		synctest.Wait()
		select {
		case <-wrote:
			t.Fatal("Write of 2 returned with 1 credit free")
		default:
		}
		cancel()
		if err := <-wrote; !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked Write after cancel = %v, want context.Canceled", err)
		}

		close(sink.gate)
		h.flush()
		h.acks.acked(t, span(0, 5)...) // 5 and 6 were never accepted
		if n := h.w.Stats().Buffered.Load(); n != 0 {
			t.Errorf("Stats.Buffered = %d after flush", n)
		}
	})
}

func TestWriterPartialFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink(failSome(errUnavailable, 1, 3))
		cfg := sinks.Config{MaxBatchSize: 5, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
		h := start(t, sink, cfg, nil)
		h.write(records(h.acks, 0, 5, 10))
		synctest.Wait()
		h.wantCalls(span(0, 5))
		h.acks.acked(t, 0, 2, 4) // delivered entries are done at once
		if n := h.w.Stats().Retried.Load(); n != 2 {
			t.Errorf("Stats.Retried = %d, want 2", n)
		}

		time.Sleep(time.Second) // the backoff is at most retry_backoff
		synctest.Wait()
		h.wantCalls(span(0, 5), []int64{1, 3}) // only the failed entries again
		h.acks.acked(t, span(0, 5)...)
		for o, n := range sink.delivered {
			if n != 1 {
				t.Errorf("offset %d delivered %d times", o, n)
			}
		}
		st := h.w.Stats()
		if st.Delivered.Load() != 5 || st.FailedRequests.Load() != 1 || st.Requests.Load() != 2 {
			t.Errorf("stats: delivered %d failed requests %d requests %d", st.Delivered.Load(), st.FailedRequests.Load(), st.Requests.Load())
		}
	})
}

func TestWriterRetriesGoToFront(t *testing.T) {
	cfg := sinks.Config{
		MaxBatchSize: 3, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour,
		Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second},
	}
	t.Run("whole batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failAll(errUnavailable)), cfg, nil)
			h.write(records(h.acks, 0, 3, 10))
			synctest.Wait()
			h.write(records(h.acks, 3, 3, 10)) // a full batch, due now
			synctest.Wait()
			h.wantCalls(span(0, 3)) // but it may not overtake the retry
			time.Sleep(time.Second)
			synctest.Wait()
			h.wantCalls(span(0, 3), span(0, 3), span(3, 3))
			h.acks.acked(t, span(0, 6)...)
		})
	})
	t.Run("failed entries keep their batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failSome(errUnavailable, 0, 2)), cfg, nil)
			h.write(records(h.acks, 0, 3, 10))
			synctest.Wait()
			h.write(records(h.acks, 3, 4, 10)) // a full batch and one more
			time.Sleep(time.Second)
			synctest.Wait()
			// The retry is not topped up with newer records.
			h.wantCalls(span(0, 3), []int64{0, 2}, span(3, 3))
			h.flush()
			h.wantCalls(span(0, 3), []int64{0, 2}, span(3, 3), []int64{6})
			h.acks.acked(t, span(0, 7)...)
		})
	})
	t.Run("flush does not merge a retry with newer records", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failSome(errUnavailable, 1)), cfg, nil)
			h.write(records(h.acks, 0, 3, 10))
			synctest.Wait()
			h.write(records(h.acks, 3, 1, 10))
			h.flush()
			h.wantCalls(span(0, 3), []int64{1}, []int64{3})
			h.acks.acked(t, span(0, 4)...)
		})
	})
	t.Run("two failed batches are retried as they were", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := cfg
			cfg.MaxInFlightRequests = 2
			sink := newSink()
			// Write queues the 6 records as two chunks, and Run may take the
			// first before the second is queued: the first request waits
			// for the second, so both are in flight before either fails.
			var mu sync.Mutex
			n, bothIn := 0, make(chan struct{})
			sink.def = func(ctx context.Context, b []pipeline.Record) error {
				mu.Lock()
				n++
				k := n
				if k == 2 {
					close(bothIn)
				}
				mu.Unlock()
				if k > 2 {
					return sink.block(ctx, b) // later ones hold their slot until released
				}
				select {
				case <-bothIn:
					return errUnavailable // the first two requests
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			h := start(t, sink, cfg, nil)
			h.write(records(h.acks, 0, 6, 10)) // two batches in flight, both fail
			synctest.Wait()
			h.write(records(h.acks, 6, 3, 10))
			synctest.Wait()
			if n := sink.numCalls(); n != 2 {
				t.Fatalf("%d requests before the backoff passed, want 2", n)
			}
			// Two retries wait (as many as requests may be in flight): the
			// newer batch waits for one of them to be taken.
			time.Sleep(time.Second) // both backoffs pass
			synctest.Wait()
			close(sink.gate)
			h.flush()
			calls := h.sink.offsets()
			if len(calls) != 5 {
				t.Fatalf("calls = %v, want 5", calls)
			}
			var retried [][]int64
			for _, c := range calls[2:] {
				if c[0] < 6 {
					retried = append(retried, c)
				}
			}
			if len(retried) != 2 {
				t.Fatalf("calls = %v, want both batches retried", calls)
			}
			slices.SortFunc(retried, func(a, b []int64) int { return int(a[0] - b[0]) })
			if !slices.Equal(retried[0], span(0, 3)) || !slices.Equal(retried[1], span(3, 3)) {
				t.Fatalf("retries = %v, want the original batches", retried)
			}
			h.acks.acked(t, span(0, 9)...)
		})
	})
}

func TestWriterAttemptCap(t *testing.T) {
	cfg := sinks.Config{
		MaxBatchSize: 2, MaxTimeInBuffer: time.Hour,
		Retry: sinks.RetryConfig{MaxAttempts: 3, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 150 * time.Millisecond},
	}
	t.Run("tolerance all dead-letters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := cfg
			sink := newSink()
			sink.def = failAll(errUnavailable)
			dlq := &fakeDLQ{}
			h := start(t, sink, cfg, dlq)
			h.write(records(h.acks, 0, 2, 10))
			synctest.Wait()
			h.flush() // waits through every retry
			h.wantCalls([]int64{0, 1}, []int64{0, 1}, []int64{0, 1})
			sends := dlq.snapshot()
			if len(sends) != 1 || !slices.Equal(sends[0].offs, []int64{0, 1}) {
				t.Fatalf("dead-lettered %+v, want one send of [0 1]", sends)
			}
			f := sends[0].f
			if f.Class != "retries_exhausted" || f.Attempts != 3 || !errors.Is(f.Err, errUnavailable) {
				t.Errorf("failure = %+v, want retries_exhausted after 3 attempts", f)
			}
			if len(dlq.early) != 0 {
				t.Errorf("offsets %v acknowledged before being dead-lettered", dlq.early)
			}
			h.acks.acked(t, 0, 1)
			st := h.w.Stats()
			if st.DeadLettered.Load() != 2 || st.Retried.Load() != 4 || st.Delivered.Load() != 0 || st.FailedRequests.Load() != 3 {
				t.Errorf("stats: dead-lettered %d retried %d delivered %d failed requests %d",
					st.DeadLettered.Load(), st.Retried.Load(), st.Delivered.Load(), st.FailedRequests.Load())
			}

			// Exponential backoff with equal jitter, capped: [50ms,100ms]
			// then [75ms,150ms] (200ms capped to 150ms).
			calls := h.sink.snapshot()
			gaps := []time.Duration{calls[1].at.Sub(calls[0].at), calls[2].at.Sub(calls[1].at)}
			if gaps[0] < 50*time.Millisecond || gaps[0] > 100*time.Millisecond ||
				gaps[1] < 75*time.Millisecond || gaps[1] > 150*time.Millisecond {
				t.Errorf("retry delays %v, want [50ms,100ms] then [75ms,150ms]", gaps)
			}
		})
	})
	t.Run("tolerance none fails the job", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sink := newSink()
			sink.def = failAll(errUnavailable)
			h := start(t, sink, cfg, nil)
			h.write(records(h.acks, 0, 2, 10))
			err := h.w.Flush(context.Background())
			if !errors.Is(err, errUnavailable) || !strings.Contains(err.Error(), "retries_exhausted") || !strings.Contains(err.Error(), "t/1@0") {
				t.Fatalf("Flush = %v, want retries_exhausted naming t/1@0", err)
			}
			synctest.Wait()
			if exited, runErr := h.exited(); !exited || !errors.Is(runErr, errUnavailable) {
				t.Fatalf("Run exited %v with %v, want the job's error", exited, runErr)
			}
			if err := h.w.Write(context.Background(), records(h.acks, 2, 1, 10)); !errors.Is(err, errUnavailable) {
				t.Errorf("Write after failure = %v", err)
			}
			if h.sink.numCalls() != 3 {
				t.Errorf("%d requests, want 3", h.sink.numCalls())
			}
			h.acks.acked(t) // nothing is done: it will be re-delivered
		})
	})
}

// noIsolation dead-letters a batch refused as a whole instead of bisecting
// it, for tests of what happens to the records that are dead-lettered.
var noIsolation = sinks.RetryConfig{IsolateBadRecords: sinks.IsolateNone}

func TestWriterFatal(t *testing.T) {
	detailed := sinks.AsFatal(&sinks.DetailedError{Err: errRejected, Details: map[string]string{"http.status": "400"}})
	t.Run("tolerance all dead-letters at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, Retry: noIsolation}
			h := start(t, newSink(failAll(detailed)), cfg, dlq)
			h.write(records(h.acks, 0, 3, 10))
			h.flush()
			h.wantCalls(span(0, 3)) // never retried
			sends := dlq.snapshot()
			if len(sends) != 1 || !slices.Equal(sends[0].offs, span(0, 3)) {
				t.Fatalf("dead-lettered %+v", sends)
			}
			f := sends[0].f
			if f.Class != "fatal" || f.Attempts != 1 || !errors.Is(f.Err, errRejected) || f.Details["http.status"] != "400" {
				t.Errorf("failure = %+v", f)
			}
			h.acks.acked(t, span(0, 3)...)
			if h.w.Err() != nil {
				t.Errorf("Err = %v with tolerance all", h.w.Err())
			}
		})
	})
	t.Run("mixed entries", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			mixed := func(context.Context, []pipeline.Record) error {
				return &sinks.BatchError{Failed: []sinks.EntryError{
					{Index: 0, Err: sinks.AsFatal(errRejected)},
					{Index: 2, Err: errUnavailable},
				}}
			}
			cfg := sinks.Config{MaxBatchSize: 4, MaxTimeInBuffer: time.Hour}
			h := start(t, newSink(mixed), cfg, dlq)
			h.write(records(h.acks, 0, 4, 10))
			h.flush()
			h.wantCalls(span(0, 4), []int64{2})
			if got := dlq.offsets(); !slices.Equal(got, []int64{0}) {
				t.Errorf("dead-lettered %v, want [0]", got)
			}
			h.acks.acked(t, span(0, 4)...)
		})
	})
	t.Run("tolerance none fails the job", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, Retry: noIsolation}
			h := start(t, newSink(fatal(errRejected)), cfg, nil)
			h.write(records(h.acks, 0, 3, 10))
			synctest.Wait()
			exited, runErr := h.exited()
			if !exited || !errors.Is(runErr, errRejected) || !strings.Contains(runErr.Error(), "fatal") {
				t.Fatalf("Run exited %v with %v, want the fatal error", exited, runErr)
			}
			if err := h.w.Flush(context.Background()); !errors.Is(err, errRejected) {
				t.Errorf("Flush = %v", err)
			}
			if err := h.w.Write(context.Background(), records(h.acks, 3, 1, 10)); !errors.Is(err, errRejected) {
				t.Errorf("Write = %v", err)
			}
			if !errors.Is(h.w.Err(), errRejected) {
				t.Errorf("Err = %v", h.w.Err())
			}
			h.acks.acked(t)
		})
	})
	t.Run("dead-letter queue fails", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlqErr := errors.New("dlq unavailable")
			cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, Retry: noIsolation}
			h := start(t, newSink(fatal(errRejected)), cfg, &fakeDLQ{err: dlqErr})
			h.write(records(h.acks, 0, 3, 10))
			if err := h.w.Flush(context.Background()); !errors.Is(err, dlqErr) {
				t.Fatalf("Flush = %v, want the dead-letter error", err)
			}
			h.acks.acked(t)
		})
	})
}

func TestWriterThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{RetryBackoff: 100 * time.Millisecond}}
		h := start(t, newSink(throttled(5*time.Second)), cfg, nil)
		h.write(records(h.acks, 0, 2, 10))
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := h.sink.numCalls(); n != 1 {
			t.Fatalf("%d requests before Retry-After passed, want 1", n)
		}
		h.flush()
		calls := h.sink.snapshot()
		if len(calls) != 2 {
			t.Fatalf("%d requests, want 2", len(calls))
		}
		if gap := calls[1].at.Sub(calls[0].at); gap < 5*time.Second || gap > 5*time.Second+time.Millisecond {
			t.Errorf("retried after %v, want the 5s Retry-After", gap)
		}
		h.acks.acked(t, 0, 1)
	})
}

func TestWriterOversized(t *testing.T) {
	t.Run("tolerance all", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlq := &fakeDLQ{}
			cfg := sinks.Config{MaxBatchSize: 2, MaxBufferedRequests: 3, MaxRecordBytes: 10, MaxTimeInBuffer: time.Hour}
			h := start(t, newSink(), cfg, dlq)
			in := append(records(h.acks, 0, 1, 5), records(h.acks, 1, 1, 11)...)
			in = append(in, records(h.acks, 2, 1, 10)...) // exactly max_record_bytes: fine
			h.write(in)
			// Many oversized records in one Write: their credit comes back,
			// and each failure names its own record's size.
			big := records(h.acks, 100, 20, 50)
			big[1] = records(h.acks, 101, 1, 77)[0]
			h.write(big)
			h.flush()
			h.wantCalls([]int64{0, 2})
			want := append([]int64{1}, span(100, 20)...)
			if got := dlq.offsets(); !slices.Equal(got, want) {
				t.Fatalf("dead-lettered %v, want %v", got, want)
			}
			for _, s := range dlq.snapshot() {
				if s.f.Class != "oversized" || s.f.Attempts != 0 || !strings.Contains(s.f.Err.Error(), "max_record_bytes") {
					t.Errorf("failure = %+v", s.f)
				}
				size := 50
				switch s.offs[0] {
				case 1:
					size = 11
				case 101:
					size = 77
				}
				if want := fmt.Sprintf("record of %d bytes", size); len(s.offs) != 1 || !strings.Contains(s.f.Err.Error(), want) {
					t.Errorf("dead-letter send of %v: %v, want one record and %q", s.offs, s.f.Err, want)
				}
			}
			h.acks.acked(t, append([]int64{0, 2}, want...)...)
			if st := h.w.Stats(); st.DeadLettered.Load() != 21 || st.Buffered.Load() != 0 {
				t.Errorf("stats: dead-lettered %d buffered %d", st.DeadLettered.Load(), st.Buffered.Load())
			}
		})
	})
	t.Run("tolerance none fails the job", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := sinks.Config{MaxBatchSize: 2, MaxBufferedRequests: 3, MaxRecordBytes: 10, MaxTimeInBuffer: time.Hour}
			h := start(t, newSink(), cfg, nil)
			err := h.w.Write(context.Background(), records(h.acks, 0, 1, 11))
			if err == nil || !strings.Contains(err.Error(), "max_record_bytes") || !strings.Contains(err.Error(), "oversized") {
				t.Fatalf("Write = %v, want an oversized error", err)
			}
			// The job failed: Flush reports it instead of waiting for a
			// record that will never be done.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if ferr := h.w.Flush(ctx); ferr == nil || errors.Is(ferr, context.DeadlineExceeded) || !strings.Contains(ferr.Error(), "oversized") {
				t.Fatalf("Flush = %v, want the oversized failure", ferr)
			}
			synctest.Wait()
			if exited, runErr := h.exited(); !exited || runErr == nil {
				t.Errorf("Run exited %v with %v, want the job's error", exited, runErr)
			}
			if h.sink.numCalls() != 0 {
				t.Error("oversized record reached the sink")
			}
			h.acks.acked(t)
		})
	})
	t.Run("dead-letter queue fails", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dlqErr := errors.New("dlq unavailable")
			cfg := sinks.Config{MaxBatchSize: 2, MaxBufferedRequests: 3, MaxRecordBytes: 10, MaxTimeInBuffer: time.Hour}
			h := start(t, newSink(), cfg, &fakeDLQ{err: dlqErr})
			if err := h.w.Write(context.Background(), records(h.acks, 0, 1, 11)); !errors.Is(err, dlqErr) {
				t.Fatalf("Write = %v, want the dead-letter error", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.w.Flush(ctx); !errors.Is(err, dlqErr) {
				t.Fatalf("Flush = %v, want the dead-letter error", err)
			}
			h.acks.acked(t)
		})
	})
}

func TestWriterRequestTimeout(t *testing.T) {
	cfg := sinks.Config{
		MaxBatchSize: 2, MaxTimeInBuffer: time.Hour, RequestTimeout: time.Second,
		Retry: sinks.RetryConfig{RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 10 * time.Millisecond},
	}
	t.Run("retried", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(hang), cfg, nil) // the first request hangs
			h.write(records(h.acks, 0, 2, 10))
			h.flush()
			calls := h.sink.snapshot()
			if len(calls) != 2 {
				t.Fatalf("%d requests, want 2", len(calls))
			}
			if gap := calls[1].at.Sub(calls[0].at); gap < time.Second {
				t.Errorf("retried %v after the first request, before request_timeout", gap)
			}
			h.acks.acked(t, 0, 1)
			if n := h.w.Stats().FailedRequests.Load(); n != 1 {
				t.Errorf("Stats.FailedRequests = %d, want 1", n)
			}
		})
	})
	t.Run("fail_on_timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := cfg
			cfg.FailOnTimeout = true
			h := start(t, newSink(hang), cfg, nil)
			h.write(records(h.acks, 0, 2, 10))
			err := h.w.Flush(context.Background())
			if !errors.Is(err, sinks.ErrRequestTimeout) {
				t.Fatalf("Flush = %v, want ErrRequestTimeout", err)
			}
			synctest.Wait()
			if exited, runErr := h.exited(); !exited || !errors.Is(runErr, sinks.ErrRequestTimeout) {
				t.Fatalf("Run exited %v with %v, want ErrRequestTimeout", exited, runErr)
			}
			if n := h.sink.numCalls(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			h.acks.acked(t)
		})
	})
}

func TestWriterFlush(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(), sinks.Config{}, nil)
			h.flush()
			h.wantCalls()
		})
	})
	t.Run("sends at once and waits for in-flight", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sink := newSink()
			sink.def = sink.block
			h := start(t, sink, sinks.Config{MaxTimeInBuffer: time.Hour}, nil)
			h.write(records(h.acks, 0, 1, 10))
			synctest.Wait()
			h.wantCalls() // neither full nor old

			t0 := time.Now()
			flushed := make(chan error, 1)
			go func() { flushed <- h.w.Flush(context.Background()) }()
			synctest.Wait()
			h.wantCalls([]int64{0}) // sent regardless of size and age
			if h.sink.snapshot()[0].at != t0 {
				t.Error("Flush waited before sending")
			}
			select {
			case err := <-flushed:
				t.Fatalf("Flush returned %v with a request in flight", err)
			default:
			}
			sink.gate <- struct{}{}
			synctest.Wait()
			select {
			case err := <-flushed:
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatal("Flush still waiting after the request completed")
			}
			h.acks.acked(t, 0)
		})
	})
	t.Run("context ends first", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			sink := newSink()
			sink.def = hang
			h := start(t, sink, sinks.Config{RequestTimeout: time.Hour}, nil)
			h.write(records(h.acks, 0, 3, 10))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			t0 := time.Now()
			err := h.w.Flush(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Flush = %v, want context.DeadlineExceeded", err)
			}
			if waited := time.Since(t0); waited != 5*time.Second {
				t.Errorf("Flush returned after %v, want its 5s deadline", waited)
			}
			h.acks.acked(t)
		})
	})
	t.Run("concurrent flushes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := start(t, newSink(failSome(errUnavailable, 0)), sinks.Config{MaxTimeInBuffer: time.Hour}, nil)
			h.write(records(h.acks, 0, 3, 10))
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(h.flush)
			}
			wg.Wait()
			h.acks.acked(t, 0, 1, 2)
			// Flushing ends: later partial batches wait for their age again.
			h.write(records(h.acks, 3, 1, 10))
			synctest.Wait()
			if n := h.sink.numCalls(); n != 2 {
				t.Errorf("%d requests after the flushes ended, want 2", n)
			}
		})
	})
}

func TestWriterRunCancelAbandons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		sink := newSink()
		sink.def = hang
		cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, RequestTimeout: time.Hour}
		h := start(t, sink, cfg, dlq)
		h.write(records(h.acks, 0, 3, 10))
		synctest.Wait()
		if now, _ := sink.concurrency(); now != 1 {
			t.Fatalf("%d requests in flight, want 1", now)
		}
		if err := h.stop(); err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
		if now, _ := sink.concurrency(); now != 0 {
			t.Error("Run returned with a request still running")
		}
		h.acks.acked(t) // abandoned: re-delivered after restart, never acked
		if len(dlq.snapshot()) != 0 {
			t.Error("abandoned records dead-lettered")
		}
		if n := h.w.Stats().InFlightRequests.Load(); n != 0 {
			t.Errorf("Stats.InFlightRequests = %d", n)
		}
		if n := h.sink.numCalls(); n != 1 {
			t.Errorf("%d requests, want 1 (no retry after cancel)", n)
		}
	})
}

// TestWriterExactlyOnce drives the writer with concurrent writers against a
// sink that fails at random in every way it can, and checks each record ends
// exactly once: delivered once, or dead-lettered, and acknowledged once.
func TestWriterExactlyOnce(t *testing.T) {
	for seed := range uint64(8) {
		t.Run("seed="+string(rune('0'+seed)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { exactlyOnce(t, seed) })
		})
	}
}

func exactlyOnce(t *testing.T, seed uint64) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 7))
	random := func(ctx context.Context, b []pipeline.Record) error {
		mu.Lock()
		p := rng.IntN(100)
		idx := []int{rng.IntN(len(b))} // a BatchError names at least one entry
		for i := range b {
			if rng.IntN(3) == 0 && i != idx[0] {
				idx = append(idx, i)
			}
		}
		mu.Unlock()
		switch {
		case p < 45:
			return nil
		case p < 65:
			return failSome(errUnavailable, idx...)(ctx, b)
		case p < 72:
			return errUnavailable
		case p < 77:
			return throttled(30*time.Millisecond)(ctx, b)
		case p < 85:
			be := &sinks.BatchError{}
			for _, i := range idx {
				be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: sinks.AsFatal(errRejected)})
			}
			return be
		case p < 90:
			return hang(ctx, b)
		default:
			return fatal(errRejected)(ctx, b)
		}
	}
	sink := newSink()
	sink.def = random
	dlq := &fakeDLQ{}
	cfg := sinks.Config{
		MaxBatchSize: 16, MaxBufferedRequests: 64, MaxInFlightRequests: 4, MaxTimeInBuffer: 50 * time.Millisecond,
		MaxRecordBytes: 20, RequestTimeout: time.Second,
		Retry: sinks.RetryConfig{MaxAttempts: 4, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond},
	}
	h := start(t, sink, cfg, dlq)
	const writers, each = 4, 250
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for off := int64(w * 1000); off < int64(w*1000+each); {
				n := min(1+r.IntN(40), w*1000+each-int(off))
				recs := records(h.acks, off, n, 10)
				if r.IntN(10) == 0 {
					recs[0] = records(h.acks, off, 1, 25)[0] // oversized
				}
				if err := h.w.Write(context.Background(), recs); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				off += int64(n)
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	h.flush()

	var all []int64
	for w := range writers {
		all = append(all, span(int64(w*1000), each)...)
	}
	h.acks.acked(t, all...)
	dead := dlq.offsets()
	if len(dlq.early) != 0 {
		t.Errorf("offsets %v acknowledged before being dead-lettered", dlq.early)
	}
	delivered := maps.Clone(sink.delivered)
	for _, o := range all {
		d, dl := delivered[o], slices.Contains(dead, o)
		if (d == 1) == dl || d > 1 {
			t.Errorf("offset %d delivered %d times, dead-lettered %v", o, d, dl)
		}
	}
	st := h.w.Stats()
	if got := st.Delivered.Load() + st.DeadLettered.Load(); got != int64(len(all)) {
		t.Errorf("delivered %d + dead-lettered %d != %d records", st.Delivered.Load(), st.DeadLettered.Load(), len(all))
	}
	if st.Buffered.Load() != 0 || st.InFlightRequests.Load() != 0 {
		t.Errorf("after flush: buffered %d in flight %d", st.Buffered.Load(), st.InFlightRequests.Load())
	}
	if _, peak := sink.concurrency(); peak > cfg.MaxInFlightRequests {
		t.Errorf("peak concurrency %d exceeds max_in_flight_requests %d", peak, cfg.MaxInFlightRequests)
	}
	for _, c := range sink.snapshot() {
		if len(c.offs) > cfg.MaxBatchSize {
			t.Errorf("batch of %d records exceeds max_batch_size", len(c.offs))
		}
	}
}

func TestConfig(t *testing.T) {
	sink := newSink()
	t.Run("defaults", func(t *testing.T) {
		w, err := sinks.NewWriter(sink, sinks.Config{})
		if err != nil {
			t.Fatal(err)
		}
		want := sinks.Config{
			MaxBatchSize: 500, MaxBatchBytes: 4 << 20, MaxInFlightRequests: 8, MaxBufferedRequests: 10000,
			MaxBufferedBytes: 64 << 20, MaxTimeInBuffer: time.Second, MaxRecordBytes: 1 << 20, RequestTimeout: 30 * time.Second, Ordering: sinks.OrderPartition,
			Retry: sinks.RetryConfig{MaxAttempts: 10, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 10 * time.Second, IsolateBadRecords: sinks.IsolateBisect},
		}
		if got := w.Config(); got != want {
			t.Errorf("Config() = %+v\nwant       %+v", got, want)
		}
	})
	t.Run("max_record_bytes defaults to at most max_batch_bytes", func(t *testing.T) {
		w, err := sinks.NewWriter(sink, sinks.Config{MaxBatchBytes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Config().MaxRecordBytes; got != 1000 {
			t.Errorf("MaxRecordBytes = %d, want 1000", got)
		}
	})
	t.Run("set values are kept", func(t *testing.T) {
		cfg := sinks.Config{
			MaxBatchSize: 7, MaxBatchBytes: 900, MaxInFlightRequests: 2, MaxBufferedRequests: 8,
			MaxBufferedBytes: 5000, MaxTimeInBuffer: time.Minute, MaxRecordBytes: 90, RequestTimeout: time.Second, FailOnTimeout: true, Ordering: sinks.OrderKey,
			Retry: sinks.RetryConfig{MaxAttempts: 1, RetryBackoff: time.Millisecond, MaxRetryBackoff: time.Millisecond, IsolateBadRecords: sinks.IsolateNone},
		}
		w, err := sinks.NewWriter(sink, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if w.Config() != cfg {
			t.Errorf("Config() = %+v, want %+v", w.Config(), cfg)
		}
	})

	cases := []struct {
		name string
		cfg  sinks.Config
		key  string
	}{
		{"negative batch size", sinks.Config{MaxBatchSize: -1}, "max_batch_size"},
		{"negative batch bytes", sinks.Config{MaxBatchBytes: -1, MaxRecordBytes: 10}, "max_batch_bytes"},
		{"negative in flight", sinks.Config{MaxInFlightRequests: -1}, "max_in_flight_requests"},
		{"negative buffered", sinks.Config{MaxBufferedRequests: -1}, "max_buffered_requests"},
		{"buffered not above batch size", sinks.Config{MaxBatchSize: 100, MaxBufferedRequests: 100}, "max_buffered_requests"},
		{"batch size above the buffer", sinks.Config{MaxBatchSize: 20000, MaxBufferedRequests: 10000}, "max_buffered_requests"},
		{"negative buffered bytes", sinks.Config{MaxBufferedBytes: -1}, "max_buffered_bytes"},
		{"buffered bytes below batch bytes", sinks.Config{MaxBatchBytes: 1000, MaxBufferedBytes: 999}, "max_buffered_bytes"},
		{"negative record bytes", sinks.Config{MaxRecordBytes: -1}, "max_record_bytes"},
		{"record bytes above batch bytes", sinks.Config{MaxBatchBytes: 100, MaxRecordBytes: 101}, "max_record_bytes"},
		{"negative time in buffer", sinks.Config{MaxTimeInBuffer: -time.Second}, "max_time_in_buffer"},
		{"negative request timeout", sinks.Config{RequestTimeout: -time.Second}, "request_timeout"},
		{"negative attempts", sinks.Config{Retry: sinks.RetryConfig{MaxAttempts: -1}}, "max_attempts"},
		{"negative backoff", sinks.Config{Retry: sinks.RetryConfig{RetryBackoff: -time.Second}}, "retry_backoff"},
		{"negative max backoff", sinks.Config{Retry: sinks.RetryConfig{MaxRetryBackoff: -time.Second}}, "max_retry_backoff"},
		{"backoff above max backoff", sinks.Config{Retry: sinks.RetryConfig{RetryBackoff: time.Minute}}, "retry_backoff"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := sinks.NewWriter(sink, tc.cfg)
			if err == nil {
				t.Fatalf("NewWriter accepted %+v (effective %+v)", tc.cfg, w.Config())
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %q does not name %s", err, tc.key)
			}
		})
	}

	t.Run("every invalid key is reported", func(t *testing.T) {
		_, err := sinks.NewWriter(sink, sinks.Config{MaxBatchSize: -1, RequestTimeout: -1, Retry: sinks.RetryConfig{MaxAttempts: -1}})
		for _, key := range []string{"max_batch_size", "request_timeout", "max_attempts"} {
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("error %v does not name %s", err, key)
			}
		}
	})
	t.Run("nil sink", func(t *testing.T) {
		if _, err := sinks.NewWriter(nil, sinks.Config{}); err == nil {
			t.Error("NewWriter(nil) succeeded")
		}
	})
}

// TestWriterMalformedBatchError: a *BatchError that lists no entry, or an
// index outside the batch, cannot say what was delivered; the writer must
// not acknowledge anything on its word and retries the whole batch.
func TestWriterMalformedBatchError(t *testing.T) {
	for _, tc := range []struct {
		name string
		idx  []int
	}{
		{"no entries", nil},
		{"index past the end", []int{3}},
		{"negative index", []int{-1}},
		{"valid and invalid", []int{0, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
				h := start(t, newSink(failSome(errUnavailable, tc.idx...)), cfg, nil)
				h.write(records(h.acks, 0, 3, 10))
				synctest.Wait()
				h.acks.acked(t) // nothing acknowledged on a malformed report
				h.flush()
				h.wantCalls(span(0, 3), span(0, 3))
				h.acks.acked(t, 0, 1, 2)
			})
		})
	}
}

// TestWriterEntryErrorWithoutErr: an entry reported failed with a nil error
// is retried and, once out of attempts, dead-lettered with the batch error.
func TestWriterEntryErrorWithoutErr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{MaxAttempts: 1}}
		h := start(t, newSink(failSome(nil, 1)), cfg, dlq)
		h.write(records(h.acks, 0, 2, 10))
		h.flush()
		sends := dlq.snapshot()
		if len(sends) != 1 || !slices.Equal(sends[0].offs, []int64{1}) || sends[0].f.Err == nil {
			t.Fatalf("dead-lettered %+v, want offset 1 with an error", sends)
		}
		h.acks.acked(t, 0, 1)
	})
}

// TestWriterShutdownWhileDeadLettering: a dead-letter send cut short by the
// end of a context is a shutdown, not a failure of the job.
func TestWriterShutdownWhileDeadLettering(t *testing.T) {
	t.Run("write context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := sinks.Config{MaxBatchSize: 2, MaxBufferedRequests: 3, MaxRecordBytes: 10}
			h := start(t, newSink(), cfg, &fakeDLQ{})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := h.w.Write(ctx, records(h.acks, 0, 1, 11)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Write = %v, want context.Canceled", err)
			}
			if err := h.w.Err(); err != nil {
				t.Fatalf("Err = %v: a cancelled Write failed the job", err)
			}
			h.flush() // the record's credit came back
			h.acks.acked(t)
		})
	})
	t.Run("run context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := sinks.Config{MaxBatchSize: 2, MaxTimeInBuffer: time.Hour, Retry: noIsolation}
			h := start(t, newSink(fatal(errRejected)), cfg, &fakeDLQ{block: true})
			h.write(records(h.acks, 0, 2, 10))
			synctest.Wait() // the fatal batch waits on the dead-letter queue
			if err := h.stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			if err := h.w.Err(); err != nil {
				t.Fatalf("Err = %v: shutting down failed the job", err)
			}
			h.acks.acked(t)
		})
	})
}

// movedAcker is a partition's acker whose partition can move away.
type movedAcker struct {
	*counter
	gone atomic.Bool
}

func (a *movedAcker) Abandoned() bool { return a.gone.Load() }

// TestWriterDropsAbandoned: records whose partition moved away after they
// were buffered (their acker says Abandoned) are not sent, neither fresh
// nor as a retry; they are acknowledged, their credit returns, and the
// other partitions' records go out as usual.
func TestWriterDropsAbandoned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{MaxBatchSize: 10, MaxBufferedRequests: 100, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{MaxAttempts: 100, RetryBackoff: time.Second, MaxRetryBackoff: time.Second}}
		// The first call fails, so records 0-9 wait as a retry.
		var abandon pipeline.Abandonment
		h := start(t, newSink(failAll(errors.New("503"))), cfg, nil, func(w *sinks.Writer) { w.WatchAbandonment(&abandon) })
		moved := &movedAcker{counter: newCounter()}
		withAcker := func(recs []pipeline.Record, a pipeline.Acker) []pipeline.Record {
			for i := range recs {
				recs[i] = recs[i].WithAcker(a)
			}
			return recs
		}
		h.write(withAcker(records(nil, 0, 10, 8), moved)) // a full batch: sent, fails
		synctest.Wait()
		h.write(withAcker(records(nil, 10, 5, 8), moved))
		h.write(records(h.acks, 100, 5, 8)) // another partition
		moved.gone.Store(true)
		abandon.Add()
		h.flush()
		h.wantCalls(span(0, 10), span(100, 5))
		moved.acked(t, span(0, 15)...)
		h.acks.acked(t, span(100, 5)...)
		st := h.w.Stats()
		if st.Abandoned.Load() != 15 || st.Buffered.Load() != 0 || st.Delivered.Load() != 5 {
			t.Errorf("stats: abandoned %d buffered %d delivered %d, want 15, 0, 5", st.Abandoned.Load(), st.Buffered.Load(), st.Delivered.Load())
		}
		if fr, _ := h.w.Free(); fr != 100 {
			t.Errorf("free credit %d after the drop, want all 100 back", fr)
		}
	})
}

// releasingAcker is a movedAcker that takes records back undone
// (pipeline.Releaser), as the Kafka source's does while it revokes.
type releasingAcker struct {
	movedAcker
	released *counter
}

func (a *releasingAcker) Release(offs []int64) { a.released.Ack(offs) }

// TestWriterSweepsAbandoned: when a partition is being revoked, the
// records of it that wait anywhere in the buffer (not only at the front)
// are given back undone at once, without being sent and without being
// acknowledged, while its request in flight completes and is acknowledged;
// the other partitions' records stay.
func TestWriterSweepsAbandoned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{MaxBatchSize: 10, MaxInFlightRequests: 1, MaxBufferedRequests: 100, MaxTimeInBuffer: time.Hour}
		var abandon pipeline.Abandonment
		sink := newSink()
		sink.script = []behaviour{sink.block}
		h := start(t, sink, cfg, nil, func(w *sinks.Writer) { w.WatchAbandonment(&abandon) })
		moved := &releasingAcker{movedAcker: movedAcker{counter: newCounter()}, released: newCounter()}
		withAcker := func(recs []pipeline.Record) []pipeline.Record {
			for i := range recs {
				recs[i] = recs[i].WithAcker(moved)
			}
			return recs
		}
		h.write(withAcker(records(nil, 0, 10, 8))) // sent; the request hangs
		synctest.Wait()
		h.write(withAcker(records(nil, 10, 20, 8))) // two full batches wait for the slot
		h.write(records(h.acks, 100, 5, 8))         // another partition
		moved.gone.Store(true)
		abandon.Add()
		synctest.Wait()
		moved.released.acked(t, span(10, 20)...)
		moved.acked(t) // nothing delivered yet
		if st := h.w.Stats(); st.Buffered.Load() != 15 || st.Abandoned.Load() != 20 {
			t.Errorf("after the sweep: buffered or in flight %d, abandoned %d; want 15 (10 in flight, 5 of the other partition) and 20", st.Buffered.Load(), st.Abandoned.Load())
		}
		sink.gate <- struct{}{}
		h.flush()
		h.wantCalls(span(0, 10), span(100, 5))
		moved.acked(t, span(0, 10)...) // in flight when the partition moved: done
		h.acks.acked(t, span(100, 5)...)
	})
	// A request in flight when the partition moved that then fails: its
	// records are given back at once, not after the retry's backoff.
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{MaxBatchSize: 10, MaxTimeInBuffer: time.Hour, Retry: sinks.RetryConfig{MaxAttempts: 100, RetryBackoff: time.Hour, MaxRetryBackoff: time.Hour}}
		var abandon pipeline.Abandonment
		sink := newSink()
		sink.script = []behaviour{func(ctx context.Context, _ []pipeline.Record) error {
			<-sink.gate
			return errors.New("503")
		}}
		h := start(t, sink, cfg, nil, func(w *sinks.Writer) { w.WatchAbandonment(&abandon) })
		moved := &releasingAcker{movedAcker: movedAcker{counter: newCounter()}, released: newCounter()}
		recs := records(nil, 0, 10, 8)
		for i := range recs {
			recs[i] = recs[i].WithAcker(moved)
		}
		h.write(recs)
		synctest.Wait()
		moved.gone.Store(true)
		abandon.Add()
		synctest.Wait()
		sink.gate <- struct{}{}
		synctest.Wait()
		moved.released.acked(t, span(0, 10)...)
		moved.acked(t)
		if n := sink.numCalls(); n != 1 {
			t.Errorf("%d requests, want 1 (the moved records not retried)", n)
		}
	})
}

// TestWriterConfigFault: a failure that is about the request, not its
// records (bad credentials, an unknown URL, headers the destination
// refuses), stops the job even with tolerance all, and the records are
// neither dead-lettered nor acknowledged: they are delivered once the
// configuration is fixed.
func TestWriterConfigFault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		cfg := sinks.Config{MaxBatchSize: 3, MaxTimeInBuffer: time.Hour}
		cause := sinks.AsConfigError(errors.New("431 Request Header Fields Too Large"))
		h := start(t, newSink(failAll(cause)), cfg, dlq)
		h.write(records(h.acks, 0, 3, 10))
		synctest.Wait()
		exited, err := h.exited()
		if !exited || err == nil || !strings.Contains(err.Error(), "configuration fault") || !strings.Contains(err.Error(), "431") {
			t.Fatalf("Run exited %v with %v; want a configuration fault naming 431", exited, err)
		}
		if got := dlq.offsets(); len(got) != 0 {
			t.Errorf("dead-lettered %v; a configuration fault must not dead-letter data", got)
		}
		h.acks.acked(t) // none
		if n := h.sink.numCalls(); n != 1 {
			t.Errorf("%d requests, want 1: a configuration fault is not retried", n)
		}
	})
}
