package backpressure

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A conformance case builds a strategy in a state where block is refused
// now. If unblock is nil, time alone admits block (within an hour);
// otherwise unblock is the event that does (a completion).
type conformanceCase struct {
	name    string
	new     func(t *testing.T) (s Strategy, block Request, unblock func())
	set     func(s Strategy, i int) // a runtime change, for the race test
	noBlock bool                    // the strategy never refuses (Unlimited)
}

var partReq = Request{Records: 10, Bytes: 100, Parts: []Part{{Topic: "t", Partition: 0, Records: 10, Bytes: 100}}}

func conformanceCases() []conformanceCase {
	return []conformanceCase{
		{name: "token bucket", new: func(t *testing.T) (Strategy, Request, func()) {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 10, BytesPerSecond: 1000}))
			drain(t, tb, Request{Records: 10})
			return tb, Request{Records: 10, Bytes: 10}, nil
		}, set: func(s Strategy, i int) {
			_ = s.(*TokenBucket).SetRate(TokenBucketConfig{RecordsPerSecond: float64(10 + i%100), BytesPerSecond: 1000})
		}},
		{name: "sliding window", new: func(t *testing.T) (Strategy, Request, func()) {
			w := must(NewSlidingWindow(SlidingWindowConfig{Records: 10, Bytes: 1000}))
			drain(t, w, Request{Records: 10})
			return w, Request{Records: 10}, nil
		}, set: func(s Strategy, i int) { _ = s.(*SlidingWindow).SetLimit(10+i%100, 1000) }},
		{name: "aimd", new: func(t *testing.T) (Strategy, Request, func()) {
			a := must(NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 4, InitialLimit: 100}))
			a.RegisterInFlight(Request{Records: 100})
			return a, Request{Records: 10}, func() { a.Complete(Result{Request: Request{Records: 100}}) }
		}, set: func(s Strategy, i int) { s.(*AIMD).SetLimit(50 + i%100) }},
		{name: "composite", new: func(t *testing.T) (Strategy, Request, func()) {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1000}))
			a := must(NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 4, InitialLimit: 100}))
			c := must(NewComposite(tb, a))
			c.RegisterInFlight(Request{Records: 100}) // AIMD full, the bucket not
			return c, Request{Records: 10}, func() { a.Complete(Result{Request: Request{Records: 100}}) }
		}, set: func(s Strategy, i int) { s.(*Composite).members[1].(*AIMD).SetLimit(50 + i%100) }},
		{name: "multi-tier", new: func(t *testing.T) (Strategy, Request, func()) {
			m := must(NewMultiTier(Tiers{
				Global: must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1000})),
				Partition: func(string, int32) Strategy {
					return must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 10}))
				},
			}))
			drain(t, m, partReq)
			return m, partReq, nil
		}, set: func(s Strategy, i int) {
			_ = s.(*MultiTier).Partition("t", 0).(*TokenBucket).SetRate(TokenBucketConfig{RecordsPerSecond: float64(10 + i%100)})
		}},
		{name: "unlimited", noBlock: true, new: func(t *testing.T) (Strategy, Request, func()) {
			return Unlimited{}, Request{Records: 10}, nil
		}},
	}
}

// drain takes req until s refuses it.
func drain(t *testing.T, s Strategy, req Request) {
	t.Helper()
	for i := 0; s.TryAcquire(req); i++ {
		if i > 1e6 {
			t.Fatal("strategy never refuses")
		}
	}
}

// TestConformance is the suite every strategy passes: the blocking
// contract of Strategy.Acquire, the agreement of the two-step (Flink)
// methods with TryAcquire, and safety under concurrent use.
func TestConformance(t *testing.T) {
	for _, c := range conformanceCases() {
		t.Run(c.name, func(t *testing.T) {
			if !c.noBlock {
				t.Run("refused request is not registered", func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						s, block, _ := c.new(t)
						g := s.(Gate)
						if ok, _ := g.Admit(time.Now(), block); ok {
							t.Fatal("block is admitted: bad test case")
						}
						if !s.(interface{ ShouldBlock(Request) bool }).ShouldBlock(block) {
							t.Error("ShouldBlock disagrees with TryAcquire")
						}
					})
				})
				t.Run("acquire waits for its event", func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						s, block, unblock := c.new(t)
						start := time.Now()
						done := make(chan error, 1)
						go func() { done <- s.Acquire(t.Context(), block) }()
						synctest.Wait()
						select {
						case err := <-done:
							t.Fatalf("Acquire returned %v while the request cannot pass", err)
						default:
						}
						if unblock != nil {
							unblock()
						}
						if err := <-done; err != nil {
							t.Fatalf("Acquire: %v", err)
						}
						el := time.Since(start)
						if unblock != nil && el != 0 {
							t.Errorf("woken %v after the completion, want at once", el)
						}
						if el > time.Hour {
							t.Errorf("waited %v", el)
						}
					})
				})
				t.Run("cancel returns at once and registers nothing", func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						s, block, unblock := c.new(t)
						ctx, cancel := context.WithCancel(t.Context())
						start := time.Now()
						done := make(chan error, 1)
						go func() { done <- s.Acquire(ctx, block) }()
						synctest.Wait()
						cancel()
						err := <-done
						if !errors.Is(err, context.Canceled) {
							t.Fatalf("Acquire after cancel: %v, want context.Canceled", err)
						}
						if el := time.Since(start); el != 0 {
							t.Errorf("returned %v after cancel, want at once", el)
						}
						// Nothing was taken: after the unblocking event the
						// same request passes as it would have.
						if unblock != nil {
							unblock()
						}
						if err := s.Acquire(t.Context(), block); err != nil {
							t.Fatal(err)
						}
						if el := time.Since(start); unblock != nil && el != 0 {
							t.Errorf("a cancelled Acquire left something registered: next waited %v", el)
						}
					})
				})
				t.Run("deadline", func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						s, block, _ := c.new(t)
						ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
						defer cancel()
						start := time.Now()
						err := s.Acquire(ctx, block)
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Fatalf("Acquire: %v, want context.DeadlineExceeded", err)
						}
						if el := time.Since(start); el != 50*time.Millisecond {
							t.Errorf("returned after %v, want at the deadline, 50ms", el)
						}
					})
				})
			}
			t.Run("done context", func(t *testing.T) {
				s, block, _ := c.new(t)
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				if err := s.Acquire(ctx, block); !errors.Is(err, context.Canceled) {
					t.Errorf("Acquire with a done context: %v, want context.Canceled", err)
				}
			})
			t.Run("concurrent use", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { concurrentUse(t, c) })
			})
		})
	}
}

