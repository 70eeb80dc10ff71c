package backpressure_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/spillway-io/spillway/backpressure"
)

// maxRequests is a strategy written outside package backpressure: at most
// max requests in flight. Admit, Take and Watch make it a Gate, so it can
// be a member of a Composite or a tier of a MultiTier; a Signal wakes
// waiters and backpressure.Acquire is its blocking loop.
// strategytest.Run checks such a strategy like the built-in ones.
type maxRequests struct {
	mu      sync.Mutex
	max, n  int
	changed backpressure.Signal
}

func (m *maxRequests) TryAcquire(req backpressure.Request) bool {
	return m.TryAcquireAt(time.Now(), req)
}

func (m *maxRequests) TryAcquireAt(_ time.Time, _ backpressure.Request) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n >= m.max {
		return false
	}
	m.n++
	return true
}

func (m *maxRequests) Acquire(ctx context.Context, req backpressure.Request) error {
	return backpressure.Acquire(ctx, m, req)
}

func (m *maxRequests) Complete(backpressure.Result) {
	m.mu.Lock()
	m.n--
	m.mu.Unlock()
	m.changed.Notify() // a slot is free: wake waiters
}

func (m *maxRequests) MaxBatchSize() int { return 0 }

func (m *maxRequests) Admit(time.Time, backpressure.Request) (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n >= m.max {
		return false, backpressure.Never // only a completion helps
	}
	return true, 0
}

func (m *maxRequests) Take(time.Time, backpressure.Request) {
	m.mu.Lock()
	m.n++
	m.mu.Unlock()
}

func (m *maxRequests) Watch(_ backpressure.Request, ch chan<- struct{}, on bool) {
	m.changed.Watch(ch, on)
}

// A strategy from outside the package inside a Composite, beside a token
// bucket: both must admit, neither is charged for a request the other
// refuses, and a waiting Acquire wakes on the outsider's completion.
func ExampleGate() {
	limit := &maxRequests{max: 2}
	tb, _ := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1, RecordBurst: 3})
	c, err := backpressure.NewComposite(tb, limit)
	if err != nil {
		panic(err)
	}
	req := backpressure.Request{Records: 1}
	fmt.Println(c.TryAcquire(req), c.TryAcquire(req), c.TryAcquire(req)) // the third: 2 in flight
	fmt.Println("its token is still there:", !tb.ShouldBlock(req))       // the bucket was not charged for the refusal

	done := make(chan error)
	go func() { done <- c.Acquire(context.Background(), req) }()
	c.Complete(backpressure.Result{Request: req}) // frees a slot: the waiter passes
	fmt.Println("acquired after a completion:", <-done)
	// Output:
	// true true false
	// its token is still there: true
	// acquired after a completion: <nil>
}
