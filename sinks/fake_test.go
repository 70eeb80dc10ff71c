package sinks_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// This file holds the fakes the writer tests share: a scriptable Sink, a
// dead-letter queue and a counting Acker.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var (
	errUnavailable = errors.New("503 unavailable")
	errRejected    = errors.New("400 rejected")
)

// behaviour decides the outcome of one WriteBatch call.
type behaviour func(ctx context.Context, batch []pipeline.Record) error

func succeed(context.Context, []pipeline.Record) error { return nil }

// failAll fails every entry with err (retryable unless err says otherwise).
func failAll(err error) behaviour {
	return func(context.Context, []pipeline.Record) error { return err }
}

// failSome fails the entries at idx with err and delivers the others.
func failSome(err error, idx ...int) behaviour {
	return func(context.Context, []pipeline.Record) error {
		be := &sinks.BatchError{}
		for _, i := range idx {
			be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: err})
		}
		return be
	}
}

func fatal(err error) behaviour { return failAll(sinks.AsFatal(err)) }

func throttled(after time.Duration) behaviour {
	return failAll(&sinks.ThrottledError{Err: errors.New("429 too many requests"), RetryAfter: after})
}

// hang blocks until the request's context ends.
func hang(ctx context.Context, _ []pipeline.Record) error {
	<-ctx.Done()
	return ctx.Err()
}

// call is what the fake sink saw in one WriteBatch.
type call struct {
	offs  []int64
	bytes int
	at    time.Time

	// batch is the slice WriteBatch was given and seen a deep copy of its
	// records at the start of the call. The fake keeps batch, which a real
	// sink must not, only to check the writer left it alone: a batch whose
	// records change after WriteBatch returned means the writer reused
	// memory the sink may still be reading.
	batch []pipeline.Record
	seen  []pipeline.Record
}

// cloneRecord copies r's bytes, so that later changes to the original show.
func cloneRecord(r pipeline.Record) pipeline.Record {
	c := r
	c.Key = bytes.Clone(r.Key)
	c.Value = bytes.Clone(r.Value)
	c.Headers = slices.Clone(r.Headers)
	for i, h := range c.Headers {
		c.Headers[i].Value = bytes.Clone(h.Value)
	}
	return c
}

// sameRecord compares everything a sink can see of a record but its acker.
func sameRecord(a, b pipeline.Record) bool {
	return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) && a.Timestamp.Equal(b.Timestamp) &&
		a.Origin == b.Origin && slices.EqualFunc(a.Headers, b.Headers, func(x, y pipeline.Header) bool {
		return x.Key == y.Key && bytes.Equal(x.Value, y.Value)
	})
}

// changed describes how c.batch differs from what the sink saw, or is "".
func (c call) changed() string {
	if len(c.batch) != len(c.seen) {
		return fmt.Sprintf("batch of %d records now has %d", len(c.seen), len(c.batch))
	}
	for i := range c.batch {
		if !sameRecord(c.batch[i], c.seen[i]) {
			return fmt.Sprintf("entry %d was %s/%d@%d %q, is now %s/%d@%d %q", i,
				c.seen[i].Origin.Topic, c.seen[i].Origin.Partition, c.seen[i].Origin.Offset, c.seen[i].Value,
				c.batch[i].Origin.Topic, c.batch[i].Origin.Partition, c.batch[i].Origin.Offset, c.batch[i].Value)
		}
	}
	return ""
}

// fakeSink records every batch it receives. Call i behaves as script[i]
// when set, else as def (nil: succeed). It tracks how many calls run at once.
type fakeSink struct {
	script []behaviour
	def    behaviour
	gate   chan struct{} // released one token per blocked call

	mu          sync.Mutex
	calls       []call
	inflight    int
	maxInflight int
	delivered   map[int64]int // entries reported delivered, per offset
	mutated     []string      // batches the writer changed while WriteBatch ran
}

func newSink(script ...behaviour) *fakeSink {
	return &fakeSink{script: script, gate: make(chan struct{}), delivered: map[int64]int{}}
}

