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
// must implement Gate (see Composite); a factory returning one that does
// not makes the MultiTier panic when it first uses that key.
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
// tier strategies (Global, Topic, Partition). Tiers live as long as the
// MultiTier (one per topic-partition ever seen).
//
// Waiters are not queued: when several goroutines wait on a shared tier,
// whoever tries first after a refill wins, so a partition held to a low
// limit of its own can miss some of it (about 5% in TestMultiTierShares,
// with four goroutines contending). The writer is a single caller and
// does not contend with itself.
//
// Create it with NewMultiTier; it is safe for concurrent use.
type MultiTier struct {
	mu      sync.Mutex
	global  Gate // nil = none
	topicOf func(string) Strategy
	partOf  func(string, int32) Strategy
	topics  map[string]*topicTiers
	scratch []share // guarded by mu
}

// topicTiers are the tiers of one topic, found with one lookup by name.
type topicTiers struct {
	tier  Gate           // nil = none
	parts map[int32]Gate // nil values cached: no tier
}

// share is one tier's part of a request.
type share struct {
	g   Gate
	req Request
}

var _ Gate = (*MultiTier)(nil)

// NewMultiTier returns a MultiTier over t, which needs at least one tier.
func NewMultiTier(t Tiers) (*MultiTier, error) {
	if t.Global == nil && t.Topic == nil && t.Partition == nil {
		return nil, errors.New("multi-tier: no tiers")
	}
	m := &MultiTier{
		topicOf: t.Topic,
		partOf:  t.Partition,
		topics:  map[string]*topicTiers{},
	}
	if t.Global != nil {
		g, ok := t.Global.(Gate)
		if !ok {
			return nil, fmt.Errorf("multi-tier: global tier (%T) does not implement backpressure.Gate", t.Global)
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
	if g := m.topicLocked(topic).tier; g != nil {
		return g
	}
	return nil
}

// Partition returns the tier of a topic-partition, creating it if needed,
// or nil if it has none.
func (m *MultiTier) Partition(topic string, partition int32) Strategy {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.partLocked(m.topicLocked(topic), topic, partition); g != nil {
		return g
	}
	return nil
}

// topicLocked returns topic's entry, creating it and its tier if needed.
func (m *MultiTier) topicLocked(topic string) *topicTiers {
	tt := m.topics[topic]
	if tt == nil {
		tt = &topicTiers{parts: map[int32]Gate{}}
		if m.topicOf != nil {
			tt.tier = mustGate(m.topicOf(topic), "topic "+topic)
		}
		m.topics[topic] = tt
	}
	return tt
}

func (m *MultiTier) partLocked(tt *topicTiers, topic string, partition int32) Gate {
	g, seen := tt.parts[partition]
	if !seen {
		if m.partOf != nil {
			g = mustGate(m.partOf(topic, partition), fmt.Sprintf("partition %s/%d", topic, partition))
		}
		tt.parts[partition] = g
	}
	return g
}

func mustGate(s Strategy, what string) Gate {
	if s == nil {
		return nil
	}
	g, ok := s.(Gate)
	if !ok {
		panic(fmt.Sprintf("backpressure: multi-tier factory for %s returned %T, which does not implement backpressure.Gate", what, s))
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
	// Topic shares first, then partition shares, each group summed.
	topicsAt := len(s)
	var tt *topicTiers
	if m.topicOf != nil {
		for i, p := range req.Parts {
			if i == 0 || p.Topic != req.Parts[i-1].Topic {
				tt = m.topicLocked(p.Topic)
			}
			if tt.tier != nil {
				s = addShare(s, topicsAt, tt.tier, p)
			}
		}
	}
	if m.partOf != nil {
		partsAt := len(s)
		for i, p := range req.Parts {
			if i == 0 || p.Topic != req.Parts[i-1].Topic {
				tt = m.topicLocked(p.Topic)
			}
			if g := m.partLocked(tt, p.Topic, p.Partition); g != nil {
				s = addShare(s, partsAt, g, p)
			}
		}
	}
	m.scratch = s
	return s
}

// addShare adds p to g's share among s[first:], or appends a share. The
// scan is linear: requests name few topics, and a partition twice only if
// the caller split it.
func addShare(s []share, first int, g Gate, p Part) []share {
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
func (m *MultiTier) TryAcquire(req Request) bool { return m.TryAcquireAt(time.Now(), req) }

// TryAcquireAt is TryAcquire at time now.
func (m *MultiTier) TryAcquireAt(now time.Time, req Request) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sharesLocked(req)
	if len(s) == 0 {
		return true
	}
	// As tryAll: check all but the last, try the last, take the others.
	last := len(s) - 1
	for _, sh := range s[:last] {
		if ok, _ := sh.g.Admit(now, sh.req); !ok {
			return false
		}
	}
	if !s[last].g.TryAcquireAt(now, s[last].req) {
		return false
	}
	for _, sh := range s[:last] {
		sh.g.Take(now, sh.req)
	}
	return true
}

// Acquire blocks until every tier req touches admits its share at once,
// or ctx ends.
func (m *MultiTier) Acquire(ctx context.Context, req Request) error {
	return Acquire(ctx, m, req)
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
	ok, _ := m.Admit(time.Now(), req)
	return !ok
}

// RegisterInFlight charges every tier req touches.
func (m *MultiTier) RegisterInFlight(req Request) { m.Take(time.Now(), req) }

// RegisterCompleted is Complete.
func (m *MultiTier) RegisterCompleted(res Result) { m.Complete(res) }

func admitShares(now time.Time, s []share) (bool, time.Duration) {
	ok, wait := true, time.Duration(0)
	for _, sh := range s {
		if gok, w := sh.g.Admit(now, sh.req); !gok {
			if ok {
				ok, wait = false, w
			} else {
				wait = combineWait(wait, w)
			}
		}
	}
	return ok, wait
}

// Admit reports whether every tier req touches admits its share at now
// and otherwise how long until all of them might.
func (m *MultiTier) Admit(now time.Time, req Request) (bool, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return admitShares(now, m.sharesLocked(req))
}

// Take charges every tier req touches with its share.
func (m *MultiTier) Take(now time.Time, req Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sh := range m.sharesLocked(req) {
		sh.g.Take(now, sh.req)
	}
}

// Watch subscribes ch to the changes of every tier req touches.
func (m *MultiTier) Watch(req Request, ch chan<- struct{}, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sh := range m.sharesLocked(req) {
		sh.g.Watch(sh.req, ch, on)
	}
}
