package sinks_test

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/sinks"
)

// fieldErrors flattens a Validate result into "path: msg" lines, failing
// the test on an error that is not a *field.Error.
func fieldErrors(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range field.Split(err) {
		var fe *field.Error
		if !errors.As(e, &fe) {
			t.Fatalf("%v (%T) is not a *field.Error", e, e)
		}
		out = append(out, fe.Error())
	}
	return out
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   sinks.Config
		want func(*sinks.Config)
	}{
		{"all zero", sinks.Config{}, func(c *sinks.Config) {}},
		{"buffer follows a large batch size", sinks.Config{MaxBatchSize: 20000}, func(c *sinks.Config) {
			c.MaxBatchSize, c.MaxBufferedRequests = 20000, 40000
		}},
		{"byte budget follows large batches", sinks.Config{MaxBatchBytes: 100 << 20}, func(c *sinks.Config) {
			c.MaxBatchBytes, c.MaxBufferedBytes = 100<<20, 100<<20
		}},
		{"record size follows small batches", sinks.Config{MaxBatchBytes: 1000}, func(c *sinks.Config) {
			c.MaxBatchBytes, c.MaxRecordBytes = 1000, 1000
		}},
		{"retry backoff follows a small cap", sinks.Config{Retry: sinks.RetryConfig{MaxRetryBackoff: 10 * time.Millisecond}}, func(c *sinks.Config) {
			c.Retry.RetryBackoff, c.Retry.MaxRetryBackoff = 10*time.Millisecond, 10*time.Millisecond
		}},
		{"huge batch size leaves the buffer default", sinks.Config{MaxBatchSize: math.MaxInt}, func(c *sinks.Config) {
			c.MaxBatchSize = math.MaxInt
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := sinks.Config{
				MaxBatchSize: 500, MaxBatchBytes: 4 << 20, MaxInFlightRequests: 8, MaxBufferedRequests: 10000,
				MaxBufferedBytes: 64 << 20, MaxTimeInBuffer: time.Second, MaxRecordBytes: 1 << 20, RequestTimeout: 30 * time.Second, Ordering: sinks.OrderPartition,
				Retry: sinks.RetryConfig{MaxAttempts: 10, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 10 * time.Second, IsolateBadRecords: sinks.IsolateBisect},
			}
			tc.want(&want)
			got := tc.in
			got.ApplyDefaults()
			if got != want {
				t.Errorf("ApplyDefaults:\n got %+v\nwant %+v", got, want)
			}
			again := got
			again.ApplyDefaults()
			if again != got {
				t.Errorf("ApplyDefaults is not idempotent: %+v then %+v", got, again)
			}
		})
	}
}

// TestConfigValidate checks each message word for word: they are the ones
// the pipeline file's loader reports under sink.writer and errors.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sinks.Config
		want []string // writer errors, then retry errors
	}{
		{"defaults", sinks.Config{}, nil},
		{"negatives", sinks.Config{MaxBatchSize: -1, MaxBatchBytes: -2, MaxInFlightRequests: -3, MaxTimeInBuffer: -time.Second, RequestTimeout: -time.Minute}, []string{
			"max_batch_size: must be positive, got -1",
			"max_batch_bytes: must be positive, got -2",
			"max_in_flight_requests: must be positive, got -3",
			"max_time_in_buffer: must be positive, got -1s",
			"request_timeout: must be positive, got -1m0s",
		}},
		{"buffer not above the batch", sinks.Config{MaxBatchSize: 100, MaxBufferedRequests: 100}, []string{
			"max_buffered_requests: must be greater than max_batch_size (100), got 100",
		}},
		{"byte budget below a batch", sinks.Config{MaxBatchBytes: 1000, MaxBufferedBytes: 999}, []string{
			"max_buffered_bytes: must be at least max_batch_bytes (1000), got 999",
		}},
		{"record above a batch", sinks.Config{MaxBatchBytes: 100, MaxRecordBytes: 101}, []string{
			"max_record_bytes: must not exceed max_batch_bytes (100), got 101",
		}},
		{"retries", sinks.Config{Retry: sinks.RetryConfig{MaxAttempts: -1, RetryBackoff: time.Minute}}, []string{
			"max_attempts: must be positive, got -1",
			"retry_backoff: must not exceed max_retry_backoff (10s), got 1m0s",
		}},
		{"negative backoffs", sinks.Config{Retry: sinks.RetryConfig{RetryBackoff: -time.Second, MaxRetryBackoff: -time.Second}}, []string{
			"retry_backoff: must be positive, got -1s",
			"max_retry_backoff: must be positive, got -1s",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.cfg
			got := append(fieldErrors(t, tc.cfg.Validate()), fieldErrors(t, tc.cfg.Retry.Validate())...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tc.want)
			}
			if tc.cfg != before {
				t.Errorf("Validate changed the config: %+v", tc.cfg)
			}
		})
	}
}

func TestBreakerConfig(t *testing.T) {
	var c sinks.BreakerConfig
	c.ApplyDefaults()
	want := sinks.BreakerConfig{FailureRatio: 0.5, MinRequests: 10, Interval: time.Minute, OpenTimeout: 30 * time.Second, HalfOpenRequests: 1}
	if c != want {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
	for _, tc := range []struct {
		name string
		cfg  sinks.BreakerConfig
		want []string
	}{
		{"defaults", sinks.BreakerConfig{}, nil},
		{"ratio above 1", sinks.BreakerConfig{FailureRatio: 1.5}, []string{"failure_ratio: must be in (0, 1], got 1.5"}},
		{"negative ratio", sinks.BreakerConfig{FailureRatio: -0.1}, []string{"failure_ratio: must be in (0, 1], got -0.1"}},
		{"NaN ratio", sinks.BreakerConfig{FailureRatio: math.NaN()}, []string{"failure_ratio: must be in (0, 1], got NaN"}},
		{"negatives", sinks.BreakerConfig{MinRequests: -1, HalfOpenRequests: -2, Interval: -time.Second, OpenTimeout: -time.Minute}, []string{
			"min_requests: must be positive, got -1",
			"half_open_requests: must be positive, got -2",
			"interval: must be positive, got -1s",
			"open_timeout: must be positive, got -1m0s",
		}},
		{"too many", sinks.BreakerConfig{MinRequests: math.MaxUint32 + 1}, []string{"min_requests: must be at most 4294967295, got 4294967296"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fieldErrors(t, tc.cfg.Validate()); !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	t.Run("the writer names the section", func(t *testing.T) {
		_, err := sinks.NewWriter(newSink(), sinks.Config{}, sinks.WithBreaker(sinks.BreakerConfig{FailureRatio: 2}))
		if got := fieldErrors(t, errors.Unwrap(err)); !slices.Equal(got, []string{"circuit_breaker.failure_ratio: must be in (0, 1], got 2"}) {
			t.Errorf("NewWriter: %v", err)
		}
	})
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[sinks.BreakerState]string{
		sinks.BreakerNone: "none", sinks.BreakerClosed: "closed", sinks.BreakerHalfOpen: "half-open", sinks.BreakerOpen: "open",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
	w, err := sinks.NewWriter(newSink(), sinks.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.BreakerState(); got != sinks.BreakerNone {
		t.Errorf("BreakerState without a breaker = %v, want none", got)
	}
	w, err = sinks.NewWriter(newSink(), sinks.Config{}, sinks.WithBreaker(sinks.BreakerConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := w.BreakerState(); got != sinks.BreakerClosed {
		t.Errorf("BreakerState of a new breaker = %v, want closed", got)
	}
}
