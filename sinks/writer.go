// Package sinks holds the AsyncSink writer, which batches records, keeps a
// bounded number of requests in flight, retries failed entries and
// dead-letters the ones that cannot be delivered, and the interface concrete
// sinks (http, file, ...) implement.
package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/sony/gobreaker/v2"

	"github.com/spillway-io/spillway/backpressure"
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
	// an entry listed with a nil Err fails with the BatchError itself. Failures are classified with Classify (wrap with AsFatal or
	// ThrottledError). WriteBatch is called concurrently from up to
	// max_in_flight_requests goroutines, must honour ctx (the request
	// timeout) and must not keep batch after returning.
	WriteBatch(ctx context.Context, batch []pipeline.Record) error
}

// Tolerance is errors.tolerance, as in Kafka Connect.
type Tolerance string

const (
	// ToleranceNone fails the job on the first record that cannot be delivered.
	ToleranceNone Tolerance = "none"
	// ToleranceAll dead-letters records that cannot be delivered and goes on.
	ToleranceAll Tolerance = "all"
)

// Config holds the writer's settings. Zero values mean the default given on
// each field.
type Config struct {
	MaxBatchSize        int           // records per request; default 500
	MaxBatchBytes       int           // bytes per request; default 4 MiB
	MaxInFlightRequests int           // concurrent requests; default 8
	MaxBufferedRequests int           // records held before Write blocks; default 10000, must exceed MaxBatchSize
	MaxBufferedBytes    int           // bytes held before Write blocks; default 64 MiB, at least MaxBatchBytes
	MaxTimeInBuffer     time.Duration // flush a partial batch after this age; default 1s
	MaxRecordBytes      int           // larger records are dead-lettered; default 1 MiB, at most MaxBatchBytes
	RequestTimeout      time.Duration // per request; default 30s
	FailOnTimeout       bool          // a timed-out request fails the job instead of being retried
	MaxAttempts         int           // deliveries tried per record before dead-lettering; default 10
	RetryBackoff        time.Duration // first retry delay, doubled per attempt with jitter; default 100ms
	MaxRetryBackoff     time.Duration // cap on the retry delay; default 10s
	Tolerance           Tolerance     // default none
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxBatchSize, 500)
	def(&c.MaxBatchBytes, 4<<20)
	def(&c.MaxInFlightRequests, 8)
	def(&c.MaxBufferedRequests, 10000)
	def(&c.MaxBufferedBytes, max(64<<20, c.MaxBatchBytes))
	def(&c.MaxRecordBytes, min(1<<20, c.MaxBatchBytes))
	def(&c.MaxAttempts, 10)
	defd(&c.MaxTimeInBuffer, time.Second)
	defd(&c.RequestTimeout, 30*time.Second)
	defd(&c.RetryBackoff, 100*time.Millisecond)
	defd(&c.MaxRetryBackoff, 10*time.Second)
	if c.Tolerance == "" {
		c.Tolerance = ToleranceNone
	}
}

// Validate reports every invalid setting, each naming its config key,
// joined with errors.Join. Call it after defaults were applied (NewWriter
// does).
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, v))
		}
	}
	posd := func(name string, v time.Duration) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, v))
		}
	}
	pos("max_batch_size", c.MaxBatchSize)
	pos("max_batch_bytes", c.MaxBatchBytes)
	pos("max_in_flight_requests", c.MaxInFlightRequests)
	pos("max_buffered_requests", c.MaxBufferedRequests)
	pos("max_buffered_bytes", c.MaxBufferedBytes)
	pos("max_record_bytes", c.MaxRecordBytes)
	pos("max_attempts", c.MaxAttempts)
	posd("max_time_in_buffer", c.MaxTimeInBuffer)
	posd("request_timeout", c.RequestTimeout)
	posd("retry_backoff", c.RetryBackoff)
	posd("max_retry_backoff", c.MaxRetryBackoff)
	if c.MaxBufferedRequests > 0 && c.MaxBatchSize > 0 && c.MaxBufferedRequests <= c.MaxBatchSize {
		errs = append(errs, fmt.Errorf("max_buffered_requests (%d) must be greater than max_batch_size (%d)", c.MaxBufferedRequests, c.MaxBatchSize))
	}
	if c.MaxBufferedBytes > 0 && c.MaxBatchBytes > c.MaxBufferedBytes {
		errs = append(errs, fmt.Errorf("max_buffered_bytes (%d) must be at least max_batch_bytes (%d)", c.MaxBufferedBytes, c.MaxBatchBytes))
	}
	if c.MaxRecordBytes > c.MaxBatchBytes && c.MaxBatchBytes > 0 {
		errs = append(errs, fmt.Errorf("max_record_bytes (%d) must not exceed max_batch_bytes (%d)", c.MaxRecordBytes, c.MaxBatchBytes))
	}
	if c.MaxRetryBackoff > 0 && c.RetryBackoff > c.MaxRetryBackoff {
		errs = append(errs, fmt.Errorf("retry_backoff (%v) must not exceed max_retry_backoff (%v)", c.RetryBackoff, c.MaxRetryBackoff))
	}
	switch c.Tolerance {
	case ToleranceNone, ToleranceAll:
	default:
		errs = append(errs, fmt.Errorf("errors.tolerance must be none or all, got %q", c.Tolerance))
	}
	return errors.Join(errs...)
}

