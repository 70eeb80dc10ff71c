package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/sinks"
)

// Per-record precision under failure (issue 10, findings 1 and 3), each
// measured from outside the process: what the receiver accepted, what the
// dead-letter topic holds, what the group committed.

// precisionRun is one pipeline run over a fresh topic of n records: the
// receiver's hook decides each request, the run ends when every partition
// is committed to its end.
type precisionRun struct {
	c          *cluster
	rc         *receiver
	topic, dlq string
	group      string
	took       time.Duration // until everything was committed
	took90     time.Duration // until the receiver had 90% of the records
}

func runPrecision(t *testing.T, c *cluster, parts int32, n int, inflight int, ordering string, retry sinks.RetryConfig, hook func(w http.ResponseWriter, r *http.Request, ids []int64) bool) *precisionRun {
	t.Helper()
	p := &precisionRun{c: c, rc: newReceiver(t), topic: name(t, "topic"), dlq: name(t, "dlq"), group: name(t, "group")}
	c.createTopic(t, p.topic, parts)
	c.createTopic(t, p.dlq, 1)
	c.produce(t, p.topic, n, 100)
	p.rc.setHook(hook)
	cfg := kafkaToHTTP(c, p.topic, p.group, p.rc.URL())
	cfg.Sink.Writer.MaxInFlightRequests = inflight
	cfg.Sink.Writer.Ordering = ordering
	cfg.Sink.Writer.MaxBatchSize = 100
	cfg.Errors.Tolerance = "all"
	cfg.Errors.Topic = p.dlq
	cfg.Errors.RetryConfig = retry
	start := time.Now()
	_, stop := startJob(t, cfg)
	waitFor(t, "all committed", 3*time.Minute, func() bool {
		if p.took90 == 0 && p.rc.uniqueCount() >= n*9/10 {
			p.took90 = time.Since(start)
		}
		ok, _ := c.committedEqualsEnd(t, p.group, p.topic)
		return ok
	})
	p.took = time.Since(start)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPoisonRecordsIsolated (finding 1): the receiver answers 400 with
// {"error":…,"bad_ids":[…]} for any batch holding one of the invalid
// records, as many APIs do. Only the invalid records may end in the
// dead-letter topic, each alone with its own error; every valid one is
// delivered; everything is committed. The cost against a run without
// invalid records is logged (issue goal: at least half the throughput).
func TestPoisonRecordsIsolated(t *testing.T) {
	const n, every = 20000, 1000 // 20 invalid records, ids 500, 1500, ...
	bad := func(id int64) bool { return id%every == every/2 }
	c := newCluster(t, 4)

	clean := runPrecision(t, c, 4, n, 8, "", sinks.RetryConfig{}, nil)

	var mu sync.Mutex
	refused := 0
	p := runPrecision(t, c, 4, n, 8, "", sinks.RetryConfig{}, func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		var inBatch []int64
		for _, id := range ids {
			if bad(id) {
				inBatch = append(inBatch, id)
			}
		}
		if len(inBatch) == 0 {
			return false
		}
		mu.Lock()
		refused++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid record", "bad_ids": inBatch})
		return true
	})

	recs := c.readTopic(t, p.dlq, n/every)
	dead := map[int64]int{}
	for _, r := range recs {
		var v struct{ ID int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("dead letter %q: %v", r.Value, err)
		}
		dead[v.ID]++
		if !bad(v.ID) {
			t.Errorf("valid record %d dead-lettered", v.ID)
		}
		if got := header(r, deadletter.HeaderClass); got != "fatal" {
			t.Errorf("record %d: class %q, want fatal", v.ID, got)
		}
		// Its own error: the answer to a request holding only it.
		if body := strings.TrimSpace(header(r, "spillway.http.body")); body != fmt.Sprintf(`{"bad_ids":[%d],"error":"invalid record"}`, v.ID) {
			t.Errorf("record %d: body header %q, want the answer about it alone", v.ID, body)
		}
	}
	if len(recs) != n/every || len(dead) != n/every {
		t.Errorf("%d dead letters for %d ids, want %d", len(recs), len(dead), n/every)
	}
	unique, dups, missing := p.rc.stats(n)
	for _, id := range missing {
		if !bad(id) {
			t.Errorf("valid record %d never delivered", id)
		}
	}
	if unique != n-n/every {
		t.Errorf("delivered %d, want %d", unique, n-n/every)
	}
	t.Logf("clean run %v, with %d invalid records %v (throughput ratio %.2f); %d refused requests, %d duplicates",
		clean.took.Round(time.Millisecond), n/every, p.took.Round(time.Millisecond),
		clean.took.Seconds()/p.took.Seconds(), refused, dups)
}

// TestRetriesDoNotIdleWriter (finding 3): the receiver takes 5ms per
// request and fails half of them at random with 500. With 8 requests in
// flight the writer must keep its slots busy while failed batches wait out
// their backoff, so it beats a one-request-at-a-time relay by far (issue
// goal: 3×; before, 8 in flight was about as slow as 1). Compared is the
// time until 90% arrived: the last batches' chains of retries (with p =
// 1/2, some batch of 30 fails five times in a row) take as long whatever
// the concurrency. Nothing is lost.
func TestRetriesDoNotIdleWriter(t *testing.T) {
	const n = 3000
	c := newCluster(t, 12)
	flaky := func() func(w http.ResponseWriter, r *http.Request, ids []int64) bool {
		var mu sync.Mutex
		rnd := rand.New(rand.NewPCG(1, 2))
		return func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			fail := rnd.IntN(2) == 0
			mu.Unlock()
			if fail {
				w.Header().Set("Content-Length", strconv.Itoa(0))
				w.WriteHeader(http.StatusInternalServerError)
			}
			return fail
		}
	}
	// The default backoff (100ms, doubling), capped at 1s.
	retry := sinks.RetryConfig{MaxAttempts: 1000, MaxRetryBackoff: time.Second}
	// 12 partitions: under partition order (the default) a partition has
	// one batch in flight or waiting, so 8 requests in flight need 8
	// partitions with records to send.
	relay := runPrecision(t, c, 12, n, 1, "", retry, flaky())
	for _, tc := range []struct {
		ordering string
		want     float64 // least ratio to the relay
	}{
		// A ratio of two runs on one machine, not a wall-clock bound.
		// Measured here: 11-16× unordered, 2.6× when any waiting retry held
		// newer records back. In partition order a partition's batches
		// and their retries go one after another, so the ratio depends on
		// the unluckiest partitions' chains of retries: 2.7-6.5× measured
		// (goal 3×); the bound only catches a writer gone serial.
		{sinks.OrderNone, 4},
		{sinks.OrderPartition, 2},
	} {
		eight := runPrecision(t, c, 12, n, 8, tc.ordering, retry, flaky())
		for _, p := range []*precisionRun{relay, eight} {
			if _, _, missing := p.rc.stats(n); len(missing) > 0 {
				t.Fatalf("%d records never delivered", len(missing))
			}
		}
		ratio := relay.took90.Seconds() / eight.took90.Seconds()
		t.Logf("50%% 500s, %d records, 90%% delivered (all committed): 1 in flight %v (%v), 8 in flight, %s order, %v (%v): %.1f× faster",
			n, relay.took90.Round(time.Millisecond), relay.took.Round(time.Millisecond), tc.ordering,
			eight.took90.Round(time.Millisecond), eight.took.Round(time.Millisecond), ratio)
		if ratio < tc.want {
			t.Errorf("%s order: 8 in flight only %.1f× faster than 1 under 50%% failures, want %.0f×: retries idle the writer", tc.ordering, ratio, tc.want)
		}
	}
}
