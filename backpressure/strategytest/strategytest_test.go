package strategytest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/backpressure/strategytest"
)

// build is New for a config, for a writer of 100 records per batch and 4
// requests in flight.
func build(t *testing.T, cfg backpressure.Config) backpressure.Strategy {
	t.Helper()
	s, err := backpressure.New(cfg, backpressure.WriterLimits{MaxBatchSize: 100, MaxInFlightRequests: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStrategies(t *testing.T) {
	tests := []struct {
		name       string
		features   strategytest.Features
		newSubject func(t *testing.T) strategytest.Subject
	}{
		{"token_bucket", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			tb := build(t, backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 100, BytesPerSecond: 10_000}).(*backpressure.TokenBucket)
			return strategytest.Subject{Strategy: tb, Raise: func() {
				if err := tb.SetRate(backpressure.TokenBucketConfig{RecordsPerSecond: 10_000, BytesPerSecond: 1e6}); err != nil {
					t.Error(err)
				}
			}}
		}},
		{"adaptive_rate", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{InitialRate: 100, Burst: 10})
			if err != nil {
				t.Fatal(err)
			}
			return strategytest.Subject{Strategy: a, Raise: func() {
				if err := a.SetRate(100_000); err != nil {
					t.Error(err)
				}
			}}
		}},
		{"adaptive_rate/before_any_throttle", strategytest.Features{NeverRefuses: true}, func(t *testing.T) strategytest.Subject {
			a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{})
			if err != nil {
				t.Fatal(err)
			}
			return strategytest.Subject{Strategy: a}
		}},
		{"adaptive_rate/bytes", strategytest.Features{}, func(t *testing.T) strategytest.Subject {
			a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{Unit: "bytes", InitialRate: 5000, Burst: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return strategytest.Subject{Strategy: a}
		}},
		{"token_bucket/bytes", strategytest.Features{}, func(t *testing.T) strategytest.Subject {
			return strategytest.Subject{Strategy: build(t, backpressure.Config{Kind: backpressure.KindTokenBucket, BytesPerSecond: 5000, ByteBurst: 2500})}
		}},
		{"sliding_window", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			w := build(t, backpressure.Config{Kind: backpressure.KindSlidingWindow, Window: time.Second, RecordsPerWindow: 100, BytesPerWindow: 10_000}).(*backpressure.SlidingWindow)
			return strategytest.Subject{Strategy: w, Raise: func() {
				if err := w.SetLimit(1000, 100_000); err != nil {
					t.Error(err)
				}
			}}
		}},
		{"aimd", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			a := build(t, backpressure.Config{Kind: backpressure.KindAIMD, MaxLimit: 1000, InitialLimit: 30}).(*backpressure.AIMD)
			return strategytest.Subject{Strategy: a, Raise: func() { a.SetLimit(1000) }}
		}},
		{"aimd/requests", strategytest.Features{}, func(t *testing.T) strategytest.Subject {
			// Refused by max_in_flight_requests (4), not by records.
			return strategytest.Subject{Strategy: build(t, backpressure.Config{Kind: backpressure.KindAIMD, LatencyTolerance: 0.5})}
		}},
		{"multi_tier", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			m := build(t, backpressure.Config{Kind: backpressure.KindMultiTier,
				Global:    &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 1000},
				Topic:     &backpressure.Config{Kind: backpressure.KindSlidingWindow, RecordsPerWindow: 500},
				Partition: &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 100},
			}).(*backpressure.MultiTier)
			return strategytest.Subject{Strategy: m, Raise: func() {
				tier := m.Partition("strategytest", 0).(*backpressure.TokenBucket)
				if err := tier.SetRate(backpressure.TokenBucketConfig{RecordsPerSecond: 10_000}); err != nil {
					t.Error(err)
				}
			}}
		}},
		{"multi_tier/aimd_partitions", strategytest.Features{}, func(t *testing.T) strategytest.Subject {
			return strategytest.Subject{Strategy: build(t, backpressure.Config{Kind: backpressure.KindMultiTier,
				Partition: &backpressure.Config{Kind: backpressure.KindAIMD, MaxLimit: 50},
			})}
		}},
		{"composite", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			tb := build(t, backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 100}).(*backpressure.TokenBucket)
			a := build(t, backpressure.Config{Kind: backpressure.KindAIMD, MaxLimit: 1000, InitialLimit: 30}).(*backpressure.AIMD)
			c, err := backpressure.NewComposite(tb, a)
			if err != nil {
				t.Fatal(err)
			}
			return strategytest.Subject{Strategy: c, Raise: func() {
				a.SetLimit(1000)
				if err := tb.SetRate(backpressure.TokenBucketConfig{RecordsPerSecond: 10_000}); err != nil {
					t.Error(err)
				}
			}}
		}},
		{"unlimited", strategytest.Features{NeverRefuses: true}, func(t *testing.T) strategytest.Subject {
			return strategytest.Subject{Strategy: backpressure.Unlimited{}}
		}},
		{"outsider", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			c := &inFlightCap{max: 3}
			return strategytest.Subject{Strategy: c, Raise: func() { c.SetMax(10) }}
		}},
		{"outsider/in_composite_with_token_bucket", strategytest.Features{LimitChanges: true}, func(t *testing.T) strategytest.Subject {
			c := &inFlightCap{max: 3}
			tb := build(t, backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 1000})
			comp, err := backpressure.NewComposite(tb, c)
			if err != nil {
				t.Fatal(err)
			}
			return strategytest.Subject{Strategy: comp, Raise: func() { c.SetMax(10) }}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { strategytest.Run(t, tc.features, tc.newSubject) })
	}
}

