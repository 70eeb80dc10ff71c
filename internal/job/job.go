// Package job builds a runnable pipeline from a config file: the embedded
// broker when asked for, the source, the operator chain, the AsyncSink
// writer over the concrete sink, and the dead-letter queue. cmd/spillway,
// the demo and the integration tests all run pipelines through it.
package job

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/kafkalog"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
	sinkfile "github.com/spillway-io/spillway/sinks/file"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	sinkkafka "github.com/spillway-io/spillway/sinks/kafka"
	"github.com/spillway-io/spillway/sources/file"
	"github.com/spillway-io/spillway/sources/generate"
	"github.com/spillway-io/spillway/sources/kafka"
)

// Job is one built pipeline with everything it opened. Run it once.
type Job struct {
	Name     string
	Brokers  []string
	Strategy backpressure.Strategy // nil without sink.rate_limit; limits can be changed at runtime through it
	cfg      *config.Pipeline
	log      *slog.Logger
	embedded *broker.Embedded
	dlq      *sinkkafka.DeadLetter
	src      pipeline.Source
	kafkaSrc *kafka.Source
	writer   *sinks.Writer
	pipe     *pipeline.Pipeline
	closers  []func() error
	phase    atomic.Int32 // phaseBuilt, phaseRunning, phaseDraining, phaseStopped
}

const (
	phaseBuilt int32 = iota
	phaseRunning
	phaseDraining
	phaseStopped
)

// Option adjusts a job at build time.
type Option func(*buildOpts)

type buildOpts struct {
	stdout   io.Writer
	embedded *broker.Embedded
}

// WithStdout sets where the stdout sink writes (tests).
func WithStdout(w io.Writer) Option { return func(o *buildOpts) { o.stdout = w } }

// WithEmbedded uses an already running embedded broker for brokers: embedded
// instead of starting one (the demo seeds it first).
func WithEmbedded(e *broker.Embedded) Option { return func(o *buildOpts) { o.embedded = e } }

// IsEmbedded reports whether cfg asks for the in-process broker.
func IsEmbedded(cfg *config.Pipeline) bool {
	return len(cfg.Brokers) == 1 && cfg.Brokers[0] == "embedded"
}

// StartEmbedded starts the broker a config asks for.
func StartEmbedded(cfg *config.Pipeline, log *slog.Logger) (*broker.Embedded, error) {
	var topics []string
	if cfg.Source.Kafka != nil {
		topics = append(topics, cfg.Source.Kafka.Topics...)
	}
	if cfg.Errors.DeadLetterTopic != "" {
		topics = append(topics, cfg.Errors.DeadLetterTopic)
	}
	e, err := broker.Start(broker.Options{
		DataDir:    cfg.Embedded.DataDir,
		Port:       cfg.Embedded.Port,
		Partitions: cfg.Embedded.Partitions,
		Topics:     topics,
	})
	if err != nil {
		return nil, err
	}
	log.Info("embedded kafka broker started", "addrs", strings.Join(e.Addrs(), ","), "data_dir", cfg.Embedded.DataDir)
	return e, nil
}

