package backpressure

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestMultiTierShares is the evidence for MultiTier: global 1000 records/s,
// topic t 300/s, partition t/0 100/s. Four saturated partitions (t/0, t/1,
// u/0, u/1) run for 10 simulated seconds: t/0 keeps to its 100/s (below
// its even share of the topic), t/1 takes the rest of topic t, topic u the
// rest of the global budget, which is used in full. (Rates count the
// initial bursts, a tenth of a second's worth each.)
func TestMultiTierShares(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := func(perSecond float64) Strategy {
			return must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: perSecond, RecordBurst: int(perSecond / 10)}))
		}
		m := must(NewMultiTier(Tiers{
			Global: tb(1000),
			Topic: func(topic string) Strategy {
				if topic == "t" {
					return tb(300)
				}
				return nil
			},
			Partition: func(topic string, p int32) Strategy {
				if topic == "t" && p == 0 {
					return tb(100)
				}
				return nil
			},
		}))
		keys := []Part{{Topic: "t", Partition: 0}, {Topic: "t", Partition: 1}, {Topic: "u", Partition: 0}, {Topic: "u", Partition: 1}}
		const d = 10 * time.Second
		counts := make([]int, len(keys))
		start := time.Now()
		var wg sync.WaitGroup
		for i, k := range keys {
			wg.Go(func() {
				k.Records = 5
				req := Request{Records: 5, Parts: []Part{k}}
				for {
					if err := m.Acquire(t.Context(), req); err != nil {
						t.Error(err)
						return
					}
					if time.Since(start) > d {
						return
					}
					counts[i] += 5
				}
			})
		}
		wg.Wait()
		rate := func(n int) float64 { return float64(n) / d.Seconds() }
		for i, k := range keys {
			t.Logf("%s/%d: %.1f records/s", k.Topic, k.Partition, rate(counts[i]))
		}
		within := func(what string, got, lo, hi float64) {
			if got < lo || got > hi {
				t.Errorf("%s: %.1f/s, want %.0f to %.0f", what, got, lo, hi)
			}
		}
		// The partition limit holds. Waiters are not queued, so t/0, four
		// goroutines contending for the global tier, loses some of its
		// share (about 5% here); the writer, a single caller, does not
		// contend with itself. Topic t may lose a little the same way: the
		// goroutines' order at each wake-up is the scheduler's (299.5/s
		// once in about 50 runs on a loaded 2-core box).
		within("partition t/0", rate(counts[0]), 90, 101)
		within("topic t", rate(counts[0]+counts[1]), 0.98*303, 303)
		within("topic u (the rest)", rate(counts[2]+counts[3]), 0.99*707, 1.01*707)
		within("global", rate(counts[0]+counts[1]+counts[2]+counts[3]), 0.99*1010, 1010)
		if counts[1] <= counts[0] {
			t.Errorf("t/1 got %d records, no more than the limited t/0 (%d)", counts[1], counts[0])
		}
	})
}

// TestMultiTierAllOrNothing: a refusal from a later tier takes no tokens
// from an earlier one (time is an input: tiers never refill here).
func TestMultiTierAllOrNothing(t *testing.T) {
	slow := func(burst int) Strategy {
		return must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1e-9, RecordBurst: burst}))
	}
	m := must(NewMultiTier(Tiers{
		Global:    slow(100),
		Partition: func(string, int32) Strategy { return slow(10) },
	}))
	p := func(part int32, n int) Request {
		return Request{Records: n, Parts: []Part{{Topic: "t", Partition: part, Records: n}}}
	}
	if !m.TryAcquire(p(0, 10)) {
		t.Fatal("first request refused")
	}
	for range 5 {
		if m.TryAcquire(p(0, 10)) {
			t.Fatal("partition 0 admitted beyond its burst")
		}
	}
	if !m.TryAcquire(p(1, 10)) || !m.TryAcquire(Request{Records: 80}) {
		t.Fatal("refusals by partition 0 took tokens from the global tier: 90 should be left")
	}
	if m.TryAcquire(Request{Records: 1}) {
		t.Error("global tier admitted beyond its burst")
	}
}

// TestMultiTierParts: shares add up per topic and per partition, tiers are
// created once per key, and completions reach each tier with its share.
func TestMultiTierParts(t *testing.T) {
	var mu sync.Mutex
	created := map[string]int{}
	aimds := map[string]*AIMD{}
	mk := func(key string) Strategy {
		mu.Lock()
		defer mu.Unlock()
		created[key]++
		a := must(NewAIMD(AIMDConfig{MaxBatchSize: 1000, MaxInFlightRequests: 10}))
		aimds[key] = a
		return a
	}
	global := must(NewAIMD(AIMDConfig{MaxBatchSize: 1000, MaxInFlightRequests: 10}))
	m := must(NewMultiTier(Tiers{
		Global:    global,
		Topic:     func(topic string) Strategy { return mk(topic) },
		Partition: func(topic string, p int32) Strategy { return mk(fmt.Sprintf("%s/%d", topic, p)) },
	}))
	req := Request{Records: 100, Parts: []Part{
		{Topic: "a", Partition: 0, Records: 30},
		{Topic: "b", Partition: 0, Records: 50},
		{Topic: "a", Partition: 1, Records: 20},
	}}
	for range 3 {
		if !m.TryAcquire(req) {
			t.Fatal("refused")
		}
	}
	for key, n := range created {
		if n != 1 {
			t.Errorf("tier %s created %d times", key, n)
		}
	}
	if len(created) != 5 {
		t.Errorf("created tiers %v, want a, b, a/0, a/1, b/0", created)
	}
	for key, want := range map[string]int{"a": 150, "b": 150, "a/0": 90, "a/1": 60, "b/0": 150} {
		if got := aimds[key].Stats().InFlightRecords; got != want {
			t.Errorf("tier %s: %d records in flight, want %d", key, got, want)
		}
	}
	if got := global.Stats().InFlightRecords; got != 300 {
		t.Errorf("global: %d records in flight, want 300", got)
	}
	// A throttled completion reaches every tier; failed entries are split.
	m.Complete(Result{Request: req, Failed: 10})
	for key, want := range map[string]int{"a": 100, "b": 100, "a/0": 60, "a/1": 40, "b/0": 100} {
		st := aimds[key].Stats()
		if st.InFlightRecords != want || st.Decreases != 1 {
			t.Errorf("tier %s after a failed completion: %d in flight, %d decreases; want %d, 1", key, st.InFlightRecords, st.Decreases, want)
		}
	}
	if got := failedShare(10, 30, 100); got != 3 {
		t.Errorf("failedShare(10, 30, 100) = %d, want 3", got)
	}
	if got := failedShare(1, 20, 100); got != 1 {
		t.Errorf("failedShare(1, 20, 100) = %d, want 1 (rounded up)", got)
	}
	// Without Parts only the global tier sees a request.
	m.RegisterInFlight(Request{Records: 7})
	if got := global.Stats().InFlightRecords; got != 207 {
		t.Errorf("global: %d in flight, want 207", got)
	}
}

