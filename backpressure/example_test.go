package backpressure_test

import (
	"context"
	"fmt"
	"time"

	"github.com/spillway-io/spillway/backpressure"
)

// The writer's side of the protocol: ask before each request, report the
// outcome after it.
func ExampleStrategy() {
	s, err := backpressure.New(backpressure.Config{Kind: backpressure.KindAIMD}, backpressure.WriterLimits{MaxBatchSize: 100, MaxInFlightRequests: 4})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	calls := 0
	send := func(n int) (throttled bool) { calls++; return calls == 2 } // the sink pushes back once

	for range 4 {
		req := backpressure.Request{Records: min(100, s.MaxBatchSize())}
		if err := s.Acquire(ctx, req); err != nil {
			return // ctx ended: shutting down
		}
		throttled := send(req.Records)
		s.Complete(backpressure.Result{Request: req, Throttled: throttled})
		fmt.Println("sent", req.Records, "throttled:", throttled, "next batch:", s.MaxBatchSize())
	}
	// Output:
	// sent 100 throttled: false next batch: 100
	// sent 100 throttled: true next batch: 50
	// sent 50 throttled: false next batch: 60
	// sent 60 throttled: false next batch: 70
}

func ExampleTokenBucket() {
	tb, err := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 100, RecordBurst: 50})
	if err != nil {
		panic(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fmt.Println(tb.TryAcquireAt(now, backpressure.Request{Records: 50})) // the burst
	fmt.Println(tb.TryAcquireAt(now, backpressure.Request{Records: 1}))
	now = now.Add(100 * time.Millisecond) // 10 records refilled
	fmt.Println(tb.TryAcquireAt(now, backpressure.Request{Records: 10}))
	fmt.Println(tb.TryAcquireAt(now, backpressure.Request{Records: 1}))
	// Output:
	// true
	// false
	// true
	// false
}

// AIMD follows Flink's rules: +10 records per clean completion, half on
// throttling, at most once per round trip.
func ExampleAIMD() {
	a, err := backpressure.NewAIMD(backpressure.AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 4})
	if err != nil {
		panic(err)
	}
	req := backpressure.Request{Records: 100}
	n := 0
	for a.TryAcquire(req) {
		n++
	}
	fmt.Println("in flight:", n, "limit:", a.Limit())
	a.Complete(backpressure.Result{Request: req, Throttled: true})
	fmt.Println("after a throttled request:", a.Limit())
	a.Complete(backpressure.Result{Request: req, Throttled: true}) // same round trip
	fmt.Println("after another from the same round trip:", a.Limit())
	a.Complete(backpressure.Result{Request: req})
	a.Complete(backpressure.Result{Request: req})
	a.TryAcquire(req)
	a.Complete(backpressure.Result{Request: req})
	fmt.Println("after a clean request:", a.Limit())
	// Output:
	// in flight: 4 limit: 400
	// after a throttled request: 200
	// after another from the same round trip: 200
	// after a clean request: 210
}

// A partition's own limit holds it back; other partitions use the rest of
// the global budget.
func ExampleMultiTier() {
	tb := func(burst int) backpressure.Strategy { // refills 1 record/s
		s, _ := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1, RecordBurst: burst})
		return s
	}
	m, err := backpressure.NewMultiTier(backpressure.Tiers{
		Global: tb(1000),
		Partition: func(topic string, partition int32) backpressure.Strategy {
			if topic == "orders" && partition == 0 {
				return tb(100)
			}
			return nil // no tier of its own
		},
	})
	if err != nil {
		panic(err)
	}
	req := func(p int32, n int) backpressure.Request {
		return backpressure.Request{Records: n, Parts: []backpressure.Part{{Topic: "orders", Partition: p, Records: n}}}
	}
	fmt.Println(m.TryAcquire(req(0, 100)))
	fmt.Println(m.TryAcquire(req(0, 100))) // orders/0 used its burst
	fmt.Println(m.TryAcquire(req(1, 900))) // the rest of the global burst
	fmt.Println(m.TryAcquire(req(1, 100)))
	// Output:
	// true
	// false
	// true
	// false
}

// Operators count records.
func ExampleLimiter() {
	tb, _ := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1, RecordBurst: 1000})
	l := backpressure.NewLimiter(tb)
	if err := l.Wait(context.Background(), 600); err != nil {
		panic(err)
	}
	fmt.Println(l.TryAcquire(300), l.TryAcquire(300))
	// Output:
	// true false
}

func ExampleConfig_Validate() {
	cfg := backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: -1, Window: time.Second}
	fmt.Println(cfg.Validate())
	// Output:
	// window: only with kind sliding_window (kind is token_bucket)
	// records_per_second: must be a finite number not below 0, got -1
}
