package backpressure

import (
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// admission is one request admitted at a simulated instant.
type admission struct {
	at  time.Duration // since the start
	req Request
}

// admitAll calls Acquire with req back to back for d of simulated time
// and returns every admission made by then. It must run in a synctest
// bubble: Acquire sleeps on fake timers, so the loop takes no real time.
func admitAll(t *testing.T, s Strategy, req Request, d time.Duration) []admission {
	t.Helper()
	start := time.Now()
	var out []admission
	for {
		if err := s.Acquire(t.Context(), req); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		el := time.Since(start)
		if el > d {
			return out
		}
		out = append(out, admission{el, req})
	}
}

func sum(as []admission, bytes bool) int {
	n := 0
	for _, a := range as {
		if bytes {
			n += a.req.Bytes
		} else {
			n += a.req.Records
		}
	}
	return n
}

// TestTokenBucketPrecision: over 10 simulated seconds a saturated caller is
// admitted the burst plus rate × 10 s within ±1%; at no instant more than
// burst + rate × t (the bucket's envelope), and the burst is available at
// once at the start.
func TestTokenBucketPrecision(t *testing.T) {
	tests := []struct {
		name     string
		cfg      TokenBucketConfig
		req      Request
		bytes    bool    // the binding dimension is bytes
		rate     float64 // of the binding dimension
		burst    int
		atStartN int // requests admitted at t=0
	}{
		{"records", TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 100}, Request{Records: 10}, false, 1000, 100, 10},
		{"records, uneven requests", TokenBucketConfig{RecordsPerSecond: 3333, RecordBurst: 500}, Request{Records: 7}, false, 3333, 500, 71},
		{"bytes", TokenBucketConfig{BytesPerSecond: 1 << 20, ByteBurst: 64 << 10}, Request{Records: 1, Bytes: 1000}, true, 1 << 20, 64 << 10, 65},
		{"records and bytes, bytes bind", TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 100, BytesPerSecond: 100_000, ByteBurst: 10_000},
			Request{Records: 10, Bytes: 2000}, true, 100_000, 10_000, 5},
		{"records and bytes, records bind", TokenBucketConfig{RecordsPerSecond: 500, RecordBurst: 50, BytesPerSecond: 1e6, ByteBurst: 1e5},
			Request{Records: 10, Bytes: 100}, false, 500, 50, 5},
		{"default burst is one second", TokenBucketConfig{RecordsPerSecond: 200}, Request{Records: 1}, false, 200, 200, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb, err := NewTokenBucket(tt.cfg)
				if err != nil {
					t.Fatal(err)
				}
				const d = 10 * time.Second
				as := admitAll(t, tb, tt.req, d)
				atStart := 0
				for _, a := range as {
					if a.at == 0 {
						atStart++
					}
				}
				if atStart != tt.atStartN {
					t.Errorf("admitted %d requests at once, want the burst's worth, %d", atStart, tt.atStartN)
				}
				got := 0
				for _, a := range as {
					if tt.bytes {
						got += a.req.Bytes
					} else {
						got += a.req.Records
					}
					if limit := float64(tt.burst) + tt.rate*a.at.Seconds(); float64(got) > limit+1e-6 {
						t.Fatalf("at %v: admitted %d, above burst + rate × t = %.1f", a.at, got, limit)
					}
				}
				want := float64(tt.burst) + tt.rate*d.Seconds()
				rate := (float64(got) - float64(tt.burst)) / d.Seconds()
				if dev := math.Abs(rate-tt.rate) / tt.rate; dev > 0.01 {
					t.Errorf("rate after the burst %.1f/s, configured %.1f/s (%.2f%% off; admitted %d, want %.0f)", rate, tt.rate, dev*100, got, want)
				}
				t.Logf("admitted %d in %v (want %.0f): rate %.2f/s vs %.0f/s", got, d, want, rate, tt.rate)
			})
		})
	}
}

