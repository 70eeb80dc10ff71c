package backpressure

import (
	"testing"
	"time"
)

func TestExplore(t *testing.T) {
	for _, c := range []float64{1000, 2000, 5000, 10000, 20000, 40000} {
		for _, mode := range []string{"throttle", "queue", "queue-lat"} {
			a, _ := NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 16})
			var sink simSink = newThrottlingSink(c, 100*time.Millisecond, 20*time.Millisecond, 10*time.Millisecond)
			if mode != "throttle" {
				sink = &queueingSink{base: 20 * time.Millisecond, maxDelay: 200 * time.Millisecond}
			}
			if mode == "queue-lat" {
				a, _ = NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 16, LatencyTolerance: 0.5})
			}
			st := simulate(a, sink, 100, []simPhase{
				{c, 30 * time.Second, 10 * time.Second},
				{c / 2, 30 * time.Second, 10 * time.Second},
				{c, 30 * time.Second, 10 * time.Second},
			}, nil)
			for i, s := range st {
				cap := c
				if i == 1 {
					cap = c / 2
				}
				t.Logf("%-9s C=%6.0f phase %d goodput %.3f throttled %.3f lat %v dec %d", mode, c, i, s.goodput()/cap, s.throttledFraction(), s.meanLatency(), a.Stats().Decreases)
			}
		}
	}
}
