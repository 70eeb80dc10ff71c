package main

import (
	"context"
	"sync"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/registry"
)

// QuotaConfig is sink.rate_limit with kind: quota.
type QuotaConfig struct {
	Records int           `yaml:"records"` // records admitted per window; required
	Window  time.Duration `yaml:"window"`  // default 1s
}

// ApplyDefaults fills the zero fields.
func (c *QuotaConfig) ApplyDefaults() {
	if c.Window == 0 {
		c.Window = time.Second
	}
}

// Validate reports every invalid field with its path.
func (c QuotaConfig) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.Positive("records", c.Records)
	l.PositiveDur("window", c.Window)
	return l.Err()
}

// quota admits at most limit records per fixed window: the simplest rate
// limit an API documents ("5,000 records per second"). A request larger
// than the whole quota is admitted alone at the start of a window, so it
// cannot wait forever. Safe for concurrent use.
type quota struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	start time.Time // start of the current window
	used  int
}

func newQuota(c *QuotaConfig, _ registry.Env) (backpressure.Strategy, error) {
	return &quota{limit: c.Records, window: c.Window, now: time.Now}, nil
}

// admit takes req if it fits the current window, or says how long until
// the next one.
func (q *quota) admit(req backpressure.Request) (bool, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	if now.Sub(q.start) >= q.window {
		q.start, q.used = now, 0
	}
	if q.used+req.Records <= q.limit || q.used == 0 {
		q.used += req.Records
		return true, 0
	}
	return false, q.start.Add(q.window).Sub(now)
}

// TryAcquire implements backpressure.Strategy; it never blocks.
func (q *quota) TryAcquire(req backpressure.Request) bool {
	ok, _ := q.admit(req)
	return ok
}

// Acquire waits for the window that has room, or for ctx.
func (q *quota) Acquire(ctx context.Context, req backpressure.Request) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, wait := q.admit(req)
		if ok {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Complete implements backpressure.Strategy: a fixed quota does not adapt.
func (q *quota) Complete(backpressure.Result) {}

// MaxBatchSize keeps batches within one window's quota.
func (q *quota) MaxBatchSize() int { return q.limit }
