// Package strategytest is the conformance suite every backpressure.Strategy
// passes, the built-in ones and those written elsewhere alike. A
// strategy's tests call Run with the features it declares and a factory
// for fresh instances; the suite checks the contract of Strategy and Gate
// on the strategy alone and as a member of backpressure.Composite and
// backpressure.MultiTier.
//
// Every check runs in a testing/synctest bubble: the factory is called
// inside it, so the strategy's clock is the bubble's fake clock, time
// passes only while every goroutine waits, and a strategy that sleeps in
// TryAcquire or misses a wake-up is caught without wall-clock thresholds.
//
// Some checks compare two instances ("twins") that the factory built at
// the same instant and that saw the same calls but one: a cancelled
// Acquire, say. The factory must therefore build identical, independent
// strategies, and a strategy must depend only on its calls and the clock.
package strategytest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/backpressure"
)

// Subject is one strategy under test, built by the factory given to Run.
type Subject struct {
	// Strategy is the strategy under test. Required, and it must implement
	// backpressure.Gate to pass the checks inside Composite and MultiTier.
	Strategy backpressure.Strategy

	// Raise changes the strategy's limits at runtime (a SetRate, a
	// SetLimit) so that a request it refuses now is admitted sooner than
	// without the change. Required with Features.LimitChanges; the suite
	// may call it several times, from several goroutines.
	Raise func()
}

// Features are what a strategy declares about itself; the suite skips,
// with the reason, only the checks a strategy declares it cannot take.
type Features struct {
	// NeverRefuses declares a strategy that admits every request
	// (backpressure.Unlimited). The checks that need a refused request are
	// skipped; a strategy that refuses anyway fails. Without it, a strategy
	// must refuse Request after at most MaxAdmitted admissions at one
	// instant.
	NeverRefuses bool

	// LimitChanges declares a strategy whose limits change at runtime
	// through Subject.Raise; the suite checks that a change wakes a
	// blocked Acquire. Without it that check is skipped.
	LimitChanges bool

	// Request is the request every check sends. Zero means 10 records and
	// 1000 bytes, all in partition 0 of topic "strategytest" (Parts are
	// set, so MultiTier's topic and partition tiers see it).
	Request backpressure.Request
}

// MaxAdmitted bounds how many times the suite calls TryAcquire at one
// instant to reach a refusal.
const MaxAdmitted = 100_000

// Patience is how long, in the bubble's fake time, the suite lets Acquire
// wait for a request it must eventually admit.
const Patience = time.Hour

// Run runs the suite as subtests of t, calling newSubject for a fresh
// strategy in each (inside a synctest bubble, with the bubble's t).
func Run(t *testing.T, f Features, newSubject func(t *testing.T) Subject) {
	t.Helper()
	if f.Request.Records == 0 && f.Request.Bytes == 0 && f.Request.Parts == nil {
		f.Request = backpressure.Request{Records: 10, Bytes: 1000,
			Parts: []backpressure.Part{{Topic: "strategytest", Partition: 0, Records: 10, Bytes: 1000}}}
	}
	checked := func(t *testing.T) Subject {
		t.Helper()
		s := newSubject(t)
		if s.Strategy == nil {
			t.Fatal("strategytest: Subject.Strategy is nil")
		}
		if f.LimitChanges && s.Raise == nil {
			t.Fatal("strategytest: Features.LimitChanges needs Subject.Raise")
		}
		return s
	}
	runChecks(t, f, checked)
	t.Run("InComposite", func(t *testing.T) {
		for _, w := range wrappers {
			t.Run(w.name, func(t *testing.T) {
				runChecks(t, f, func(t *testing.T) Subject {
					s := checked(t)
					return Subject{Strategy: w.wrap(t, gateOf(t, s.Strategy)), Raise: s.Raise}
				})
			})
		}
		t.Run("AllOrNothing", func(t *testing.T) { testAllOrNothing(t, f, checked) })
		t.Run("ChargedAsAlone", func(t *testing.T) { testChargedAsAlone(t, f, checked) })
	})
}