// WriterStats are the writer's live counters, safe for concurrent reads.
type WriterStats struct {
	Delivered          atomic.Int64 // records acknowledged by the sink
	DeadLettered       atomic.Int64 // records sent to the dead-letter queue
	Retried            atomic.Int64 // record retries scheduled
	Requests           atomic.Int64 // requests sent
	FailedRequests     atomic.Int64 // requests with at least one failed entry
	Buffered           atomic.Int64 // records buffered or in flight
	BufferedBytes      atomic.Int64 // their bytes (oversized records excluded)
	PeakBufferedBytes  atomic.Int64 // highest BufferedBytes seen
	InFlightRequests   atomic.Int64
	BreakerState       atomic.Int32 // gobreaker.State: 0 closed, 1 half-open, 2 open
	BreakerTransitions atomic.Int64
	BreakerRejections  atomic.Int64 // times due data was held back by the breaker
	Abandoned          atomic.Int64 // records not sent because their partition moved (pipeline.Abandoner)
}

// segment is a run of buffered records that travel together: the records of
// one Write chunk, or the failed entries of one request waiting to be
// retried as the same batch. Buffering whole segments instead of single
// records keeps the hot path to one copy per record and lets a batch be a
// sub-slice of a segment.
type segment struct {
	recs      []pipeline.Record
	bytes     int
	seq       uint64    // position of recs[0] in write order; orders retries
	enq       time.Time // when the oldest record was buffered
	attempts  int       // deliveries tried so far (all records of a segment share it)
	failures  []int     // per record, non-throttled failed attempts, capped by MaxAttempts; nil: none yet
	notBefore time.Time // retry backoff
	retry     bool
	epoch     uint64 // pipeline.AbandonEpoch when the oldest record was buffered
}

// Writer is the AsyncSink writer: Flink's AsyncSinkWriter semantics over a
// Sink. Write buffers records (blocking while max_buffered_requests are
// held), Run sends batches with at most max_in_flight_requests in flight and
// acknowledges each record once it is delivered or dead-lettered. Write,
// Flush and Stats are safe for concurrent use; Run is called once.
type Writer struct {
	cfg        Config
	sink       Sink
	dlq        pipeline.DeadLetter
	log        *slog.Logger
	task       *pipeline.TaskTimer
	breakerCfg *BreakerConfig
	limit      backpressure.Strategy // nil: only max_in_flight_requests limits sending
	abandon    *pipeline.Abandonment // the source's; nil: records are never abandoned

	breaker         *gobreaker.TwoStepCircuitBreaker[struct{}] // nil: no breaker
	breakerTimeout  time.Duration
	breakerOpenedAt atomic.Int64        // unix nanos of the last transition to open
	credits         *semaphore.Weighted // records
	bcredit         *semaphore.Weighted // bytes
	now             func() time.Time
	stats           WriterStats

	mu       sync.Mutex
	queue    []segment // new records, oldest first; queue[head:] are live
	head     int
	retries  []segment // failed entries awaiting retry, by seq; sent before queue
	bufCount int       // records in queue
	bufBytes int       // bytes in queue
	seq      uint64
	inflight int
	flushing int
	err      error         // fatal; the job must stop
	changed  chan struct{} // closed and replaced on every state change
	wake     chan struct{}
	failed   chan struct{} // closed when err is set
}

