package backpressure

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Composite admits a request only when every one of its strategies does,
// and then registers it with all of them: acquisition is all-or-nothing,
// no strategy is charged for a request another one refused. Completions
// go to every strategy, and MaxBatchSize is the smallest opinion.
//
// Members must implement Gate, as every strategy of this package does
// (TokenBucket, SlidingWindow, AIMD, MultiTier, Composite, Unlimited) and
// as a strategy written elsewhere can: they can be checked before they are
// charged and waited on without polling. A member may also be used on its
// own elsewhere; such use is not serialised with the Composite's, so a
// request admitted in between may leave it briefly over its limit.
//
// Create it with NewComposite; it is safe for concurrent use.
type Composite struct {
	mu      sync.Mutex // makes check-all-then-take-all atomic among the Composite's callers
	members []Gate
}

var _ Gate = (*Composite)(nil)

// NewComposite returns a Composite of strategies, which must not be empty
// and must each implement Gate.
func NewComposite(strategies ...Strategy) (*Composite, error) {
	if len(strategies) == 0 {
		return nil, errors.New("composite: no strategies")
	}
	c := &Composite{members: make([]Gate, len(strategies))}
	for i, s := range strategies {
		g, ok := s.(Gate)
		if !ok || s == nil {
			return nil, fmt.Errorf("composite: strategy %d (%T) does not implement backpressure.Gate", i, s)
		}
		c.members[i] = g
	}
	return c, nil
}

// TryAcquire admits req if every strategy admits it now.
func (c *Composite) TryAcquire(req Request) bool { return c.TryAcquireAt(time.Now(), req) }

// TryAcquireAt is TryAcquire at time now.
func (c *Composite) TryAcquireAt(now time.Time, req Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return tryAll(now, c.members, req)
}

// tryAll checks every gate but the last, lets the last check and take at
// once, and only then takes from the others: all-or-nothing with one call
// fewer than checking all first.
func tryAll(now time.Time, gs []Gate, req Request) bool {
	last := len(gs) - 1
	for _, g := range gs[:last] {
		if ok, _ := g.Admit(now, req); !ok {
			return false
		}
	}
	if !gs[last].TryAcquireAt(now, req) {
		return false
	}
	for _, g := range gs[:last] {
		g.Take(now, req)
	}
	return true
}

// Acquire blocks until every strategy admits req at once, or ctx ends. It
// wakes on the earliest time any strategy named and on every strategy's
// completion and limit-change signals.
func (c *Composite) Acquire(ctx context.Context, req Request) error {
	return Acquire(ctx, c, req)
}

// Complete passes res to every strategy.
func (c *Composite) Complete(res Result) {
	for _, m := range c.members {
		m.Complete(res)
	}
}

// MaxBatchSize is the smallest non-zero MaxBatchSize of the strategies.
func (c *Composite) MaxBatchSize() int {
	n := 0
	for _, m := range c.members {
		if v := m.MaxBatchSize(); v > 0 && (n == 0 || v < n) {
			n = v
		}
	}
	return n
}

// ShouldBlock reports whether any strategy would refuse req now.
func (c *Composite) ShouldBlock(req Request) bool {
	ok, _ := c.Admit(time.Now(), req)
	return !ok
}

// RegisterInFlight registers req with every strategy.
func (c *Composite) RegisterInFlight(req Request) { c.Take(time.Now(), req) }

// RegisterCompleted is Complete.
func (c *Composite) RegisterCompleted(res Result) { c.Complete(res) }

// Admit reports whether every strategy admits req at now and otherwise
// how long until all of them might: the longest wait, Never if any says
// Never.
func (c *Composite) Admit(now time.Time, req Request) (bool, time.Duration) {
	ok, wait := true, time.Duration(0)
	for _, m := range c.members {
		if mok, w := m.Admit(now, req); !mok {
			if ok {
				ok, wait = false, w
			} else {
				wait = combineWait(wait, w)
			}
		}
	}
	return ok, wait
}

// Take registers req with every strategy.
func (c *Composite) Take(now time.Time, req Request) {
	for _, m := range c.members {
		m.Take(now, req)
	}
}

// Watch subscribes ch to every strategy's changes.
func (c *Composite) Watch(req Request, ch chan<- struct{}, on bool) {
	for _, m := range c.members {
		m.Watch(req, ch, on)
	}
}
