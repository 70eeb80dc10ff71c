package generate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sources/generate"
)

// call is one emit: the batch and the (fake, under synctest) time it came.
type call struct {
	at   time.Time
	recs []pipeline.Record
}

// recorder is an Emit keeping every batch.
type recorder struct {
	mu    sync.Mutex
	calls []call
	// then, if set, runs after a batch was kept; its error is emit's.
	then func(ctx context.Context, n int) error
}

func (r *recorder) emit(ctx context.Context, recs []pipeline.Record) error {
	r.mu.Lock()
	r.calls = append(r.calls, call{at: time.Now(), recs: recs})
	n := len(r.calls)
	r.mu.Unlock()
	if r.then != nil {
		return r.then(ctx, n)
	}
	return nil
}

func (r *recorder) records() []pipeline.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []pipeline.Record
	for _, c := range r.calls {
		all = append(all, c.recs...)
	}
	return all
}

func mustNew(t *testing.T, cfg generate.Config) *generate.Source {
	t.Helper()
	s, err := generate.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return s
}

func TestCount(t *testing.T) {
	tests := []struct {
		count     int64
		batchSize int
	}{
		{1, 0}, {499, 0}, {500, 0}, {501, 0}, {1234, 0}, {10, 3}, {9, 3}, {7, 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("count=%d,batch=%d", tc.count, tc.batchSize), func(t *testing.T) {
			s := mustNew(t, generate.Config{Count: tc.count, BatchSize: tc.batchSize})
			var r recorder
			if err := s.Run(t.Context(), r.emit); err != nil {
				t.Fatalf("Run: %v", err)
			}
			limit := tc.batchSize
			if limit == 0 {
				limit = 500
			}
			for i, c := range r.calls {
				if len(c.recs) == 0 || len(c.recs) > limit {
					t.Errorf("batch %d has %d records, want 1..%d", i, len(c.recs), limit)
				}
			}
			recs := r.records()
			if int64(len(recs)) != tc.count {
				t.Fatalf("emitted %d records, want %d", len(recs), tc.count)
			}
			for i, rec := range recs {
				if rec.Origin != (pipeline.Origin{Topic: "generate", Offset: int64(i)}) {
					t.Fatalf("record %d: origin %+v, want generate/0@%d", i, rec.Origin, i)
				}
				if rec.Timestamp.IsZero() {
					t.Fatalf("record %d has no timestamp", i)
				}
			}

			if d := s.Done(); d != 0 {
				t.Errorf("Done before acks: %d, want 0", d)
			}
			// Acknowledge the last batch first, as concurrent requests may.
			for i := len(r.calls) - 1; i > 0; i-- {
				pipeline.AckAll(r.calls[i].recs)
			}
			if d := s.Done(); d != 0 {
				t.Errorf("Done with the first batch pending: %d, want 0", d)
			}
			pipeline.AckAll(r.calls[0].recs)
			if d := s.Done(); d != tc.count {
				t.Errorf("Done after acks: %d, want %d", d, tc.count)
			}
		})
	}
}

func TestValues(t *testing.T) {
	for _, size := range []int{0, 48, 100, 1000, 4096} {
		t.Run(fmt.Sprintf("value_bytes=%d", size), func(t *testing.T) {
			want := size
			if want == 0 {
				want = 100
			}
			var r recorder
			if err := mustNew(t, generate.Config{Count: 1500, ValueBytes: size}).Run(t.Context(), r.emit); err != nil {
				t.Fatal(err)
			}
			for i, rec := range r.records() {
				if len(rec.Value) != want {
					t.Fatalf("record %d: value of %d bytes, want %d", i, len(rec.Value), want)
				}
				checkValue(t, rec.Value, int64(i))
			}
		})
	}
}

// TestValueSmallSize: below the size of the fixed members the value cannot
// be padded down, but stays valid JSON with the right id.
func TestValueSmallSize(t *testing.T) {
	for _, size := range []int{0, 1, 10, 27} {
		for _, i := range []int64{0, 7, 123456789} {
			v := generate.Value(i, size)
			checkValue(t, v, i)
			if minimal := fmt.Sprintf(`{"id":%d,"amount":%d,"pad":""}`, i, i%1000); string(v) != minimal && len(v) != size {
				t.Errorf("Value(%d, %d) = %s: neither %d bytes nor minimal", i, size, v, size)
			}
		}
	}
}

