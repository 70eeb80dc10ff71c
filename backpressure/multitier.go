package backpressure

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Tiers are the tiers of a MultiTier, each optional. The factories are
// called lazily, once per topic or topic-partition, the first time a
// request names it; a nil result means that key has no tier. Strategies
// must be of this package (see Composite); a factory returning another
// kind makes the MultiTier panic when it first uses that key.
type Tiers struct {
	Global    Strategy
	Topic     func(topic string) Strategy
	Partition func(topic string, partition int32) Strategy
}

// MultiTier limits requests at three levels: globally, per topic and per
// topic-partition. A request is admitted only if every tier it touches
// admits its share (the global tier the whole request, each topic tier the
// sum of that topic's Parts, each partition tier its Part), and then all of
// them are charged at once: all-or-nothing, as in Composite. A request
// without Parts touches only the global tier.
//
// So a slow partition's own limit holds it back while the other partitions
// use the rest of the global budget. Completions reach every tier the
// request touched; failed entries are split across parts in proportion to
// their records, rounded up, since Result does not say which part failed.
//
// MaxBatchSize is the global tier's. Change limits at runtime through the
// tier strategies (Global, Topic, Partition). Create it with NewMultiTier;
// it is safe for concurrent use.
type MultiTier struct {
	mu      sync.Mutex
	global  gate // nil = none
	topicOf func(string) Strategy
	partOf  func(string, int32) Strategy
	topics  map[string]gate  // nil values cached: no tier
	parts   map[partKey]gate // nil values cached: no tier
	scratch []share          // guarded by mu
}

type partKey struct {
	topic     string
	partition int32
}

// share is one tier's part of a request.
type share struct {
	g   gate
	req Request
}

var _ gate = (*MultiTier)(nil)

// NewMultiTier returns a MultiTier over t, which needs at least one tier.
func NewMultiTier(t Tiers) (*MultiTier, error) {
	if t.Global == nil && t.Topic == nil && t.Partition == nil {
		return nil, errors.New("multi-tier: no tiers")
	}
	m := &MultiTier{
		topicOf: t.Topic,
		partOf:  t.Partition,
		topics:  map[string]gate{},
		parts:   map[partKey]gate{},
	}
	if t.Global != nil {
		g, ok := t.Global.(gate)
		if !ok {
			return nil, fmt.Errorf("multi-tier: global tier (%T) is not one of this package's strategies", t.Global)
		}
		m.global = g
	}
	return m, nil
}

// Global returns the global tier, or nil.
func (m *MultiTier) Global() Strategy {
	if m.global == nil {
		return nil
	}
	return m.global
}

// Topic returns topic's tier, creating it if needed, or nil if it has none.
func (m *MultiTier) Topic(topic string) Strategy {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.topicLocked(topic); g != nil {
		return g
	}
	return nil
}

// Partition returns the tier of a topic-partition, creating it if needed,
// or nil if it has none.
func (m *MultiTier) Partition(topic string, partition int32) Strategy {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.partLocked(topic, partition); g != nil {
		return g
	}
	return nil
}

func (m *MultiTier) topicLocked(topic string) gate {
	g, seen := m.topics[topic]
	if !seen {
		if m.topicOf != nil {
			g = mustGate(m.topicOf(topic), "topic "+topic)
		}
		m.topics[topic] = g
	}
	return g
}

func (m *MultiTier) partLocked(topic string, partition int32) gate {
	k := partKey{topic, partition}
	g, seen := m.parts[k]
	if !seen {
		if m.partOf != nil {
			g = mustGate(m.partOf(topic, partition), fmt.Sprintf("partition %s/%d", topic, partition))
		}
		m.parts[k] = g
	}
	return g
}

func mustGate(s Strategy, what string) gate {
	if s == nil {
		return nil
	}
	g, ok := s.(gate)
	if !ok {
		panic(fmt.Sprintf("backpressure: multi-tier factory for %s returned %T, which is not one of this package's strategies", what, s))
	}
	return g
}

