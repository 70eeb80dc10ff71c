package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/internal/ops"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/state"
)

// Issue 13, items 1, 2 and 4: state in Kafka with memory fallback, strategy
// state across restarts, live limit changes through the control topic.

// stateCfg is kafkaToHTTP with the job's name and state topics unique to
// the test, so that tests sharing an external cluster do not see each
// other's state.
func stateCfg(t *testing.T, c *cluster, topic, group, url, jobName string) *config.Pipeline {
	cfg := kafkaToHTTP(c, topic, group, url)
	cfg.Name = jobName
	cfg.State = state.Config{
		Topic: name(t, "state"), ControlTopic: name(t, "control"),
		WriteInterval: 100 * time.Millisecond, RetryInterval: 500 * time.Millisecond, LoadTimeout: 2 * time.Second,
	}
	return cfg
}

// sameState points cfg at the state topics and job name of from.
func sameState(cfg, from *config.Pipeline) {
	cfg.Name, cfg.State = from.Name, from.State
}

// TestLiveLimitTwoWorkers: two workers of one job (one group) apply a live
// limit change within one second each, ignore a malformed control record,
// and go back to the configured limit on clear.
func TestLiveLimitTwoWorkers(t *testing.T) {
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	c.produce(t, topic, 2000, 100)
	rc := newReceiver(t)
	jobName := name(t, "job")
	var jobs []*job.Job
	var buckets []*backpressure.TokenBucket
	var first *config.Pipeline
	for i := range 2 {
		cfg := stateCfg(t, c, topic, group, rc.URL(), jobName)
		if first == nil {
			first = cfg
		} else {
			sameState(cfg, first)
		}
		cfg.Sink.RateLimit = &config.RateLimit{Kind: string(backpressure.KindTokenBucket),
			Config: &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 50_000}}
		j, _ := startJob(t, cfg)
		tb, ok := j.Strategy.(*backpressure.TokenBucket)
		if !ok {
			t.Fatalf("worker %d: strategy %T, want a token bucket", i, j.Strategy)
		}
		jobs, buckets = append(jobs, j), append(buckets, tb)
	}
	waitFor(t, "both workers own partitions", time.Minute, func() bool {
		return jobs[0].Health().Partitions > 0 && jobs[1].Health().Partitions > 0
	})

	publish := func(ch state.LimitChange) time.Time {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		at := time.Now()
		if err := state.PublishLimitChange(ctx, c.clientOpts(t), first.State.ControlTopic, 1, -1, ch); err != nil {
			t.Fatal(err)
		}
		return at
	}
	// applied waits until every worker's bucket runs at rps and returns how
	// long each took from the publication.
	applied := func(at time.Time, rps float64) []time.Duration {
		t.Helper()
		took := make([]time.Duration, len(buckets))
		waitFor(t, "the limit applied by every worker", 30*time.Second, func() bool {
			done := true
			for i, tb := range buckets {
				if took[i] == 0 && tb.Rate().RecordsPerSecond == rps {
					took[i] = time.Since(at)
				}
				done = done && took[i] > 0
			}
			return done
		})
		return took
	}

	at := publish(state.LimitChange{Job: jobName, RecordsPerSecond: 777})
	took := applied(at, 777)
	for i, d := range took {
		t.Logf("worker %d applied the live limit %s after publication", i, d)
		if d > time.Second {
			t.Errorf("worker %d applied the live limit after %s, want within 1s", i, d)
		}
		if got := jobs[i].Snapshot().Limit; got != "records_per_second=777" {
			t.Errorf("worker %d: snapshot limit %q", i, got)
		}
	}

	// A malformed record (and one for another job) changes nothing; the
	// next good one is applied.
	cl, err := kgo.NewClient(c.clientOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := []*kgo.Record{
		{Topic: first.State.ControlTopic, Key: []byte(jobName), Value: []byte(`{"version":1,"job":"` + jobName + `","records_per_second":-3}`)},
		{Topic: first.State.ControlTopic, Key: []byte(jobName), Value: []byte(`not json`)},
		{Topic: first.State.ControlTopic, Key: []byte("other-job"), Value: []byte(`{"version":1,"job":"other-job","records_per_second":5}`)},
	}
	if err := cl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	at = publish(state.LimitChange{Job: jobName, RecordsPerSecond: 555})
	applied(at, 555) // the records before it were read and ignored
	for i, tb := range buckets {
		if r := tb.Rate(); r.RecordsPerSecond != 555 {
			t.Errorf("worker %d runs at %v after the malformed records", i, r.RecordsPerSecond)
		}
	}

	at = publish(state.LimitChange{Job: jobName, Clear: true})
	applied(at, 50_000)
	for i, j := range jobs {
		if got := j.Snapshot().Limit; got != "" {
			t.Errorf("worker %d: limit %q after clear", i, got)
		}
	}
}

