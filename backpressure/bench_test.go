package backpressure

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// allowNs is rate.Limiter.Allow's ns/op measured first in the same run, so
// each strategy reports its cost relative to it (×Allow).
var allowNs float64

// BenchmarkTryAcquire measures the admit path of each strategy from one
// goroutine, beside rate.Limiter.Allow (run first, as the yardstick).
// Limits are set so that every call admits. Strategies that track requests
// in flight (AIMD and what contains it) are measured with their Complete,
// since without it they would stop admitting.
func BenchmarkTryAcquire(b *testing.B) {
	huge := TokenBucketConfig{RecordsPerSecond: 1e12, RecordBurst: 1 << 40}
	hugeBoth := TokenBucketConfig{RecordsPerSecond: 1e12, RecordBurst: 1 << 40, BytesPerSecond: 1e15, ByteBurst: 1 << 50}
	req := Request{Records: 1, Bytes: 100}
	partReq := Request{Records: 1, Bytes: 100, Parts: []Part{{Topic: "orders", Partition: 3, Records: 1, Bytes: 100}}}
	aimd := func() *AIMD { return must(NewAIMD(AIMDConfig{MaxBatchSize: 500, MaxInFlightRequests: 8})) }
	cases := []struct {
		name string
		op   func() func()
	}{
		{"rate.Limiter.Allow", func() func() {
			lim := rate.NewLimiter(1e12, 1<<40)
			return func() { lim.Allow() }
		}},
		{"Unlimited", func() func() {
			var s Strategy = Unlimited{}
			return func() { s.TryAcquire(req) }
		}},
		{"TokenBucket/records", func() func() {
			tb := must(NewTokenBucket(huge))
			return func() { tb.TryAcquire(req) }
		}},
		{"TokenBucket/records+bytes", func() func() {
			tb := must(NewTokenBucket(hugeBoth))
			return func() { tb.TryAcquire(req) }
		}},
		{"TokenBucket/records,clock-read-per-batch", func() func() {
			tb := must(NewTokenBucket(huge))
			now := time.Now()
			return func() { tb.TryAcquireAt(now, req) }
		}},
		{"TokenBucket/records+bytes,clock-read-per-batch", func() func() {
			tb := must(NewTokenBucket(hugeBoth))
			now := time.Now()
			return func() { tb.TryAcquireAt(now, req) }
		}},
		{"SlidingWindow/records+bytes", func() func() {
			w := must(NewSlidingWindow(SlidingWindowConfig{Window: time.Hour, Records: 1 << 50, Bytes: 1 << 60}))
			return func() { w.TryAcquire(req) }
		}},
		{"AIMD/TryAcquire+Complete", func() func() {
			a := aimd()
			res := Result{Request: req}
			return func() {
				a.TryAcquire(req)
				a.Complete(res)
			}
		}},
		{"Composite/TokenBucket+AIMD/TryAcquire+Complete", func() func() {
			c := must(NewComposite(must(NewTokenBucket(huge)), aimd()))
			res := Result{Request: req}
			return func() {
				c.TryAcquire(req)
				c.Complete(res)
			}
		}},
		{"MultiTier/3-token-buckets", func() func() {
			m := must(NewMultiTier(Tiers{
				Global:    must(NewTokenBucket(huge)),
				Topic:     func(string) Strategy { return must(NewTokenBucket(huge)) },
				Partition: func(string, int32) Strategy { return must(NewTokenBucket(huge)) },
			}))
			return func() { m.TryAcquire(partReq) }
		}},
		{"MultiTier/3-token-buckets,clock-read-per-batch", func() func() {
			m := must(NewMultiTier(Tiers{
				Global:    must(NewTokenBucket(huge)),
				Topic:     func(string) Strategy { return must(NewTokenBucket(huge)) },
				Partition: func(string, int32) Strategy { return must(NewTokenBucket(huge)) },
			}))
			now := time.Now()
			return func() { m.TryAcquireAt(now, partReq) }
		}},
		{"MultiTier/global-only", func() func() {
			m := must(NewMultiTier(Tiers{Global: must(NewTokenBucket(huge))}))
			return func() { m.TryAcquire(req) }
		}},
		{"Limiter/TokenBucket", func() func() {
			l := NewLimiter(must(NewTokenBucket(huge)))
			return func() { l.TryAcquire(1) }
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			op := c.op()
			for b.Loop() {
				op()
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if c.name == "rate.Limiter.Allow" {
				allowNs = ns
			}
			b.ReportMetric(1e9/ns, "admits/s")
			if allowNs > 0 {
				b.ReportMetric(ns/allowNs, "×Allow")
			}
		})
	}
}

// BenchmarkAcquire measures Acquire when the request passes at once (the
// writer's common case): TryAcquire plus a context check.
func BenchmarkAcquire(b *testing.B) {
	ctx := context.Background()
	req := Request{Records: 1, Bytes: 100}
	tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1e12, RecordBurst: 1 << 40}))
	for b.Loop() {
		_ = tb.Acquire(ctx, req)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "admits/s")
}
