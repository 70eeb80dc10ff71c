// Package bench measures Spillway's Kafka → sink path against a raw
// franz-go group consumer reading the same data from the same broker in the
// same run, and reports both rates and their ratio. Absolute numbers depend
// on the machine; the ratio is the figure to compare.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/internal/telemetry"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// Options configures a run. Zero values mean the defaults on each field.
type Options struct {
	Records    int // records in the topic; default 1,000,000
	ValueBytes int // default 100
	Partitions int // default 4
	Rounds     int // alternating rounds of each contender; the median is reported; default 3
	Writer     sinks.Config
	Log        io.Writer // progress lines; nil discards
	// Brokers, when set, is an external cluster to measure on instead of
	// a fresh in-process broker: a topic of its own is created, filled and
	// deleted at the end.
	Brokers []string
	// Metrics adds a third contender to the throughput scenario: the same
	// pipeline reporting its OpenTelemetry metrics, scraped as Prometheus
	// text every MetricsScrape (default 1s), so that the cost of metrics
	// is measured in the same run (alternating with metrics off).
	Metrics       bool
	MetricsScrape time.Duration
	// Delivery is the Kafka sink's delivery in the kafka scenario:
	// at_least_once (default) or exactly_once, which adds the
	// at_least_once pipeline as a third contender (AtLeastOnceRate).
	Delivery string
	// TxnInterval is the exactly_once transaction_interval; zero is the
	// sink's default.
	TxnInterval time.Duration
}

// Result holds the medians of a run.
type Result struct {
	Records       int
	RawRate       float64 // records/s, raw kgo group consumer
	SpillwayRate  float64 // records/s, Kafka source → writer → no-op sink, commit after ack
	Ratio         float64 // SpillwayRate / RawRate
	RawRates      []float64
	SpillwayRates []float64
	Baseline      string // what RawRate measured, in String; "" is "raw_kgo", the group consumer
	// With Options.Metrics: the pipeline with metrics on and scraped.
	MetricsRate  float64
	MetricsRatio float64 // MetricsRate / RawRate
	MetricsRates []float64
	// MetricsPaired is the median over rounds of the rate with metrics
	// over the rate without, each pair measured back to back: less
	// sensitive to the machine's load drifting between rounds.
	MetricsPaired float64
	// With Options.Delivery exactly_once (kafka scenario): SpillwayRate is
	// the exactly_once pipeline's, timed until its last transaction
	// committed, and these the at_least_once pipeline's in the same rounds.
	AtLeastOnceRate  float64
	AtLeastOnceRates []float64
}

func (r Result) String() string {
	s := fmt.Sprintf("records=%d %s=%.0f rec/s spillway=%.0f rec/s ratio=%.3f", r.Records, cmp.Or(r.Baseline, "raw_kgo"), r.RawRate, r.SpillwayRate, r.Ratio)
	if r.MetricsRates != nil {
		s += fmt.Sprintf(" spillway+metrics=%.0f rec/s ratio_metrics=%.3f (%+.1f points; paired on/off median %.3f)",
			r.MetricsRate, r.MetricsRatio, 100*(r.MetricsRatio-r.Ratio), r.MetricsPaired)
	}
	if r.AtLeastOnceRates != nil {
		s = fmt.Sprintf("records=%d %s=%.0f rec/s spillway_exactly_once=%.0f rec/s ratio=%.3f spillway_at_least_once=%.0f rec/s (exactly_once/at_least_once %.3f)",
			r.Records, cmp.Or(r.Baseline, "raw_kgo"), r.RawRate, r.SpillwayRate, r.Ratio, r.AtLeastOnceRate, r.SpillwayRate/r.AtLeastOnceRate)
	}
	s += fmt.Sprintf(" (rounds raw=%v spillway=%v", round(r.RawRates), round(r.SpillwayRates))
	if r.AtLeastOnceRates != nil {
		s += fmt.Sprintf(" at_least_once=%v", round(r.AtLeastOnceRates))
	}
	if r.MetricsRates != nil {
		s += fmt.Sprintf(" spillway+metrics=%v", round(r.MetricsRates))
	}
	return s + ")"
}

func round(xs []float64) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