func checkValue(t *testing.T, v []byte, id int64) {
	t.Helper()
	var got struct {
		ID     *int64  `json:"id"`
		Amount *int64  `json:"amount"`
		Pad    *string `json:"pad"`
	}
	dec := json.NewDecoder(strings.NewReader(string(v)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("value %s is not the expected JSON: %v", v, err)
	}
	if got.ID == nil || *got.ID != id || got.Amount == nil || *got.Amount != id%1000 || got.Pad == nil {
		t.Fatalf("value %s: want id %d, amount %d and a pad", v, id, id%1000)
	}
	if strings.Trim(*got.Pad, "x") != "" {
		t.Fatalf("value %s: pad is not all x", v)
	}
}

func TestKeysCycle(t *testing.T) {
	tests := []struct {
		keys, want int
	}{{1, 1}, {3, 3}, {0, 1000}, {2500, 2500}}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("keys=%d", tc.keys), func(t *testing.T) {
			var r recorder
			count := int64(2*tc.want + 1)
			if err := mustNew(t, generate.Config{Count: count, Keys: tc.keys}).Run(t.Context(), r.emit); err != nil {
				t.Fatal(err)
			}
			distinct := map[string]bool{}
			for i, rec := range r.records() {
				if want := fmt.Sprintf("key-%d", i%tc.want); string(rec.Key) != want {
					t.Fatalf("record %d: key %q, want %q", i, rec.Key, want)
				}
				distinct[string(rec.Key)] = true
			}
			if len(distinct) != tc.want {
				t.Errorf("%d distinct keys, want %d", len(distinct), tc.want)
			}
		})
	}
}

func TestTopic(t *testing.T) {
	var r recorder
	if err := mustNew(t, generate.Config{Count: 3, Topic: "demo"}).Run(t.Context(), r.emit); err != nil {
		t.Fatal(err)
	}
	for _, rec := range r.records() {
		if rec.Origin.Topic != "demo" || rec.Origin.Partition != 0 {
			t.Fatalf("origin %+v, want topic demo partition 0", rec.Origin)
		}
	}
}

// TestRate runs on synctest's fake clock: the limiter waits for fake time,
// so the elapsed times are exact and the test takes no real time.
func TestRate(t *testing.T) {
	tests := []struct {
		rate      float64
		count     int64
		batchSize int
		want      time.Duration
	}{
		{rate: 1000, count: 5000, want: 5 * time.Second},
		{rate: 1000, count: 5000, batchSize: 50, want: 5 * time.Second},
		{rate: 250, count: 1000, batchSize: 1000, want: 4 * time.Second},
		{rate: 10, count: 30, want: 3 * time.Second},
		{rate: 0.5, count: 3, want: 6 * time.Second},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("rate=%g,count=%d,batch=%d", tc.rate, tc.count, tc.batchSize), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := mustNew(t, generate.Config{Rate: tc.rate, Count: tc.count, BatchSize: tc.batchSize})
				var r recorder
				start := time.Now()
				if err := s.Run(t.Context(), r.emit); err != nil {
					t.Fatalf("Run: %v", err)
				}
				elapsed := time.Since(start)
				if d := elapsed - tc.want; d.Abs() > tc.want/100 {
					t.Errorf("%d records at %g/s took %v, want %v ±1%%", tc.count, tc.rate, elapsed, tc.want)
				}
				if n := int64(len(r.records())); n != tc.count {
					t.Errorf("emitted %d records, want %d", n, tc.count)
				}
				// The rate holds at every point, not just on average: by
				// each emit no more than rate × elapsed records (plus one
				// for rounding) have been handed over. A burst of a whole
				// batch at a low rate would break this.
				var sum int
				for _, c := range r.calls {
					sum += len(c.recs)
					if limit := tc.rate*c.at.Sub(start).Seconds() + 1; float64(sum) > limit {
						t.Fatalf("%d records emitted after %v, more than %g at %g/s", sum, c.at.Sub(start), limit, tc.rate)
					}
				}
			})
		})
	}
}

func TestRateUnlimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, rate := range []float64{0} { // +Inf is rejected: see TestNewValidation
			start := time.Now()
			var r recorder
			if err := mustNew(t, generate.Config{Rate: rate, Count: 10_000}).Run(t.Context(), r.emit); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("rate %g: took %v of fake time, want no waiting", rate, d)
			}
		}
	})
}

func TestCancel(t *testing.T) {
	t.Run("in emit", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := recorder{then: func(ctx context.Context, n int) error {
			if n == 3 {
				cancel()
			}
			return ctx.Err()
		}}
		if err := mustNew(t, generate.Config{}).Run(ctx, r.emit); err != nil {
			t.Errorf("Run: %v, want nil", err)
		}
		if len(r.calls) != 3 {
			t.Errorf("%d emits, want 3: none after cancel", len(r.calls))
		}
	})
	t.Run("while waiting for the rate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			var r recorder
			go func() { done <- mustNew(t, generate.Config{Rate: 1}).Run(ctx, r.emit) }()
			time.Sleep(2500 * time.Millisecond)
			synctest.Wait()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v, want nil", err)
			}
			if n := len(r.records()); n != 2 {
				t.Errorf("%d records in 2.5s at 1/s, want 2", n)
			}
		})
	})
	t.Run("deadline before the next batch", func(t *testing.T) {
		// The limiter knows the deadline comes before the next tokens;
		// Run must still not end, as if the count was reached, before
		// ctx does.
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3500*time.Millisecond)
			defer cancel()
			start := time.Now()
			var r recorder
			if err := mustNew(t, generate.Config{Rate: 1, Count: 10, BatchSize: 1}).Run(ctx, r.emit); err != nil {
				t.Errorf("Run: %v, want nil", err)
			}
			if d := time.Since(start); d != 3500*time.Millisecond {
				t.Errorf("Run returned after %v, want at the deadline 3.5s", d)
			}
			if n := len(r.records()); n != 3 {
				t.Errorf("%d records in 3.5s at 1/s, want 3", n)
			}
		})
	})
	t.Run("unbounded count", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := recorder{then: func(ctx context.Context, n int) error {
			if n == 50 {
				cancel()
			}
			return nil // a sink that does not look at ctx
		}}
		if err := mustNew(t, generate.Config{BatchSize: 10}).Run(ctx, r.emit); err != nil {
			t.Errorf("Run: %v, want nil", err)
		}
	})
}

func TestEmitError(t *testing.T) {
	boom := errors.New("boom")
	r := recorder{then: func(context.Context, int) error { return boom }}
	if err := mustNew(t, generate.Config{Count: 1000}).Run(t.Context(), r.emit); !errors.Is(err, boom) {
		t.Errorf("Run: %v, want %v", err, boom)
	}
	if len(r.calls) != 1 {
		t.Errorf("%d emits, want 1", len(r.calls))
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name  string
		cfg   generate.Config
		field string // named in the error; "" means valid
	}{
		{name: "zero", cfg: generate.Config{}},
		{name: "all set", cfg: generate.Config{Count: 1, ValueBytes: 10, Keys: 1, Rate: 0.1, BatchSize: 1, Topic: "t"}},
		{name: "negative count", cfg: generate.Config{Count: -1}, field: "count"},
		{name: "negative value bytes", cfg: generate.Config{ValueBytes: -1}, field: "value_bytes"},
		{name: "negative keys", cfg: generate.Config{Keys: -5}, field: "keys"},
		{name: "negative rate", cfg: generate.Config{Rate: -0.5}, field: "rate"},
		{name: "negative infinite rate", cfg: generate.Config{Rate: math.Inf(-1)}, field: "rate"},
		{name: "infinite rate", cfg: generate.Config{Rate: math.Inf(1)}, field: "rate"},
		{name: "NaN rate", cfg: generate.Config{Rate: math.NaN()}, field: "rate"},
		{name: "negative batch size", cfg: generate.Config{BatchSize: -1}, field: "batch_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := generate.New(tc.cfg)
			if tc.field == "" {
				if err != nil || s == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New: no error")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestClose(t *testing.T) {
	if err := mustNew(t, generate.Config{}).Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}
}
