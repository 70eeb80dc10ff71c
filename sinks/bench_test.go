package sinks_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// discardSink delivers every batch at once.
type discardSink struct{}

func (discardSink) WriteBatch(context.Context, []pipeline.Record) error { return nil }

// countAcker counts acknowledged records, as cheaply as a real source's
// tracker would at best.
type countAcker struct{ n atomic.Int64 }

func (c *countAcker) Ack(offs []int64) { c.n.Add(int64(len(offs))) }

// BenchmarkWriter measures the writer's hot path: Write of 500-record
// chunks of 100-byte records, batches of 500 to a sink that delivers at
// once, 8 in flight, with the admissions the writer can consult. It
// reports records/s.
func BenchmarkWriter(b *testing.B) {
	for _, bc := range []struct {
		name     string
		opts     func() []sinks.WriterOption
		ordering string
		runs     int // records per partition run in a chunk (1: interleaved)
	}{
		{"plain", func() []sinks.WriterOption { return nil }, sinks.OrderNone, 1},
		{"partition order", func() []sinks.WriterOption { return nil }, sinks.OrderPartition, 500},
		{"partition order interleaved", func() []sinks.WriterOption { return nil }, sinks.OrderPartition, 1},
		{"key order", func() []sinks.WriterOption { return nil }, sinks.OrderKey, 125},
		{"breaker", func() []sinks.WriterOption {
			return []sinks.WriterOption{sinks.WithBreaker(sinks.BreakerConfig{})}
		}, sinks.OrderNone, 1},
		{"strategy", func() []sinks.WriterOption {
			st, err := backpressure.New(backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 1e12}, backpressure.WriterLimits{MaxBatchSize: 500, MaxInFlightRequests: 8})
			if err != nil {
				b.Fatal(err)
			}
			return []sinks.WriterOption{sinks.WithStrategy(st)}
		}, sinks.OrderNone, 1},
		{"breaker+strategy", func() []sinks.WriterOption {
			st, err := backpressure.New(backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 1e12}, backpressure.WriterLimits{MaxBatchSize: 500, MaxInFlightRequests: 8})
			if err != nil {
				b.Fatal(err)
			}
			return []sinks.WriterOption{sinks.WithStrategy(st), sinks.WithBreaker(sinks.BreakerConfig{})}
		}, sinks.OrderNone, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const chunk = 500
			acks := &countAcker{}
			value := make([]byte, 100)
			tmpl := make([]pipeline.Record, chunk)
			for i := range tmpl {
				r := pipeline.Record{Value: value, Origin: pipeline.Origin{Topic: "t", Partition: int32(i/bc.runs) % 4, Offset: int64(i)}}
				if bc.ordering == sinks.OrderKey {
					r.Key = fmt.Appendf(nil, "k%d", i%100)
				}
				tmpl[i] = r.WithAcker(acks)
			}
			// A ring of chunks larger than the buffer: a chunk is reused only
			// after the writer acknowledged it, as a source's pool does.
			ring := make([][]pipeline.Record, 64)
			for i := range ring {
				ring[i] = make([]pipeline.Record, chunk)
			}
			w, err := sinks.NewWriter(discardSink{}, sinks.Config{MaxBufferedRequests: 10000, Ordering: bc.ordering},
				append([]sinks.WriterOption{sinks.WithLogger(quiet)}, bc.opts()...)...)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			i := 0
			for b.Loop() {
				recs := ring[i%len(ring)]
				i++
				copy(recs, tmpl)
				if err := w.Write(ctx, recs); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(acks.n.Load())/b.Elapsed().Seconds(), "records/s")
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
