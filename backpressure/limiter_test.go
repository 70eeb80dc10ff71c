package backpressure

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimiter(must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 100, RecordBurst: 100})))
		start := time.Now()
		for range 3 {
			if err := l.Wait(t.Context(), 100); err != nil {
				t.Fatal(err)
			}
		}
		if el := time.Since(start); el != 2*time.Second {
			t.Errorf("300 records at 100/s with a burst of 100 took %v, want 2s", el)
		}
		if l.TryAcquire(1) {
			t.Error("TryAcquire admitted from an empty bucket")
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := l.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait with a done context: %v", err)
		}
	})
	// Each acquisition completes at once, so AIMD does not accumulate
	// records in flight through a Limiter.
	a := must(NewAIMD(AIMDConfig{MaxBatchSize: 10, MaxInFlightRequests: 1}))
	l := NewLimiter(a)
	for range 100 {
		if !l.TryAcquire(10) {
			t.Fatal("AIMD held back a Limiter")
		}
	}
	if st := a.Stats(); st.InFlightRecords != 0 {
		t.Errorf("%d records left in flight", st.InFlightRecords)
	}
}
