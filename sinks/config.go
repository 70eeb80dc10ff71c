package sinks

import (
	"cmp"
	"errors"
	"math"
	"time"

	"github.com/spillway-io/spillway/field"
)

// Config holds the writer's settings, the sink.writer section of a
// pipeline file. Zero values mean the default given on each field;
// ApplyDefaults is the one place those defaults live.
type Config struct {
	// MaxBatchSize is the most records per request; default 500.
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxBatchBytes is the most payload bytes per request; default 4 MiB.
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// MaxInFlightRequests is the most concurrent requests; default 8.
	MaxInFlightRequests int `yaml:"max_in_flight_requests"`
	// MaxBufferedRequests is the records held (buffered or in flight)
	// before Write blocks; default 10000, or 2×max_batch_size if that is
	// more; must exceed max_batch_size.
	MaxBufferedRequests int `yaml:"max_buffered_requests"`
	// MaxBufferedBytes is the bytes held before Write blocks and the
	// source pauses; default 64 MiB, or max_batch_bytes if that is more;
	// at least max_batch_bytes.
	MaxBufferedBytes int `yaml:"max_buffered_bytes"`
	// MaxTimeInBuffer flushes a partial batch after this age; default 1s.
	MaxTimeInBuffer time.Duration `yaml:"max_time_in_buffer"`
	// MaxRecordBytes is the largest record sent; larger ones are
	// dead-lettered. Default 1 MiB, or max_batch_bytes if that is less; at
	// most max_batch_bytes.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// RequestTimeout bounds each request; default 30s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// FailOnTimeout makes a timed-out request fail the job instead of
	// being retried.
	FailOnTimeout bool `yaml:"fail_on_timeout"`
	// Ordering is what the destination sees in order: OrderPartition
	// (default), OrderKey or OrderNone (see each).
	Ordering string `yaml:"ordering"`
	// Retry is how failed entries are retried. Its keys sit in the
	// pipeline file's errors section, not under sink.writer, so Validate
	// leaves it to Retry.Validate; ApplyDefaults applies its defaults.
	Retry RetryConfig `yaml:"-"`
}

// RetryConfig is how the writer retries failed entries: the max_attempts,
// retry_backoff and max_retry_backoff keys of a pipeline file's errors
// section. Zero values mean the default given on each field.
type RetryConfig struct {
	// MaxAttempts is the deliveries tried per record before it is
	// dead-lettered (throttled attempts do not count); default 10.
	MaxAttempts int `yaml:"max_attempts"`
	// RetryBackoff is the first retry delay, doubled per attempt with
	// jitter; default 100ms, or max_retry_backoff if that is less; at most
	// max_retry_backoff.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxRetryBackoff caps the retry delay; default 10s.
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"`
	// IsolateBadRecords is what the writer does when the destination
	// refuses a whole request with a fatal answer that does not say which
	// records are bad: IsolateBisect (default) splits it until only the
	// refused records are left, IsolateNone dead-letters the whole batch.
	IsolateBadRecords string `yaml:"isolate_bad_records"`
}

// Values of RetryConfig.IsolateBadRecords.
const (
	IsolateBisect = "bisect"
	IsolateNone   = "none"
)

// ApplyDefaults replaces each zero field by its default, Retry's included.
// Defaults that depend on another field follow that field's final value.
// It is idempotent and does not validate.
func (c *Config) ApplyDefaults() {
	c.MaxBatchSize = cmp.Or(c.MaxBatchSize, 500)
	c.MaxBatchBytes = cmp.Or(c.MaxBatchBytes, 4<<20)
	c.MaxInFlightRequests = cmp.Or(c.MaxInFlightRequests, 8)
	buffered := 10000
	if c.MaxBatchSize > 0 && c.MaxBatchSize <= math.MaxInt/2 {
		buffered = max(buffered, 2*c.MaxBatchSize)
	}
	c.MaxBufferedRequests = cmp.Or(c.MaxBufferedRequests, buffered)
	c.MaxBufferedBytes = cmp.Or(c.MaxBufferedBytes, max(64<<20, c.MaxBatchBytes))
	c.MaxTimeInBuffer = cmp.Or(c.MaxTimeInBuffer, time.Second)
	record := 1 << 20
	if c.MaxBatchBytes > 0 {
		record = min(record, c.MaxBatchBytes)
	}
	c.MaxRecordBytes = cmp.Or(c.MaxRecordBytes, record)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, 30*time.Second)
	c.Ordering = cmp.Or(c.Ordering, OrderPartition)
	c.Retry.ApplyDefaults()
}

