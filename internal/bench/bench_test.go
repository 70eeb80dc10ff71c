package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/sinks"
)

// TestRunSmall checks the harness end to end on a small topic: both
// contenders read every record. It asserts no speed.
func TestRunSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Records: 20_000, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.RawRate <= 0 || res.SpillwayRate <= 0 || len(res.RawRates) != 1 || len(res.SpillwayRates) != 1 {
		t.Fatalf("incomplete result: %+v", res)
	}
	t.Log(res)
}

// TestRunExternal runs the harness on a cluster given by address (here an
// in-process one standing in for a real broker; SPILLWAY_TEST_BROKERS
// points it at a real one): its topic is created, read by both
// contenders, and deleted at the end.
func TestRunExternal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addrs := testBrokers(t)
	res, err := Run(ctx, Options{Records: 10_000, Rounds: 1, Brokers: addrs})
	if err != nil {
		t.Fatal(err)
	}
	if res.RawRate <= 0 || res.SpillwayRate <= 0 {
		t.Fatalf("incomplete result: %+v", res)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, fmt.Sprintf("spillway-bench-%d-", os.Getpid())) {
			t.Errorf("topic %s left behind", name)
		}
	}
	t.Log(res)
}

// testBrokers is SPILLWAY_TEST_BROKERS, or an in-process broker's
// addresses.
func testBrokers(t *testing.T) []string {
	if v := os.Getenv("SPILLWAY_TEST_BROKERS"); v != "" {
		return strings.Split(v, ",")
	}
	emb, err := broker.Start(broker.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	return emb.Addrs()
}

// BenchmarkPipelineVsRaw reports the raw franz-go consumer rate, Spillway's
// Kafka → no-op sink rate with commit-after-ack, and their ratio, measured
// in the same run on the same data. Target: ratio >= 0.8 at 100-byte values.
func BenchmarkPipelineVsRaw(b *testing.B) {
	var last Result
	for b.Loop() {
		res, err := Run(context.Background(), Options{Records: 2_000_000, Rounds: 5})
		if err != nil {
			b.Fatal(err)
		}
		last = res
	}
	b.ReportMetric(last.RawRate, "raw_records/s")
	b.ReportMetric(last.SpillwayRate, "spillway_records/s")
	b.ReportMetric(last.Ratio, "ratio")
}

// BenchmarkStrategyOverhead measures the Kafka → no-op sink rate with an
// unlimited rate-limiting strategy against none, alternating on the same
// data in one run. Goal: under 5% cost.
func BenchmarkStrategyOverhead(b *testing.B) {
	const n = 2_000_000
	emb, err := broker.Start(broker.Options{Partitions: 4, Topics: []string{"bench"}})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	ctx := context.Background()
	if err := broker.Produce(ctx, emb.Addrs(), "bench", n, 100, 1000); err != nil {
		b.Fatal(err)
	}
	var without, with []float64
	round := 0
	for b.Loop() {
		for range 3 {
			round++
			r, err := Pipeline(ctx, emb.Addrs(), "bench", fmt.Sprintf("none-%d", round), n, sinks.Config{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			without = append(without, r)
			r, err = Pipeline(ctx, emb.Addrs(), "bench", fmt.Sprintf("unlimited-%d", round), n, sinks.Config{}, &backpressure.Config{Kind: backpressure.KindNone})
			if err != nil {
				b.Fatal(err)
			}
			with = append(with, r)
		}
	}
	b.ReportMetric(median(without), "none_records/s")
	b.ReportMetric(median(with), "unlimited_records/s")
	b.ReportMetric(1-median(with)/median(without), "cost")
}

// TestRunKafkaSmall checks the Kafka → Kafka harness end to end on a small
// topic: both contenders copy every record. It asserts no speed.
func TestRunKafkaSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunKafka(ctx, Options{Records: 20_000, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.RawRate <= 0 || res.SpillwayRate <= 0 || len(res.RawRates) != 1 || len(res.SpillwayRates) != 1 {
		t.Fatalf("incomplete result: %+v", res)
	}
	t.Log(res)
}

// BenchmarkKafkaToKafka reports a raw franz-go consume-produce loop's rate
// (poll, produce, flush, commit), Spillway's Kafka → Kafka sink rate
// (at-least-once: commit after the target's acks) and their ratio, in the
// same run on the same data. Target: ratio >= 0.7 at 100-byte values.
func BenchmarkKafkaToKafka(b *testing.B) {
	var last Result
	for b.Loop() {
		res, err := RunKafka(context.Background(), Options{Records: 500_000, Rounds: 3})
		if err != nil {
			b.Fatal(err)
		}
		last = res
	}
	b.ReportMetric(last.RawRate, "raw_records/s")
	b.ReportMetric(last.SpillwayRate, "spillway_records/s")
	b.ReportMetric(last.Ratio, "ratio")
}

// TestRunOrderingSmall checks the ordering scenario's harness on small
// topics: every mode of every topic is measured and compared with none.
// It asserts no speed.
func TestRunOrderingSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunOrdering(ctx, OrderingOptions{Records: 5000, Rounds: 1, Partitions: []int{1, 3}, Latency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2*len(OrderingModes) {
		t.Fatalf("%d rows, want %d: %+v", len(res.Rows), 2*len(OrderingModes), res)
	}
	for _, r := range res.Rows {
		if r.Rate <= 0 || r.Ratio <= 0 || r.InFlight <= 0 {
			t.Errorf("%d partitions, %s: incomplete row %+v", r.Partitions, r.Mode, r)
		}
	}
	t.Log(res)
}