// TestRestartResumesSavedLimit: a worker whose AIMD limit dropped (the
// receiver throttled it) saves it; a worker started afterwards resumes at
// that limit, not at full speed, as does a live limit saved meanwhile.
func TestRestartResumesSavedLimit(t *testing.T) {
	const n = 3000
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	cfg := stateCfg(t, c, topic, group, rc.URL(), name(t, "job"))
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Sink.RateLimit = &config.RateLimit{Kind: string(backpressure.KindAIMD),
		Config: &backpressure.Config{Kind: backpressure.KindAIMD, MaxLimit: 1000}}
	j, stop := startJob(t, cfg)
	aimd := j.Strategy.(*backpressure.AIMD)
	// Throttle until the limit has dropped below 300, then take everything.
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		if aimd.Limit() >= 300 {
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	})
	waitFor(t, "every record delivered", time.Minute, func() bool { return rc.uniqueCount() >= n })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dropped := aimd.Limit()
	if dropped >= 1000 {
		t.Fatalf("the AIMD limit did not drop: %d", dropped)
	}

	// The restarted worker reads the state topic at build: before it sends
	// anything, its limit is the one saved.
	cfg2 := stateCfg(t, c, topic, group, rc.URL(), "")
	sameState(cfg2, cfg)
	cfg2.Sink.Writer.MaxBatchSize = 100
	cfg2.Sink.RateLimit = cfg.Sink.RateLimit
	j2, err := job.Build(context.Background(), cfg2, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx, cancel := context.WithCancel(context.Background()); cancel(); _ = j2.Run(ctx) })
	if got := j2.Strategy.(*backpressure.AIMD).Limit(); got != dropped {
		t.Errorf("restarted worker's AIMD limit %d, want the saved %d (a fresh one starts at 1000)", got, dropped)
	}
	t.Logf("AIMD limit dropped to %d under throttling; the restarted worker resumed at %d", dropped, j2.Strategy.(*backpressure.AIMD).Limit())
}