// check is one check of the suite.
type check struct {
	name string
	fn   func(t *testing.T, f Features, newSubject func(*testing.T) Subject)
}

var checks = []check{
	{"TryAcquireNeverBlocks", testTryAcquireNeverBlocks},
	{"AcquireDoneContext", testAcquireDoneContext},
	{"AcquireCancelRegistersNothing", testAcquireCancel},
	{"AcquireDeadline", testAcquireDeadline},
	{"CompleteWakesAcquire", testCompleteWakesAcquire},
	{"LimitChangeWakesAcquire", testLimitChange},
	{"ConcurrentUse", testConcurrentUse},
}

func runChecks(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { c.fn(t, f, newSubject) })
		})
	}
}

// wrappers put a strategy where a Gate is needed: first or last in a
// Composite (the last member is tried with TryAcquireAt, the others with
// Admit then Take) and as a MultiTier's global tier.
var wrappers = []struct {
	name string
	wrap func(t *testing.T, g backpressure.Gate) backpressure.Strategy
}{
	{"CompositeFirst", func(t *testing.T, g backpressure.Gate) backpressure.Strategy {
		return composite(t, g, backpressure.Unlimited{})
	}},
	{"CompositeLast", func(t *testing.T, g backpressure.Gate) backpressure.Strategy {
		return composite(t, backpressure.Unlimited{}, g)
	}},
	{"MultiTierGlobal", func(t *testing.T, g backpressure.Gate) backpressure.Strategy {
		m, err := backpressure.NewMultiTier(backpressure.Tiers{Global: g})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}},
}

func composite(t *testing.T, members ...backpressure.Strategy) *backpressure.Composite {
	t.Helper()
	c, err := backpressure.NewComposite(members...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func gateOf(t *testing.T, s backpressure.Strategy) backpressure.Gate {
	t.Helper()
	g, ok := s.(backpressure.Gate)
	if !ok {
		t.Fatalf("%T does not implement backpressure.Gate, so it cannot be a member of a Composite or a MultiTier tier", s)
	}
	return g
}

// saturate calls TryAcquire until s refuses req and returns how many it
// admitted. TryAcquire must not let time pass.
func saturate(t *testing.T, f Features, s backpressure.Strategy) int {
	t.Helper()
	start := time.Now()
	n := 0
	for s.TryAcquire(f.Request) {
		n++
		if n > MaxAdmitted {
			if f.NeverRefuses {
				return n
			}
			t.Fatalf("TryAcquire admitted %d requests at one instant and refused none; declare Features.NeverRefuses for a strategy that never limits", n)
		}
	}
	if el := time.Since(start); el != 0 {
		t.Fatalf("TryAcquire let %v pass: it must not block", el)
	}
	if f.NeverRefuses {
		t.Fatalf("TryAcquire refused after %d admissions, but Features.NeverRefuses is declared", n)
	}
	return n
}

// needsRefusal skips a check that needs a refused request.
func needsRefusal(t *testing.T, f Features) {
	t.Helper()
	if f.NeverRefuses {
		t.Skip("the strategy declares it never refuses (Features.NeverRefuses)")
	}
}

// outcome is the Result of the i-th completion the suite reports: clean
// ones with a latency and, every few, each kind of congestion signal.
func outcome(req backpressure.Request, i int) backpressure.Result {
	r := backpressure.Result{Request: req, Latency: time.Duration(10+i%5) * time.Millisecond}
	switch i % 7 {
	case 3:
		r.Throttled = true
	case 5:
		r.TimedOut = true
	case 6:
		r.Failed = max(req.Records/2, 1)
	}
	return r
}

// state is what the suite can observe of a strategy: after completing
// every request it admitted, how long until it admits Request again (-1:
// not within Patience) and how many it then admits at that instant.
type state struct {
	wait  time.Duration
	burst int
}

func observe(f Features, s backpressure.Strategy, admitted int) state {
	for range admitted {
		s.Complete(backpressure.Result{Request: f.Request})
	}
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	start := time.Now()
	if err := s.Acquire(ctx, f.Request); err != nil {
		return state{wait: -1}
	}
	st := state{wait: time.Since(start), burst: 1}
	for st.burst < MaxAdmitted && s.TryAcquire(f.Request) {
		st.burst++
	}
	for range st.burst {
		s.Complete(backpressure.Result{Request: f.Request})
	}
	return st
}

// observeTwins observes two strategies from the same instant.
func observeTwins(f Features, a backpressure.Strategy, na int, b backpressure.Strategy, nb int) (state, state) {
	var sa, sb state
	var wg sync.WaitGroup
	wg.Go(func() { sa = observe(f, a, na) })
	wg.Go(func() { sb = observe(f, b, nb) })
	wg.Wait()
	return sa, sb
}

// twins builds two strategies at the same instant and saturates both.
func twins(t *testing.T, f Features, newSubject func(*testing.T) Subject) (a, b Subject, n int) {
	t.Helper()
	a, b = newSubject(t), newSubject(t)
	na, nb := saturate(t, f, a.Strategy), saturate(t, f, b.Strategy)
	if na != nb {
		t.Fatalf("two instances built at the same instant admitted %d and %d requests: the factory must build identical strategies", na, nb)
	}
	return a, b, na
}

// blocked starts Acquire in a goroutine and checks it is waiting.
func blocked(t *testing.T, ctx context.Context, f Features, s backpressure.Strategy) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Acquire(ctx, f.Request) }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("Acquire returned %v at the instant TryAcquire refused the same request", err)
	default:
	}
	return done
}