// block waits for a token on the gate or the end of the request.
func (s *fakeSink) block(ctx context.Context, _ []pipeline.Record) error {
	select {
	case <-s.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *fakeSink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	c := call{at: time.Now(), batch: batch}
	for _, r := range batch {
		c.offs = append(c.offs, r.Origin.Offset)
		c.bytes += r.Size()
		c.seen = append(c.seen, cloneRecord(r))
	}
	s.mu.Lock()
	i := len(s.calls)
	s.calls = append(s.calls, c)
	s.inflight++
	s.maxInflight = max(s.maxInflight, s.inflight)
	b := s.def
	if i < len(s.script) && s.script[i] != nil {
		b = s.script[i]
	}
	s.mu.Unlock()

	err := error(nil)
	if b != nil {
		err = b(ctx, batch)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if d := c.changed(); d != "" {
		s.mutated = append(s.mutated, fmt.Sprintf("call %d, during WriteBatch: %s", i, d))
	}
	s.inflight--
	failed := map[int]bool{}
	var be *sinks.BatchError
	switch {
	case err == nil:
	case errors.As(err, &be):
		for _, f := range be.Failed {
			failed[f.Index] = true
		}
	default:
		for i := range batch {
			failed[i] = true
		}
	}
	for i, r := range batch {
		if !failed[i] {
			s.delivered[r.Origin.Offset]++
		}
	}
	return err
}

func (s *fakeSink) snapshot() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// changedBatches describes every batch whose records the writer changed,
// during WriteBatch or after it returned. Call it once nothing runs.
func (s *fakeSink) changedBatches() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.mutated)
	for i, c := range s.calls {
		if d := c.changed(); d != "" {
			out = append(out, fmt.Sprintf("call %d, after WriteBatch: %s", i, d))
		}
	}
	return out
}

func (s *fakeSink) numCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *fakeSink) concurrency() (now, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight, s.maxInflight
}

// offsets lists the offsets of each call, for comparing with want.
func (s *fakeSink) offsets() [][]int64 {
	var out [][]int64
	for _, c := range s.snapshot() {
		out = append(out, c.offs)
	}
	return out
}

// counter is a pipeline.Acker that counts acknowledgements per offset.
type counter struct {
	mu sync.Mutex
	n  map[int64]int
}

func newCounter() *counter { return &counter{n: map[int64]int{}} }

func (c *counter) Ack(offs []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range offs {
		c.n[o]++
	}
}

func (c *counter) count(o int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[o]
}

// acked fails unless exactly the offsets in want were acknowledged, each
// once.
func (c *counter) acked(t *testing.T, want ...int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range want {
		if c.n[o] != 1 {
			t.Errorf("offset %d acknowledged %d times, want 1", o, c.n[o])
		}
	}
	for o, n := range c.n {
		if n != 0 && !slices.Contains(want, o) {
			t.Errorf("offset %d acknowledged %d times, want 0", o, n)
		}
	}
}

// fakeDLQ stores dead-lettered records and checks that none was
// acknowledged before it was stored.
type fakeDLQ struct {
	acks  *counter
	err   error
	block bool // Send waits for its context to end and fails with its error

	mu    sync.Mutex
	sends []dlqSend
	early []int64
}

type dlqSend struct {
	offs []int64
	f    pipeline.Failure
}

