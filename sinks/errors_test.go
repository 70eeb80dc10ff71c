package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spillway-io/spillway/sinks"
)

func TestClassify(t *testing.T) {
	base := errors.New("x")
	throttle := &sinks.ThrottledError{Err: base, RetryAfter: time.Second}
	cases := []struct {
		name string
		err  error
		want sinks.Class
	}{
		{"plain", base, sinks.Retryable},
		{"deadline", context.DeadlineExceeded, sinks.Retryable},
		{"request timeout", fmt.Errorf("%w: %w", sinks.ErrRequestTimeout, context.DeadlineExceeded), sinks.Retryable},
		{"fatal", sinks.AsFatal(base), sinks.Fatal},
		{"wrapped fatal", fmt.Errorf("post: %w", sinks.AsFatal(base)), sinks.Fatal},
		{"fatal in detailed", &sinks.DetailedError{Err: sinks.AsFatal(base)}, sinks.Fatal},
		{"throttled", throttle, sinks.Throttled},
		{"wrapped throttled", fmt.Errorf("post: %w", throttle), sinks.Throttled},
		{"fatal wins over throttled", sinks.AsFatal(throttle), sinks.Fatal},
		{"joined", errors.Join(base, sinks.AsFatal(base)), sinks.Fatal},
		{"resend", sinks.AsResend(base), sinks.Resend},
		{"resend of a throttled answer", sinks.AsResend(throttle), sinks.Throttled},
		{"the request's fatal answer", sinks.AsRequestError(sinks.AsFatal(base)), sinks.Fatal},
		{"the request's retryable answer", sinks.AsRequestError(base), sinks.Retryable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sinks.Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestErrorTypes(t *testing.T) {
	base := errors.New("400 bad request")
	for _, err := range []error{
		sinks.AsFatal(base),
		&sinks.ThrottledError{Err: base},
		&sinks.DetailedError{Err: base, Details: map[string]string{"k": "v"}},
	} {
		if err.Error() != base.Error() || !errors.Is(err, base) {
			t.Errorf("%T: Error() = %q, Is(base) = %v", err, err.Error(), errors.Is(err, base))
		}
	}
	if got := (&sinks.BatchError{}).Error(); got != "batch: no failed entries" {
		t.Errorf("empty BatchError = %q", got)
	}
	be := &sinks.BatchError{Failed: []sinks.EntryError{{Index: 3, Err: base}, {Index: 5, Err: base}}}
	if got, want := be.Error(), "batch: 2 entries failed, first: 400 bad request"; got != want {
		t.Errorf("BatchError = %q, want %q", got, want)
	}
	var target *sinks.BatchError
	if !errors.As(fmt.Errorf("send: %w", be), &target) || len(target.Failed) != 2 {
		t.Error("wrapped BatchError not found by errors.As")
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[sinks.Class]string{
		sinks.Retryable: "retryable", sinks.Throttled: "throttled", sinks.Fatal: "fatal", sinks.Class(7): "class(7)",
	} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}