// WatchAbandonment implements pipeline.AbandonWatcher: when a moves, the
// writer drops the records it holds whose acker says they are abandoned.
// pipeline.New calls it before Run; it must not be called while running.
func (w *Writer) WatchAbandonment(a *pipeline.Abandonment) { w.abandon = a }

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithDeadLetter sets the dead-letter queue.
func WithDeadLetter(d pipeline.DeadLetter) WriterOption { return func(w *Writer) { w.dlq = d } }

// WithStrategy sets the rate-limiting strategy consulted before every
// request (Flink's RateLimitingStrategy): the writer blocks on it, never
// polls, and reports each request's outcome to it. Its MaxBatchSize, when
// positive, caps max_batch_size.
func WithStrategy(s backpressure.Strategy) WriterOption { return func(w *Writer) { w.limit = s } }

// WithBreaker puts a circuit breaker around the sink's requests. While it
// is open no request is sent and buffered records are kept (the buffer
// fills, credit runs out and the source pauses fetching); after
// OpenTimeout it lets HalfOpenRequests small probe batches through, and
// closes again when they succeed.
func WithBreaker(cfg BreakerConfig) WriterOption {
	return func(w *Writer) {
		cfg.setDefaults()
		w.breakerCfg = &cfg
	}
}

// WithLogger sets the logger; nil means slog.Default().
func WithLogger(l *slog.Logger) WriterOption { return func(w *Writer) { w.log = l } }

// NewWriter validates cfg (after applying defaults) and returns a writer
// sending to sink. It does no I/O.
func NewWriter(sink Sink, cfg Config, opts ...WriterOption) (*Writer, error) {
	if sink == nil {
		return nil, errors.New("writer: sink is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("writer: %w", err)
	}
	w := &Writer{
		cfg:     cfg,
		sink:    sink,
		credits: semaphore.NewWeighted(int64(cfg.MaxBufferedRequests)),
		bcredit: semaphore.NewWeighted(int64(cfg.MaxBufferedBytes)),
		now:     time.Now,
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		failed:  make(chan struct{}),
	}
	for _, o := range opts {
		o(w)
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.task = pipeline.NewTaskTimer(func() time.Time { return w.now() })
	if w.breakerCfg != nil {
		if err := w.breakerCfg.Validate(); err != nil {
			return nil, fmt.Errorf("writer: %w", err)
		}
		w.newBreaker(*w.breakerCfg)
	}
	if cfg.Tolerance == ToleranceAll && w.dlq == nil {
		return nil, errors.New("writer: errors.tolerance all needs a dead-letter queue")
	}
	return w, nil
}

// Config returns the effective configuration, defaults applied.
func (w *Writer) Config() Config { return w.cfg }

// Stats returns the live counters.
func (w *Writer) Stats() *WriterStats { return &w.stats }

// TaskTime returns the sink stage's task time: idle with nothing to send,
// busy with requests in flight, backpressured with full batches waiting for
// a request slot (the destination is the bottleneck).
func (w *Writer) TaskTime() pipeline.TaskTimes { return w.task.Times() }

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
		recs = recs[n:]
		if err := w.acquire(ctx, int64(n), int64(b)); err != nil {
			return err
		}
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
			seg.seq, seg.enq, seg.epoch = w.seq, w.now(), w.abandon.Epoch()
			w.seq += uint64(len(seg.recs))
			w.queue = append(w.queue, seg)
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

func (w *Writer) acquire(ctx context.Context, n, b int64) error {
	if w.credits.TryAcquire(n) {
		if w.bcredit.TryAcquire(b) {
			return nil
		}
		w.credits.Release(n)
	}
	// Acquire blocks on ctx only; also give up when the job failed.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.failed:
			cancel()
		case <-actx.Done():
		}
	}()
	if err := w.credits.Acquire(actx, n); err != nil {
		if e := w.Err(); e != nil {
			return e
		}
		return err
	}
	if err := w.bcredit.Acquire(actx, b); err != nil {
		w.credits.Release(n)
		if e := w.Err(); e != nil {
			return e
		}
		return err
	}
	return nil
}

// Free returns the records and bytes the writer can still accept before
// Write blocks: the credit a source may fetch for. It implements
// pipeline.Credit.
func (w *Writer) Free() (records, bytes int64) {
	return int64(w.cfg.MaxBufferedRequests) - w.stats.Buffered.Load(),
		int64(w.cfg.MaxBufferedBytes) - w.stats.BufferedBytes.Load()
}