// TestSlidingWindowPrecision: over 10 simulated windows a saturated caller
// is admitted limit × 10 within ±1%; no aligned window holds more than the
// limit, the first window is available at once, and later windows are
// spread out, not bursts at the window start.
func TestSlidingWindowPrecision(t *testing.T) {
	tests := []struct {
		name  string
		cfg   SlidingWindowConfig
		req   Request
		bytes bool
		limit int
	}{
		{"records", SlidingWindowConfig{Window: time.Second, Records: 1000}, Request{Records: 10}, false, 1000},
		{"records, uneven requests", SlidingWindowConfig{Window: 500 * time.Millisecond, Records: 777}, Request{Records: 7}, false, 777},
		{"bytes", SlidingWindowConfig{Window: time.Second, Bytes: 1 << 20}, Request{Records: 1, Bytes: 4096}, true, 1 << 20},
		{"records and bytes, bytes bind", SlidingWindowConfig{Window: time.Second, Records: 1000, Bytes: 50_000}, Request{Records: 10, Bytes: 1000}, true, 50_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w, err := NewSlidingWindow(tt.cfg)
				if err != nil {
					t.Fatal(err)
				}
				d := 10 * tt.cfg.Window
				as := admitAll(t, w, tt.req, d)
				size := tt.req.Records
				if tt.bytes {
					size = tt.req.Bytes
				}
				// Windows are closed on the right: the instant a window
				// ends belongs to it.
				win := func(at time.Duration) time.Duration {
					if at == 0 {
						return 0
					}
					return (at - 1) / tt.cfg.Window
				}
				perWindow := make([]int, 11)
				for _, a := range as {
					perWindow[win(a.at)] += size
				}
				for i, n := range perWindow[:10] {
					if n > tt.limit {
						t.Errorf("window %d admitted %d, above the limit %d", i, n, tt.limit)
					}
				}
				if first := perWindow[0]; first < tt.limit-size {
					t.Errorf("first window admitted %d, want the whole limit %d at once", first, tt.limit)
				}
				// Smooth: after the first window, no tenth of a window takes
				// much more than a tenth of the limit.
				tenth := tt.cfg.Window / 10
				slots := map[time.Duration]int{}
				for _, a := range as {
					if a.at >= tt.cfg.Window {
						slots[a.at/tenth] += size
					}
				}
				for slot, n := range slots {
					if n > tt.limit/10+2*size {
						t.Errorf("%v..%v admitted %d, a burst (a tenth of the limit is %d)", slot*tenth, (slot+1)*tenth, n, tt.limit/10)
					}
				}
				got := 0
				for _, n := range perWindow[:10] {
					got += n
				}
				want := 10 * tt.limit
				if dev := math.Abs(float64(got-want)) / float64(want); dev > 0.01 {
					t.Errorf("admitted %d in 10 windows, want %d (%.2f%% off)", got, want, dev*100)
				}
				t.Logf("admitted %d in 10 windows (want %d)", got, want)
			})
		})
	}
}

// TestPrecisionThroughComposites: wrapping a limiter in a Composite or a
// MultiTier costs no precision.
func TestPrecisionThroughComposites(t *testing.T) {
	mk := map[string]func(t *testing.T) Strategy{
		"composite of token bucket and looser window": func(t *testing.T) Strategy {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 100}))
			w := must(NewSlidingWindow(SlidingWindowConfig{Records: 5000}))
			return must(NewComposite(tb, w))
		},
		"multi-tier with a global token bucket": func(t *testing.T) Strategy {
			tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 100}))
			return must(NewMultiTier(Tiers{Global: tb, Partition: func(string, int32) Strategy {
				return must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 5000}))
			}}))
		},
	}
	for name, mk := range mk {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := mk(t)
				req := Request{Records: 10, Parts: []Part{{Topic: "a", Partition: 0, Records: 10}}}
				got := sum(admitAll(t, s, req, 10*time.Second), false)
				if want := 100 + 1000*10; math.Abs(float64(got-want)) > 0.01*10000 {
					t.Errorf("admitted %d, want %d ±1%%", got, want)
				}
			})
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTokenBucketOversized: a request larger than the burst passes once the
// bucket is full and leaves it in debt, which the next request waits out:
// the long-run rate holds and nothing deadlocks.
func TestTokenBucketOversized(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 100, RecordBurst: 100}))
		if !tb.TryAcquire(Request{Records: 10}) {
			t.Fatal("first request refused")
		}
		if tb.TryAcquire(Request{Records: 250}) {
			t.Fatal("oversized request admitted before the bucket is full")
		}
		start := time.Now()
		if err := tb.Acquire(t.Context(), Request{Records: 250}); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 100*time.Millisecond {
			t.Errorf("oversized request waited %v for a full bucket, want 100ms", el)
		}
		// Debt: 150 records beyond the burst, then 10 more for this one.
		start = time.Now()
		if err := tb.Acquire(t.Context(), Request{Records: 10}); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 1600*time.Millisecond {
			t.Errorf("next request waited %v, want 1.6s (150 records of debt + 10 at 100/s)", el)
		}
	})
}

// TestTokenBucketAllOrNothing: when the byte bucket refuses, no record
// tokens are taken (time is an input here: TryAcquireAt).
func TestTokenBucketAllOrNothing(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tb := must(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: 1, RecordBurst: 10, BytesPerSecond: 1, ByteBurst: 100}))
	if !tb.TryAcquireAt(now, Request{Records: 1, Bytes: 60}) {
		t.Fatal("first request refused")
	}
	for range 5 {
		if tb.TryAcquireAt(now, Request{Records: 1, Bytes: 60}) {
			t.Fatal("admitted 120 bytes out of a 100-byte bucket")
		}
	}
	if !tb.TryAcquireAt(now, Request{Records: 9}) {
		t.Error("refused requests took record tokens: 9 should be left")
	}
	if tb.TryAcquireAt(now, Request{Records: 1}) {
		t.Error("admitted an 11th record out of a 10-record bucket")
	}
	// One second later one record and one byte came back.
	if !tb.TryAcquireAt(now.Add(time.Second), Request{Records: 1, Bytes: 1}) {
		t.Error("refused after a refill")
	}
}
