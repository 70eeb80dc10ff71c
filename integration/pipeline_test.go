package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/sinks"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SPILLWAY_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// kafkaToHTTP is a pipeline config from topic to url on c.
func kafkaToHTTP(c *cluster, topic, group, url string) *config.Pipeline {
	cfg := &config.Pipeline{
		Name:    "it",
		Brokers: c.Addrs,
		Source: config.Source{Kind: "kafka", Config: &kafka.Config{
			Topics: []string{topic}, Group: group, StartOffset: "earliest",
			CheckpointInterval: 200 * time.Millisecond, RevokeTimeout: 5 * time.Second, ConnectTimeout: 10 * time.Second,
		}},
		Sink: config.Sink{Kind: "http", Config: &sinkhttp.Config{URL: url}},
		Errors: config.Errors{
			RetryConfig: sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond},
		},
		ShutdownTimeout: 20 * time.Second,
		// Every job built here is named "it": on a shared external cluster
		// a state topic would carry one test's learnt rate into the next.
		// The state tests (state_test.go) set their own topics.
		State: state.Config{Kind: state.KindMemory},
	}
	// Writer is promoted from an unexported struct: no composite literal.
	cfg.Sink.Writer = sinks.Config{
		MaxBatchSize: 500, MaxInFlightRequests: 8, MaxBufferedRequests: 5000,
		MaxTimeInBuffer: 50 * time.Millisecond, RequestTimeout: 5 * time.Second,
	}
	return cfg
}

// startJob builds and runs cfg; the returned stop cancels it (graceful
// drain) and returns Run's error.
func startJob(t *testing.T, cfg *config.Pipeline) (*job.Job, func() error) {
	t.Helper()
	return startJobLogging(t, cfg, testLogger(t))
}

// startJobLogging is startJob with the job's logger.
func startJobLogging(t *testing.T, cfg *config.Pipeline, log *slog.Logger) (*job.Job, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	j, err := job.Build(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("build job: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(60 * time.Second):
				t.Errorf("job did not stop within 60s")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return j, stop
}

// waitFor polls cond every 50ms until it is true or the deadline passes.
// The deadline only bounds a hung test; no assertion is about speed.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKafkaToHTTP100k runs 100k records Kafka → HTTP and checks every
// record was delivered and every partition committed to its end.
func TestKafkaToHTTP100k(t *testing.T) {
	const n = 100_000
	c := newCluster(t, 8)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 8)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)

	_, stop := startJob(t, kafkaToHTTP(c, topic, group, rc.URL()))
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}
	unique, dups, missing := rc.stats(n)
	if len(missing) > 0 {
		t.Fatalf("%d records never delivered, first %v", len(missing), missing[:min(10, len(missing))])
	}
	if ok, desc := c.committedEqualsEnd(t, group, topic); !ok {
		t.Fatalf("committed offsets after shutdown: %s", desc)
	}
	t.Logf("delivered %d unique, %d duplicates", unique, dups)
}

// TestRebalanceTwoWorkers runs one worker while records keep arriving, adds
// a second worker to the group mid-stream, then stops the first: no record
// is lost and every partition is committed to its end.
func TestRebalanceTwoWorkers(t *testing.T) {
	const n = 40_000
	c := newCluster(t, 8)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 8)
	rc := newReceiver(t)
	// Records keep arriving during the whole test.
	produced := make(chan error, 1)
	go func() { produced <- c.produceRange(t, topic, 0, n, 500, 40*time.Millisecond) }()

	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.Writer.MaxBufferedRequests = 1000
	kafkaSrc(cfg).SessionTimeout = 6 * time.Second
	_, stopA := startJob(t, cfg)
	waitFor(t, "first worker delivering", time.Minute, func() bool { return rc.uniqueCount() >= n/10 })
	cfgB := *cfg
	cfgB.Name = "it-b"
	jobB, stopB := startJob(t, &cfgB)
	waitFor(t, "second worker receiving records", time.Minute, func() bool { return jobB.Snapshot().In > 0 })
	if rc.uniqueCount() >= n {
		t.Fatal("everything was delivered before the second worker joined; the rebalance was not mid-stream")
	}
	if err := stopA(); err != nil {
		t.Fatalf("worker A: %v", err)
	}
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stopB(); err != nil {
		t.Fatalf("worker B: %v", err)
	}
	unique, dups, missing := rc.stats(n)
	if len(missing) > 0 {
		t.Fatalf("%d records lost, first %v", len(missing), missing[:min(10, len(missing))])
	}
	t.Logf("delivered %d unique, %d duplicates across the rebalances", unique, dups)
}