// Run starts a fresh in-memory broker (or uses o.Brokers), fills a topic,
// and measures both contenders alternately, each with a fresh consumer
// group.
func Run(ctx context.Context, o Options) (Result, error) {
	o.applyDefaults(1_000_000)
	addrs, _, topic, cleanup, err := inputTopic(ctx, o, "")
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	res := Result{Records: o.Records}
	for i := range o.Rounds {
		runtime.GC()
		r, err := RawConsumer(ctx, addrs, topic, fmt.Sprintf("%s-raw-%d", topic, i), o.Records)
		if err != nil {
			return res, fmt.Errorf("raw consumer: %w", err)
		}
		res.RawRates = append(res.RawRates, r)
		plain := func() error {
			runtime.GC()
			s, err := Pipeline(ctx, addrs, topic, fmt.Sprintf("%s-spillway-%d", topic, i), o.Records, o.Writer, nil)
			if err != nil {
				return fmt.Errorf("pipeline: %w", err)
			}
			res.SpillwayRates = append(res.SpillwayRates, s)
			fmt.Fprintf(o.Log, "round %d: raw %.0f rec/s, spillway %.0f rec/s\n", i+1, r, s)
			return nil
		}
		measured := func() error {
			runtime.GC()
			s, err := pipelineWithMetrics(ctx, addrs, topic, fmt.Sprintf("%s-metrics-%d", topic, i), o)
			if err != nil {
				return fmt.Errorf("pipeline with metrics: %w", err)
			}
			res.MetricsRates = append(res.MetricsRates, s)
			fmt.Fprintf(o.Log, "round %d: spillway with metrics %.0f rec/s\n", i+1, s)
			return nil
		}
		order := []func() error{plain}
		if o.Metrics {
			// Alternate which of the two goes first.
			if order = append(order, measured); i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
		}
		for _, f := range order {
			if err := f(); err != nil {
				return res, err
			}
		}
	}
	res.RawRate, res.SpillwayRate = median(res.RawRates), median(res.SpillwayRates)
	if res.RawRate > 0 {
		res.Ratio = res.SpillwayRate / res.RawRate
	}
	if o.Metrics {
		res.MetricsRate = median(res.MetricsRates)
		paired := make([]float64, len(res.MetricsRates))
		for i, m := range res.MetricsRates {
			paired[i] = m / res.SpillwayRates[i]
		}
		res.MetricsPaired = median(paired)
		if res.RawRate > 0 {
			res.MetricsRatio = res.MetricsRate / res.RawRate
		}
	}
	return res, nil
}

// pipelineWithMetrics is Pipeline with the job's metrics on, collected
// through the Prometheus handler every o.MetricsScrape while it runs.
func pipelineWithMetrics(ctx context.Context, addrs []string, topic, group string, o Options) (float64, error) {
	m, err := telemetry.NewMetrics(nil)
	if err != nil {
		return 0, err
	}
	defer m.Shutdown(context.Background())
	every := cmp.Or(o.MetricsScrape, time.Second)
	stop := make(chan struct{})
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		t := time.NewTicker(every)
		defer t.Stop()
		h := m.Handler()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
			}
		}
	}()
	defer func() { close(stop); <-scraped }()
	return Pipeline(ctx, addrs, topic, group, o.Records, o.Writer, nil, job.WithMeterProvider(m.MeterProvider()))
}

