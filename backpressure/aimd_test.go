package backpressure

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

func TestAIMDDefaults(t *testing.T) {
	a := must(NewAIMD(AIMDConfig{MaxBatchSize: 500, MaxInFlightRequests: 8}))
	if got := a.Limit(); got != 4000 {
		t.Errorf("initial limit %d, want max_batch_size × max_in_flight_requests = 4000", got)
	}
	if got := a.MaxBatchSize(); got != 500 {
		t.Errorf("MaxBatchSize %d, want 500 (the limit, capped at the batch size)", got)
	}
	a.SetLimit(120)
	if got := a.MaxBatchSize(); got != 120 {
		t.Errorf("MaxBatchSize %d after SetLimit(120), want it to follow the limit", got)
	}
	a.SetLimit(0)
	if got := a.Limit(); got != 1 {
		t.Errorf("SetLimit(0) gave %d, want the floor 1", got)
	}
	a.SetLimit(1 << 30)
	if got := a.Limit(); got != 4000 {
		t.Errorf("SetLimit(huge) gave %d, want the threshold 4000", got)
	}
}

// TestAIMDRules walks Flink's rules step by step: +10 per clean completion
// up to the threshold, ×0.5 on throttling, timeout or failed entries down
// to 1, at most once per round trip.
func TestAIMDRules(t *testing.T) {
	type step struct {
		op    string // "send n", "ok n", "throttled n", "timeout n", "failed n", "slow n"
		limit int    // expected limit after the step
	}
	r := func(n int) Request { return Request{Records: n} }
	tests := []struct {
		name  string
		cfg   AIMDConfig
		steps []step
	}{
		{"additive increase capped at the threshold", AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 2, InitialLimit: 175},
			[]step{{"send 100", 175}, {"ok 100", 185}, {"send 100", 185}, {"ok 100", 195}, {"send 100", 195}, {"ok 100", 200}, {"send 100", 200}, {"ok 100", 200}}},
		{"multiplicative decrease to the floor", AIMDConfig{MaxBatchSize: 4, MaxInFlightRequests: 1},
			[]step{{"send 4", 4}, {"throttled 4", 2}, {"send 2", 2}, {"timeout 2", 1}, {"send 1", 1}, {"failed 1", 1}}},
		{"one failed entry is congestion", AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 1},
			[]step{{"send 100", 100}, {"failed 100", 50}}},
		{"once per round trip: requests in flight at a decrease do not decrease again",
			AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 4},
			[]step{{"send 100", 400}, {"send 100", 400}, {"send 100", 400}, {"send 100", 400},
				{"throttled 100", 200}, {"throttled 100", 200}, {"throttled 100", 200}, {"ok 100", 200},
				// A new round trip: this one decreases, from the 100 in flight.
				{"send 100", 200}, {"throttled 100", 50}}},
		{"decrease starts from what was in flight", AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 10},
			[]step{{"send 100", 1000}, {"send 100", 1000}, {"throttled 100", 100}}},
		{"fast up to the last congestion point, then per round trip", AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 2, InitialLimit: 200},
			[]step{{"send 100", 200}, {"throttled 100", 50},
				{"send 50", 50}, {"ok 50", 60}, {"send 60", 60}, {"ok 60", 70}, {"send 70", 70}, {"ok 70", 80},
				{"send 80", 80}, {"ok 80", 90}, {"send 90", 90}, {"ok 90", 100},
				// Within Increase of the congestion point (100): +10 per
				// limit's worth of records now.
				{"send 50", 100}, {"ok 50", 105}, {"send 21", 105}, {"ok 21", 107}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := must(NewAIMD(tt.cfg))
			for i, s := range tt.steps {
				var op string
				var n int
				fmt.Sscanf(s.op, "%s %d", &op, &n)
				switch op {
				case "send":
					a.RegisterInFlight(r(n))
				case "ok":
					a.Complete(Result{Request: r(n)})
				case "throttled":
					a.Complete(Result{Request: r(n), Throttled: true, Failed: n})
				case "timeout":
					a.Complete(Result{Request: r(n), TimedOut: true})
				case "failed":
					a.Complete(Result{Request: r(n), Failed: 1})
				}
				if got := a.Limit(); got != s.limit {
					t.Fatalf("step %d (%s): limit %d, want %d", i, s.op, got, s.limit)
				}
			}
		})
	}
}

