package registry

import (
	"context"
	"fmt"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
	sinkfile "github.com/spillway-io/spillway/sinks/file"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	kafkasink "github.com/spillway-io/spillway/sinks/kafka"
	pgsink "github.com/spillway-io/spillway/sinks/postgres"
	"github.com/spillway-io/spillway/sources/file"
	"github.com/spillway-io/spillway/sources/generate"
	"github.com/spillway-io/spillway/sources/kafka"
)

// Builtin returns a new registry holding Spillway's own components. This is
// the one place they are listed; each entry adapts the component package's
// constructor to the job's Env.
func Builtin() *Registry {
	r := New()

	// Sources.
	Must(r.AddSource(SourceOf("kafka", "consume topics as a member of a consumer group; commit only what is done",
		func(_ context.Context, c *kafka.Config, env Env) (pipeline.Source, error) {
			cfg := *c
			cfg.Brokers = env.Brokers
			cfg.ClientOpts = env.KafkaOpts
			return kafka.New(cfg, kafka.WithLogger(env.Log))
		})))
	Must(r.AddSource(SourceOf("file", `read JSON lines from a file ("-" is standard input)`,
		func(_ context.Context, c *file.Config, _ Env) (pipeline.Source, error) { return file.New(*c) })))
	Must(r.AddSource(SourceOf("generate", "produce synthetic records (benchmarks, demos)",
		func(_ context.Context, c *generate.Config, _ Env) (pipeline.Source, error) { return generate.New(*c) })))

	// Operators.
	Must(r.AddOperator(OperatorOf("filter", "keep the records for which an expression is true",
		func(c *exprop.FilterConfig, _ Env) (pipeline.Operator, error) { return c.New() })))
	Must(r.AddOperator(OperatorOf("map", "rewrite key, value or headers with expressions",
		func(c *exprop.MapConfig, _ Env) (pipeline.Operator, error) { return c.New() })))

	// Sinks.
	Must(r.AddSink(SinkOf("http", "POST batches to an HTTP endpoint; per-status classification, Retry-After",
		func(_ context.Context, c *sinkhttp.Config, env Env) (sinks.Sink, error) {
			cfg := *c
			if cfg.Timeout == 0 {
				cfg.Timeout = env.Writer.RequestTimeout
			}
			return sinkhttp.New(cfg)
		})))
	Must(r.AddSink(SinkOf("file", "append JSON lines to a file",
		func(_ context.Context, c *sinkfile.Config, _ Env) (sinks.Sink, error) { return sinkfile.New(*c) })))
	Must(r.AddSink(SinkOf("kafka", "produce to a Kafka topic (fixed or per record); acks=all, idempotent producer, at-least-once or exactly-once (transactions)",
		func(ctx context.Context, c *kafkasink.Config, env Env) (sinks.Sink, error) {
			cfg := *c
			if len(cfg.Brokers) == 0 {
				cfg.Brokers = env.Brokers
			}
			if cfg.TransactionalID == "" {
				cfg.TransactionalID = env.Job
			}
			cfg.ClientOpts = env.KafkaOpts
			cfg.Logger = env.Log
			return kafkasink.New(ctx, cfg)
		})))
	Must(r.AddSink(SinkOf("postgres", "write batches to a PostgreSQL table (insert, upsert or COPY), one transaction each; at-least-once or effectively-once",
		func(ctx context.Context, c *pgsink.Config, env Env) (sinks.Sink, error) {
			cfg := *c
			if cfg.OffsetsGroup == "" {
				cfg.OffsetsGroup = env.Job
			}
			if cfg.PoolSize == 0 {
				cfg.PoolSize = env.Writer.MaxInFlightRequests
			}
			// Validation says so with the line; a Go caller hears it here.
			if want, key, why := cfg.RequiredOrdering(); want != "" && env.Writer.Ordering != want {
				return nil, fmt.Errorf("sink.postgres.%s: %s needs sink.writer.ordering: %s (got %q): %s", key, cfg.Delivery, want, env.Writer.Ordering, why)
			}
			return pgsink.New(ctx, cfg, pgsink.WithLogger(env.Log))
		})))
	Must(r.AddSink(SinkOf("stdout", "write JSON lines to standard output",
		func(_ context.Context, c *sinkfile.Encoding, env Env) (sinks.Sink, error) {
			return sinkfile.NewWriter(env.Stdout, *c)
		})))

	// Rate-limiting strategies. The built-in kinds share backpressure.Config,
	// whose Validate refuses a field of another kind; multi_tier's tiers are
	// built-in kinds.
	for _, k := range []struct {
		kind backpressure.Kind
		doc  string
	}{
		{backpressure.KindTokenBucket, "records/s and bytes/s with a burst"},
		{backpressure.KindSlidingWindow, "at most N records or bytes per window"},
		{backpressure.KindAIMD, "records in flight, additive increase, multiplicative decrease on throttling"},
		{backpressure.KindMultiTier, "global, per-topic and per-partition tiers; each must admit"},
		{backpressure.KindNone, "no limit beyond max_in_flight_requests"},
	} {
		Must(r.AddStrategy(Strategy{Kind: string(k.kind), Doc: k.doc,
			Config: func() any { return &backpressure.Config{Kind: k.kind} },
			New: func(c any, env Env) (backpressure.Strategy, error) {
				return backpressure.New(*c.(*backpressure.Config), writerLimits(env))
			}}))
	}
	Must(r.AddStrategy(StrategyOf(string(backpressure.KindAdaptiveRate),
		"a paced rate adapted to what the destination takes (APIs that answer 429 with Retry-After)",
		func(c *backpressure.AdaptiveRateConfig, env Env) (backpressure.Strategy, error) {
			return backpressure.NewAdaptiveRate(AdaptiveRateFor(*c, env.Writer))
		})))
	return r
}

// AdaptiveRateFor is c with its default burst one batch of w (or
// backpressure.PacingSlack of the rate when that is more): sends are
// evenly spaced, one request at a time after a pause.
func AdaptiveRateFor(c backpressure.AdaptiveRateConfig, w sinks.Config) backpressure.AdaptiveRateConfig {
	c.BatchBurst = w.MaxBatchSize
	if c.Unit == "bytes" {
		c.BatchBurst = w.MaxBatchBytes
	}
	return c
}

func writerLimits(env Env) backpressure.WriterLimits {
	return backpressure.WriterLimits{MaxBatchSize: env.Writer.MaxBatchSize, MaxBatchBytes: env.Writer.MaxBatchBytes,
		MaxInFlightRequests: env.Writer.MaxInFlightRequests}
}