// Capacity returns max_buffered_requests and max_buffered_bytes.
func (w *Writer) Capacity() (records, bytes int64) {
	return int64(w.cfg.MaxBufferedRequests), int64(w.cfg.MaxBufferedBytes)
}

// Changed returns a channel closed at the next change of the writer's state
// (credit freed, records buffered, requests completed).
func (w *Writer) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
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

// Run sends batches until ctx is cancelled, then waits for in-flight
// requests (whose contexts are cancelled too; their records stay
// unacknowledged and will be re-delivered). It returns the fatal error that
// stopped the job, or nil after ctx was cancelled.
func (w *Writer) Run(ctx context.Context) error {
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
		now := w.now()
		breakerWait := time.Duration(0)
		for w.inflight < w.cfg.MaxInFlightRequests {
			var done func(error)
			if w.breaker != nil {
				if !w.dueLocked(now) {
					break
				}
				d, err := w.breaker.Allow()
				if err != nil {
					// Open (or half-open with its probes out): keep the data,
					// wake when the open timeout ends.
					w.stats.BreakerRejections.Add(1)
					if errors.Is(err, gobreaker.ErrOpenState) {
						opened := time.Unix(0, w.breakerOpenedAt.Load())
						breakerWait = max(opened.Add(w.breakerTimeout).Sub(now), time.Millisecond)
					}
					break
				}
				done = d
			}
			batch, ok := w.takeLocked(now)
			if ok && batch.epoch != w.abandon.Epoch() && w.dropAbandonedLocked(&batch) {
				if done != nil {
					done(errNotSent)
				}
				continue // nothing left to send in this batch
			}
			if !ok {
				if done != nil {
					done(errNotSent)
				}
				break
			}
			w.inflight++
			w.stats.InFlightRequests.Add(1)
			var req backpressure.Request
			if w.limit != nil {
				req = requestOf(batch)
				if !w.limit.TryAcquire(req) {
					// The strategy holds the batch back: block on it (it wakes
					// on refill or completion), in write order.
					w.task.Set(pipeline.Backpressured)
					w.mu.Unlock()
					err := w.limit.Acquire(ctx, req)
					w.mu.Lock()
					if err != nil {
						w.inflight--
						w.stats.InFlightRequests.Add(-1)
						w.mu.Unlock()
						w.release(batch.recs) // shutting down: abandoned, re-delivered later
						return nil
					}
					now = w.now()
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				verdict := w.submit(ctx, batch, req)
				if done != nil {
					done(verdict)
				}
			}()
		}
		next := w.nextDeadlineLocked(now)
		if breakerWait > 0 {
			next = now.Add(breakerWait)
		}
		switch {
		case breakerWait > 0:
			w.task.Set(pipeline.Backpressured) // the breaker holds due data back
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

// dueLocked reports whether takeLocked would return a batch now.
func (w *Writer) dueLocked(now time.Time) bool {
	if len(w.retries) > 0 {
		return !now.Before(w.retries[0].notBefore)
	}
	if w.bufCount == 0 {
		return false
	}
	front := &w.queue[w.head]
	return w.flushing > 0 || w.bufCount >= w.cfg.MaxBatchSize || w.bufBytes >= w.cfg.MaxBatchBytes ||
		now.Sub(front.enq) >= w.cfg.MaxTimeInBuffer
}

// takeLocked removes the next batch if one is due. Retries go first, oldest
// first, once their backoff has passed; while the oldest retry waits, nothing
// newer is sent, so a failing destination is not overtaken. New records go
// as a full batch, an aged one, or anything during a flush.
func (w *Writer) takeLocked(now time.Time) (segment, bool) {
	if !w.dueLocked(now) {
		return segment{}, false
	}
	if len(w.retries) > 0 {
		r := w.retries[0]
		if w.breaker != nil && w.breaker.State() == gobreaker.StateHalfOpen && len(r.recs) > probeBatchSize {
			// Probe with a small prefix; the rest stays first in line. (The
			// probe's composition differs from the failed request's, so its
			// idempotency key does too: at-least-once allows the duplicate.)
			probe := r
			probe.recs = r.recs[:probeBatchSize:probeBatchSize]
			probe.failures = nil
			if r.failures != nil {
				probe.failures = r.failures[:probeBatchSize:probeBatchSize]
			}
			probe.bytes = 0
			for i := range probe.recs {
				probe.bytes += probe.recs[i].Size()
			}
			rest := &w.retries[0]
			rest.recs = r.recs[probeBatchSize:]
			if r.failures != nil {
				rest.failures = r.failures[probeBatchSize:]
			}
			rest.bytes -= probe.bytes
			rest.seq += probeBatchSize
			return probe, true
		}
		w.retries[0] = segment{}
		w.retries = w.retries[1:]
		return r, true
	}
	if w.bufCount == 0 {
		return segment{}, false
	}
	front := &w.queue[w.head]
	maxSize := w.cfg.MaxBatchSize
	if w.breaker != nil && w.breaker.State() == gobreaker.StateHalfOpen {
		maxSize = min(maxSize, probeBatchSize) // probe with one small batch
	}
	if w.limit != nil {
		if m := w.limit.MaxBatchSize(); m > 0 {
			maxSize = min(maxSize, m)
		}
	}
	batch := segment{seq: front.seq, enq: front.enq, epoch: front.epoch}
	for w.head < len(w.queue) && len(batch.recs) < maxSize {
		seg := &w.queue[w.head]
		room := maxSize - len(batch.recs)
		if len(seg.recs) <= room && batch.bytes+seg.bytes <= w.cfg.MaxBatchBytes {
			// The whole segment fits: the common case takes it without copying.
			if batch.recs == nil {
				batch.recs = seg.recs
			} else {
				batch.recs = append(batch.recs[:len(batch.recs):len(batch.recs)], seg.recs...)
			}
			batch.bytes += seg.bytes
			w.queue[w.head] = segment{}
			w.head++
			continue
		}
		if len(batch.recs) > 0 {
			// Send what we have rather than split the next segment: a
			// split costs a copy, and leaves every later batch misaligned.
			break
		}
		// A segment alone exceeds the byte limit (or the strategy's current
		// batch size): send a prefix that fits, as a sub-slice. At least one record always fits, as
		// max_record_bytes <= max_batch_bytes.
		k, b := 0, 0
		for k < len(seg.recs) && k < room {
			sz := seg.recs[k].Size()
			if b+sz > w.cfg.MaxBatchBytes && k > 0 {
				break
			}
			b += sz
			k++
		}
		batch.recs, batch.bytes = seg.recs[:k:k], b
		seg.recs = seg.recs[k:]
		seg.bytes -= b
		seg.seq += uint64(k)
		break
	}
	w.bufCount -= len(batch.recs)
	w.bufBytes -= batch.bytes
	if w.head == len(w.queue) {
		w.queue, w.head = w.queue[:0], 0
	} else if w.head > 1024 && w.head*2 > len(w.queue) {
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:])
		w.queue, w.head = w.queue[:n], 0
	}
	return batch, true
}

// dropAbandonedLocked removes from batch the records whose partition moved
// to another owner since they were buffered (pipeline.Abandoner): the owner
// re-reads them from the last commit, so sending them would only make
// duplicates. They are acknowledged (the ack is ignored) and their credit
// returns. It reports whether the batch is now empty. It runs only when a
// partition moved since the batch was buffered, so it may allocate.
func (w *Writer) dropAbandonedLocked(batch *segment) bool {
	batch.epoch = w.abandon.Epoch()
	keep := 0
	for i := range batch.recs {
		if !batch.recs[i].Abandoned() {
			keep++
		}
	}
	if keep == len(batch.recs) {
		return false
	}
	kept := make([]pipeline.Record, 0, keep)
	var failures []int
	if batch.failures != nil {
		failures = make([]int, 0, keep)
	}
	var dropped []pipeline.Record
	bytes := 0
	for i, r := range batch.recs {
		if r.Abandoned() {
			dropped = append(dropped, r)
			continue
		}
		kept = append(kept, r)
		bytes += r.Size()
		if failures != nil {
			failures = append(failures, batch.failures[i])
		}
	}
	n, b := w.creditOf(dropped)
	pipeline.AckAll(dropped) // dropped must not be read after this
	w.stats.Abandoned.Add(int64(n))
	w.stats.Buffered.Add(-int64(n))
	w.stats.BufferedBytes.Add(-b)
	w.credits.Release(int64(n))
	w.bcredit.Release(b)
	w.signalLocked()
	w.log.Debug("records of moved partitions not sent", "records", n)
	batch.recs, batch.failures, batch.bytes = kept, failures, bytes
	return len(kept) == 0
}

func (w *Writer) nextDeadlineLocked(now time.Time) time.Time {
	if w.inflight >= w.cfg.MaxInFlightRequests {
		return time.Time{}
	}
	if len(w.retries) > 0 {
		return w.retries[0].notBefore
	}
	if w.bufCount == 0 {
		return time.Time{}
	}
	return w.queue[w.head].enq.Add(w.cfg.MaxTimeInBuffer)
}

// requestOf describes batch for the rate-limiting strategy, with each
// topic-partition's share (records of a batch come in runs per partition).
func requestOf(batch segment) backpressure.Request {
	req := backpressure.Request{Records: len(batch.recs), Bytes: batch.bytes}
	for i := range batch.recs {
		o := &batch.recs[i].Origin
		j := len(req.Parts) - 1
		if j < 0 || req.Parts[j].Topic != o.Topic || req.Parts[j].Partition != o.Partition {
			j = slices.IndexFunc(req.Parts, func(p backpressure.Part) bool { return p.Topic == o.Topic && p.Partition == o.Partition })
			if j < 0 {
				req.Parts = append(req.Parts, backpressure.Part{Topic: o.Topic, Partition: o.Partition})
				j = len(req.Parts) - 1
			}
		}
		req.Parts[j].Records++
		req.Parts[j].Bytes += batch.recs[i].Size()
	}
	if batch.bytes == 0 {
		for _, p := range req.Parts {
			req.Bytes += p.Bytes
		}
	}
	return req
}

// pushRetryLocked queues a failed segment for retry, keeping retries in
// write order so the oldest records are retried first.
func (w *Writer) pushRetryLocked(r segment) {
	i := len(w.retries)
	for i > 0 && w.retries[i-1].seq > r.seq {
		i--
	}
	w.retries = append(w.retries, segment{})
	copy(w.retries[i+1:], w.retries[i:])
	w.retries[i] = r
}

// submit sends one batch and settles each record. It returns the request's
// verdict for the circuit breaker (see breakerVerdict).
func (w *Writer) submit(ctx context.Context, batch segment, req backpressure.Request) (verdict error) {
	recs := batch.recs
	w.stats.Requests.Add(1)
	start := w.now()
	rctx, cancel := context.WithTimeoutCause(ctx, w.cfg.RequestTimeout, ErrRequestTimeout)
	err := w.sink.WriteBatch(rctx, recs)
	timedOut := err != nil && errors.Is(context.Cause(rctx), ErrRequestTimeout)
	cancel()
	if w.limit != nil {
		res := backpressure.Result{Request: req, TimedOut: timedOut, Latency: w.now().Sub(start)}
		if err != nil && ctx.Err() == nil {
			// Fatal entries are the records' fault, not congestion.
			for _, ferr := range failedEntries(err, len(recs)) {
				switch Classify(ferr) {
				case Throttled:
					res.Throttled = true
					res.Failed++
				case Retryable:
					res.Failed++
				}
			}
		}
		w.limit.Complete(res)
	}

	done := func() {
		w.mu.Lock()
		w.inflight--
		w.stats.InFlightRequests.Add(-1)
		w.signalLocked()
		w.mu.Unlock()
	}
	if err == nil {
		w.complete(recs)
		done()
		return nil
	}
	if ctx.Err() != nil {
		verdict = errNotSent
		// Shutting down: abandon the batch. Its records are not acknowledged
		// and will be re-delivered after restart.
		w.release(recs)
		done()
		return verdict
	}
	w.stats.FailedRequests.Add(1)
	if timedOut {
		err = fmt.Errorf("%w after %v: %w", ErrRequestTimeout, w.cfg.RequestTimeout, err)
		if w.cfg.FailOnTimeout {
			w.mu.Lock()
			w.failLocked(fmt.Errorf("fail_on_timeout: %w", err))
			w.mu.Unlock()
			w.release(recs)
			done()
			return verdict
		}
	}

	failedIdx := failedEntries(err, len(recs))
	verdict = breakerVerdict(err, false, failedIdx)
	attempts := batch.attempts + 1
	var ok []pipeline.Record
	retry := segment{retry: true, attempts: attempts, seq: batch.seq, epoch: batch.epoch}
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
		case class == Fatal:
			addDead(r, "fatal", ferr)
		case class == Retryable && failures >= w.cfg.MaxAttempts:
			addDead(r, "retries_exhausted", ferr)
		default:
			if len(retry.recs) == 0 {
				retry.seq = batch.seq + uint64(i)
			}
			wait = max(wait, w.backoff(attempts), retryAfter(ferr))
			retry.recs = append(retry.recs, r)
			retry.failures = append(retry.failures, failures)
			retry.bytes += r.Size()
		}
	}
	if len(ok) > 0 {
		w.complete(ok)
	}
	if len(retry.recs) > 0 {
		w.stats.Retried.Add(int64(len(retry.recs)))
		w.log.Debug("retrying entries", "records", len(retry.recs), "after", wait, "attempt", attempts, "err", err)
		retry.notBefore = w.now().Add(wait)
		retry.enq = retry.notBefore
		w.mu.Lock()
		w.pushRetryLocked(retry)
		w.mu.Unlock()
	}
	for _, d := range deads {
		if derr := w.deadLetter(ctx, d.recs, d.class, d.err, attempts); derr != nil {
			w.dropFailed(ctx, d.recs, derr)
		}
	}
	done()
	return verdict
}

