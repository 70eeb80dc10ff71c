// Package pipeline is Spillway's dataflow engine: the Record type, operator
// chains, and Pipeline, which wires one source through operators into one
// sink and owns every goroutine it starts.
//
// Every record that enters a pipeline ends in exactly one terminal state:
// acknowledged by the sink, sent to the dead-letter queue, or dropped on
// purpose by an operator. Each of these calls the record's Ack, which is what
// lets a source commit its offset.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Emit hands a batch of records to the pipeline. It blocks while the sink has
// no credit for more records and returns ctx's error if ctx ends first. The
// pipeline takes ownership of recs: the caller must not touch the slice (or
// the records' bytes) after calling Emit. Handing over the slice, rather than
// copying it, keeps the hot path to zero copies per record.
type Emit func(ctx context.Context, recs []Record) error

// Source produces records.
type Source interface {
	// Run emits records until ctx is cancelled (returns nil or ctx's error)
	// or the source is exhausted (returns nil). It is called once.
	Run(ctx context.Context, emit Emit) error
	// Close commits progress for records already done and releases
	// resources. The pipeline calls it once, after the sink was flushed or
	// the drain timed out, so only acknowledged work is committed.
	Close(ctx context.Context) error
}

// Sink accepts records and acknowledges each one when it is delivered or
// dead-lettered. The AsyncSink writer in package sinks implements it.
type Sink interface {
	// Run does the sink's background work until ctx is cancelled. A non-nil
	// error other than ctx's is fatal for the pipeline.
	Run(ctx context.Context) error
	// Write buffers recs, blocking while the sink's buffer is full. It takes
	// ownership of the recs slice and may keep and reorder it, but must not
	// read a record (or its slice) after acknowledging it: the source may
	// recycle a batch's memory once all its records are done.
	Write(ctx context.Context, recs []Record) error
	// Flush sends everything buffered and waits until nothing is in flight.
	Flush(ctx context.Context) error
}

// Credit is the room a sink has for more records. A sink that grants credit
// implements it; a source that can stop fetching (CreditUser) is given it, so
// that a slow sink pauses the fetch instead of letting data pile up.
type Credit interface {
	// Free returns the records and bytes the sink can still accept before
	// Write blocks. Either may be zero or negative when exhausted.
	Free() (records, bytes int64)
	// Capacity returns the sink's whole budget in records and bytes.
	Capacity() (records, bytes int64)
	// Changed returns a channel closed at the next change of Free.
	Changed() <-chan struct{}
}

// CreditUser is implemented by sources that pace their fetching by the
// sink's credit. New wires them when the sink implements Credit.
type CreditUser interface {
	UseCredit(Credit)
}

// Failure describes why a record could not be delivered.
type Failure struct {
	Class    string // "operator", "fatal", "retries_exhausted", "oversized", "timeout"
	Err      error
	Attempts int
	// Details are extra headers for the dead-letter record, such as the HTTP
	// status and a bounded excerpt of the response body.
	Details map[string]string
}

// DeadLetter is where records go that could not be processed: an operator
// failed on them, or the sink could not deliver them. Send either stores
// recs durably (for Kafka: produced and acknowledged by the broker) and
// returns nil, so the caller may then acknowledge the originals, or
// returns the error that fails the job, and the records stay
// unacknowledged. *deadletter.Queue implements it and applies
// errors.tolerance: with none, Send stores nothing and returns an error.
// Send may be called concurrently.
type DeadLetter interface {
	Send(ctx context.Context, recs []Record, f Failure) error
}

// ErrNoDeadLetter is what NoDeadLetter's errors wrap.
var ErrNoDeadLetter = errors.New("no dead-letter queue")

// NoDeadLetter is the DeadLetter of a pipeline or writer given none: Send
// stores nothing and fails the job with an error wrapping ErrNoDeadLetter
// and the failure's error.
type NoDeadLetter struct{}

// Send returns an error saying the failure's class, wrapping
// ErrNoDeadLetter and f.Err.
func (NoDeadLetter) Send(_ context.Context, _ []Record, f Failure) error {
	if f.Err == nil {
		return fmt.Errorf("%s failure (%w)", f.Class, ErrNoDeadLetter)
	}
	return fmt.Errorf("%s failure (%w): %w", f.Class, ErrNoDeadLetter, f.Err)
}

// Stats are the pipeline's counters. All fields are safe for concurrent use.
type Stats struct {
	In           atomic.Int64 // records emitted by the source
	Dropped      atomic.Int64 // records an operator dropped on purpose
	DeadLettered atomic.Int64 // records the operator chain sent to the dead-letter queue
}

// Pipeline wires a source through an operator chain into a sink.
// Create it with New; it runs once.
type Pipeline struct {
	src     Source
	sink    Sink
	chain   Chain
	dlq     DeadLetter
	drain   time.Duration
	log     *slog.Logger
	stats   Stats
	srcTime *TaskTimer
}

// Option configures a Pipeline.
type Option func(*Pipeline)

// WithOperators sets the operator chain.
func WithOperators(c Chain) Option { return func(p *Pipeline) { p.chain = c } }

// WithDeadLetter sets where records failing in operators go: a
// *deadletter.Queue, which applies errors.tolerance. When d's Send fails
// (with tolerance none it always does) the pipeline fails with its error.
// Nil, the default, is NoDeadLetter: the first operator error fails the
// pipeline.
func WithDeadLetter(d DeadLetter) Option { return func(p *Pipeline) { p.dlq = d } }

// WithDrainTimeout bounds the flush on shutdown. Zero means 30s.
func WithDrainTimeout(d time.Duration) Option { return func(p *Pipeline) { p.drain = d } }