func TestMultiTierErrors(t *testing.T) {
	if _, err := NewMultiTier(Tiers{}); err == nil {
		t.Error("no tiers accepted")
	}
	if _, err := NewMultiTier(Tiers{Global: foreign{}}); err == nil {
		t.Error("a foreign global strategy accepted")
	}
	m := must(NewMultiTier(Tiers{Partition: func(string, int32) Strategy { return foreign{} }}))
	defer func() {
		if recover() == nil {
			t.Error("a factory returning a foreign strategy did not panic")
		}
	}()
	m.TryAcquire(partReq)
}

// foreign is a Strategy from outside the package.
type foreign struct{}

func (foreign) TryAcquire(Request) bool                { return true }
func (foreign) Acquire(context.Context, Request) error { return nil }
func (foreign) Complete(Result)                        {}
func (foreign) MaxBatchSize() int                      { return 0 }

func TestComposite(t *testing.T) {
	if _, err := NewComposite(); err == nil {
		t.Error("empty composite accepted")
	}
	if _, err := NewComposite(Unlimited{}, foreign{}); err == nil {
		t.Error("foreign strategy accepted")
	}
	now := time.Now()
	tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1e-9, RecordBurst: 100}))
	a := must(NewAIMD(AIMDConfig{MaxBatchSize: 50, MaxInFlightRequests: 10, InitialLimit: 60}))
	w := must(NewSlidingWindow(SlidingWindowConfig{Window: time.Hour, Records: 1000}))
	c := must(NewComposite(tb, a, w))
	if got := c.MaxBatchSize(); got != 50 {
		t.Errorf("MaxBatchSize %d, want the smallest opinion, 50", got)
	}
	if !c.TryAcquire(Request{Records: 50}) {
		t.Fatal("refused")
	}
	// AIMD refuses (50 + 20 > 60): the bucket and the window keep theirs.
	if c.TryAcquire(Request{Records: 20}) {
		t.Fatal("admitted beyond the AIMD limit")
	}
	if !tb.TryAcquireAt(now, Request{Records: 50}) {
		t.Error("a refused composite request took bucket tokens")
	}
	if got := w.Limit().Records; got != 1000 {
		t.Fatal(got)
	}
	c.Complete(Result{Request: Request{Records: 50}})
	if st := a.Stats(); st.InFlightRecords != 0 || st.Limit != 70 {
		t.Errorf("AIMD after completion: %+v", st)
	}
}

// TestSlidingWindowOversized: a request above the limit passes once the
// window is empty, and its excess carries over into the next windows.
func TestSlidingWindowOversized(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := must(NewSlidingWindow(SlidingWindowConfig{Window: time.Second, Records: 100}))
		if !w.TryAcquire(Request{Records: 250}) {
			t.Fatal("oversized request refused on an empty window")
		}
		start := time.Now()
		if err := w.Acquire(t.Context(), Request{Records: 100}); err != nil {
			t.Fatal(err)
		}
		// The 250 count as 100, 100 and 50 in windows 0 to 2; a request of
		// the whole limit then needs window 2's 50 to fade out: the end of
		// window 3.
		if el := time.Since(start); el != 4*time.Second {
			t.Errorf("next request waited %v, want 4s", el)
		}
	})
}

// TestSlidingWindowEstimate checks the estimate at given instants (time is
// an input).
func TestSlidingWindowEstimate(t *testing.T) {
	w := must(NewSlidingWindow(SlidingWindowConfig{Window: time.Second, Records: 100}))
	t0 := w.origin
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if !w.TryAcquireAt(at(500*time.Millisecond), Request{Records: 100}) {
		t.Fatal("empty window refused")
	}
	// Window 1 at f=0.25: estimate 100×0.75 = 75: room for 25, not 26.
	if w.TryAcquireAt(at(1250*time.Millisecond), Request{Records: 26}) {
		t.Error("admitted 26 with an estimate of 75")
	}
	if !w.TryAcquireAt(at(1250*time.Millisecond), Request{Records: 25}) {
		t.Error("refused 25 with an estimate of 75")
	}
	// f=0.75: 100×0.25 + 25 = 50: room for 50.
	if !w.TryAcquireAt(at(1750*time.Millisecond), Request{Records: 50}) {
		t.Error("refused 50 with an estimate of 50")
	}
	// Two idle windows later everything has faded.
	if !w.TryAcquireAt(at(3500*time.Millisecond), Request{Records: 100}) {
		t.Error("refused after idle windows")
	}
}
