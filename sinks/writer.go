package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
)

// Sink delivers batches to a destination. It is the one call a concrete sink
// implements.
type Sink interface {
	// WriteBatch delivers batch and reports the outcome per entry: nil means
	// every entry was delivered; a *BatchError lists the entries that failed
	// (all others were delivered); any other error means every entry failed
	// with it. A *BatchError that lists no entry or an index outside the
	// batch says nothing reliable and counts as every entry failing with it;
	// an entry listed with a nil Err fails with the BatchError itself.
	// Failures are classified with Classify (wrap with AsFatal or
	// ThrottledError). WriteBatch is called concurrently from up to
	// max_in_flight_requests goroutines, must honour ctx (the request
	// timeout) and must not keep batch after returning.
	WriteBatch(ctx context.Context, batch []pipeline.Record) error
}

// Writer is the AsyncSink writer: Flink's AsyncSinkWriter semantics over a
// Sink. Write buffers records (blocking while max_buffered_requests are
// held), Run sends batches with at most max_in_flight_requests in flight and
// acknowledges each record once it is delivered or dead-lettered. Write,
// Flush and Stats are safe for concurrent use; Run is called once.
//
// The writer's work is split by job: config.go (settings), buffer.go
// (segments, batches, retries), credit.go (pipeline.Credit), run.go (the
// run loop and its admissions), settle.go (classify, retry, dead-letter).
type Writer struct {
	failures     summary // retried failures, logged at info at most every summaryEvery
	deadLettered summary // records dead-lettered by class, logged at warn likewise
	cfg          Config
	sink         Sink
	dlq          pipeline.DeadLetter
	log          *slog.Logger
	task         *pipeline.TaskTimer
	abandon      *pipeline.Abandonment // the source's; nil: records are never abandoned
	swept        uint64                // abandon's epoch when the buffer was last swept
	breakerCfg   *BreakerConfig
	limit        backpressure.Strategy
	extra        []Admission
	observer     RequestObserver // WithRequestObserver (observe.go); nil: none

	breaker    *breaker            // nil: no breaker
	admissions []Admission         // consulted in order before every request
	credits    *semaphore.Weighted // records
	bcredit    *semaphore.Weighted // bytes
	now        func() time.Time
	stats      WriterStats
	cur        Batch // the batch the run loop is admitting

	mu      sync.Mutex
	queue   []segment // new records, oldest first; queue[head:] are live
	head    int
	retries []segment // failed entries awaiting retry, by seq; sent before queue
	// holdUntil: no new record is sent before it; the end of the latest
	// throttled answer's wait.
	holdUntil time.Time
	// Lanes (partitions or keys, see order.go) with a batch in flight and
	// with a retry waiting; empty without an ordering.
	inflightLanes lanes
	waitingLanes  lanes
	laneFrees     uint64 // counts releases of in-flight lanes (order.go's scan)
	bufCount      int    // records in queue
	bufBytes      int    // bytes in queue
	seq           uint64
	inflight      int
	flushing      int
	err           error         // fatal; the job must stop
	changed       chan struct{} // closed and replaced on every state change
	wake          chan struct{}
	failed        chan struct{} // closed when err is set
}