// applyDefaults fills in o's zero fields; records is the scenario's own
// default count.
func (o *Options) applyDefaults(records int) {
	o.Records = cmp.Or(o.Records, records)
	o.ValueBytes = cmp.Or(o.ValueBytes, 100)
	o.Partitions = cmp.Or(o.Partitions, 4)
	o.Rounds = cmp.Or(o.Rounds, 3)
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// inputTopic gives a scenario its input: o.Records records in a topic
// named prefix+suffix, on a fresh in-process broker (prefix "bench") or,
// with o.Brokers, on that cluster under a prefix of the run's own, so
// its topics and groups do not meet anyone else's. cleanup stops the
// broker or deletes the topic.
func inputTopic(ctx context.Context, o Options, suffix string) (addrs []string, prefix, topic string, cleanup func(), err error) {
	prefix, addrs, cleanup = "bench", o.Brokers, func() {}
	if len(addrs) == 0 {
		emb, err := broker.Start(broker.Options{Partitions: o.Partitions})
		if err != nil {
			return nil, "", "", nil, err
		}
		addrs, cleanup = emb.Addrs(), emb.Close
	} else {
		prefix = fmt.Sprintf("spillway-bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	topic = prefix + suffix
	fail := func(err error) ([]string, string, string, func(), error) {
		cleanup()
		return nil, "", "", nil, err
	}
	if err := broker.EnsureTopics(ctx, addrs, int32(o.Partitions), topic); err != nil {
		return fail(fmt.Errorf("create topic %s: %w", topic, err))
	}
	if len(o.Brokers) > 0 {
		cleanup = func() { deleteTopic(addrs, topic, o.Log) }
	}
	fmt.Fprintf(o.Log, "producing %d records of %d bytes into %d partitions of %s on %s\n", o.Records, o.ValueBytes, o.Partitions, topic, strings.Join(addrs, ","))
	if err := broker.Produce(ctx, addrs, topic, o.Records, o.ValueBytes, 1000); err != nil {
		return fail(err)
	}
	return addrs, prefix, topic, cleanup, nil
}

// deleteTopic removes the benchmark's topic from an external cluster; a
// failure is only reported.
func deleteTopic(addrs []string, topic string, log io.Writer) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		defer cl.Close()
		_, err = kadm.NewClient(cl).DeleteTopic(ctx, topic)
	}
	if err != nil {
		fmt.Fprintf(log, "could not delete topic %s: %v\n", topic, err)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// RawConsumer reads n records with a plain franz-go group consumer (default
// autocommit) and returns records/s.
func RawConsumer(ctx context.Context, brokers []string, topic, group string, n int) (float64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	// Both contenders are timed from before the group join to the last
	// record, so the join cost is in both figures.
	start := time.Now()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(*kgo.Record) { got++ })
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

type discard struct{}

func (discard) WriteBatch(context.Context, []pipeline.Record) error { return nil }

// benchJob builds, through internal/job (the wiring of spillway run, with
// production defaults for everything not set), a job from topic to sink,
// which is registered as the sink kind "bench" for this job alone.
func benchJob(ctx context.Context, brokers []string, topic, group string, sink sinks.Sink, w sinks.Config, rateLimit *backpressure.Config, opts ...job.Option) (*job.Job, error) {
	return benchJobFrom(ctx, brokers, &kafka.Config{Topics: []string{topic}, Group: group}, sink, w, rateLimit, opts...)
}

// benchJobFrom is benchJob with the source's settings.
func benchJobFrom(ctx context.Context, brokers []string, src *kafka.Config, sink sinks.Sink, w sinks.Config, rateLimit *backpressure.Config, opts ...job.Option) (*job.Job, error) {
	reg := registry.Builtin()
	if err := reg.AddSink(registry.SinkOf("bench", "the benchmark's sink",
		func(context.Context, *struct{}, registry.Env) (sinks.Sink, error) { return sink, nil })); err != nil {
		return nil, err
	}
	cfg := &config.Pipeline{
		Name:    src.Group,
		Brokers: brokers,
		Source:  config.Source{Kind: "kafka", Config: src},
		Sink:    config.Sink{Kind: "bench", Config: &struct{}{}},
		Log:     config.Log{KafkaLevel: "error"},
		State:   state.Config{Kind: state.KindMemory}, // a measurement carries no learnt state
	}
	cfg.SetRegistry(reg)
	cfg.Sink.Writer = w
	if rateLimit != nil {
		cfg.Sink.RateLimit = &config.RateLimit{Kind: string(cmp.Or(rateLimit.Kind, backpressure.KindNone)), Config: rateLimit}
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return job.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
}

// Pipeline runs the Kafka source into the writer with a no-op sink until n
// records are acknowledged and returns records/s. The job is built as
// spillway run builds it; commits run on their interval and at shutdown, as
// in production. rateLimit nil means no strategy; opts are the job's
// (metrics).
func Pipeline(ctx context.Context, brokers []string, topic, group string, n int, wcfg sinks.Config, rateLimit *backpressure.Config, opts ...job.Option) (float64, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j, err := benchJob(rctx, brokers, topic, group, discard{}, wcfg, rateLimit, opts...)
	if err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- j.Run(rctx) }()
	// Once the source has emitted every record, flush the writer, as a drain
	// does: otherwise the last partial batch would wait max_time_in_buffer,
	// which measures the flush timer, not throughput.
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for in, _ := j.Progress(); in < int64(n); in, _ = j.Progress() {
		select {
		case err := <-done:
			return 0, fmt.Errorf("pipeline stopped early: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
	// In counts records as they enter emit; the last ones may still be on
	// their way into the writer, so flush until all are delivered.
	for _, d := j.Progress(); d < int64(n); _, d = j.Progress() {
		if err := j.Flush(ctx); err != nil {
			return 0, err
		}
	}
	end := time.Now()
	cancel()
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(n) / end.Sub(start).Seconds(), nil
}