// inFlightCap is a strategy written outside package backpressure: at most
// max requests in flight. It is a backpressure.Gate through exported API
// alone: a Signal for wake-ups and backpressure.Acquire for its loop.
type inFlightCap struct {
	mu       sync.Mutex
	max, n   int
	changed  backpressure.Signal
	noNotify bool // broken on purpose (TestSuiteFails): Complete wakes nobody
	leak     bool // broken on purpose: a cancelled Acquire stays registered
}

func (c *inFlightCap) TryAcquire(req backpressure.Request) bool {
	return c.TryAcquireAt(time.Now(), req)
}

func (c *inFlightCap) TryAcquireAt(_ time.Time, _ backpressure.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= c.max {
		return false
	}
	c.n++
	return true
}

func (c *inFlightCap) Acquire(ctx context.Context, req backpressure.Request) error {
	err := backpressure.Acquire(ctx, c, req)
	if err != nil && c.leak {
		c.Take(time.Now(), req)
	}
	return err
}

func (c *inFlightCap) Complete(backpressure.Result) {
	c.mu.Lock()
	c.n--
	c.mu.Unlock()
	if !c.noNotify {
		c.changed.Notify()
	}
}

func (c *inFlightCap) MaxBatchSize() int { return 0 }

func (c *inFlightCap) Admit(time.Time, backpressure.Request) (bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= c.max {
		return false, backpressure.Never
	}
	return true, 0
}

func (c *inFlightCap) Take(time.Time, backpressure.Request) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *inFlightCap) Watch(_ backpressure.Request, ch chan<- struct{}, on bool) {
	c.changed.Watch(ch, on)
}

func (c *inFlightCap) SetMax(n int) {
	c.mu.Lock()
	c.max = n
	c.mu.Unlock()
	c.changed.Notify()
}

// sleepy sleeps in TryAcquire: broken on purpose.
type sleepy struct{ inFlightCap }

func (s *sleepy) TryAcquire(req backpressure.Request) bool {
	time.Sleep(time.Millisecond)
	return s.inFlightCap.TryAcquire(req)
}

// brokenEnv names the broken strategy TestBroken runs the suite on, in a
// child process started by TestSuiteFails.
const brokenEnv = "STRATEGYTEST_BROKEN"

func TestBroken(t *testing.T) {
	var s func() backpressure.Strategy
	switch os.Getenv(brokenEnv) {
	case "":
		t.Skip("run by TestSuiteFails")
	case "no-notify":
		s = func() backpressure.Strategy { return &inFlightCap{max: 3, noNotify: true} }
	case "leak":
		s = func() backpressure.Strategy { return &inFlightCap{max: 3, leak: true} }
	case "sleepy":
		s = func() backpressure.Strategy { return &sleepy{inFlightCap{max: 3}} }
	case "never-refuses":
		s = func() backpressure.Strategy { return backpressure.Unlimited{} }
	}
	strategytest.Run(t, strategytest.Features{}, func(t *testing.T) strategytest.Subject {
		return strategytest.Subject{Strategy: s()}
	})
}

// TestSuiteFails runs the suite on broken strategies, in a child process,
// and checks that the checks meant to catch each one fail.
func TestSuiteFails(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	tests := []struct {
		broken string
		want   []string // failing subtests and messages
	}{
		{"no-notify", []string{"--- FAIL: TestBroken/CompleteWakesAcquire", "a completion must wake it"}},
		{"leak", []string{"--- FAIL: TestBroken/AcquireCancelRegistersNothing", "a cancelled Acquire left something registered"}},
		{"sleepy", []string{"--- FAIL: TestBroken/TryAcquireNeverBlocks", "it must not block"}},
		{"never-refuses", []string{"--- FAIL: TestBroken/TryAcquireNeverBlocks", "declare Features.NeverRefuses"}},
	}
	for _, tc := range tests {
		t.Run(tc.broken, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBroken$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a strategy that is %s:\n%s", tc.broken, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