// dropFailed gives up on n records that could not be dead-lettered: they
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

// failedEntries maps the index of each failed entry of a batch of n to its
// error. A *BatchError is trusted only when it names at least one entry and
// every index is inside the batch; otherwise nothing can be known to be
// delivered and every entry counts as failed with err.
func failedEntries(err error, n int) map[int]error {
	failed := make(map[int]error, n)
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
			return failed
		}
	}
	for i := range n {
		failed[i] = err
	}
	return failed
}

// complete acknowledges delivered records and frees their credit.
func (w *Writer) complete(recs []pipeline.Record) {
	// Read everything needed before acknowledging: once the last record of
	// a poll batch is acked, its slice is recycled by the source.
	n, b := w.creditOf(recs)
	pipeline.AckAll(recs)
	w.stats.Delivered.Add(int64(n))
	w.releaseN(n, b)
}

// release returns the credit recs held (for records not acknowledged).
func (w *Writer) release(recs []pipeline.Record) {
	w.releaseN(w.creditOf(recs))
}

// creditOf is the credit recs hold: one record each, and their bytes unless
// they were oversized (those never took byte credit).
func (w *Writer) creditOf(recs []pipeline.Record) (int, int64) {
	var b int64
	for i := range recs {
		if sz := recs[i].Size(); sz <= w.cfg.MaxRecordBytes {
			b += int64(sz)
		}
	}
	return len(recs), b
}

