package pipeline_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/pipeline"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// events records the order in which lifecycle calls happened.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// before fails unless a happened, b happened, and a came first.
func (e *events) before(t *testing.T, a, b string) {
	t.Helper()
	l := e.list()
	i, j := slices.Index(l, a), slices.Index(l, b)
	if i < 0 || j < 0 || i > j {
		t.Errorf("events %q: want %q before %q", l, a, b)
	}
}

// fakeSource emits its batches, then returns err or, with wait, blocks until
// its context ends.
type fakeSource struct {
	ev       *events
	batches  [][]pipeline.Record
	wait     bool
	err      error
	closeErr error
	emitted  chan struct{} // closed once every batch was emitted
	emitErr  error         // what emit returned, when it failed
}

func (s *fakeSource) Run(ctx context.Context, emit pipeline.Emit) error {
	for _, b := range s.batches {
		if err := emit(ctx, b); err != nil {
			s.emitErr = err
			s.ev.add("source failed")
			return err
		}
	}
	if s.emitted != nil {
		close(s.emitted)
	}
	if s.wait {
		<-ctx.Done()
		s.ev.add("source stopped")
		return ctx.Err()
	}
	return s.err
}

func (s *fakeSource) Close(context.Context) error {
	s.ev.add("close")
	return s.closeErr
}

// fakeSink holds written records until Flush, which acknowledges them, unless
// ackOnWrite. Run returns what runErr delivers, or nil when its ctx ends.
type fakeSink struct {
	ev         *events
	ackOnWrite bool
	runErr     chan error
	flushHang  bool // Flush waits for its ctx
	flushFail  error

	mu   sync.Mutex
	got  []pipeline.Record
	held []pipeline.Record
}

func (s *fakeSink) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		s.ev.add("sink stopped")
		return nil
	case err := <-s.runErr:
		s.ev.add("sink failed")
		return err
	}
}

func (s *fakeSink) Write(_ context.Context, recs []pipeline.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, recs...)
	if s.ackOnWrite {
		pipeline.AckAll(recs)
		return nil
	}
	s.held = append(s.held, recs...)
	return nil
}

func (s *fakeSink) Flush(ctx context.Context) error {
	s.ev.add("flush")
	if s.flushFail != nil {
		s.runErr <- s.flushFail // the sink breaks while draining
	}
	if s.flushHang || s.flushFail != nil {
		<-ctx.Done()
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pipeline.AckAll(s.held)
	s.held = nil
	return nil
}

func (s *fakeSink) values() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return values(s.got)
}

// fakeDLQ stores dead-lettered records; it checks they were not acknowledged
// before being stored.
type fakeDLQ struct {
	acks *counter
	err  error

	mu       sync.Mutex
	recs     []pipeline.Record
	failures []pipeline.Failure
	early    []int64 // offsets already acknowledged when sent
}

func (d *fakeDLQ) Send(_ context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	if d.err != nil {
		return d.err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		if d.acks != nil && d.acks.count(r.Origin.Offset) != 0 {
			d.early = append(d.early, r.Origin.Offset)
		}
	}
	d.recs = append(d.recs, recs...)
	d.failures = append(d.failures, f)
	return nil
}

// queue is the dead-letter policy over d, as a job builds it.
func queue(t *testing.T, tol deadletter.Tolerance, d pipeline.DeadLetter) *deadletter.Queue {
	t.Helper()
	q, err := deadletter.NewQueue(deadletter.Config{Tolerance: tol, Topic: "dlq"}, d)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func offsets(from, n int64) []int64 {
	var out []int64
	for o := from; o < from+n; o++ {
		out = append(out, o)
	}
	return out
}

func newPipeline(t *testing.T, src pipeline.Source, sink pipeline.Sink, opts ...pipeline.Option) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.New(src, sink, append([]pipeline.Option{pipeline.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNew(t *testing.T) {
	ev := &events{}
	if _, err := pipeline.New(nil, &fakeSink{ev: ev}); err == nil {
		t.Error("New without source succeeded")
	}
	if _, err := pipeline.New(&fakeSource{ev: ev}, nil); err == nil {
		t.Error("New without sink succeeded")
	}
	_, err := pipeline.New(&fakeSource{ev: ev}, &fakeSink{ev: ev}, pipeline.WithDrainTimeout(-time.Second))
	if err == nil || !strings.Contains(err.Error(), "drain timeout") {
		t.Errorf("negative drain timeout: err = %v", err)
	}
	if _, err := pipeline.New(&fakeSource{ev: ev}, &fakeSink{ev: ev}, pipeline.WithLogger(nil)); err != nil {
		t.Errorf("nil logger: %v", err)
	}
}

func TestRunFiniteSourceDrains(t *testing.T) {
	c, ev := newCounter(), &events{}
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 4), recs(c, 4, 3), recs(c, 7, 3)}}
	sink := &fakeSink{ev: ev} // acknowledges only on Flush
	p := newPipeline(t, src, sink)
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("Run = %v", err)
	}
	c.exactlyOnce(t, offsets(0, 10)...)
	ev.before(t, "flush", "close")
	ev.before(t, "flush", "sink stopped")
	if n := p.Stats().In.Load(); n != 10 {
		t.Errorf("Stats.In = %d, want 10", n)
	}
	if got := sink.values(); len(got) != 10 || got[0] != "v0" || got[9] != "v9" {
		t.Errorf("sink got %q", got)
	}
}