// WithLogger sets the logger. Nil means slog.Default().
func WithLogger(l *slog.Logger) Option { return func(p *Pipeline) { p.log = l } }

// New returns a pipeline from src to sink.
func New(src Source, sink Sink, opts ...Option) (*Pipeline, error) {
	if src == nil || sink == nil {
		return nil, errors.New("pipeline: source and sink are required")
	}
	p := &Pipeline{src: src, sink: sink, drain: 30 * time.Second}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.dlq == nil {
		p.dlq = NoDeadLetter{}
	}
	if p.drain <= 0 {
		return nil, fmt.Errorf("pipeline: drain timeout must be positive, got %v", p.drain)
	}
	// Wire optional abilities only once the pipeline is valid, so a rejected
	// configuration leaves the source untouched.
	p.srcTime = NewTaskTimer(nil)
	if tt, ok := src.(TaskTimed); ok {
		tt.SetTaskTimer(p.srcTime)
	}
	if c, ok := sink.(Credit); ok {
		if u, ok := src.(CreditUser); ok {
			u.UseCredit(c)
		}
	}
	if a, ok := src.(Abandoning); ok {
		if w, ok := sink.(AbandonWatcher); ok {
			w.WatchAbandonment(a.Abandonment())
		}
	}
	return p, nil
}

// Stats returns the live counters.
func (p *Pipeline) Stats() *Stats { return &p.stats }

// SourceTaskTime returns the source stage's (source and operators) task
// time: idle waiting for records, busy converting and transforming,
// backpressured waiting for the sink to accept them.
func (p *Pipeline) SourceTaskTime() TaskTimes { return p.srcTime.Times() }

// Run moves records until ctx is cancelled, the source is exhausted, or a
// fatal error occurs. On the way out it stops the source, flushes the sink
// (bounded by the drain timeout) and closes the source, which commits what is
// done. Cancelling ctx is a normal shutdown and returns nil.
func (p *Pipeline) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	// sinkFailed ends with the sink's fatal error as its cause; it bounds
	// the drain too, so a sink that breaks while flushing is reported at
	// once. It is independent of ctx: how ctx ends (cancel, deadline, a
	// cause) is always a normal shutdown.
	sinkFailed, failSink := context.WithCancelCause(context.WithoutCancel(ctx))
	defer failSink(nil)

	// The sink outlives ctx so it can drain after a shutdown signal.
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	sinkDone := make(chan struct{})
	go func() {
		defer close(sinkDone)
		if err := p.sink.Run(sinkCtx); err != nil && !errors.Is(err, context.Canceled) {
			failSink(fmt.Errorf("sink: %w", err))
			stop()
		}
	}()

	srcErr := p.src.Run(runCtx, p.emit)
	if errors.Is(srcErr, context.Canceled) || errors.Is(srcErr, context.DeadlineExceeded) && runCtx.Err() != nil {
		srcErr = nil
	}

	var flushErr error
	if sinkFailed.Err() == nil {
		dctx, cancel := context.WithTimeout(sinkFailed, p.drain)
		flushErr = p.sink.Flush(dctx)
		cancel()
		if flushErr != nil {
			flushErr = fmt.Errorf("drain sink: %w", flushErr)
			p.log.Warn("drain incomplete; unacknowledged records will be re-delivered", "err", flushErr)
		}
	}
	stopSink()
	<-sinkDone

	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.drain)
	closeErr := p.src.Close(cctx)
	cancel()
	if closeErr != nil {
		closeErr = fmt.Errorf("close source: %w", closeErr)
	}
	if sinkFailed.Err() != nil {
		// What the source and the flush saw follows from the sink's failure.
		return errors.Join(context.Cause(sinkFailed), closeErr)
	}
	if srcErr != nil {
		srcErr = fmt.Errorf("source: %w", srcErr)
	}
	return errors.Join(srcErr, flushErr, closeErr)
}

func (p *Pipeline) emit(ctx context.Context, recs []Record) error {
	p.stats.In.Add(int64(len(recs)))
	defer p.srcTime.Set(Busy) // back in the source until it polls again
	if len(p.chain) == 0 {
		p.srcTime.Set(Backpressured) // Write returns at once unless the sink is full
		return p.sink.Write(ctx, recs)
	}
	p.srcTime.Set(Busy)
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		res, err := p.chain.Apply(ctx, r)
		if err != nil {
			if err := p.deadLetter(ctx, r, err); err != nil {
				return err
			}
			continue
		}
		if len(res) == 0 {
			p.stats.Dropped.Add(1)
			continue
		}
		out = append(out, res...)
	}
	if len(out) == 0 {
		return nil
	}
	p.srcTime.Set(Backpressured)
	return p.sink.Write(ctx, out)
}

// deadLetter hands r, which failed in the operator chain with err, to the
// dead-letter queue and acknowledges it once stored. Otherwise it returns
// the error that fails the pipeline, naming r, and r stays unacknowledged.
func (p *Pipeline) deadLetter(ctx context.Context, r Record, err error) error {
	if derr := p.dlq.Send(ctx, []Record{r}, Failure{Class: "operator", Err: err, Attempts: 1}); derr != nil {
		return fmt.Errorf("record %s/%d@%d: %w", r.Origin.Topic, r.Origin.Partition, r.Origin.Offset, derr)
	}
	p.stats.DeadLettered.Add(1)
	p.log.Warn("record dead-lettered", "topic", r.Origin.Topic, "partition", r.Origin.Partition, "offset", r.Origin.Offset, "err", err)
	r.Ack()
	return nil
}