// WatchAbandonment implements pipeline.AbandonWatcher: when a moves, the
// writer drops the records it holds whose acker says they are abandoned.
// pipeline.New calls it before Run; it must not be called while running.
func (w *Writer) WatchAbandonment(a *pipeline.Abandonment) {
	w.abandon = a
	a.Watch(w.wake)
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithDeadLetter sets where records that cannot be delivered go:
// a *deadletter.Queue, which applies errors.tolerance. When d's Send
// fails (with tolerance none it always does) the job fails with its
// error and the records stay unacknowledged. Without a queue
// (pipeline.NoDeadLetter) every such record fails the job.
func WithDeadLetter(d pipeline.DeadLetter) WriterOption { return func(w *Writer) { w.dlq = d } }

// WithStrategy sets the rate-limiting strategy consulted before every
// request (Flink's RateLimitingStrategy), through StrategyAdmission: the
// writer blocks on it, never polls, and reports each request's outcome to
// it. Its MaxBatchSize, when positive, caps max_batch_size.
func WithStrategy(s backpressure.Strategy) WriterOption { return func(w *Writer) { w.limit = s } }

// WithBreaker puts a circuit breaker around the sink's requests. While it
// is open no request is sent and buffered records are kept (the buffer
// fills, credit runs out and the source pauses fetching); after
// OpenTimeout it lets HalfOpenRequests small probe batches through, and
// closes again when they succeed.
func WithBreaker(cfg BreakerConfig) WriterOption {
	return func(w *Writer) {
		cfg.ApplyDefaults()
		w.breakerCfg = &cfg
	}
}

// WithAdmission adds an admission consulted before every request. The
// writer asks the breaker first, then the strategy, then the admissions
// added with WithAdmission, in the order given.
func WithAdmission(a Admission) WriterOption {
	return func(w *Writer) { w.extra = append(w.extra, a) }
}

// WithLogger sets the logger; nil means slog.Default().
func WithLogger(l *slog.Logger) WriterOption { return func(w *Writer) { w.log = l } }

// NewWriter validates cfg (after applying defaults) and returns a writer
// sending to sink. It does no I/O.
func NewWriter(sink Sink, cfg Config, opts ...WriterOption) (*Writer, error) {
	if sink == nil {
		return nil, errors.New("writer: sink is nil")
	}
	cfg.ApplyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("writer: %w", err)
	}
	w := &Writer{
		failures:     summary{msg: "sink requests failing; records kept and retried", level: slog.LevelInfo},
		deadLettered: summary{msg: "records dead-lettered", level: slog.LevelWarn},
		cfg:          cfg,
		sink:         sink,
		credits:      semaphore.NewWeighted(int64(cfg.MaxBufferedRequests)),
		bcredit:      semaphore.NewWeighted(int64(cfg.MaxBufferedBytes)),
		now:          time.Now,
		changed:      make(chan struct{}),
		wake:         make(chan struct{}, 1),
		failed:       make(chan struct{}),

		inflightLanes: lanes{},
		waitingLanes:  lanes{},
	}
	for _, o := range opts {
		o(w)
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.dlq == nil {
		w.dlq = pipeline.NoDeadLetter{}
	}
	w.task = pipeline.NewTaskTimer(func() time.Time { return w.now() })
	if w.breakerCfg != nil {
		if err := w.breakerCfg.Validate(); err != nil {
			var l field.List
			l.Merge("circuit_breaker", err)
			return nil, fmt.Errorf("writer: %w", l.Err())
		}
		w.breaker = newBreaker(*w.breakerCfg, &w.stats, w.log, func() time.Time { return w.now() })
		w.admissions = append(w.admissions, w.breaker)
	}
	if w.limit != nil {
		w.admissions = append(w.admissions, StrategyAdmission(w.limit))
	}
	w.admissions = append(w.admissions, w.extra...)
	return w, nil
}

// Config returns the effective configuration, defaults applied.
func (w *Writer) Config() Config { return w.cfg }

// Stats returns the live counters.
func (w *Writer) Stats() *WriterStats { return &w.stats }

// TaskTime returns the sink stage's task time: idle with nothing to send,
// busy with requests in flight, backpressured with full batches waiting for
// a request slot or held back by an admission (the destination is the
// bottleneck).
func (w *Writer) TaskTime() pipeline.TaskTimes { return w.task.Times() }

// BreakerState returns the state of the circuit breaker, BreakerNone
// without one.
func (w *Writer) BreakerState() BreakerState {
	if w.breaker == nil {
		return BreakerNone
	}
	return w.breaker.state()
}

// Err returns the fatal error that stopped the writer, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Writer) signalLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Writer) failLocked(err error) {
	if w.err == nil {
		w.err = err
		close(w.failed)
	}
	w.signalLocked()
}