func TestRunCancelDrains(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel func(ctx context.Context) (context.Context, func())
	}{
		{"cancel", func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancel(ctx)
			return ctx, cancel
		}},
		{"cancel with a cause", func(ctx context.Context) (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(ctx)
			return ctx, func() { cancel(errors.New("signal: terminated")) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ev := newCounter(), &events{}
			src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 5)}, wait: true, emitted: make(chan struct{})}
			sink := &fakeSink{ev: ev}
			p := newPipeline(t, src, sink)
			ctx, cancel := tc.cancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			<-src.emitted
			if c.total() != 0 {
				t.Fatal("records acknowledged before the sink flushed")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run after cancel = %v, want nil", err)
			}
			c.exactlyOnce(t, offsets(0, 5)...)
			ev.before(t, "source stopped", "flush")
			ev.before(t, "flush", "close")
		})
	}
}

// TestRunDeadlineDrains: a parent context whose deadline passes is a
// shutdown like any other, not a sink failure.
func TestRunDeadlineDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, ev := newCounter(), &events{}
		src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 5)}, wait: true}
		sink := &fakeSink{ev: ev}
		p := newPipeline(t, src, sink)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Run(ctx); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		c.exactlyOnce(t, offsets(0, 5)...)
		ev.before(t, "flush", "close")
	})
}

func TestRunOperators(t *testing.T) {
	c, ev := newCounter(), &events{}
	in := []pipeline.Record{
		rec(c, 0, "keep"), rec(c, 1, "drop"), rec(c, 2, "a,b,c"), rec(c, 3, "drop"), rec(c, 4, "x"),
	}
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{in}}
	sink := &fakeSink{ev: ev, ackOnWrite: true}
	chain := pipeline.Chain{
		{"drop", pipeline.Filter(func(r pipeline.Record) (bool, error) { return string(r.Value) != "drop", nil })},
		{"split", split()},
		{"upper", upper()},
	}
	p := newPipeline(t, src, sink, pipeline.WithOperators(chain))
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(sink.values(), ","), "KEEP,A,B,C,X"; got != want {
		t.Errorf("sink got %s, want %s", got, want)
	}
	c.exactlyOnce(t, 0, 1, 2, 3, 4)
	if n := p.Stats().Dropped.Load(); n != 2 {
		t.Errorf("Stats.Dropped = %d, want 2", n)
	}
	if n := p.Stats().In.Load(); n != 5 {
		t.Errorf("Stats.In = %d, want 5", n)
	}
}

// TestRunFanoutAcksParentLast checks through the whole pipeline that a
// fanned-out record is acknowledged only when its last child is.
func TestRunFanoutAcksParentLast(t *testing.T) {
	c, ev := newCounter(), &events{}
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{{rec(c, 7, "a,b,c")}}}
	sink := &fakeSink{ev: ev}
	p := newPipeline(t, src, sink, pipeline.WithOperators(pipeline.Chain{{"split", split()}}))
	src.batches = append(src.batches, nil) // an empty emit is fine too
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.exactlyOnce(t, 7)

	// The same, acking the children one by one.
	c2 := newCounter()
	out, err := pipeline.Chain{{"split", split()}}.Apply(context.Background(), rec(c2, 8, "a,b,c"))
	if err != nil {
		t.Fatal(err)
	}
	out[1].Ack()
	out[2].Ack()
	if c2.total() != 0 {
		t.Fatal("parent acknowledged with one child pending")
	}
	out[0].Ack()
	c2.exactlyOnce(t, 8)
}

