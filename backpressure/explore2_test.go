package backpressure

import (
	"testing"
	"time"
)

func TestExplore2(t *testing.T) {
	a, _ := NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 16})
	sink := newThrottlingSink(10000, 100*time.Millisecond, 20*time.Millisecond, 10*time.Millisecond)
	last := -1
	lastT := time.Duration(0)
	simulate(a, sink, 100, []simPhase{{10000, 3 * time.Second, 0}}, func(now time.Duration, s Strategy) {
		st := a.Stats()
		if st.Limit != last && now > 2*time.Second && now-lastT > 0 {
			t.Logf("%v limit %d inrec %d dec %d tokens %.0f wmax %d", now, st.Limit, st.InFlightRecords, st.Decreases, sink.tokens, a.wmax)
			last = st.Limit
			lastT = now
		}
	})
}
