// Package job builds a runnable pipeline from a config file: the embedded
// broker when asked for, the source, the operator chain, the AsyncSink
// writer over the concrete sink, and the dead-letter queue. cmd/spillway,
// the demo and the integration tests all run pipelines through it.
package job

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/kafkalog"
	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// Job is one built pipeline with everything it opened. Run it once.
type Job struct {
	Name     string
	Brokers  []string
	Strategy backpressure.Strategy // sink.rate_limit's, or the default pacing (adaptive_rate reacting to throttles); limits can be changed at runtime through it
	cfg      *config.Pipeline
	log      *slog.Logger
	embedded *broker.Embedded
	src      pipeline.Source
	writer   *sinks.Writer
	pipe     *pipeline.Pipeline
	state    *jobState   // strategy state, live limits (state.go)
	share    *groupShare // a group-scoped limit's split (share.go); nil without one
	closers  []func() error
	phase    atomic.Int32 // phaseBuilt, phaseRunning, phaseDraining, phaseStopped
}

const (
	phaseBuilt int32 = iota
	phaseRunning
	phaseDraining
	phaseStopped
)

// The optional abilities of a source the job reports on, found by type
// assertion (the Kafka source has them all; file and generate none).
type (
	// connectedSource says whether the brokers answered and how many
	// partitions this worker owns.
	connectedSource interface {
		Status() (connected bool, partitions int)
	}
	// committingSource commits the offsets of what is done.
	committingSource interface {
		Checkpoint(ctx context.Context) error
		Committed() map[string]map[int32]int64
	}
	// offsetStoringSink writes the source offsets of what it delivered in
	// the same transaction (sinks/postgres with effectively_once); its
	// StoredOffsets is empty without that.
	offsetStoringSink interface {
		StoredOffsets(ctx context.Context, group, topic string) (map[int32]int64, error)
		OffsetsGroup() string
	}
	// storedOffsetsSource starts partitions after such stored offsets.
	storedOffsetsSource interface {
		UseStoredOffsets(kafka.StoredOffsets)
	}
	// transactionalSink is the Kafka sink with delivery: exactly_once; it
	// and the Kafka source share one transactional client.
	transactionalSink interface {
		Transactions() (kafka.Transactions, bool)
	}
	transactionalSource interface {
		UseTransactions(kafka.Transactions)
	}
	// pausingSource counts the fetch pauses of credit flow control.
	pausingSource interface {
		FlowStats() (pauses int64, paused time.Duration)
	}
)

// Option adjusts a job at build time.
type Option func(*buildOpts)

type buildOpts struct {
	stdout   io.Writer
	embedded *broker.Embedded
	mp       metric.MeterProvider // WithMeterProvider; nil: no metrics
	tp       trace.TracerProvider // WithTracerProvider; nil: no traces
	restore  *restoreFrom         // FromSavepoint, FromSavepointFile (savepoint.go)
}

// WithStdout sets where the stdout sink writes (tests).
func WithStdout(w io.Writer) Option { return func(o *buildOpts) { o.stdout = w } }

// WithEmbedded uses an already running embedded broker for brokers: embedded
// instead of starting one (the demo seeds it first).
func WithEmbedded(e *broker.Embedded) Option { return func(o *buildOpts) { o.embedded = e } }

// IsEmbedded reports whether cfg asks for the in-process broker.
func IsEmbedded(cfg *config.Pipeline) bool { return cfg.Brokers.Embedded() }