// Build wires cfg into a job. It may start the embedded broker and create
// topics (bounded by ctx); everything else is done by Run.
func Build(ctx context.Context, cfg *config.Pipeline, log *slog.Logger, opts ...Option) (_ *Job, err error) {
	var bo buildOpts
	for _, o := range opts {
		o(&bo)
	}
	if bo.stdout == nil {
		bo.stdout = os.Stdout
	}
	kafkaLevel, err := kafkalog.ParseLevel(cfg.Log.KafkaLevel)
	if err != nil {
		return nil, fmt.Errorf("log.kafka_level: %w", err)
	}
	j := &Job{Name: cfg.Name, cfg: cfg, log: log}
	defer func() {
		if err != nil {
			j.close()
		}
	}()

	j.Brokers = cfg.Brokers
	if IsEmbedded(cfg) {
		e := bo.embedded
		if e == nil {
			if e, err = StartEmbedded(cfg, log); err != nil {
				return nil, err
			}
			j.embedded = e
			j.closers = append(j.closers, func() error { e.Close(); return nil })
		}
		j.Brokers = e.Addrs()
	}

	// Source.
	switch s := cfg.Source; {
	case s.Kafka != nil:
		if s.Kafka.CreateTopics {
			parts := s.Kafka.Partitions
			if parts == 0 {
				parts = 4
			}
			tctx, cancel := context.WithTimeout(ctx, orDefault(s.Kafka.ConnectTimeout, 10*time.Second))
			err := broker.EnsureTopics(tctx, j.Brokers, int32(parts), s.Kafka.Topics...)
			cancel()
			if err != nil {
				return nil, err
			}
		}
		ks, err := kafka.New(kafka.Config{
			Brokers:            j.Brokers,
			Topics:             s.Kafka.Topics,
			Group:              s.Kafka.Group,
			StartOffset:        s.Kafka.StartOffset,
			CheckpointInterval: s.Kafka.CheckpointInterval,
			RevokeTimeout:      s.Kafka.RevokeTimeout,
			SessionTimeout:     s.Kafka.SessionTimeout,
			InstanceID:         s.Kafka.InstanceID,
			ConnectTimeout:     s.Kafka.ConnectTimeout,
			MaxPollRecords:     s.Kafka.MaxPollRecords,
			ClientID:           "spillway-" + cfg.Name,
			// One fetch may overshoot the sink's byte budget (the source
			// pauses when less than a partition's fetch is free), so keep
			// fetches well under it.
			FetchMaxBytes:          int32(cmp.Or(s.Kafka.FetchMaxBytes, min(50<<20, budgetBytes(cfg)/8))),
			FetchMaxPartitionBytes: int32(cmp.Or(s.Kafka.FetchMaxPartitionBytes, min(1<<20, budgetBytes(cfg)/16))),
			Opts:                   kafkaOpts(log, kafkaLevel, s.Kafka.RequestTimeoutOverhead),
		}, kafka.WithLogger(log))
		if err != nil {
			return nil, err
		}
		j.src, j.kafkaSrc = ks, ks
	case s.File != nil:
		fs, err := file.Open(s.File.Path)
		if err != nil {
			return nil, err
		}
		j.src = fs
	case s.Generate != nil:
		gs, err := generate.New(generate.Config{
			Count: s.Generate.Count, ValueBytes: s.Generate.ValueBytes, Keys: s.Generate.Keys, Rate: s.Generate.Rate,
		})
		if err != nil {
			return nil, err
		}
		j.src = gs
	default:
		return nil, errors.New("source: no source configured")
	}

	// Operators.
	chain, err := buildChain(cfg.Operators)
	if err != nil {
		return nil, err
	}

	// Dead-letter queue.
	if cfg.Errors.DeadLetterTopic != "" {
		if !IsEmbedded(cfg) { // the embedded broker seeds it
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := broker.EnsureTopics(tctx, j.Brokers, 1, cfg.Errors.DeadLetterTopic)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("errors.dead_letter_topic: %w", err)
			}
		}
		d, err := sinkkafka.NewDeadLetter(j.Brokers, cfg.Errors.DeadLetterTopic,
			kgo.WithLogger(kafkalog.Logger(log.With("client", "dead-letter"), kafkaLevel)))
		if err != nil {
			return nil, err
		}
		j.dlq = d
		j.closers = append(j.closers, func() error { d.Close(); return nil })
	}

	// Sink.
	var sink sinks.Sink
	switch s := cfg.Sink; {
	case s.HTTP != nil:
		hs, err := sinkhttp.New(*s.HTTP)
		if err != nil {
			return nil, fmt.Errorf("sink.http: %w", err)
		}
		sink = hs
	case s.File != nil:
		fs, err := sinkfile.New(*s.File)
		if err != nil {
			return nil, fmt.Errorf("sink.file: %w", err)
		}
		sink = fs
		j.closers = append(j.closers, fs.Close)
	case s.Stdout != nil:
		sink = sinkfile.NewWriter(bo.stdout)
	default:
		return nil, errors.New("sink: no sink configured")
	}

	w := cfg.Sink.Writer
	wopts := []sinks.WriterOption{sinks.WithLogger(log)}
	if j.dlq != nil {
		wopts = append(wopts, sinks.WithDeadLetter(j.dlq))
	}
	if cb := cfg.Sink.CircuitBreaker; cb != nil {
		wopts = append(wopts, sinks.WithBreaker(sinks.BreakerConfig{
			FailureRatio: cb.FailureRatio, MinRequests: uint32(max(cb.MinRequests, 0)), Interval: cb.Interval,
			OpenTimeout: cb.OpenTimeout, HalfOpenRequests: uint32(max(cb.HalfOpenRequests, 0)),
		}))
	}
	if rl := cfg.Sink.RateLimit; rl != nil {
		st, err := backpressure.New(*rl, orInt(w.MaxBatchSize, 500), orInt(w.MaxInFlightRequests, 8))
		if err != nil {
			return nil, fmt.Errorf("sink.%w", err)
		}
		j.Strategy = st
		wopts = append(wopts, sinks.WithStrategy(st))
	}
	j.writer, err = sinks.NewWriter(sink, sinks.Config{
		MaxBatchSize:        w.MaxBatchSize,
		MaxBatchBytes:       w.MaxBatchBytes,
		MaxInFlightRequests: w.MaxInFlightRequests,
		MaxBufferedRequests: w.MaxBufferedRequests,
		MaxBufferedBytes:    w.MaxBufferedBytes,
		MaxTimeInBuffer:     w.MaxTimeInBuffer,
		MaxRecordBytes:      w.MaxRecordBytes,
		RequestTimeout:      w.RequestTimeout,
		FailOnTimeout:       w.FailOnTimeout,
		MaxAttempts:         cfg.Errors.MaxAttempts,
		RetryBackoff:        cfg.Errors.RetryBackoff,
		MaxRetryBackoff:     cfg.Errors.MaxRetryBackoff,
		Tolerance:           sinks.Tolerance(cfg.Errors.Tolerance),
	}, wopts...)
	if err != nil {
		return nil, fmt.Errorf("sink.writer: %w", err)
	}

	popts := []pipeline.Option{
		pipeline.WithOperators(chain),
		pipeline.WithLogger(log),
		pipeline.WithDrainTimeout(orDefault(cfg.ShutdownTimeout, 30*time.Second)),
	}
	if j.dlq != nil {
		popts = append(popts, pipeline.WithDeadLetter(j.dlq, cfg.Errors.Tolerance == string(sinks.ToleranceAll)))
	}
	j.pipe, err = pipeline.New(j.src, j.writer, popts...)
	if err != nil {
		return nil, err
	}
	return j, nil
}