func TestAIMDShouldBlock(t *testing.T) {
	a := must(NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 3, InitialLimit: 250}))
	if a.ShouldBlock(Request{Records: 1000}) {
		t.Error("a request larger than the limit is blocked with nothing in flight: the writer would stall")
	}
	for range 2 {
		if !a.TryAcquire(Request{Records: 100}) {
			t.Fatal("a request within the limit refused")
		}
	}
	if !a.ShouldBlock(Request{Records: 100}) {
		t.Error("300 records in flight admitted under a limit of 250")
	}
	if a.ShouldBlock(Request{Records: 50}) {
		t.Error("250 records in flight refused under a limit of 250")
	}
	a.RegisterInFlight(Request{Records: 0})
	if !a.ShouldBlock(Request{Records: 0}) {
		t.Error("a 4th request admitted with max_in_flight_requests 3")
	}
	a.Complete(Result{Request: Request{Records: 0}})
	st := a.Stats()
	if st.InFlightRequests != 2 || st.InFlightRecords != 200 {
		t.Errorf("in flight %d requests / %d records, want 2 / 200", st.InFlightRequests, st.InFlightRecords)
	}
}

// TestAIMDLatencyAware drives the latency-aware mode with hand-made RTTs:
// a rising RTT is congestion (×0.9); a RTT that a decrease does not bring
// down becomes the new baseline instead of driving the limit to its floor.
func TestAIMDLatencyAware(t *testing.T) {
	a := must(NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 10, LatencyTolerance: 0.5, LatencySmoothing: 1}))
	r := Request{Records: 100}
	done := func(lat time.Duration) {
		a.RegisterInFlight(r)
		a.Complete(Result{Request: r, Latency: lat})
	}
	done(100 * time.Millisecond) // baseline
	done(120 * time.Millisecond) // below half the tolerance: grows? at the threshold already
	if got := a.Limit(); got != 1000 {
		t.Fatalf("limit %d, want 1000 (at the threshold)", got)
	}
	done(140 * time.Millisecond) // hold zone: no change
	done(160 * time.Millisecond) // above 150 = baseline × 1.5: congestion
	if got := a.Limit(); got != 90 {
		// One request in flight (100 records): decrease from the flight.
		t.Fatalf("limit %d after a rising RTT, want 90 (100 in flight × 0.9)", got)
	}
	// The sink got slower for good: the RTT stays at 160ms.
	for range 5 {
		done(160 * time.Millisecond)
	}
	st := a.Stats()
	if st.BaselineRTT != 160*time.Millisecond {
		t.Errorf("baseline %v, want the new normal 160ms", st.BaselineRTT)
	}
	if st.Limit < 90 {
		t.Errorf("limit %d fell further although the decrease did not help", st.Limit)
	}
	if st.Decreases != 1 {
		t.Errorf("%d decreases, want 1", st.Decreases)
	}
}

// sinkModel names a simulated sink for the tables below.
type sinkModel struct {
	name string
	mk   func(capacity float64) simSink
}

var (
	// throttling: accepts C records/s with a one-second burst and answers
	// throttled above it; 45–55 ms round trip.
	throttling = sinkModel{"throttling", func(c float64) simSink {
		return newThrottlingSink(c, time.Second, 45*time.Millisecond, 10*time.Millisecond)
	}}
	// queueing: serves C records/s in order behind a queue of at most
	// 250 ms, throttled beyond it; 50 ms network round trip.
	queueing = sinkModel{"queueing", func(c float64) simSink {
		return &queueingSink{base: 50 * time.Millisecond, maxDelay: 250 * time.Millisecond}
	}}
)

// TestAIMDConvergence is the evidence for AIMD: a saturated writer
// (max_batch_size 500, max_in_flight_requests 16) against a simulated sink
// of capacity C reaches ≥ 90% of C with ≤ 5% throttled requests, and again
// after a step down to C/2 and back up to C. Each phase runs 30 simulated
// seconds and is measured after 10. Deterministic: simulated time, seeded
// jitter.
//
// The figures hold while the sink's bandwidth-delay product spans dozens
// of Flink's 10-record increments (here ≥ 500 records at C/2): probing
// costs about one throttled request per cycle, and a cycle lasts
// (limit/2)/increase completions. Below that, lower Increase.
func TestAIMDConvergence(t *testing.T) {
	for _, sink := range []sinkModel{throttling, queueing} {
		for _, c := range []float64{20_000, 40_000, 80_000, 120_000} {
			t.Run(fmt.Sprintf("%s/C=%.0f", sink.name, c), func(t *testing.T) {
				a := must(NewAIMD(AIMDConfig{MaxBatchSize: 500, MaxInFlightRequests: 16}))
				phases := []simPhase{
					{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second},
					{capacity: c / 2, duration: 30 * time.Second, settle: 10 * time.Second},
					{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second},
				}
				stats := simulate(a, sink.mk(c), 500, phases)
				for i, st := range stats {
					name := []string{"start", "step down", "step up"}[i]
					g := st.goodput() / phases[i].capacity
					t.Logf("%-9s C=%6.0f: goodput %5.1f%% of C, %4.1f%% throttled, mean latency %v", name, phases[i].capacity, 100*g, 100*st.throttledFraction(), st.meanLatency().Round(time.Millisecond))
					if g < 0.9 {
						t.Errorf("%s: goodput %.1f%% of C, want ≥ 90%%", name, 100*g)
					}
					if f := st.throttledFraction(); f > 0.05 {
						t.Errorf("%s: %.1f%% of requests throttled, want ≤ 5%%", name, 100*f)
					}
				}
			})
		}
	}
}

