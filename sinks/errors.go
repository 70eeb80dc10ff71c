package sinks

import (
	"errors"
	"fmt"
	"time"
)

// Class says what the writer does with a failed entry.
type Class int

const (
	// Retryable entries go back to the front of the buffer with backoff.
	Retryable Class = iota
	// Throttled entries are retryable and the sink asked to slow down.
	Throttled
	// Fatal entries are never retried: they are dead-lettered or fail the
	// job, per errors.tolerance.
	Fatal
	// Misconfigured says the request itself is wrong for every record (bad
	// credentials, an unknown endpoint, headers the destination refuses):
	// the job stops with the error, whatever errors.tolerance says, and
	// the records are neither acknowledged nor dead-lettered, so they are
	// delivered once the configuration is fixed.
	Misconfigured
	// Resend entries were not delivered through no fault of their own:
	// the destination refused their request because of other entries of
	// the batch, which the same *BatchError names as Fatal. They are sent
	// again, without those, at once: no backoff, no attempt used up, not
	// counted as a failure of the destination.
	Resend
)

func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Throttled:
		return "throttled"
	case Fatal:
		return "fatal"
	case Misconfigured:
		return "misconfigured"
	case Resend:
		return "resend"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// FatalError marks an error as not worth retrying (a 4xx answer, a record
// the destination will never accept).
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// AsFatal wraps err so the writer does not retry it. AsFatal(nil) is nil.
func AsFatal(err error) error {
	if err == nil {
		return nil
	}
	return &FatalError{Err: err}
}

// ConfigError says a request failed because of how the sink is configured,
// not because of its records (see Misconfigured).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// AsConfigError wraps err as a configuration fault. AsConfigError(nil) is
// nil.
func AsConfigError(err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Err: err}
}

// ResendError marks an entry that was not delivered only because its
// request was refused for other entries (see Resend).
type ResendError struct{ Err error }

func (e *ResendError) Error() string { return e.Err.Error() }
func (e *ResendError) Unwrap() error { return e.Err }

// AsResend wraps err as a Resend entry error. AsResend(nil) is nil.
func AsResend(err error) error {
	if err == nil {
		return nil
	}
	return &ResendError{Err: err}
}

// RequestError marks an entry of a *BatchError that failed with its
// request as a whole, together with the other entries sharing the same
// error: the answer was about the request, not about the entry (a sink
// that left some records out of a request lists the rest this way when
// the request fails). A Fatal one is bisected like a whole-batch failure.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// AsRequestError wraps err as a RequestError. AsRequestError(nil) is nil.
func AsRequestError(err error) error {
	if err == nil {
		return nil
	}
	return &RequestError{Err: err}
}

// ThrottledError says the destination is overloaded (HTTP 429/503). The
// entries are retried no sooner than RetryAfter (when positive).
type ThrottledError struct {
	Err        error
	RetryAfter time.Duration
	// Unavailable says the destination is down or overloaded as a whole
	// (HTTP 503), not limiting this client's rate (429): the request's
	// size is not the problem, so a strategy does not shrink batches.
	Unavailable bool
}

func (e *ThrottledError) Error() string { return e.Err.Error() }
func (e *ThrottledError) Unwrap() error { return e.Err }

// DetailedError carries extra dead-letter headers (HTTP status, body
// excerpt) alongside the error.
type DetailedError struct {
	Err     error
	Details map[string]string
}

func (e *DetailedError) Error() string { return e.Err.Error() }
func (e *DetailedError) Unwrap() error { return e.Err }

// Classify returns the class of a sink error. Unknown errors, timeouts and
// connection errors are retryable.
func Classify(err error) Class {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return Misconfigured
	}
	var fe *FatalError
	if errors.As(err, &fe) {
		return Fatal
	}
	var te *ThrottledError
	if errors.As(err, &te) {
		return Throttled
	}
	var re *ResendError
	if errors.As(err, &re) {
		return Resend
	}
	return Retryable
}

func retryAfter(err error) time.Duration {
	var te *ThrottledError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}

func details(err error) map[string]string {
	var de *DetailedError
	if errors.As(err, &de) {
		return de.Details
	}
	return nil
}

// EntryError is the failure of one entry of a batch.
type EntryError struct {
	Index int // position in the batch passed to WriteBatch
	Err   error
}

// BatchError reports a partial failure: the listed entries failed, every
// other entry of the batch was delivered. Entries that failed together, as
// one request, share one error value. An entry that was not delivered
// only because the destination refused its request for other, Fatal,
// entries is listed with a *ResendError (class Resend).
type BatchError struct {
	Failed []EntryError
}

func (e *BatchError) Error() string {
	if len(e.Failed) == 0 {
		return "batch: no failed entries"
	}
	return fmt.Sprintf("batch: %d entries failed, first: %v", len(e.Failed), e.Failed[0].Err)
}

// ErrRequestTimeout is reported when a request exceeded request_timeout.
var ErrRequestTimeout = errors.New("request timed out")
