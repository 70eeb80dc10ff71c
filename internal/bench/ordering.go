package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sources/kafka"
)

// OrderingOptions configures the ordering scenario. Zero values mean the
// defaults on each field.
type OrderingOptions struct {
	Records    int           // records per topic; default 200,000
	ValueBytes int           // default 100
	Keys       int           // distinct keys, spread over the partitions by the producer; default 1,000
	Partitions []int         // a topic of each partition count; default 1, 4, 12
	Latency    time.Duration // how long the sink takes to answer each request; default 20ms
	Rounds     int           // rounds of each mode, alternating; the median is reported; default 3
	Writer     sinks.Config  // writer settings (zero: production defaults); Ordering is set per mode
	// ProduceBatchBytes is the producer's largest record batch when
	// filling the topics (kgo.ProducerBatchMaxBytes); default 1 MiB. A
	// fetch returns at least one whole batch of a partition, so this
	// bounds how finely the source can interleave partitions.
	ProduceBatchBytes int
	// FetchMaxPartitionBytes is source.kafka.fetch_max_partition_bytes;
	// zero is its default.
	FetchMaxPartitionBytes int
	Log                    io.Writer // progress lines; nil discards
}

// OrderingModes are the modes the ordering scenario compares, the
// reference first.
var OrderingModes = []string{sinks.OrderNone, sinks.OrderPartition, sinks.OrderKey}

// OrderingRow is one mode on one topic.
type OrderingRow struct {
	Partitions int
	Mode       string
	Rate       float64   // records/s, median of Rates
	Rates      []float64 // one per round
	// Ratio is Rate over the rate of OrderNone on the same topic in the
	// same run.
	Ratio float64
	// InFlight is the mean number of requests in flight while the sink
	// was busy, median over rounds: how much of max_in_flight_requests
	// the mode kept busy.
	InFlight float64
	inflight []float64
}

// OrderingResult is the ordering scenario's table.
type OrderingResult struct {
	Records, Keys int
	Latency       time.Duration
	Writer        sinks.Config // effective, Ordering aside
	Rows          []OrderingRow
}

// String renders the result as a Markdown table, one row per topic.
func (r OrderingResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d records of %d keys per topic, sink answers after %v, max_batch_size %d, max_in_flight_requests %d; records/s (ratio to none; mean requests in flight)\n\n",
		r.Records, r.Keys, r.Latency, r.Writer.MaxBatchSize, r.Writer.MaxInFlightRequests)
	b.WriteString("| partitions |")
	for _, m := range OrderingModes {
		fmt.Fprintf(&b, " %s |", m)
	}
	b.WriteString("\n| --- |")
	for range OrderingModes {
		b.WriteString(" --- |")
	}
	for i, row := range r.Rows {
		if i%len(OrderingModes) == 0 {
			fmt.Fprintf(&b, "\n| %d |", row.Partitions)
		}
		fmt.Fprintf(&b, " %.0f (%.2f; %.1f) |", row.Rate, row.Ratio, row.InFlight)
	}
	return b.String()
}