// TestAIMDLatencyAwareConvergence: against the queueing sink, plain AIMD
// fills the queue until the sink throttles; the latency-aware mode keeps
// the queue short at the same goodput, and adapts when the sink's own
// latency rises for good (a network change) instead of starving it.
func TestAIMDLatencyAwareConvergence(t *testing.T) {
	for _, c := range []float64{20_000, 40_000, 80_000, 120_000} {
		t.Run(fmt.Sprintf("C=%.0f", c), func(t *testing.T) {
			run := func(tol float64) []simStats {
				a := must(NewAIMD(AIMDConfig{MaxBatchSize: 500, MaxInFlightRequests: 32, LatencyTolerance: tol}))
				sink := &queueingSink{base: 50 * time.Millisecond, maxDelay: 250 * time.Millisecond}
				return simulate(a, sink, 500, []simPhase{
					{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second},
					{capacity: c / 2, duration: 30 * time.Second, settle: 10 * time.Second},
					{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second},
					{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second, setup: func() { sink.base = 100 * time.Millisecond }},
				})
			}
			plain, aware := run(0), run(0.5)
			caps := []float64{c, c / 2, c, c}
			for i := range aware {
				name := []string{"start", "step down", "step up", "slower sink"}[i]
				g := aware[i].goodput() / caps[i]
				// The least latency possible: network + one batch's service.
				floor := 50*time.Millisecond + time.Duration(500/caps[i]*float64(time.Second))
				if i == 3 {
					floor += 50 * time.Millisecond
				}
				t.Logf("%-11s: latency-aware %5.1f%% of C, mean latency %v; plain %5.1f%%, %v (floor %v)", name,
					100*g, aware[i].meanLatency().Round(time.Millisecond),
					100*plain[i].goodput()/caps[i], plain[i].meanLatency().Round(time.Millisecond), floor.Round(time.Millisecond))
				if g < 0.9 {
					t.Errorf("%s: goodput %.1f%% of C, want ≥ 90%%", name, 100*g)
				}
				if f := aware[i].throttledFraction(); f > 0.05 {
					t.Errorf("%s: %.1f%% throttled, want ≤ 5%%", name, 100*f)
				}
				// Half the tolerance is where growth stops; allow the sawtooth above it.
				if lat := aware[i].meanLatency(); float64(lat) > 1.75*float64(floor) {
					t.Errorf("%s: mean latency %v, want ≤ 1.75 × the floor %v", name, lat, floor)
				}
			}
		})
	}
}

// flinkAIMD is Flink's CongestionControlRateLimitingStrategy as is, to
// compare with: every congested completion halves the limit, every clean
// one adds Increase.
type flinkAIMD struct {
	limit, max, inReq, inRec, maxReq, batch int
}

func (f *flinkAIMD) TryAcquire(r Request) bool {
	if f.inReq >= f.maxReq || f.inRec+r.Records > f.limit {
		return false
	}
	f.inReq++
	f.inRec += r.Records
	return true
}
func (f *flinkAIMD) Acquire(context.Context, Request) error { panic("not used by the simulation") }
func (f *flinkAIMD) Complete(res Result) {
	f.inReq--
	f.inRec -= res.Request.Records
	if res.congested() {
		f.limit = max(1, int(math.Round(float64(f.limit)*0.5)))
	} else {
		f.limit = min(f.limit+10, f.max)
	}
}
func (f *flinkAIMD) MaxBatchSize() int { return min(f.limit, f.batch) }

// TestFlinkAIMDForComparison logs how Flink's rule as is (with its
// default initial limit, max_batch_size) fares in the same simulation (no assertion: it is the baseline the departures in AIMD's
// doc comment answer).
func TestFlinkAIMDForComparison(t *testing.T) {
	for _, initial := range []int{500, 8000} {
		for _, c := range []float64{20_000, 40_000, 80_000, 120_000} {
			f := &flinkAIMD{limit: initial, max: 8000, maxReq: 16, batch: 500}
			stats := simulate(f, throttling.mk(c), 500, []simPhase{
				{capacity: c, duration: 30 * time.Second, settle: 10 * time.Second},
				{capacity: c / 2, duration: 30 * time.Second, settle: 10 * time.Second},
			})
			t.Logf("Flink's AIMD as is, initial limit %d, C=%.0f: goodput %.1f%% of C, %.1f%% throttled; after a step down %.1f%%, %.1f%%",
				initial, c, 100*stats[0].goodput()/c, 100*stats[0].throttledFraction(), 200*stats[1].goodput()/c, 100*stats[1].throttledFraction())
		}
	}
}
