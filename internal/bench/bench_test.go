package bench

import (
	"context"
	"testing"
	"time"
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