func TestRunOperatorError(t *testing.T) {
	chain := pipeline.Chain{{"upper", upper()}, {"check", failOn("V3")}}
	batches := func(c *counter) [][]pipeline.Record {
		return [][]pipeline.Record{recs(c, 0, 2), recs(c, 2, 3)}
	}

	t.Run("tolerant dead letter", func(t *testing.T) {
		c, ev := newCounter(), &events{}
		dlq := &fakeDLQ{acks: c}
		src := &fakeSource{ev: ev, batches: batches(c)}
		sink := &fakeSink{ev: ev, ackOnWrite: true}
		p := newPipeline(t, src, sink, pipeline.WithOperators(chain), pipeline.WithDeadLetter(queue(t, deadletter.ToleranceAll, dlq)))
		if err := p.Run(context.Background()); err != nil {
			t.Fatalf("Run = %v", err)
		}
		c.exactlyOnce(t, 0, 1, 2, 3, 4)
		if len(dlq.recs) != 1 || dlq.recs[0].Origin.Offset != 3 || string(dlq.recs[0].Value) != "v3" {
			t.Fatalf("dead-lettered %v, want the original record at offset 3", values(dlq.recs))
		}
		f := dlq.failures[0]
		var oe *pipeline.OperatorError
		if f.Class != "operator" || f.Attempts != 1 || !errors.As(f.Err, &oe) || oe.Operator != "check" || !errors.Is(f.Err, errBoom) {
			t.Errorf("failure = %+v", f)
		}
		if len(dlq.early) != 0 {
			t.Errorf("offsets %v acknowledged before the dead-letter queue stored them", dlq.early)
		}
		if n := p.Stats().DeadLettered.Load(); n != 1 {
			t.Errorf("Stats.DeadLettered = %d, want 1", n)
		}
		if got := strings.Join(sink.values(), ","); got != "V0,V1,V2,V4" {
			t.Errorf("sink got %s", got)
		}
	})

	for _, tc := range []struct {
		name string
		opt  func(t *testing.T, dlq *fakeDLQ) pipeline.Option
		why  error // what the error wraps besides the operator's
	}{
		{"no dead letter queue", nil, pipeline.ErrNoDeadLetter},
		{"tolerance none", func(t *testing.T, dlq *fakeDLQ) pipeline.Option {
			return pipeline.WithDeadLetter(queue(t, deadletter.ToleranceNone, dlq))
		}, deadletter.ErrNotTolerated},
		{"tolerance none without a producer", func(t *testing.T, _ *fakeDLQ) pipeline.Option {
			return pipeline.WithDeadLetter(queue(t, deadletter.ToleranceNone, nil))
		}, deadletter.ErrNotTolerated},
		{"nil queue", func(*testing.T, *fakeDLQ) pipeline.Option { return pipeline.WithDeadLetter(nil) }, pipeline.ErrNoDeadLetter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ev := newCounter(), &events{}
			src := &fakeSource{ev: ev, batches: batches(c)}
			sink := &fakeSink{ev: ev, ackOnWrite: true}
			opts := []pipeline.Option{pipeline.WithOperators(chain)}
			dlq := &fakeDLQ{}
			if tc.opt != nil {
				opts = append(opts, tc.opt(t, dlq))
			}
			p := newPipeline(t, src, sink, opts...)
			err := p.Run(context.Background())
			var oe *pipeline.OperatorError
			if err == nil || !strings.Contains(err.Error(), "t/0@3") || !errors.As(err, &oe) || oe.Operator != "check" {
				t.Fatalf("Run = %v, want an operator error naming t/0@3", err)
			}
			if !errors.Is(err, tc.why) || !errors.Is(err, errBoom) {
				t.Errorf("Run = %v, want it to wrap %v and the operator's error", err, tc.why)
			}
			if c.count(3) != 0 {
				t.Error("failed record acknowledged without being dead-lettered")
			}
			if len(dlq.recs) != 0 {
				t.Errorf("dead-lettered %v although the job fails", values(dlq.recs))
			}
			if p.Stats().DeadLettered.Load() != 0 {
				t.Error("Stats.DeadLettered counted a record that was not dead-lettered")
			}
			ev.before(t, "source failed", "close")
		})
	}

	t.Run("dead letter queue fails", func(t *testing.T) {
		c, ev := newCounter(), &events{}
		dlqErr := errors.New("dlq down")
		src := &fakeSource{ev: ev, batches: batches(c)}
		sink := &fakeSink{ev: ev, ackOnWrite: true}
		p := newPipeline(t, src, sink, pipeline.WithOperators(chain), pipeline.WithDeadLetter(queue(t, deadletter.ToleranceAll, &fakeDLQ{err: dlqErr})))
		err := p.Run(context.Background())
		if !errors.Is(err, dlqErr) || !strings.Contains(err.Error(), "t/0@3") {
			t.Fatalf("Run = %v, want the dead-letter error naming t/0@3", err)
		}
		if c.count(3) != 0 {
			t.Error("record acknowledged although the dead-letter queue failed")
		}
	})
}

