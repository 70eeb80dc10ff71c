package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/sinks"
)

// Sink fault scenarios (issue 4, scenarios 2 and 5): the receiver fails
// single records of a batch, throttles with Retry-After, and resets
// connections. Each checks 0 lost and committed offsets at the end; the
// partial-failure one also checks commits never pass the failing record.

// TestSinkPartialFailureHoldsCommit: the receiver accepts every record of a
// batch but one (id N, 207 with a retryable status for its index), so N+1
// and later records of N's partition are delivered while N is not. The
// committed offset of N's partition must never pass N; once the receiver
// accepts N, everything is committed to the end.
func TestSinkPartialFailureHoldsCommit(t *testing.T) {
	const parts, preload = 2, 6000
	e := newFaultEnvOn(t, newCluster(t, parts), parts, preload)
	e.cfg.Sink.Writer.MaxInFlightRequests = 4
	held := e.holdMiddle(preload)
	var holding atomic.Bool
	holding.Store(true)
	var partials atomic.Int64
	e.rc.setHook(func(w http.ResponseWriter, r *http.Request, ids []int64) bool {
		if !holding.Load() {
			return false
		}
		type failed struct {
			Index  int    `json:"index"`
			Status int    `json:"status"`
			Error  string `json:"error"`
		}
		var fs []failed
		var ok []int64
		for i, id := range ids {
			if held.has(id) {
				fs = append(fs, failed{i, http.StatusServiceUnavailable, fmt.Sprintf("id %d held back by the test", id)})
				continue
			}
			ok = append(ok, id)
		}
		if len(fs) == 0 {
			return false
		}
		partials.Add(1)
		e.rc.accept(r, ok)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMultiStatus)
		_ = json.NewEncoder(w).Encode(map[string]any{"accepted": len(ok), "failed": fs})
		return true
	})
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	// The records right after each held one are delivered ...
	waitFor(t, "the records after the held ones delivered", time.Minute, func() bool {
		held.check()
		e.rc.mu.Lock()
		defer e.rc.mu.Unlock()
		for id := range held.at {
			if e.rc.seen[id+parts] == 0 {
				return false
			}
		}
		return true
	})
	// ... and the commits settle exactly at the held records.
	var got map[int32]int64
	waitFor(t, "commits at the held records", time.Minute, func() bool {
		got = held.check()
		for _, at := range held.at {
			if got[at.part] != at.off {
				return false
			}
		}
		return true
	})
	held.failIfPassed()
	t.Logf("while held: committed %v, held %v, %d partial (207) answers", got, held.at, partials.Load())
	holding.Store(false)
	e.finish("partial failure", stopFeed, stopJob, nil)
	held.failIfPassed()
}

// TestSinkThrottledRetryAfter: the receiver answers 429 with Retry-After: 1
// a few times. With one request in flight, the writer sends nothing until
// the second has passed (a lower bound, so a slow machine cannot fail it),
// and every record arrives.
func TestSinkThrottledRetryAfter(t *testing.T) {
	const parts, throttles = 2, 3
	e := newFaultEnvOn(t, newCluster(t, parts), parts, 3000)
	e.cfg.Sink.Writer.MaxInFlightRequests = 1
	var (
		mu        sync.Mutex
		lastThrot time.Time
		gaps      []time.Duration
		n429      int
	)
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if !lastThrot.IsZero() {
			gaps = append(gaps, now.Sub(lastThrot))
			lastThrot = time.Time{}
		}
		if n429 < throttles && e.rc.uniqueCount() >= 500*(n429+1) {
			n429++
			lastThrot = time.Now()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return true
		}
		return false
	})
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 50*time.Millisecond)
	waitFor(t, "the 429s answered and followed by a request", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gaps) >= throttles
	})
	e.finish("429 with Retry-After", stopFeed, stopJob, nil)
	mu.Lock()
	defer mu.Unlock()
	for i, g := range gaps {
		// Retry-After: 1 means one second; allow for clock granularity.
		if g < 950*time.Millisecond {
			t.Errorf("request %d came %v after a 429 with Retry-After: 1", i, g)
		}
	}
	t.Logf("gaps after 429s: %v", gaps)
}

// TestSinkConnectionResets: the receiver resets the TCP connection (RST, no
// answer) on every fifth request for a while. The requests fail as
// retryable, are retried, and every record arrives.
func TestSinkConnectionResets(t *testing.T) {
	const parts, resets = 2, 10
	e := newFaultEnvOn(t, newCluster(t, parts), parts, 3000)
	var calls, done atomic.Int64
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		if calls.Add(1)%5 != 0 || done.Load() >= resets {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return false
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
		done.Add(1)
		return true
	})
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	waitFor(t, "the resets done", time.Minute, func() bool { return done.Load() >= resets })
	e.finish("connection resets", stopFeed, stopJob, nil)
}

// TestRebalanceWhileBreakerOpen: the sink is down, worker A's breaker is
// open and A holds every record of the topic. Worker B joins: the rebalance
// completes while the sink is still down (A does not hold it up behind the
// blocked sink: its revoke drain gives up after revoke_timeout), both stay
// in the group, and A does not send the records of the partitions that
// moved (B re-reads them from the last commit). Once the sink recovers
// every record is delivered and committed.
func TestRebalanceWhileBreakerOpen(t *testing.T) {
	const parts, n = 4, 1000
	c := newCluster(t, parts)
	e := newFaultEnvOn(t, c, parts, n)
	var down atomic.Bool
	down.Store(true)
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		if down.Load() {
			http.Error(w, "outage", http.StatusInternalServerError)
			return true
		}
		return false
	})
	e.cfg.Sink.Writer.MaxInFlightRequests = 1
	kafkaSrc(e.cfg).RevokeTimeout = 2 * time.Second
	e.cfg.Sink.CircuitBreaker = &sinks.BreakerConfig{FailureRatio: 0.5, MinRequests: 3, Interval: time.Minute, OpenTimeout: time.Second, HalfOpenRequests: 1}
	a, stopA := startJob(t, e.cfg)
	waitFor(t, "A degraded, holding every record", time.Minute, func() bool {
		return a.Health().Status == "degraded" && a.Snapshot().In >= n
	})
	cfgB := *e.cfg
	b, stopB := startJob(t, &cfgB)
	waitFor(t, "the rebalance done while the sink is down", time.Minute, func() bool {
		ha, hb := a.Health(), b.Health()
		return hb.Partitions > 0 && ha.Partitions > 0 && ha.Partitions+hb.Partitions == parts
	})
	if !down.Load() {
		t.Fatal("the sink recovered before the rebalance")
	}
	t.Logf("partitions while the sink is down: A %d, B %d; A %s, B %s", a.Health().Partitions, b.Health().Partitions, a.Health().Status, b.Health().Status)
	down.Store(false)
	dups := e.finish("rebalance while breaker open", func() (int, error) { return e.feed.count(), nil }, func() error {
		return errors.Join(stopB(), stopA())
	}, nil)
	abandoned := a.Snapshot().Abandoned
	t.Logf("A did not send %d records of the partitions that moved to B; %d duplicates", abandoned, dups)
	if abandoned == 0 {
		t.Fatal("A sent the records of the partitions it lost; they are B's to deliver")
	}
}