// concurrentUse hammers a strategy from several goroutines with every
// method (run it under -race) and checks that every admission was
// completed exactly once: AIMD's books balance at the end.
func concurrentUse(t *testing.T, c conformanceCase) {
	s, _, unblock := c.new(t)
	if unblock != nil {
		unblock()
	}
	req := Request{Records: 1, Bytes: 10, Parts: partReq.Parts}
	var admitted, completed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				switch (g + i) % 4 {
				case 0:
					if s.TryAcquire(req) {
						admitted.Add(1)
						s.Complete(Result{Request: req, Throttled: i%7 == 0, Latency: time.Duration(i) * time.Millisecond})
						completed.Add(1)
					}
				case 1:
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
					if s.Acquire(ctx, req) == nil {
						admitted.Add(1)
						time.Sleep(time.Millisecond)
						s.Complete(Result{Request: req})
						completed.Add(1)
					}
					cancel()
				case 2:
					_ = s.MaxBatchSize()
					if f, ok := s.(interface{ ShouldBlock(Request) bool }); ok {
						_ = f.ShouldBlock(req)
					}
				case 3:
					if c.set != nil {
						c.set(s, i)
					}
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() == 0 {
		t.Error("nothing was admitted")
	}
	if a, ok := s.(*AIMD); ok {
		if st := a.Stats(); st.InFlightRequests != 0 || st.InFlightRecords != 0 {
			t.Errorf("after every completion: %d requests / %d records in flight, want 0", st.InFlightRequests, st.InFlightRecords)
		}
	}
}

// TestRuntimeChange: a limit changed while a caller waits takes effect
// within one refill period at the new limit and wakes the waiter; a limit
// lowered makes it wait longer.
func TestRuntimeChange(t *testing.T) {
	t.Run("token bucket raised", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1, RecordBurst: 10}))
			drain(t, tb, Request{Records: 10})
			done := make(chan time.Time)
			go func() {
				_ = tb.Acquire(t.Context(), Request{Records: 10}) // 10 s at 1/s
				done <- time.Now()
			}()
			synctest.Wait()
			changed := time.Now()
			if err := tb.SetRate(TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 10}); err != nil {
				t.Fatal(err)
			}
			// One refill period at the new rate: 10 records at 1000/s.
			if el := (<-done).Sub(changed); el > 10*time.Millisecond {
				t.Errorf("admitted %v after SetRate, want within one refill period, 10ms", el)
			}
		})
	})
	t.Run("token bucket lowered", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 10}))
			drain(t, tb, Request{Records: 10})
			done := make(chan time.Time)
			go func() {
				_ = tb.Acquire(t.Context(), Request{Records: 10}) // 10ms at 1000/s
				done <- time.Now()
			}()
			synctest.Wait()
			changed := time.Now()
			_ = tb.SetRate(TokenBucketConfig{RecordsPerSecond: 10, RecordBurst: 10})
			if el := (<-done).Sub(changed); el != time.Second {
				t.Errorf("admitted %v after lowering the rate, want 1s (10 records at 10/s)", el)
			}
		})
	})
	t.Run("sliding window raised", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := must(NewSlidingWindow(SlidingWindowConfig{Window: time.Minute, Records: 10}))
			drain(t, w, Request{Records: 10})
			done := make(chan time.Time)
			go func() {
				_ = w.Acquire(t.Context(), Request{Records: 10})
				done <- time.Now()
			}()
			synctest.Wait()
			changed := time.Now()
			_ = w.SetLimit(100, 0)
			if el := (<-done).Sub(changed); el != 0 {
				t.Errorf("admitted %v after SetLimit, want at once (room now)", el)
			}
		})
	})
	t.Run("aimd raised", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := must(NewAIMD(AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 10, InitialLimit: 100}))
			a.RegisterInFlight(Request{Records: 100})
			done := make(chan struct{})
			go func() {
				_ = a.Acquire(t.Context(), Request{Records: 100})
				close(done)
			}()
			synctest.Wait()
			a.SetLimit(200)
			synctest.Wait()
			select {
			case <-done:
			default:
				t.Error("SetLimit did not wake the waiter")
			}
		})
	})
	t.Run("multi-tier tier raised", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			m := must(NewMultiTier(Tiers{Partition: func(string, int32) Strategy {
				return must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 0.1, RecordBurst: 10}))
			}}))
			drain(t, m, partReq)
			done := make(chan time.Time)
			go func() {
				_ = m.Acquire(t.Context(), partReq) // 100 s
				done <- time.Now()
			}()
			synctest.Wait()
			changed := time.Now()
			_ = m.Partition("t", 0).(*TokenBucket).SetRate(TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 10})
			if el := (<-done).Sub(changed); el > 10*time.Millisecond {
				t.Errorf("admitted %v after the tier's SetRate, want within 10ms", el)
			}
		})
	})
}