// TestRebalanceBehindRateLimitedSink: a worker whose buffer holds far
// more than its rate-limited sink sends in the revoke bound gives the
// unsent records of the partitions it loses back instead of sending them
// first, so a worker that joins gets its partitions at once, not after
// the old owner drained its buffer (here 5,000 records at 100 records/s,
// the lost partitions' half interleaved with the rest: past the 30 s
// revoke bound). Nothing is lost: the new owner reads the given-back
// records again from the commit.
func TestRebalanceBehindRateLimitedSink(t *testing.T) {
	const n, rate = 12_000, 100
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.Writer.MaxBufferedRequests = 5000
	cfg.Sink.RateLimit = &config.RateLimit{Kind: string(backpressure.KindTokenBucket),
		Config: &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: rate, RecordBurst: 100}}
	kafkaSrc(cfg).RevokeTimeout = 30 * time.Second
	kafkaSrc(cfg).RebalanceTimeout = 45 * time.Second
	jobA, stopA := startJob(t, cfg)
	waitFor(t, "the first worker's buffer full", time.Minute, func() bool { return jobA.Snapshot().Buffered >= 4000 })
	cfgB := *cfg
	cfgB.Name = "it-b"
	joined := time.Now()
	jobB, stopB := startJob(t, &cfgB)
	waitFor(t, "second worker receiving records", time.Minute, func() bool { return jobB.Snapshot().In > 0 })
	took := time.Since(joined)
	abandoned := jobA.Snapshot().Abandoned
	t.Logf("second worker got records %v after joining; the first gave %d records back", took.Round(time.Millisecond), abandoned)
	if abandoned == 0 {
		t.Error("the first worker gave no records back: it sent the revoked partitions' buffer first")
	}
	// Draining would take the 30 s revoke bound; a rebalance on kfake
	// takes about a second.
	if took >= 15*time.Second {
		t.Errorf("second worker got records %v after joining: the rebalance waited for the first worker's buffer", took)
	}
	if err := stopA(); err != nil {
		// Its buffer does not drain at 100 records/s within the shutdown
		// bound: what it did not send is read again from the commit.
		t.Logf("worker A: %v", err)
	}
	cfgFast := cfgB
	cfgFast.Sink.RateLimit = nil
	if err := stopB(); err != nil {
		t.Logf("worker B: %v", err) // as worker A
	}
	_, stopC := startJob(t, &cfgFast) // the rest without the limit
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stopC(); err != nil {
		t.Fatal(err)
	}
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost across the rebalance, first %v", len(missing), missing[:min(10, len(missing))])
	}
}