// Validate reports every invalid writer setting, each a *field.Error with
// a path relative to sink.writer, joined with errors.Join. Zero fields
// count as their defaults. Retry is not checked: see Config.Retry.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.Positive("max_batch_size", c.MaxBatchSize)
	l.Positive("max_batch_bytes", c.MaxBatchBytes)
	l.Positive("max_in_flight_requests", c.MaxInFlightRequests)
	l.Positive("max_buffered_requests", c.MaxBufferedRequests)
	l.Positive("max_buffered_bytes", c.MaxBufferedBytes)
	l.PositiveDur("max_time_in_buffer", c.MaxTimeInBuffer)
	l.Positive("max_record_bytes", c.MaxRecordBytes)
	l.PositiveDur("request_timeout", c.RequestTimeout)
	l.OneOf("ordering", c.Ordering, OrderPartition, OrderKey, OrderNone)
	if c.MaxBatchSize > 0 && c.MaxBufferedRequests > 0 && c.MaxBufferedRequests <= c.MaxBatchSize {
		l.Add("max_buffered_requests", "must be greater than max_batch_size (%d), got %d", c.MaxBatchSize, c.MaxBufferedRequests)
	}
	if c.MaxBatchBytes > 0 && c.MaxBufferedBytes > 0 && c.MaxBufferedBytes < c.MaxBatchBytes {
		l.Add("max_buffered_bytes", "must be at least max_batch_bytes (%d), got %d", c.MaxBatchBytes, c.MaxBufferedBytes)
	}
	if c.MaxBatchBytes > 0 && c.MaxRecordBytes > c.MaxBatchBytes {
		l.Add("max_record_bytes", "must not exceed max_batch_bytes (%d), got %d", c.MaxBatchBytes, c.MaxRecordBytes)
	}
	return l.Err()
}

// ApplyDefaults replaces each zero field by its default. It is idempotent
// and does not validate.
func (c *RetryConfig) ApplyDefaults() {
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 10)
	c.MaxRetryBackoff = cmp.Or(c.MaxRetryBackoff, 10*time.Second)
	backoff := 100 * time.Millisecond
	if c.MaxRetryBackoff > 0 {
		backoff = min(backoff, c.MaxRetryBackoff)
	}
	c.RetryBackoff = cmp.Or(c.RetryBackoff, backoff)
	c.IsolateBadRecords = cmp.Or(c.IsolateBadRecords, IsolateBisect)
}

// Validate reports every invalid retry setting, each a *field.Error with a
// path relative to the errors section, joined with errors.Join. Zero
// fields count as their defaults.
func (c RetryConfig) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.Positive("max_attempts", c.MaxAttempts)
	l.PositiveDur("retry_backoff", c.RetryBackoff)
	l.PositiveDur("max_retry_backoff", c.MaxRetryBackoff)
	if c.RetryBackoff > 0 && c.MaxRetryBackoff > 0 && c.RetryBackoff > c.MaxRetryBackoff {
		l.Add("retry_backoff", "must not exceed max_retry_backoff (%s), got %s", c.MaxRetryBackoff, c.RetryBackoff)
	}
	l.OneOf("isolate_bad_records", c.IsolateBadRecords, IsolateBisect, IsolateNone)
	return l.Err()
}

// validate checks c (defaults applied) and its Retry together, for
// NewWriter.
func (c Config) validate() error {
	return errors.Join(c.Validate(), c.Retry.Validate())
}