func testTryAcquireNeverBlocks(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	s := newSubject(t).Strategy
	n := saturate(t, f, s) // checks that no time passes
	if !f.NeverRefuses {
		// Refused again and again, still without blocking.
		start := time.Now()
		for range 100 {
			if s.TryAcquire(f.Request) {
				t.Fatal("TryAcquire admitted a request it refused at the same instant")
			}
		}
		if el := time.Since(start); el != 0 {
			t.Fatalf("a refusing TryAcquire let %v pass: it must not block", el)
		}
	}
	if m := s.MaxBatchSize(); m < 0 {
		t.Errorf("MaxBatchSize = %d, want 0 (no opinion) or more", m)
	}
	for i := range n {
		s.Complete(outcome(f.Request, i))
	}
}

func testAcquireDoneContext(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"Cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"PastDeadline", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}, context.DeadlineExceeded},
	} {
		// Fresh twins: one is asked with a done context, which must
		// neither admit nor register anything.
		a, b := newSubject(t), newSubject(t)
		ctx, cancel := tc.ctx()
		err := b.Strategy.Acquire(ctx, f.Request)
		cancel()
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: Acquire with a done context = %v, want %v", tc.name, err, tc.want)
		}
		if sa, sb := observeTwins(f, a.Strategy, 0, b.Strategy, 0); sa != sb {
			t.Fatalf("%s: Acquire with a done context left something registered: next admission after %v then %d at once, want %v then %d as its twin",
				tc.name, sb.wait, sb.burst, sa.wait, sa.burst)
		}
	}
}

func testAcquireCancel(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	needsRefusal(t, f)
	a, b, n := twins(t, f, newSubject)
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	done := blocked(t, ctx, f, b.Strategy)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel = %v, want context.Canceled", err)
	}
	if el := time.Since(start); el != 0 {
		t.Errorf("Acquire returned %v after cancel, want at once", el)
	}
	if sa, sb := observeTwins(f, a.Strategy, n, b.Strategy, n); sa != sb {
		t.Fatalf("a cancelled Acquire left something registered: next admission after %v then %d at once, want %v then %d as its twin",
			sb.wait, sb.burst, sa.wait, sa.burst)
	}
}