func TestRunSinkFails(t *testing.T) {
	c, ev := newCounter(), &events{}
	sinkErr := errors.New("sink exploded")
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 3)}, wait: true, emitted: make(chan struct{})}
	sink := &fakeSink{ev: ev, runErr: make(chan error)}
	p := newPipeline(t, src, sink)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	<-src.emitted
	sink.runErr <- sinkErr
	err := <-done
	if !errors.Is(err, sinkErr) {
		t.Fatalf("Run = %v, want the sink's error", err)
	}
	ev.before(t, "sink failed", "source stopped")
	ev.before(t, "source stopped", "close")
	if c.total() != 0 {
		t.Error("records acknowledged although the sink failed")
	}
}

// TestRunSinkFailsWhileDraining: the sink breaks during the final flush; Run
// must report it at once instead of waiting out the drain timeout.
func TestRunSinkFailsWhileDraining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, ev := newCounter(), &events{}
		sinkErr := errors.New("sink broke while draining")
		src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 3)}}
		sink := &fakeSink{ev: ev, runErr: make(chan error, 1), flushFail: sinkErr}
		p := newPipeline(t, src, sink, pipeline.WithDrainTimeout(time.Hour))
		start := time.Now() // the bubble's fake clock
		err := p.Run(context.Background())
		if !errors.Is(err, sinkErr) {
			t.Fatalf("Run = %v, want the sink's error", err)
		}
		if waited := time.Since(start); waited >= time.Hour {
			t.Errorf("Run waited out the drain timeout (%v of fake time)", waited)
		}
		ev.before(t, "flush", "close")
	})
}

func TestRunDrainTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, ev := newCounter(), &events{}
		src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 3)}}
		sink := &fakeSink{ev: ev, flushHang: true}
		p := newPipeline(t, src, sink, pipeline.WithDrainTimeout(5*time.Second))
		start := time.Now()
		err := p.Run(context.Background())
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "drain") {
			t.Fatalf("Run = %v, want a drain deadline error", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("drain took %v of fake time, want the 5s drain timeout", waited)
		}
		if c.total() != 0 {
			t.Error("undelivered records acknowledged")
		}
		ev.before(t, "flush", "close")
	})
}

func TestRunSourceAndCloseErrors(t *testing.T) {
	c, ev := newCounter(), &events{}
	srcErr, closeErr := errors.New("source broke"), errors.New("commit failed")
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 3)}, err: srcErr, closeErr: closeErr}
	sink := &fakeSink{ev: ev}
	p := newPipeline(t, src, sink)
	err := p.Run(context.Background())
	if !errors.Is(err, srcErr) || !errors.Is(err, closeErr) {
		t.Fatalf("Run = %v, want both the source and the close error", err)
	}
	// What was emitted is still flushed before the source commits.
	c.exactlyOnce(t, 0, 1, 2)
	ev.before(t, "flush", "close")
}

// failingWriteSink rejects every Write, as a failed writer does.
type failingWriteSink struct {
	fakeSink
	err error
}

func (s *failingWriteSink) Write(context.Context, []pipeline.Record) error { return s.err }

func TestRunWriteError(t *testing.T) {
	c, ev := newCounter(), &events{}
	werr := errors.New("writer failed")
	src := &fakeSource{ev: ev, batches: [][]pipeline.Record{recs(c, 0, 3)}}
	sink := &failingWriteSink{fakeSink: fakeSink{ev: ev}, err: werr}
	p := newPipeline(t, src, sink)
	err := p.Run(context.Background())
	if !errors.Is(err, werr) || !errors.Is(src.emitErr, werr) {
		t.Fatalf("Run = %v (emit returned %v), want the write error", err, src.emitErr)
	}
	ev.before(t, "source failed", "close")
}
