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
// cannot wait forever. It is a backpressure.Gate (Admit, Take, Watch), so it
// can also be a member of a backpressure.Composite, and
// backpressure.Acquire is its blocking loop. Safe for concurrent use.
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

// admitLocked reports whether req fits the window that holds now, or how
// long until the next window.
func (q *quota) admitLocked(now time.Time, req backpressure.Request) (bool, time.Duration) {
	if now.Sub(q.start) >= q.window {
		q.start, q.used = now, 0
	}
	if q.used+req.Records <= q.limit || q.used == 0 {
		return true, 0
	}
	return false, q.start.Add(q.window).Sub(now)
}

// Admit implements backpressure.Gate; only time frees quota.
func (q *quota) Admit(now time.Time, req backpressure.Request) (bool, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.admitLocked(now, req)
}

// Take implements backpressure.Gate: it charges req to the window of now.
func (q *quota) Take(now time.Time, req backpressure.Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.admitLocked(now, req) // roll the window over if due
	q.used += req.Records
}

// Watch implements backpressure.Gate: no event but time changes a quota.
func (q *quota) Watch(backpressure.Request, chan<- struct{}, bool) {}

// TryAcquireAt admits and charges req at now if it fits.
func (q *quota) TryAcquireAt(now time.Time, req backpressure.Request) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ok, _ := q.admitLocked(now, req)
	if ok {
		q.used += req.Records
	}
	return ok
}

// TryAcquire implements backpressure.Strategy; it never blocks.
func (q *quota) TryAcquire(req backpressure.Request) bool { return q.TryAcquireAt(q.now(), req) }

// Acquire waits for the window that has room, or for ctx.
func (q *quota) Acquire(ctx context.Context, req backpressure.Request) error {
	return backpressure.Acquire(ctx, q, req)
}

// Complete implements backpressure.Strategy: a fixed quota does not adapt.
func (q *quota) Complete(backpressure.Result) {}

// MaxBatchSize keeps batches within one window's quota.
func (q *quota) MaxBatchSize() int { return q.limit }