// kafkaOpts are the franz-go options Spillway adds to the source's client.
func kafkaOpts(log *slog.Logger, level slog.Level, overhead time.Duration) []kgo.Opt {
	opts := []kgo.Opt{kgo.WithLogger(kafkalog.Logger(log, level))}
	if overhead > 0 {
		opts = append(opts, kgo.RequestTimeoutOverhead(overhead))
	}
	return opts
}

func budgetBytes(cfg *config.Pipeline) int {
	if b := cfg.Sink.Writer.MaxBufferedBytes; b > 0 {
		return max(b, 1024)
	}
	return 64 << 20
}

func buildChain(ops []config.Operator) (pipeline.Chain, error) {
	var chain pipeline.Chain
	for i, op := range ops {
		name := op.Name
		if name == "" {
			name = fmt.Sprintf("operators[%d]", i)
		}
		var (
			fn  pipeline.Operator
			err error
		)
		switch {
		case op.Filter != "":
			fn, err = exprop.Filter(op.Filter)
		case op.Map != nil:
			fn, err = exprop.Map(op.Map.Key, op.Map.Value, op.Map.Headers)
		default:
			err = errors.New("only filter and map operators are supported")
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		chain = append(chain, pipeline.Named{Name: name, Op: fn})
	}
	return chain, nil
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Run runs the pipeline until ctx is cancelled (graceful drain, returns nil),
// the source is exhausted, or a fatal error. It closes everything the job
// opened before returning.
func (j *Job) Run(ctx context.Context) error {
	defer j.close()
	j.phase.Store(phaseRunning)
	stop := context.AfterFunc(ctx, func() { j.phase.CompareAndSwap(phaseRunning, phaseDraining) })
	defer stop()
	defer j.phase.Store(phaseStopped)
	return j.pipe.Run(ctx)
}

// Health is what /readyz reports.
type Health struct {
	// Status is "ready", or why the job is not: "starting" (not running
	// yet, or the brokers have not answered), "degraded" (the sink's
	// breaker is not closed: nothing or only probes are sent, data waits),
	// "draining" (shutting down) or "stopped".
	Status     string   `json:"status"`
	Reasons    []string `json:"reasons,omitempty"`
	Breaker    string   `json:"breaker"`
	Partitions int      `json:"partitions"` // assigned to this worker (Kafka source)
	Buffered   int64    `json:"buffered"`   // records held by the sink
}

// Ready reports whether the job is working normally.
func (h Health) Ready() bool { return h.Status == "ready" }

// Health reports the job's readiness and why it is not ready.
func (j *Job) Health() Health {
	h := Health{Breaker: j.writer.BreakerState(), Buffered: j.writer.Stats().Buffered.Load()}
	switch j.phase.Load() {
	case phaseBuilt:
		h.Status, h.Reasons = "starting", []string{"not running yet"}
		return h
	case phaseDraining:
		h.Status, h.Reasons = "draining", []string{"shutting down: fetching stopped, flushing and committing"}
		return h
	case phaseStopped:
		h.Status, h.Reasons = "stopped", []string{"the job has ended"}
		return h
	}
	if j.kafkaSrc != nil {
		var connected bool
		connected, h.Partitions = j.kafkaSrc.Status()
		if !connected {
			h.Status, h.Reasons = "starting", []string{"waiting for the Kafka brokers to answer"}
			return h
		}
	}
	switch h.Breaker {
	case "open":
		h.Status, h.Reasons = "degraded", []string{"sink circuit breaker open: no requests are sent, buffered records wait and fetching pauses"}
	case "half-open":
		h.Status, h.Reasons = "degraded", []string{"sink circuit breaker half-open: probing the sink with one small batch"}
	default:
		h.Status = "ready"
	}
	return h
}

func (j *Job) close() {
	for i := len(j.closers) - 1; i >= 0; i-- {
		if err := j.closers[i](); err != nil {
			j.log.Warn("close", "err", err)
		}
	}
	j.closers = nil
}

// Checkpoint commits, for a Kafka source, every partition up to its lowest
// offset not yet done. Other sources have nothing to commit.
func (j *Job) Checkpoint(ctx context.Context) error {
	if j.kafkaSrc == nil {
		return nil
	}
	return j.kafkaSrc.Checkpoint(ctx)
}

// Snapshot is a point-in-time view of a job's counters.
type Snapshot struct {
	In, Delivered, DeadLettered, Dropped int64
	Abandoned                            int64 // not sent: their partition moved to another owner, which re-reads them
	Buffered, InFlightRequests, Retried  int64
	Requests                             int64
	BufferedBytes, PeakBufferedBytes     int64
	FetchPauses                          int64              // times the source paused fetching for credit
	FetchPaused                          time.Duration      // total time paused
	SourceTask, SinkTask                 pipeline.TaskTimes // cumulative idle/busy/backpressured time per stage
	Breaker                              string             // circuit breaker state: none, closed, half-open, open
	Committed                            map[string]map[int32]int64
}

// Snapshot reads the live counters.
func (j *Job) Snapshot() Snapshot {
	ps, ws := j.pipe.Stats(), j.writer.Stats()
	s := Snapshot{
		In:                ps.In.Load(),
		Delivered:         ws.Delivered.Load(),
		DeadLettered:      ws.DeadLettered.Load() + ps.DeadLettered.Load(),
		Dropped:           ps.Dropped.Load(),
		Abandoned:         ws.Abandoned.Load(),
		Buffered:          ws.Buffered.Load(),
		InFlightRequests:  ws.InFlightRequests.Load(),
		Retried:           ws.Retried.Load(),
		Requests:          ws.Requests.Load(),
		Breaker:           j.writer.BreakerState(),
		SourceTask:        j.pipe.SourceTaskTime(),
		SinkTask:          j.writer.TaskTime(),
		BufferedBytes:     ws.BufferedBytes.Load(),
		PeakBufferedBytes: ws.PeakBufferedBytes.Load(),
	}
	if j.kafkaSrc != nil {
		s.Committed = j.kafkaSrc.Committed()
		s.FetchPauses, s.FetchPaused = j.kafkaSrc.FlowStats()
	}
	return s
}

// CommittedTotal sums committed offsets over all partitions.
func (s Snapshot) CommittedTotal() int64 {
	var n int64
	for _, ps := range s.Committed {
		for _, o := range ps {
			n += o
		}
	}
	return n
}