// StartEmbedded starts the broker a config asks for, with the source's
// topics and the dead-letter topic created.
func StartEmbedded(cfg *config.Pipeline, log *slog.Logger) (*broker.Embedded, error) {
	topics, _ := cfg.SourceTopics()
	if t := cfg.Errors.Topic; t != "" {
		topics = append(topics, t)
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

// Build wires cfg into a job by looking each kind up in the registry cfg
// was parsed with. It may start the embedded broker and create topics
// (bounded by ctx); everything else is done by Run.
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
	reg := cfg.Registry()
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
	writerCfg := cfg.Sink.Writer
	writerCfg.ApplyDefaults()
	env := registry.Env{Job: cfg.Name, Log: log, Stdout: bo.stdout, Writer: writerCfg}
	if len(j.Brokers) > 0 {
		env.Brokers = j.Brokers
		brokers := j.Brokers
		env.KafkaOpts = func() ([]kgo.Opt, error) {
			kopts, err := cfg.Kafka.Opts(brokers)
			if err != nil {
				return nil, fmt.Errorf("kafka: %w", err)
			}
			return append(kopts, kgo.WithLogger(kafkalog.Logger(log, kafkaLevel))), nil
		}
		if _, err := env.KafkaOpts(); err != nil { // a CA file that went away since validation
			return nil, err
		}
	}

	// Telemetry (telemetry.go, metrics.go): the offset commits of the
	// clients built from env are measured through a franz-go hook.
	var tel *telemetry
	if bo.mp != nil || bo.tp != nil {
		group := ""
		if kc, ok := cfg.Source.Config.(*kafka.Config); ok {
			group = kc.Group
		}
		if tel, err = newTelemetry(bo.mp, bo.tp, cfg.Source.Kind, group); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		if kafkaOpts := env.KafkaOpts; kafkaOpts != nil && tel.commitDuration != nil {
			env.KafkaOpts = func() ([]kgo.Opt, error) {
				opts, err := kafkaOpts()
				return append(opts, kgo.WithHooks(commitHook{tel})), err
			}
		}
	}

	// Source.
	se, ok := reg.Source(cfg.Source.Kind)
	if !ok {
		return nil, fmt.Errorf("source: unknown kind %q", cfg.Source.Kind)
	}
	if j.src, err = se.New(ctx, cfg.Source.Config, env); err != nil {
		return nil, fmt.Errorf("source.%s: %w", cfg.Source.Kind, err)
	}

	// Operators.
	var chain pipeline.Chain
	for i, op := range cfg.Operators {
		name := op.Name
		if name == "" {
			name = fmt.Sprintf("operators[%d]", i)
		}
		oe, ok := reg.Operator(op.Kind)
		if !ok {
			return nil, fmt.Errorf("%s: unknown kind %q", name, op.Kind)
		}
		fn, err := oe.New(op.Config, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		chain = append(chain, pipeline.Named{Name: name, Op: fn})
	}

	// Dead-letter queue: the policy, and the producer when a topic is set.
	var (
		producer pipeline.DeadLetter
		dlp      *deadletter.Producer
	)
	if topic := cfg.Errors.Topic; topic != "" {
		if !IsEmbedded(cfg) { // the embedded broker seeds it
			if err := ensureTopic(ctx, env, topic); err != nil {
				return nil, fmt.Errorf("errors.dead_letter_topic: %w", err)
			}
		}
		kopts, err := env.KafkaOpts()
		if err != nil {
			return nil, err
		}
		p, err := deadletter.NewProducer(j.Brokers, topic, append(kopts, kgo.WithLogger(kafkalog.Logger(log.With("client", "dead-letter"), kafkaLevel)))...)
		if err != nil {
			return nil, err
		}
		producer, dlp = p, p
		if tel != nil && tel.tracer != nil {
			producer = tracedDeadLetter{DeadLetter: p, tracer: tel.tracer, topic: topic}
		}
		j.closers = append(j.closers, func() error { p.Close(); return nil })
	}
	dlq, err := deadletter.NewQueue(cfg.Errors.Config, producer)
	if err != nil {
		return nil, fmt.Errorf("errors: %w", err)
	}

	// Sink.
	ke, ok := reg.Sink(cfg.Sink.Kind)
	if !ok {
		return nil, fmt.Errorf("sink: unknown kind %q", cfg.Sink.Kind)
	}
	sink, err := ke.New(ctx, cfg.Sink.Config, env)
	if err != nil {
		return nil, fmt.Errorf("sink.%s: %w", cfg.Sink.Kind, err)
	}
	if c, ok := sink.(interface{ Close() error }); ok {
		j.closers = append(j.closers, c.Close)
	}
	// An effectively-once sink stores the offsets it wrote with the
	// records: the source starts each partition it is assigned after them.
	if st, ok := sink.(offsetStoringSink); ok {
		if src, ok := j.src.(storedOffsetsSource); ok {
			group := st.OffsetsGroup()
			src.UseStoredOffsets(func(ctx context.Context, topic string) (map[int32]int64, error) {
				return st.StoredOffsets(ctx, group, topic)
			})
		}
	}
	// Exactly-once into Kafka: the source consumes and the sink produces
	// through one transactional client, and each transaction ends with a
	// flush of the writer (sources/kafka/txn.go).
	if ts, ok := sink.(transactionalSink); ok {
		if tx, on := ts.Transactions(); on {
			src, ok := j.src.(transactionalSource)
			if !ok {
				return nil, fmt.Errorf("sink.%s.delivery: exactly_once needs a kafka source", cfg.Sink.Kind)
			}
			tx.Flush = func(ctx context.Context) error { return j.writer.Flush(ctx) }
			if dlp != nil { // dead letters are written in the transactions too
				dlp.UseTransactions()
				tx.DeadLetters = dlp
			}
			src.UseTransactions(tx)
		}
	}
	if tel != nil && tel.tracer != nil {
		sink = tracedSink{Sink: sink, t: tel, kind: cfg.Sink.Kind}
	}

	wopts := []sinks.WriterOption{sinks.WithLogger(log), sinks.WithDeadLetter(dlq)}
	if tel != nil && tel.reqDuration != nil {
		wopts = append(wopts, sinks.WithRequestObserver(tel))
	}
	if cb := cfg.Sink.CircuitBreaker; cb != nil {
		wopts = append(wopts, sinks.WithBreaker(*cb))
	}
	if rl := cfg.Sink.RateLimit; rl != nil {
		st, ok := reg.Strategy(rl.Kind)
		if !ok {
			return nil, fmt.Errorf("sink.rate_limit: unknown kind %q", rl.Kind)
		}
		s, err := st.New(rl.Config, env)
		if err != nil {
			return nil, fmt.Errorf("sink.rate_limit: %w", err)
		}
		j.Strategy = s
	} else {
		// Without a configured strategy nothing limits sending until the
		// destination throttles; from then on sends are paced at what it
		// takes, so a rate-limited API is not hit by a burst after every
		// Retry-After (and batches shrink when one is larger than its burst).
		s, err := backpressure.NewAdaptiveRate(registry.AdaptiveRateFor(backpressure.AdaptiveRateConfig{DecreaseOn: "throttles"}, writerCfg))
		if err != nil {
			return nil, fmt.Errorf("sink: default pacing: %w", err)
		}
		j.Strategy = s
	}
	if sh, ok := j.Strategy.(backpressure.Shared); ok && sh.GroupScoped() {
		as, ok := j.src.(assignmentSource)
		if !ok {
			return nil, fmt.Errorf("sink.rate_limit: scope group needs a Kafka source (source kind %q)", cfg.Source.Kind)
		}
		topics, _ := cfg.SourceTopics()
		j.share = newGroupShare(sh, topics, log)
		as.OnAssignmentChange(j.share.changed)
	}
	wopts = append(wopts, sinks.WithStrategy(j.Strategy))
	writerCfg.Retry = cfg.Errors.RetryConfig
	j.writer, err = sinks.NewWriter(sink, writerCfg, wopts...)
	if err != nil {
		return nil, fmt.Errorf("sink.writer: %w", err)
	}

	// State: restore the live limit and the strategy's learnt state before
	// anything is sent; Run saves them as they change. A savepoint to
	// start from is restored first.
	var preload map[string][]byte
	if bo.restore != nil {
		if preload, err = restoreSavepoint(ctx, cfg, env, *bo.restore, log); err != nil {
			return nil, err
		}
	}
	if j.state, err = openState(ctx, cfg, env, j.Strategy, j.writer, log, kafkaLevel); err != nil {
		return nil, err
	}
	if preload != nil {
		j.state.preload(preload)
	}
	j.closers = append(j.closers, j.state.close)
	if _, ok := j.src.(assignmentSource); ok {
		worker, kind := workerName(cfg), strategyKind(cfg)
		j.state.member = &memberPublisher{key: state.MemberKey(cfg.Name, worker), describe: func() state.Member { return j.member(worker, kind) }}
		if _, _, fair := fairStrategy(j.Strategy); fair {
			j.state.member.refresh = memberFresh / 3
		}
	}

	j.pipe, err = pipeline.New(j.src, j.writer,
		pipeline.WithOperators(chain),
		pipeline.WithLogger(log),
		pipeline.WithDrainTimeout(cfg.ShutdownTimeout),
		pipeline.WithDeadLetter(dlq),
	)
	if err != nil {
		return nil, err
	}
	if bo.mp != nil {
		unregister, err := j.registerMetrics(bo.mp, tel)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		j.closers = append(j.closers, unregister)
	}
	return j, nil
}

// Run runs the pipeline until ctx is cancelled (graceful drain, returns nil),
// the source is exhausted, or a fatal error. It closes everything the job
// opened before returning.
func (j *Job) Run(ctx context.Context) error {
	defer j.close()
	ctx, release := j.stopOnRequest(ctx) // savepoint create --stop
	defer release()
	j.phase.Store(phaseRunning)
	stop := context.AfterFunc(ctx, func() { j.phase.CompareAndSwap(phaseRunning, phaseDraining) })
	defer stop()
	defer j.phase.Store(phaseStopped)
	sctx, stopSaving := context.WithCancel(context.Background())
	saved := make(chan struct{})
	go func() { defer close(saved); j.state.run(sctx) }()
	defer func() { stopSaving(); <-saved }() // saves once more, before close writes it
	return j.pipe.Run(ctx)
}

// Health is what /readyz reports.
type Health struct {
	// Status is "ready", or why the job is not: "starting" (not running
	// yet, or the brokers have not answered), "degraded" (the sink's
	// breaker is not closed: nothing or only probes are sent, data waits;
	// or the state store fell back to memory: records flow),
	// "draining" (shutting down) or "stopped".
	Status     string   `json:"status"`
	Reasons    []string `json:"reasons,omitempty"`
	Breaker    string   `json:"breaker"`
	Partitions int      `json:"partitions"` // assigned to this worker (Kafka source)
	Buffered   int64    `json:"buffered"`   // records held by the sink
	// State is where strategy state and live limits are kept: kafka,
	// memory, or "memory (degraded: reason)" while Kafka is unavailable
	// for them, which makes Status degraded too.
	State string `json:"state"`
}

// Ready reports whether the job is working normally.
func (h Health) Ready() bool { return h.Status == "ready" }

// Health reports the job's readiness and why it is not ready.
func (j *Job) Health() Health {
	state := j.writer.BreakerState()
	st := j.state.status()
	h := Health{Breaker: state.String(), Buffered: j.writer.Stats().Buffered.Load(), State: st.String()}
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
	if cs, ok := j.src.(connectedSource); ok {
		var connected bool
		connected, h.Partitions = cs.Status()
		if !connected {
			h.Status, h.Reasons = "starting", []string{"waiting for the Kafka brokers to answer"}
			return h
		}
	}
	switch state {
	case sinks.BreakerOpen:
		h.Status, h.Reasons = "degraded", []string{"sink circuit breaker open: no requests are sent, buffered records wait and fetching pauses"}
	case sinks.BreakerHalfOpen:
		h.Status, h.Reasons = "degraded", []string{"sink circuit breaker half-open: probing the sink with one small batch"}
	default:
		h.Status = "ready"
	}
	if st.Degraded {
		// Records flow; what is lost is only state written while degraded
		// if the process ends before Kafka returns.
		h.Status = "degraded"
		h.Reasons = append(h.Reasons, "state store on memory: "+st.Reason+"; state is written when Kafka returns")
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

// dlqConnectTimeout bounds the check that the brokers answer before the
// dead-letter topic is created at build time.
const dlqConnectTimeout = 10 * time.Second

// ensureTopic creates topic (one partition) if it is missing, after
// checking that the brokers answer, so that a wrong password or an
// untrusted certificate is reported as such, naming the broker.
func ensureTopic(ctx context.Context, env registry.Env, topic string) error {
	opts, err := env.KafkaOpts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	err = kafkaclient.Ping(ctx, cl, dlqConnectTimeout)
	cl.Close()
	if err != nil {
		return fmt.Errorf("cannot reach kafka brokers %s: %w", strings.Join(env.Brokers, ","), err)
	}
	if opts, err = env.KafkaOpts(); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, dlqConnectTimeout)
	defer cancel()
	return broker.EnsureTopicsWith(tctx, env.Brokers, opts, 1, topic)
}

// StateStore is where the job keeps its state (tests, and later status
// and savepoints read it).
func (j *Job) StateStore() state.Store { return j.state.store }

// Flush sends everything the sink holds and waits until nothing is in
// flight (or ctx ends). Records still on their way from the source may
// arrive after it returns.
func (j *Job) Flush(ctx context.Context) error { return j.writer.Flush(ctx) }

// Progress returns the records the source emitted and those done (delivered,
// dead-lettered or dropped on purpose) so far; cheaper than Snapshot, for
// polling.
func (j *Job) Progress() (in, done int64) {
	ps, ws := j.pipe.Stats(), j.writer.Stats()
	return ps.In.Load(), ws.Delivered.Load() + ws.DeadLettered.Load() + ps.DeadLettered.Load() + ps.Dropped.Load()
}

// Checkpoint commits, for a Kafka source, every partition up to its lowest
// offset not yet done. Other sources have nothing to commit.
func (j *Job) Checkpoint(ctx context.Context) error {
	if cs, ok := j.src.(committingSource); ok {
		return cs.Checkpoint(ctx)
	}
	return nil
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
	State                                string             // state store: kafka, memory, or memory (degraded: reason)
	Limit                                string             // live limit applied (spillway limits set); empty: as configured
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
		Breaker:           j.writer.BreakerState().String(),
		SourceTask:        j.pipe.SourceTaskTime(),
		SinkTask:          j.writer.TaskTime(),
		BufferedBytes:     ws.BufferedBytes.Load(),
		PeakBufferedBytes: ws.PeakBufferedBytes.Load(),
		State:             j.state.status().String(),
	}
	if l := j.state.currentLimit(); l != nil {
		s.Limit = l.String()
	}
	if cs, ok := j.src.(committingSource); ok {
		s.Committed = cs.Committed()
	}
	if ps, ok := j.src.(pausingSource); ok {
		s.FetchPauses, s.FetchPaused = ps.FlowStats()
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
