package sinks_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// switchSink fails every request while down, with err.
type switchSink struct {
	mu    sync.Mutex
	down  bool
	err   error
	calls []breakerCall
	got   map[int64]bool
}

type breakerCall struct {
	at   time.Time
	size int
	ok   bool
}

func (s *switchSink) WriteBatch(_ context.Context, batch []pipeline.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, breakerCall{at: time.Now(), size: len(batch), ok: !s.down})
	if s.down {
		return s.err
	}
	for _, r := range batch {
		s.got[r.Origin.Offset] = true
	}
	return nil
}

func (s *switchSink) set(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *switchSink) snapshot() []breakerCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]breakerCall(nil), s.calls...)
}

func TestWriterBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &switchSink{down: true, err: errors.New("503-ish outage"), got: map[int64]bool{}}
		w, err := sinks.NewWriter(sink, sinks.Config{
			MaxBatchSize: 50, MaxInFlightRequests: 1, MaxBufferedRequests: 1000, MaxTimeInBuffer: time.Millisecond,
			Retry: sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 10 * time.Millisecond},
		}, sinks.WithBreaker(sinks.BreakerConfig{FailureRatio: 0.5, MinRequests: 4, OpenTimeout: 5 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.Run(ctx)
		recs := make([]pipeline.Record, 500)
		for i := range recs {
			recs[i] = pipeline.Record{Value: []byte("v"), Origin: pipeline.Origin{Offset: int64(i)}}
		}
		if err := w.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if got := w.BreakerState(); got != sinks.BreakerOpen {
			t.Fatalf("breaker %s after a second of failures, want open", got)
		}
		opened := sink.snapshot()
		if len(opened) != 4 {
			t.Fatalf("%d requests before opening, want MinRequests=4", len(opened))
		}
		// While open nothing is sent and nothing is dropped.
		time.Sleep(3 * time.Second)
		if n := len(sink.snapshot()); n != len(opened) {
			t.Fatalf("%d requests sent while open", n-len(opened))
		}
		if b := w.Stats().Buffered.Load(); b != 500 {
			t.Fatalf("buffered %d while open, want all 500 kept", b)
		}
		// The sink recovers; after the open timeout one small probe closes it.
		sink.set(false)
		time.Sleep(2 * time.Second)
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		calls := sink.snapshot()
		probe := calls[len(opened)]
		if wait := probe.at.Sub(opened[len(opened)-1].at); wait < 5*time.Second {
			t.Fatalf("probe %v after the last failure, want >= open timeout 5s", wait)
		}
		if probe.size > 10 {
			t.Fatalf("probe batch of %d records, want a small one (<= 10)", probe.size)
		}
		if got := w.BreakerState(); got != sinks.BreakerClosed {
			t.Fatalf("breaker %s after a successful probe, want closed", got)
		}
		if len(sink.got) != 500 {
			t.Fatalf("%d of 500 records delivered after recovery", len(sink.got))
		}
	})
}

// TestWriterBreakerIgnoresFatal: 4xx-style fatal answers are the records'
// fault, not the destination's; they never open the breaker.
func TestWriterBreakerIgnoresFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &switchSink{down: true, err: sinks.AsFatal(errors.New("400 bad record")), got: map[int64]bool{}}
		dlq := &countingDLQ{}
		w, err := sinks.NewWriter(sink, sinks.Config{
			MaxBatchSize: 10, MaxInFlightRequests: 1, MaxBufferedRequests: 1000, MaxTimeInBuffer: time.Millisecond,
		}, sinks.WithDeadLetter(dlq), sinks.WithBreaker(sinks.BreakerConfig{MinRequests: 2}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.Run(ctx)
		recs := make([]pipeline.Record, 100)
		for i := range recs {
			recs[i] = pipeline.Record{Value: []byte("v"), Origin: pipeline.Origin{Offset: int64(i)}}
		}
		if err := w.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := w.BreakerState(); got != sinks.BreakerClosed {
			t.Fatalf("breaker %s after fatal answers only, want closed", got)
		}
		if dlq.n != 100 {
			t.Fatalf("%d dead-lettered, want 100", dlq.n)
		}
	})
}

type countingDLQ struct {
	mu sync.Mutex
	n  int
}

func (d *countingDLQ) Send(_ context.Context, recs []pipeline.Record, _ pipeline.Failure) error {
	d.mu.Lock()
	d.n += len(recs)
	d.mu.Unlock()
	return nil
}