// TestStateFallback: the state topic becomes unavailable (kfake refuses
// every request naming it) → the job keeps delivering, keeps state in
// memory, /readyz says degraded with the reason; the topic comes back →
// the state written meanwhile is in the topic and /readyz is ready again.
func TestStateFallback(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_BROKERS") != "" || os.Getenv("SPILLWAY_TEST_TESTCONTAINERS") == "1" {
		t.Skip(skipNoFake)
	}
	e := newFaultEnv(t, 4, 1000)
	e.cfg.Name = name(t, "job")
	e.cfg.State = state.Config{Topic: name(t, "state"), ControlTopic: name(t, "control"),
		WriteInterval: 100 * time.Millisecond, RetryInterval: 300 * time.Millisecond, LoadTimeout: time.Second}
	stateTopic := e.cfg.State.Topic
	var down atomic.Bool
	names := func(req kmsg.Request) bool {
		switch r := req.(type) {
		case *kmsg.ProduceRequest:
			for _, tp := range r.Topics {
				if tp.Topic == stateTopic {
					return true
				}
			}
		case *kmsg.ListOffsetsRequest:
			for _, tp := range r.Topics {
				if tp.Topic == stateTopic {
					return true
				}
			}
		case *kmsg.MetadataRequest:
			for _, tp := range r.Topics {
				if tp.Topic != nil && *tp.Topic == stateTopic {
					return true
				}
			}
		case *kmsg.CreateTopicsRequest:
			for _, tp := range r.Topics {
				if tp.Topic == stateTopic {
					return true
				}
			}
		}
		return false
	}
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.ListOffsets, kmsg.Metadata, kmsg.CreateTopics} {
		e.fake.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			if !down.Load() || !names(req) {
				return nil, nil, false
			}
			e.fake.KeepControl()
			return nil, errInjected, true
		})
	}

	j, stopJob := startJob(t, e.cfg)
	srv := httptest.NewServer(ops.Handler(j.Health))
	defer srv.Close()
	readyz := func() (int, job.Health) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h job.Health
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return resp.StatusCode, h
	}
	e.waitDelivered("delivery under way", 500)
	waitFor(t, "ready", 30*time.Second, func() bool { code, _ := readyz(); return code == http.StatusOK })
	if _, h := readyz(); h.State != "kafka" {
		t.Fatalf("state %q before the fault, want kafka", h.State)
	}

	down.Store(true)
	waitFor(t, "the store degraded", 30*time.Second, func() bool { return j.StateStore().Status().Degraded })
	code, h := readyz()
	if code != http.StatusServiceUnavailable || h.Status != "degraded" || !strings.HasPrefix(h.State, "memory (degraded") ||
		len(h.Reasons) == 0 || !strings.Contains(strings.Join(h.Reasons, " "), "state store on memory") {
		t.Errorf("/readyz while the state topic is down: %d %+v", code, h)
	}
	// The pipeline keeps running, and a live limit is applied and kept in
	// memory meanwhile.
	feedStop := e.feed.keepProducing(t, 100, 10*time.Millisecond)
	before := e.rc.uniqueCount()
	e.waitDelivered("delivery while the state topic is down", before+500)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := state.PublishLimitChange(ctx, e.c.clientOpts(t), e.cfg.State.ControlTopic, 1, -1,
		state.LimitChange{Job: e.cfg.Name, RecordsPerSecond: 1e6}); err != nil {
		t.Fatal(err)
	}
	limitsKey := state.Key(e.cfg.Name, "limits")
	waitFor(t, "the live limit kept in memory", 10*time.Second, func() bool { _, ok := j.StateStore().Get(limitsKey); return ok })
	if !j.StateStore().Status().Degraded {
		t.Fatal("the store recovered while the state topic was still down")
	}

	down.Store(false)
	waitFor(t, "the store recovered", 30*time.Second, func() bool { return !j.StateStore().Status().Degraded })
	if code, h := readyz(); code != http.StatusOK || h.State != "kafka" {
		t.Errorf("/readyz after recovery: %d %+v", code, h)
	}
	// Resync: the value written while degraded is in the topic.
	s, err := state.OpenKafka(ctx, state.KafkaOptions{Topic: stateTopic, ClientOpts: e.c.clientOpts(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if v, ok := s.Get(limitsKey); !ok || !strings.Contains(string(v), `"records_per_second":1000000`) {
		t.Errorf("state topic after recovery: %s = %q, %v", limitsKey, v, ok)
	}
	e.finish("state fallback", feedStop, stopJob, nil)
}

// TestBreakerHistorySaved: a worker whose breaker opened saves it; a worker
// started afterwards reads that record at build (and logs it).
func TestBreakerHistorySaved(t *testing.T) {
	c := newCluster(t, 2)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 2)
	c.produce(t, topic, 500, 100)
	rc := newReceiver(t)
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	cfg := stateCfg(t, c, topic, group, rc.URL(), name(t, "job"))
	cfg.Sink.Writer.MaxBatchSize = 10
	cfg.Sink.CircuitBreaker = &sinks.BreakerConfig{FailureRatio: 0.5, MinRequests: 3, Interval: time.Minute, OpenTimeout: time.Hour, HalfOpenRequests: 1}
	cfg.ShutdownTimeout = time.Second // the records wait behind the open breaker: the drain gives up
	j, stop := startJob(t, cfg)
	key := state.Key(cfg.Name, "breaker")
	waitFor(t, "the open breaker saved", time.Minute, func() bool {
		v, _ := j.StateStore().Get(key)
		return j.Snapshot().Breaker == "open" && strings.Contains(string(v), `"state":"open"`)
	})
	if err := stop(); err != nil {
		t.Logf("job: %v", err) // records wait behind the open breaker
	}

	cfg2 := stateCfg(t, c, topic, group, rc.URL(), "")
	sameState(cfg2, cfg)
	j2, err := job.Build(context.Background(), cfg2, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx, cancel := context.WithCancel(context.Background()); cancel(); _ = j2.Run(ctx) })
	v, ok := j2.StateStore().Get(key)
	var rec struct {
		State       string `json:"state"`
		Transitions int64  `json:"transitions"`
	}
	if !ok || json.Unmarshal(v, &rec) != nil || rec.State != "open" || rec.Transitions < 1 {
		t.Errorf("a restarted worker read %s = %s (%v), want the open breaker", key, v, ok)
	}
}