func testAcquireDeadline(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	needsRefusal(t, f)
	// How long a refused request waits when nothing else happens.
	s := newSubject(t).Strategy
	n := saturate(t, f, s)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	start := time.Now()
	err := s.Acquire(ctx, f.Request)
	wait := time.Since(start)
	cancel()
	if err == nil {
		n++
	}
	for i := range n {
		s.Complete(outcome(f.Request, i))
	}
	deadline := time.Minute // only an event admits it
	if err == nil {
		if wait < 2 {
			t.Skipf("a refused request is admitted after %v: too soon for a deadline before it", wait)
		}
		deadline = wait / 2
	}
	// A deadline before that: Acquire gives up at the deadline.
	s = newSubject(t).Strategy
	n = saturate(t, f, s)
	ctx, cancel = context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start = time.Now()
	if err := s.Acquire(ctx, f.Request); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with a %v deadline (admission takes %v) = %v, want context.DeadlineExceeded", deadline, wait, err)
	}
	if el := time.Since(start); el != deadline {
		t.Errorf("Acquire gave up after %v, want at the deadline, %v", el, deadline)
	}
	for i := range n {
		s.Complete(outcome(f.Request, i))
	}
}

func testCompleteWakesAcquire(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	needsRefusal(t, f)
	s := newSubject(t).Strategy
	n := saturate(t, f, s)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	done := blocked(t, ctx, f, s)
	// Every admitted request completes once, with every kind of outcome;
	// then the waiting request must be admitted, by the completions (a
	// strategy counting requests in flight) or by time (a rate).
	for i := range n {
		s.Complete(outcome(f.Request, i))
	}
	start := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("after every admitted request completed, Acquire waited %v and returned %v: a completion must wake it, or time admit it", time.Since(start), err)
	}
	s.Complete(outcome(f.Request, 0))
	if m := s.MaxBatchSize(); m < 0 {
		t.Errorf("MaxBatchSize = %d after completions, want 0 (no opinion) or more", m)
	}
	// And it keeps admitting.
	if err := s.Acquire(ctx, f.Request); err != nil {
		t.Fatalf("Acquire after completions: %v", err)
	}
	s.Complete(backpressure.Result{Request: f.Request})
}

func testLimitChange(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	needsRefusal(t, f)
	if !f.LimitChanges {
		t.Skip("the strategy declares no runtime limit change (Features.LimitChanges)")
	}
	// Without the change: how long a refused request waits (or not within
	// Patience).
	s := newSubject(t).Strategy
	n := saturate(t, f, s)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	start := time.Now()
	err := s.Acquire(ctx, f.Request)
	without := time.Since(start)
	cancel()
	if err != nil {
		without = -1
	} else {
		n++
	}
	for range n {
		s.Complete(backpressure.Result{Request: f.Request})
	}

	// With the change while it waits: sooner.
	sub := newSubject(t)
	n = saturate(t, f, sub.Strategy)
	ctx, cancel = context.WithTimeout(context.Background(), Patience)
	defer cancel()
	start = time.Now()
	done := blocked(t, ctx, f, sub.Strategy)
	sub.Raise()
	if err := <-done; err != nil {
		t.Fatalf("Acquire after Raise = %v: the change did not wake it", err)
	}
	with := time.Since(start)
	if without >= 0 && with >= without {
		t.Fatalf("admitted %v after Raise, the same as without it (%v): the change did not wake the waiting Acquire", with, without)
	}
	for range n + 1 {
		sub.Strategy.Complete(backpressure.Result{Request: f.Request})
	}
}