// sharesLocked splits req across the tiers it touches, into m.scratch.
// Parts of the same topic add up in the topic tier; a topic-partition named
// twice adds up in its tier.
func (m *MultiTier) sharesLocked(req Request) []share {
	s := m.scratch[:0]
	if m.global != nil {
		s = append(s, share{m.global, req})
	}
	if len(req.Parts) == 0 {
		m.scratch = s
		return s
	}
	first := len(s)
	if m.topicOf != nil {
		for _, p := range req.Parts {
			g := m.topicLocked(p.Topic)
			if g == nil {
				continue
			}
			s = addShare(s, first, g, p)
		}
	}
	if m.partOf != nil {
		first = len(s)
		for _, p := range req.Parts {
			g := m.partLocked(p.Topic, p.Partition)
			if g == nil {
				continue
			}
			s = addShare(s, first, g, p)
		}
	}
	m.scratch = s
	return s
}

// addShare adds p to g's share among s[first:], or appends a share. The
// scan is linear: requests name few topics, and a partition twice only if
// the caller split it.
func addShare(s []share, first int, g gate, p Part) []share {
	for i := first; i < len(s); i++ {
		if s[i].g == g {
			s[i].req.Records += p.Records
			s[i].req.Bytes += p.Bytes
			return s
		}
	}
	return append(s, share{g, Request{Records: p.Records, Bytes: p.Bytes}})
}

// TryAcquire admits req if every tier it touches admits its share now.
func (m *MultiTier) TryAcquire(req Request) bool {
	ok, _ := m.try(req)
	return ok
}

// Acquire blocks until every tier req touches admits its share at once,
// or ctx ends.
func (m *MultiTier) Acquire(ctx context.Context, req Request) error {
	return acquire(ctx, m, req)
}

// Complete passes each tier its share of res.
func (m *MultiTier) Complete(res Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	total := res.Request.Records
	for _, sh := range m.sharesLocked(res.Request) {
		r := res
		r.Request = sh.req
		if r.Failed > 0 && sh.g != m.global {
			r.Failed = failedShare(res.Failed, sh.req.Records, total)
		}
		sh.g.Complete(r)
	}
}

// failedShare is part's share of failed entries out of total, rounded up.
func failedShare(failed, part, total int) int {
	if total <= 0 || part >= total {
		return failed
	}
	return min(part, (failed*part+total-1)/total)
}

// MaxBatchSize is the global tier's (0 without one).
func (m *MultiTier) MaxBatchSize() int {
	if m.global == nil {
		return 0
	}
	return m.global.MaxBatchSize()
}

// ShouldBlock reports whether any tier req touches would refuse it now.
func (m *MultiTier) ShouldBlock(req Request) bool {
	ok, _ := m.admitAt(time.Now(), req)
	return !ok
}

// RegisterInFlight charges every tier req touches.
func (m *MultiTier) RegisterInFlight(req Request) { m.takeAt(time.Now(), req) }

// RegisterCompleted is Complete.
func (m *MultiTier) RegisterCompleted(res Result) { m.Complete(res) }

func (m *MultiTier) try(req Request) (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	s := m.sharesLocked(req)
	ok, wait := admitShares(now, s)
	if ok {
		for _, sh := range s {
			sh.g.takeAt(now, sh.req)
		}
	}
	return ok, wait
}

func admitShares(now time.Time, s []share) (bool, time.Duration) {
	ok, wait := true, time.Duration(0)
	for _, sh := range s {
		if gok, w := sh.g.admitAt(now, sh.req); !gok {
			if ok {
				ok, wait = false, w
			} else {
				wait = combineWait(wait, w)
			}
		}
	}
	return ok, wait
}

func (m *MultiTier) admitAt(now time.Time, req Request) (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return admitShares(now, m.sharesLocked(req))
}

func (m *MultiTier) takeAt(now time.Time, req Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sh := range m.sharesLocked(req) {
		sh.g.takeAt(now, sh.req)
	}
}

func (m *MultiTier) watch(req Request, ch chan struct{}, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sh := range m.sharesLocked(req) {
		sh.g.watch(sh.req, ch, on)
	}
}