// Write buffers recs, taking ownership of the slice. It blocks while the buffer holds max_buffered_requests
// records and returns early with ctx's error, or with the writer's fatal
// error once the job failed. Records larger than max_record_bytes are
// dead-lettered at once.
func (w *Writer) Write(ctx context.Context, recs []pipeline.Record) error {
	for len(recs) > 0 {
		// A chunk is at most one batch by count and by bytes, so its credit
		// always fits the byte budget. Oversized records take no byte credit:
		// they are dead-lettered, never buffered.
		n, b := 0, 0
		for n < len(recs) && n < w.cfg.MaxBatchSize {
			if sz := recs[n].Size(); sz <= w.cfg.MaxRecordBytes {
				if n > 0 && b+sz > w.cfg.MaxBatchBytes {
					break
				}
				b += sz
			}
			n++
		}
		chunk := recs[:n]
		if err := w.acquire(ctx, int64(n), int64(b), recs); err != nil {
			if errors.Is(err, errAbandoned) {
				recs = w.giveBackAbandoned(recs)
				continue
			}
			return err
		}
		recs = recs[n:]
		// The writer owns recs (see pipeline.Sink): a chunk becomes a segment
		// without copying; oversized records are moved out in place.
		seg := segment{recs: chunk[:0:n]}
		var oversized []pipeline.Record
		for _, r := range chunk {
			sz := r.Size()
			if sz > w.cfg.MaxRecordBytes {
				oversized = append(oversized, r)
				continue
			}
			seg.recs = append(seg.recs, r)
			seg.bytes += sz
		}
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			w.credits.Release(int64(n))
			w.bcredit.Release(int64(b))
			return err
		}
		w.stats.Buffered.Add(int64(n))
		if nb := w.stats.BufferedBytes.Add(int64(b)); nb > w.stats.PeakBufferedBytes.Load() {
			w.stats.PeakBufferedBytes.Store(nb)
		}
		if len(seg.recs) > 0 {
			now, epoch := w.now(), w.abandon.Epoch()
			if w.cfg.Ordering == OrderPartition {
				w.splitLanes(seg.recs, func(recs []pipeline.Record, oneLane bool) {
					part := segment{recs: recs, seq: w.seq, enq: now, epoch: epoch, oneLane: oneLane}
					if len(recs) == len(seg.recs) {
						part.bytes = seg.bytes
					} else {
						for i := range recs {
							part.bytes += recs[i].Size()
						}
					}
					w.seq += uint64(len(recs))
					w.queue = append(w.queue, part)
				})
			} else {
				seg.seq, seg.enq, seg.epoch = w.seq, now, epoch
				w.seq += uint64(len(seg.recs))
				w.queue = append(w.queue, seg)
			}
			w.bufCount += len(seg.recs)
			w.bufBytes += seg.bytes
			w.signalLocked()
		}
		w.mu.Unlock()
		// One dead-letter write per oversized record, so that each carries
		// its own size in the message; they are rare.
		for i := range oversized {
			err := fmt.Errorf("record of %d bytes exceeds max_record_bytes %d", oversized[i].Size(), w.cfg.MaxRecordBytes)
			if err := w.deadLetter(ctx, oversized[i:i+1], "oversized", err, 0); err != nil {
				// The records stay unacknowledged; their credit returns so
				// Flush does not wait for them.
				w.dropFailed(ctx, oversized[i:], err)
				return err
			}
		}
	}
	return nil
}

// Flush sends every buffered record regardless of batch size or age and
// waits until nothing is buffered or in flight. It returns ctx's error if
// ctx ends first and the writer's fatal error if the job failed.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	w.flushing++
	w.signalLocked()
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.flushing--
		w.mu.Unlock()
	}()
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if w.bufCount == 0 && len(w.retries) == 0 && w.inflight == 0 && w.stats.Buffered.Load() == 0 {
			w.mu.Unlock()
			return nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flush: %d records not done: %w", w.stats.Buffered.Load(), ctx.Err())
		}
	}
}