// RunOrdering measures the writer's ordering modes against a slow sink:
// for each partition count, a topic on a fresh in-process broker, read by
// a pipeline in each mode (fresh consumer group each run; modes alternate
// within a round and their order rotates between rounds). A run's rate is
// its records over the time from the sink's first request to its last
// answer, so the group join is not in it.
func RunOrdering(ctx context.Context, o OrderingOptions) (OrderingResult, error) {
	o.Records = cmp.Or(o.Records, 200_000)
	o.ValueBytes = cmp.Or(o.ValueBytes, 100)
	o.Keys = cmp.Or(o.Keys, 1000)
	o.Latency = cmp.Or(o.Latency, 20*time.Millisecond)
	o.Rounds = cmp.Or(o.Rounds, 3)
	if len(o.Partitions) == 0 {
		o.Partitions = []int{1, 4, 12}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	w := o.Writer
	w.Ordering = ""
	w.ApplyDefaults()
	res := OrderingResult{Records: o.Records, Keys: o.Keys, Latency: o.Latency, Writer: w}

	emb, err := broker.Start(broker.Options{Partitions: 1})
	if err != nil {
		return res, err
	}
	defer emb.Close()
	addrs := emb.Addrs()
	for _, parts := range o.Partitions {
		topic := fmt.Sprintf("bench-ordering-%d", parts)
		if err := broker.EnsureTopics(ctx, addrs, int32(parts), topic); err != nil {
			return res, fmt.Errorf("create topic %s: %w", topic, err)
		}
		fmt.Fprintf(o.Log, "producing %d records of %d bytes on %d keys into %d partitions of %s\n", o.Records, o.ValueBytes, o.Keys, parts, topic)
		popts := []kgo.Opt{kgo.ProducerBatchMaxBytes(int32(cmp.Or(o.ProduceBatchBytes, 1<<20)))}
		if err := broker.ProduceWith(ctx, addrs, popts, topic, o.Records, o.ValueBytes, o.Keys); err != nil {
			return res, err
		}
		rows := make([]OrderingRow, len(OrderingModes))
		for m, mode := range OrderingModes {
			rows[m] = OrderingRow{Partitions: parts, Mode: mode}
		}
		for round := range o.Rounds {
			for k := range OrderingModes {
				m := (k + round) % len(OrderingModes)
				cfg := o.Writer
				cfg.Ordering = OrderingModes[m]
				runtime.GC()
				src := &kafka.Config{Topics: []string{topic}, Group: fmt.Sprintf("%s-%s-%d", topic, cfg.Ordering, round), FetchMaxPartitionBytes: o.FetchMaxPartitionBytes}
				rate, inflight, err := timedPipeline(ctx, addrs, src, o.Records, cfg, o.Latency)
				if err != nil {
					return res, fmt.Errorf("%d partitions, ordering %s: %w", parts, cfg.Ordering, err)
				}
				rows[m].Rates = append(rows[m].Rates, rate)
				rows[m].inflight = append(rows[m].inflight, inflight)
				fmt.Fprintf(o.Log, "round %d, %d partitions, ordering %s: %.0f rec/s, %.1f requests in flight\n", round+1, parts, cfg.Ordering, rate, inflight)
			}
		}
		for m := range rows {
			rows[m].Rate, rows[m].InFlight = median(rows[m].Rates), median(rows[m].inflight)
			if rows[0].Rate > 0 {
				rows[m].Ratio = rows[m].Rate / median(rows[0].Rates)
			}
		}
		res.Rows = append(res.Rows, rows...)
	}
	return res, nil
}

// timedSink answers every request after a fixed latency and measures the
// time from its first request to the answer that completes n records, and
// the mean number of requests in flight over that time.
type timedSink struct {
	latency time.Duration
	n       int

	mu       sync.Mutex
	first    time.Time
	last     time.Time
	busy     time.Duration // sum of the requests' durations
	got      int
	complete chan struct{} // closed when got reaches n
}

func (s *timedSink) WriteBatch(ctx context.Context, b []pipeline.Record) error {
	began := time.Now()
	s.mu.Lock()
	if s.first.IsZero() {
		s.first = began
	}
	s.mu.Unlock()
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	end := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy += end.Sub(began)
	if s.got < s.n {
		if s.got += len(b); s.got >= s.n {
			s.last = end
			close(s.complete)
		}
	}
	return nil
}

// timedPipeline runs a pipeline from src to a timedSink until n records
// are delivered and returns records/s and the mean requests in flight.
func timedPipeline(ctx context.Context, addrs []string, src *kafka.Config, n int, w sinks.Config, latency time.Duration) (rate, inflight float64, err error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sink := &timedSink{latency: latency, n: n, complete: make(chan struct{})}
	j, err := benchJobFrom(rctx, addrs, src, sink, w, nil)
	if err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(rctx) }()
	// Once the source emitted every record, flush, as a drain does: the
	// last partial batch would otherwise wait max_time_in_buffer.
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for in, _ := j.Progress(); in < int64(n); in, _ = j.Progress() {
		select {
		case err := <-done:
			return 0, 0, fmt.Errorf("pipeline stopped early: %v", err)
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-t.C:
		}
	}
	for !closed(sink.complete) {
		if err := j.Flush(ctx); err != nil {
			return 0, 0, err
		}
	}
	cancel()
	if err := <-done; err != nil {
		return 0, 0, err
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	took := sink.last.Sub(sink.first)
	return float64(n) / took.Seconds(), sink.busy.Seconds() / took.Seconds(), nil
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
