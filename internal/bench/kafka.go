package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	kafkasink "github.com/spillway-io/spillway/sinks/kafka"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// RunKafka measures Kafka → Kafka at-least-once: Spillway (Kafka source →
// writer → Kafka sink, commit after the target's acks) against a raw
// franz-go consume-produce loop (poll, produce every record, flush, commit)
// on the same input topic, in alternating rounds, each contender writing a
// fresh output topic that is deleted after its round. Both produce with
// acks=all, the idempotent producer and lz4. In Result, RawRate is the
// loop's rate and SpillwayRate the pipeline's. o.Writer applies to
// Spillway; zero fields are the production defaults. With o.Delivery
// exactly_once the pipeline's sink writes in transactions and is timed
// until its last one committed (what a read_committed reader waits for),
// and the at_least_once pipeline runs in the same rounds as a third
// contender.
func RunKafka(ctx context.Context, o Options) (Result, error) {
	o.applyDefaults(1_000_000)
	addrs, prefix, in, cleanup, err := inputTopic(ctx, o, "-in")
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	res := Result{Records: o.Records, Baseline: "raw_relay"}
	for i := range o.Rounds {
		out := fmt.Sprintf("%s-out-raw-%d", prefix, i)
		if err := broker.EnsureTopics(ctx, addrs, int32(o.Partitions), out); err != nil {
			return res, err
		}
		runtime.GC()
		r, err := RawRelay(ctx, addrs, in, out, fmt.Sprintf("%s-raw-%d", prefix, i), o.Records)
		deleteTopic(addrs, out, o.Log)
		if err != nil {
			return res, fmt.Errorf("raw relay: %w", err)
		}
		res.RawRates = append(res.RawRates, r)

		out = fmt.Sprintf("%s-out-spillway-%d", prefix, i)
		if err := broker.EnsureTopics(ctx, addrs, int32(o.Partitions), out); err != nil {
			return res, err
		}
		runtime.GC()
		s, err := kafkaPipeline(ctx, addrs, in, out, fmt.Sprintf("%s-spillway-%d", prefix, i), o)
		deleteTopic(addrs, out, o.Log)
		if err != nil {
			return res, fmt.Errorf("pipeline: %w", err)
		}
		res.SpillwayRates = append(res.SpillwayRates, s)
		if o.Delivery != kafkasink.ExactlyOnce {
			fmt.Fprintf(o.Log, "round %d: raw relay %.0f rec/s, spillway %.0f rec/s\n", i+1, r, s)
			continue
		}
		out = fmt.Sprintf("%s-out-alo-%d", prefix, i)
		if err := broker.EnsureTopics(ctx, addrs, int32(o.Partitions), out); err != nil {
			return res, err
		}
		runtime.GC()
		alo := o
		alo.Delivery = kafkasink.AtLeastOnce
		a, err := kafkaPipeline(ctx, addrs, in, out, fmt.Sprintf("%s-alo-%d", prefix, i), alo)
		deleteTopic(addrs, out, o.Log)
		if err != nil {
			return res, fmt.Errorf("pipeline (at_least_once): %w", err)
		}
		res.AtLeastOnceRates = append(res.AtLeastOnceRates, a)
		fmt.Fprintf(o.Log, "round %d: raw relay %.0f rec/s, spillway exactly_once %.0f rec/s, at_least_once %.0f rec/s\n", i+1, r, s, a)
	}
	res.RawRate, res.SpillwayRate = median(res.RawRates), median(res.SpillwayRates)
	if res.AtLeastOnceRates != nil {
		res.AtLeastOnceRate = median(res.AtLeastOnceRates)
	}
	if res.RawRate > 0 {
		res.Ratio = res.SpillwayRate / res.RawRate
	}
	return res, nil
}

// RawRelay copies n records from topic in to topic out with one franz-go
// client as a group member: poll, produce every record of the poll (same
// key, value, headers and timestamp), flush, commit the poll's offsets. It
// returns records/s, timed from before the group join to the last commit.
func RawRelay(ctx context.Context, brokers []string, in, out, group string, n int) (float64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
		kgo.ProducerLinger(0))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	done := 0
	var failed error
	promise := func(_ *kgo.Record, err error) {
		if err != nil && failed == nil {
			failed = err // promises run serially
		}
	}
	for done < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			cl.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, promise)
			done++
		})
		if err := cl.Flush(ctx); err != nil {
			return 0, err
		}
		if failed != nil {
			return 0, failed
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// kafkaPipeline runs in → Kafka sink → out as spillway run builds it until
// n records are acknowledged by the target, and returns records/s.
func kafkaPipeline(ctx context.Context, brokers []string, in, out, group string, o Options) (float64, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := &config.Pipeline{
		Name:    group,
		Brokers: brokers,
		Source:  config.Source{Kind: "kafka", Config: &kafka.Config{Topics: []string{in}, Group: group}},
		Sink: config.Sink{Kind: "kafka", Config: &kafkasink.Config{Topic: out, Compression: kafkasink.CompressionLZ4,
			Delivery: o.Delivery, TransactionalID: group, TransactionInterval: o.TxnInterval}},
		Log:   config.Log{KafkaLevel: "error"},
		State: state.Config{Kind: state.KindMemory}, // a measurement carries no learnt state
	}
	cfg.Sink.Writer = o.Writer
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	j, err := job.Build(rctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	if o.Delivery == kafkasink.ExactlyOnce {
		return measureCommitted(ctx, rctx, cancel, j, o.Records)
	}
	return measure(ctx, rctx, cancel, j, o.Records)
}

// measureCommitted runs j until the group committed n records (the input
// topic's offsets start at 0), and returns records/s from start: for
// exactly_once, until the last transaction committed.
func measureCommitted(ctx, rctx context.Context, cancel context.CancelFunc, j *job.Job, n int) (float64, error) {
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- j.Run(rctx) }()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for j.Snapshot().CommittedTotal() < int64(n) {
		select {
		case err := <-done:
			return 0, fmt.Errorf("pipeline stopped early: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
	end := time.Now()
	cancel()
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(n) / end.Sub(start).Seconds(), nil
}

// measure runs j until n records are done, flushing once the source has
// emitted them all (as a drain does), and returns records/s from start.
func measure(ctx, rctx context.Context, cancel context.CancelFunc, j *job.Job, n int) (float64, error) {
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- j.Run(rctx) }()
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
