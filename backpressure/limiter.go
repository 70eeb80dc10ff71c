package backpressure

import "context"

// Limiter adapts a Strategy to operators, which count records, not
// requests: n records form one request with no bytes. Each acquisition is
// completed at once, so a Limiter limits rates (TokenBucket, SlidingWindow,
// MultiTier or Composite of them); an in-flight strategy such as AIMD does
// not hold anything back through it. It is safe for concurrent use if its
// strategy is.
type Limiter struct {
	s Strategy
}

// NewLimiter returns a Limiter over s.
func NewLimiter(s Strategy) *Limiter { return &Limiter{s: s} }

// Wait blocks until n records may pass or ctx ends, returning ctx's error
// in that case (nothing is taken then).
func (l *Limiter) Wait(ctx context.Context, n int) error {
	req := Request{Records: n}
	if err := l.s.Acquire(ctx, req); err != nil {
		return err
	}
	l.s.Complete(Result{Request: req})
	return nil
}

// TryAcquire reports whether n records may pass now, taking them if so.
func (l *Limiter) TryAcquire(n int) bool {
	req := Request{Records: n}
	if !l.s.TryAcquire(req) {
		return false
	}
	l.s.Complete(Result{Request: req})
	return true
}