func (d *fakeDLQ) Send(ctx context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	if d.block {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.err != nil {
		return d.err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := dlqSend{f: f}
	for _, r := range recs {
		s.offs = append(s.offs, r.Origin.Offset)
		if d.acks != nil && d.acks.count(r.Origin.Offset) != 0 {
			d.early = append(d.early, r.Origin.Offset)
		}
	}
	d.sends = append(d.sends, s)
	return nil
}

func (d *fakeDLQ) snapshot() []dlqSend {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.sends)
}

// offsets returns every dead-lettered offset, sorted.
func (d *fakeDLQ) offsets() []int64 {
	var out []int64
	for _, s := range d.snapshot() {
		out = append(out, s.offs...)
	}
	slices.Sort(out)
	return out
}

// records returns n records from offset from with values of size bytes,
// acknowledged to c.
func records(c *counter, from int64, n, size int) []pipeline.Record {
	out := make([]pipeline.Record, n)
	for i := range out {
		off := from + int64(i)
		v := fmt.Appendf(nil, "%0*d", size, off)
		out[i] = pipeline.Record{Value: v[len(v)-size:], Origin: pipeline.Origin{Topic: "t", Partition: 1, Offset: off}}.WithAcker(c)
	}
	return out
}

func span(from, n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = from + int64(i)
	}
	return out
}

// harness runs a Writer over a fake sink. Create it inside synctest.Test:
// its Run goroutine belongs to the bubble and is stopped by t.Cleanup.
type harness struct {
	t      *testing.T
	w      *sinks.Writer
	sink   *fakeSink
	dlq    *fakeDLQ
	acks   *counter
	cancel context.CancelFunc
	done   chan error

	once   sync.Once
	runErr error
}

// start builds a writer with cfg over sink. A non-nil dlq stores what the
// writer dead-letters, through a deadletter.Queue with tolerance all, as a
// job builds it; with a nil dlq the writer has no queue (tolerance none).
func start(t *testing.T, sink *fakeSink, cfg sinks.Config, dlq *fakeDLQ, before ...func(*sinks.Writer)) *harness {
	t.Helper()
	return startWith(t, sink, cfg, dlq, nil, before...)
}

// startWith is start with extra writer options.
func startWith(t *testing.T, sink *fakeSink, cfg sinks.Config, dlq *fakeDLQ, extra []sinks.WriterOption, before ...func(*sinks.Writer)) *harness {
	t.Helper()
	h := &harness{t: t, sink: sink, dlq: dlq, acks: newCounter(), done: make(chan error, 1)}
	opts := append([]sinks.WriterOption{sinks.WithLogger(quiet)}, extra...)
	if cfg.Ordering == "" {
		// The harness's records are of one partition: most tests are about
		// batching, retries and admissions with several requests in flight,
		// so they run unordered; order_test.go covers the orderings.
		cfg.Ordering = sinks.OrderNone
	}
	if dlq != nil {
		dlq.acks = h.acks
		q, err := deadletter.NewQueue(deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}, dlq)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, sinks.WithDeadLetter(q))
	}
	w, err := sinks.NewWriter(sink, cfg, opts...)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	h.w = w
	for _, f := range before {
		f(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- w.Run(ctx) }()
	// Cleanups run last-in first-out: Run has returned before every batch
	// is checked for changes the sink could have seen.
	t.Cleanup(func() {
		for _, d := range sink.changedBatches() {
			t.Errorf("writer changed a batch it gave the sink: %s", d)
		}
	})
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and returns its result.
func (h *harness) stop() error {
	h.once.Do(func() {
		h.cancel()
		h.runErr = <-h.done
	})
	return h.runErr
}

// exited reports whether Run returned by itself, and its result. Call it
// after synctest.Wait.
func (h *harness) exited() (bool, error) {
	select {
	case err := <-h.done:
		h.once.Do(func() { h.runErr = err })
		return true, err
	default:
		return false, nil
	}
}

func (h *harness) write(recs []pipeline.Record) {
	h.t.Helper()
	if err := h.w.Write(context.Background(), recs); err != nil {
		h.t.Fatalf("Write: %v", err)
	}
}

func (h *harness) flush() {
	h.t.Helper()
	if err := h.w.Flush(context.Background()); err != nil {
		h.t.Fatalf("Flush: %v", err)
	}
}

// wantCalls compares the offsets of every call so far with want.
func (h *harness) wantCalls(want ...[]int64) {
	h.t.Helper()
	got := h.sink.offsets()
	if !slices.EqualFunc(got, want, slices.Equal) {
		h.t.Fatalf("sink calls = %v, want %v", got, want)
	}
}
