package config

import (
	"math"
	"time"
)

// ApplyDefaults replaces each zero field by the default documented on it
// and upper-cases sink.http.method. Defaults that depend on another field
// (max_buffered_requests, max_record_bytes, retry_backoff, sink.http.timeout)
// follow that field's final value. It is idempotent and does not validate.
func (p *Pipeline) ApplyDefaults() {
	orDur(&p.ShutdownTimeout, 30*time.Second)
	if p.Brokers.Embedded() {
		orInt(&p.Embedded.Partitions, 4)
	}

	if k := p.Source.Kafka; k != nil {
		orStr(&k.StartOffset, "earliest")
		orInt(&k.Partitions, 4)
		orDur(&k.CheckpointInterval, 5*time.Second)
		orDur(&k.RevokeTimeout, 10*time.Second)
		orDur(&k.SessionTimeout, 45*time.Second)
		orDur(&k.ConnectTimeout, 10*time.Second)
		orInt(&k.MaxPollRecords, 5000)
	}
	if g := p.Source.Generate; g != nil {
		orInt(&g.ValueBytes, 100)
		orInt(&g.Keys, 1000)
	}

	if cb := p.Sink.CircuitBreaker; cb != nil {
		if cb.FailureRatio == 0 {
			cb.FailureRatio = 0.5
		}
		orInt(&cb.MinRequests, 10)
		orInt(&cb.HalfOpenRequests, 1)
		orDur(&cb.Interval, 60*time.Second)
		orDur(&cb.OpenTimeout, 30*time.Second)
	}

	w := &p.Sink.Writer
	orInt(&w.MaxBatchSize, 500)
	orInt(&w.MaxBatchBytes, 4<<20)
	orInt(&w.MaxInFlightRequests, 8)
	buffered := 10000
	if w.MaxBatchSize > 0 && w.MaxBatchSize <= math.MaxInt/2 {
		buffered = max(buffered, 2*w.MaxBatchSize)
	}
	orInt(&w.MaxBufferedRequests, buffered)
	orInt(&w.MaxBufferedBytes, max(64<<20, w.MaxBatchBytes))
	orDur(&w.MaxTimeInBuffer, time.Second)
	record := 1 << 20
	if w.MaxBatchBytes > 0 {
		record = min(record, w.MaxBatchBytes)
	}
	orInt(&w.MaxRecordBytes, record)
	orDur(&w.RequestTimeout, 30*time.Second)

	if h := p.Sink.HTTP; h != nil {
		h.ApplyDefaults()
		orDur(&h.Timeout, w.RequestTimeout)
	}

	e := &p.Errors
	orStr(&e.Tolerance, "none")
	orInt(&e.MaxAttempts, 10)
	orDur(&e.MaxRetryBackoff, 10*time.Second)
	backoff := 100 * time.Millisecond
	if e.MaxRetryBackoff > 0 {
		backoff = min(backoff, e.MaxRetryBackoff)
	}
	orDur(&e.RetryBackoff, backoff)

	orStr(&p.Log.Level, "info")
	orStr(&p.Log.Format, "json")
	orStr(&p.Log.KafkaLevel, "warn")
}

func orInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

func orDur(v *time.Duration, def time.Duration) {
	if *v == 0 {
		*v = def
	}
}

func orStr(v *string, def string) {
	if *v == "" {
		*v = def
	}
}

// clone copies p deeply enough that ApplyDefaults on the copy leaves p as
// it is.
func (p *Pipeline) clone() *Pipeline {
	c := *p
	c.Source.Kafka = clonePtr(p.Source.Kafka)
	c.Source.Generate = clonePtr(p.Source.Generate)
	c.Sink.HTTP = clonePtr(p.Sink.HTTP)
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