// TestBoundedMemorySlowSink: a Kafka source much faster than a slow sink.
// The writer never holds more than its byte budget, fetching pauses and
// resumes, and nothing is lost.
func TestBoundedMemorySlowSink(t *testing.T) {
	const n = 20_000
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	c.produce(t, topic, n, 200)
	rc := newReceiver(t)
	rc.setHook(func(http.ResponseWriter, *http.Request, []int64) bool {
		time.Sleep(3 * time.Millisecond)
		return false
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	const budget = 64 << 10
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.Writer.MaxBatchBytes = 32 << 10
	cfg.Sink.Writer.MaxRecordBytes = 32 << 10
	cfg.Sink.Writer.MaxBufferedBytes = budget
	cfg.Sink.Writer.MaxBufferedRequests = 5000
	cfg.Sink.Writer.MaxInFlightRequests = 2
	j, stop := startJob(t, cfg)
	var peak int64
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		peak = max(peak, j.Snapshot().BufferedBytes)
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := j.Snapshot()
	if s.PeakBufferedBytes > budget || peak > budget {
		t.Fatalf("writer held %d bytes (sampled %d), budget %d", s.PeakBufferedBytes, peak, budget)
	}
	if s.FetchPauses == 0 {
		t.Fatal("the source never paused fetching although the sink was much slower")
	}
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost", len(missing))
	}
	t.Logf("peak buffered %d of %d bytes; fetching paused %d times for %v", s.PeakBufferedBytes, budget, s.FetchPauses, s.FetchPaused.Round(time.Millisecond))
}

// TestTokenBucketLimitsDelivery: with a token bucket of R records/s, the
// receiver never gets more than burst + R·t records by time t since the
// start. Only an upper bound is asserted: a slow machine can only lower the
// rate, so the test does not depend on the machine's speed.
func TestTokenBucketLimitsDelivery(t *testing.T) {
	const (
		n     = 6000
		rate  = 4000.0
		burst = 500
	)
	c := newCluster(t, 2)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 2)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	var mu sync.Mutex
	var got int
	var violation string
	start := time.Now()
	rc.setHook(func(_ http.ResponseWriter, _ *http.Request, ids []int64) bool {
		mu.Lock()
		defer mu.Unlock()
		got += len(ids)
		allowed := burst + rate*time.Since(start).Seconds()
		if float64(got) > allowed && violation == "" {
			violation = fmt.Sprintf("%d records after %v, limit allows %.0f", got, time.Since(start), allowed)
		}
		return false
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.RateLimit = &config.RateLimit{Kind: string(backpressure.KindTokenBucket),
		Config: &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: rate, RecordBurst: burst}}
	_, stop := startJob(t, cfg)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if violation != "" {
		t.Fatal(violation)
	}
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost", len(missing))
	}
}

// TestBreakerOpensOnOutageAndRecovers: a 500 storm opens the breaker, no
// requests go out while it is open, the buffer fills and the source pauses
// fetching; when the receiver recovers a probe closes the breaker and every
// record is delivered and committed.
func TestBreakerOpensOnOutageAndRecovers(t *testing.T) {
	const n = 20_000
	c := newCluster(t, 2)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 2)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	var down sync.Map
	down.Store("down", true)
	var whileOpen atomic.Int64
	var jp atomic.Pointer[job.Job]
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		if j := jp.Load(); j != nil && j.Snapshot().Breaker == "open" {
			whileOpen.Add(1) // a request arrived although the breaker was open
		}
		if v, _ := down.Load("down"); v == true {
			http.Error(w, "outage", http.StatusInternalServerError)
			return true
		}
		return false
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.Writer.MaxBufferedRequests = 2000
	cfg.Sink.Writer.MaxInFlightRequests = 1
	cfg.Sink.CircuitBreaker = &sinks.BreakerConfig{FailureRatio: 0.5, MinRequests: 5, Interval: time.Minute, OpenTimeout: 300 * time.Millisecond, HalfOpenRequests: 1}
	j, stop := startJob(t, cfg)
	jp.Store(j)
	if h := j.Health(); h.Status != "ready" && h.Status != "starting" {
		t.Fatalf("health before the outage: %+v", h)
	}
	waitFor(t, "breaker open", time.Minute, func() bool { return j.Snapshot().Breaker == "open" })
	waitFor(t, "fetch paused", time.Minute, func() bool { return j.Snapshot().FetchPauses > 0 })
	waitFor(t, "readiness degraded", time.Minute, func() bool { return j.Health().Status == "degraded" })
	if h := j.Health(); h.Partitions != 2 || len(h.Reasons) == 0 {
		t.Fatalf("degraded health: %+v; want both partitions still owned and a reason", h)
	}
	if b := j.Snapshot().Buffered; b > 2000 {
		t.Fatalf("buffered %d records, budget 2000", b)
	}
	down.Store("down", false)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost across the outage", len(missing))
	}
	waitFor(t, "readiness back to ready", time.Minute, func() bool { return j.Health().Status == "ready" })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if h := j.Health(); h.Status != "stopped" {
		t.Fatalf("health after stop: %+v", h)
	}
	if got := j.Snapshot().Breaker; got != "closed" {
		t.Fatalf("breaker %s after recovery, want closed", got)
	}
	// A request may race the transition to open by a moment; more than the
	// single half-open probe per open period would mean the breaker leaks.
	t.Logf("requests seen while open: %d", whileOpen.Load())
}