func (w *Writer) releaseN(n int, b int64) {
	w.stats.Buffered.Add(-int64(n))
	w.stats.BufferedBytes.Add(-b)
	w.credits.Release(int64(n))
	w.bcredit.Release(b)
	w.mu.Lock()
	w.signalLocked()
	w.mu.Unlock()
}

// deadLetter stores recs in the dead-letter queue, then acknowledges them.
// With tolerance none, or without a queue, it fails the job instead and the
// records stay unacknowledged.
func (w *Writer) deadLetter(ctx context.Context, recs []pipeline.Record, class string, cause error, attempts int) error {
	if w.cfg.Tolerance != ToleranceAll || w.dlq == nil {
		return fmt.Errorf("%s failure of %s/%d@%d (errors.tolerance %s): %w", class,
			recs[0].Origin.Topic, recs[0].Origin.Partition, recs[0].Origin.Offset, w.cfg.Tolerance, cause)
	}
	f := pipeline.Failure{Class: class, Err: cause, Attempts: attempts, Details: details(cause)}
	if err := w.dlq.Send(ctx, recs, f); err != nil {
		return fmt.Errorf("dead-letter %d records: %w", len(recs), err)
	}
	w.log.Warn("records dead-lettered", "records", len(recs), "class", class, "attempts", attempts,
		"topic", recs[0].Origin.Topic, "partition", recs[0].Origin.Partition, "offset", recs[0].Origin.Offset, "err", cause)
	n, b := w.creditOf(recs)
	pipeline.AckAll(recs) // recs must not be read after this (see complete)
	w.stats.DeadLettered.Add(int64(n))
	w.releaseN(n, b)
	return nil
}

// backoff is exponential with equal jitter: half fixed, half random.
func (w *Writer) backoff(attempt int) time.Duration {
	d := w.cfg.RetryBackoff << min(attempt-1, 30)
	if d <= 0 || d > w.cfg.MaxRetryBackoff {
		d = w.cfg.MaxRetryBackoff
	}
	half := d / 2
	return half + rand.N(half+1)
}