func testConcurrentUse(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	sub := newSubject(t)
	s := sub.Strategy
	const goroutines, rounds = 8, 40
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				switch (g + i) % 4 {
				case 0:
					if s.TryAcquire(f.Request) {
						s.Complete(outcome(f.Request, i))
					}
				case 1:
					ctx, cancel := context.WithTimeout(context.Background(), Patience)
					err := s.Acquire(ctx, f.Request)
					cancel()
					if err != nil {
						t.Errorf("Acquire under concurrent use: %v", err)
						return
					}
					time.Sleep(time.Millisecond)
					s.Complete(outcome(f.Request, i))
				case 2:
					if m := s.MaxBatchSize(); m < 0 {
						t.Errorf("MaxBatchSize = %d", m)
					}
					if g, ok := s.(backpressure.Gate); ok {
						g.Admit(time.Now(), f.Request)
					}
				case 3:
					if f.LimitChanges {
						sub.Raise()
					} else {
						// A cancelled wait, concurrent with the rest.
						ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
						if s.Acquire(ctx, f.Request) == nil {
							s.Complete(outcome(f.Request, i))
						}
						cancel()
					}
				}
			}
		})
	}
	wg.Wait()
	// Every admission was completed: the strategy still admits.
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	if err := s.Acquire(ctx, f.Request); err != nil {
		t.Fatalf("after concurrent use, with every admission completed, Acquire = %v", err)
	}
	s.Complete(backpressure.Result{Request: f.Request})
}

// refuser is a Gate that refuses everything and fails the test if it is
// ever charged.
type refuser struct{ t *testing.T }

func (r refuser) TryAcquire(backpressure.Request) bool              { return false }
func (r refuser) TryAcquireAt(time.Time, backpressure.Request) bool { return false }
func (r refuser) Acquire(ctx context.Context, _ backpressure.Request) error {
	<-ctx.Done()
	return ctx.Err()
}
func (r refuser) Complete(backpressure.Result) {
	r.t.Error("Composite completed a request on a member that refused it")
}
func (r refuser) MaxBatchSize() int { return 0 }
func (r refuser) Admit(time.Time, backpressure.Request) (bool, time.Duration) {
	return false, backpressure.Never
}
func (r refuser) Take(time.Time, backpressure.Request) {
	r.t.Error("Composite charged a member that refused the request")
}
func (r refuser) Watch(backpressure.Request, chan<- struct{}, bool) {}

// testAllOrNothing: in a Composite with a member that refuses, the
// strategy is never charged, whether it is checked first or tried last.
func testAllOrNothing(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	for _, order := range []string{"StrategyFirst", "StrategyLast"} {
		t.Run(order, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := newSubject(t), newSubject(t)
				members := []backpressure.Strategy{gateOf(t, b.Strategy), refuser{t}}
				if order == "StrategyLast" {
					members[0], members[1] = members[1], members[0]
				}
				c := composite(t, members...)
				for range 3 {
					if c.TryAcquire(f.Request) {
						t.Fatal("Composite admitted a request one member refuses")
					}
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := blocked(t, ctx, f, c)
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Fatalf("Composite.Acquire after cancel = %v, want context.Canceled", err)
				}
				if sa, sb := observeTwins(f, a.Strategy, 0, b.Strategy, 0); sa != sb {
					t.Fatalf("a Composite that refused charged the strategy: next admission after %v then %d at once, want %v then %d as its twin",
						sb.wait, sb.burst, sa.wait, sa.burst)
				}
			})
		})
	}
}

// testChargedAsAlone: a Composite of the strategy and Unlimited admits and
// charges exactly as the strategy alone, whichever place it has.
func testChargedAsAlone(t *testing.T, f Features, newSubject func(*testing.T) Subject) {
	needsRefusal(t, f)
	for _, w := range wrappers {
		t.Run(w.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := newSubject(t), newSubject(t)
				c := w.wrap(t, gateOf(t, b.Strategy))
				na, nc := saturate(t, f, a.Strategy), saturate(t, f, c)
				if na != nc {
					t.Fatalf("admitted %d requests inside, %d alone", nc, na)
				}
				if sa, sc := observeTwins(f, a.Strategy, na, c, nc); sa != sc {
					t.Fatalf("charged differently inside: next admission after %v then %d at once, alone after %v then %d",
						sc.wait, sc.burst, sa.wait, sa.burst)
				}
			})
		})
	}
}
