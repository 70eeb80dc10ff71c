package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/sinks"
)

// The writer's ordering (sink.writer.ordering, issue 12 item 3) measured
// where it matters: at the receiver, from outside the process, under 500s,
// delayed answers and several requests in flight.

// keyedFeed is a topic of n records on keys k0..k(keys-1), key i in
// partition i % parts; each value carries its id, key and the key's
// sequence number ({"id":N,"key":"k3","seq":S}); off holds the offset
// each id landed at.
type keyedFeed struct {
	topic string
	n     int
	key   []int   // id → key index
	seq   []int64 // id → sequence number within its key
	part  []int32 // id → partition
	off   []int64 // id → offset in its partition
}

func produceKeyed(t *testing.T, c *cluster, topic string, parts int32, keys, n int) *keyedFeed {
	t.Helper()
	c.createTopic(t, topic, parts)
	f := &keyedFeed{topic: topic, n: n, key: make([]int, n), seq: make([]int64, n), part: make([]int32, n), off: make([]int64, n)}
	cl, err := kgo.NewClient(append(c.clientOpts(t), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rnd := rand.New(rand.NewPCG(3, 5))
	next := make([]int64, keys)
	recs := make([]*kgo.Record, n)
	ids := make(map[*kgo.Record]int, n)
	for id := range recs {
		k := rnd.IntN(keys)
		f.key[id], f.seq[id], f.part[id] = k, next[k], int32(k%int(parts))
		next[k]++
		recs[id] = &kgo.Record{
			Partition: f.part[id],
			Key:       fmt.Appendf(nil, "k%d", k),
			Value:     fmt.Appendf(nil, `{"id":%d,"key":"k%d","seq":%d}`, id, k, f.seq[id]),
		}
		ids[recs[id]] = id
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	for _, r := range res {
		f.off[ids[r.Record]] = r.Record.Offset
	}
	// The test's premise: a key's sequence follows its partition's offsets.
	last := make([]int64, keys)
	for i := range last {
		last[i] = -1
	}
	for id := range n {
		if k := f.key[id]; f.off[id] <= last[k] {
			t.Fatalf("key k%d: id %d at offset %d, after an earlier record at %d", k, id, f.off[id], last[k])
		} else {
			last[k] = f.off[id]
		}
	}
	return f
}

// orderReceiver answers each request 500 with probability failPct% and
// delays some answers (up to maxDelay), so that requests overtake each
// other and retries go out while later batches are in flight. Only a 2xx
// answer accepts a request's records. At each record's first acceptance it
// counts a violation of partition order when a later record (higher
// offset) of its partition was accepted before, and likewise of key order
// (higher sequence number of its key).
type orderReceiver struct {
	srv      *httptest.Server
	feed     *keyedFeed
	failPct  int
	delayPct int
	maxDelay time.Duration

	mu        sync.Mutex
	rnd       *rand.Rand
	accepted  []int           // id → times accepted
	partMax   map[int32]int64 // partition → highest offset accepted
	keyMax    map[int]int64   // key → highest sequence number accepted
	partViols int
	keyViols  int
	reqs      int
	failed    int
	badBodies []string
}

func newOrderReceiver(t *testing.T, f *keyedFeed, seed uint64) *orderReceiver {
	rc := &orderReceiver{
		feed: f, failPct: 20, delayPct: 30, maxDelay: 25 * time.Millisecond,
		rnd: rand.New(rand.NewPCG(seed, 17)), accepted: make([]int, f.n),
		partMax: map[int32]int64{}, keyMax: map[int]int64{},
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *orderReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var vals []struct {
		ID *int `json:"id"`
	}
	if err := json.Unmarshal(body, &vals); err != nil {
		rc.mu.Lock()
		rc.badBodies = append(rc.badBodies, fmt.Sprintf("%v: %.200q", err, body))
		rc.mu.Unlock()
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	fail := rc.rnd.IntN(100) < rc.failPct
	var delay time.Duration
	if rc.rnd.IntN(100) < rc.delayPct {
		delay = time.Duration(rc.rnd.Int64N(int64(rc.maxDelay)))
	}
	rc.mu.Unlock()
	time.Sleep(delay)
	rc.mu.Lock()
	rc.reqs++
	if fail {
		rc.failed++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	for _, v := range vals {
		if v.ID == nil || *v.ID < 0 || *v.ID >= rc.feed.n {
			rc.badBodies = append(rc.badBodies, fmt.Sprintf("unknown element %.200q", body))
			continue
		}
		rc.accept(*v.ID)
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// accept counts id's acceptance; the caller holds rc.mu.
func (rc *orderReceiver) accept(id int) {
	if rc.accepted[id]++; rc.accepted[id] > 1 {
		return // only the first acceptance counts for order
	}
	f := rc.feed
	p, off := f.part[id], f.off[id]
	if m, ok := rc.partMax[p]; ok && m > off {
		rc.partViols++
	} else {
		rc.partMax[p] = off
	}
	k, s := f.key[id], f.seq[id]
	if m, ok := rc.keyMax[k]; ok && m > s {
		rc.keyViols++
	} else {
		rc.keyMax[k] = s
	}
}

// result is what the receiver counted: violations of partition and key
// order, records never accepted, duplicates, requests and 500s.
func (rc *orderReceiver) result() (partViols, keyViols, lost, dups, reqs, failed int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, c := range rc.accepted {
		if c == 0 {
			lost++
		}
		dups += max(c-1, 0)
	}
	return rc.partViols, rc.keyViols, lost, dups, rc.reqs, rc.failed
}

// TestOrderingAtReceiver: 50,000 records on 50 keys over 4 partitions go
// Kafka → HTTP with 8 requests in flight (batches of 10, fewer than a
// partition's keys, so key order has batches of one partition in flight
// together) to a receiver
// that answers 500 to a random 20% of requests and delays 30% of its
// answers by up to 25 ms. Counted at the receiver, from each record's
// first 2xx acceptance: with ordering partition no record is accepted
// after a later record of its partition; with key none after a later
// record of its key; with none, under the same load, records are accepted
// out of key order (the check can fail). Nothing is lost in any mode, and
// every offset is committed.
func TestOrderingAtReceiver(t *testing.T) {
	const n, parts, keys = 50_000, 4, 50
	c := newCluster(t, parts)
	f := produceKeyed(t, c, name(t, "topic"), parts, keys, n)
	for i, mode := range []string{sinks.OrderPartition, sinks.OrderKey, sinks.OrderNone} {
		t.Run(mode, func(t *testing.T) {
			rc := newOrderReceiver(t, f, uint64(i+1))
			group := name(t, "group")
			cfg := kafkaToHTTP(c, f.topic, group, rc.srv.URL+"/ingest")
			cfg.Sink.Writer.Ordering = mode
			cfg.Sink.Writer.MaxBatchSize = 10
			cfg.Sink.Writer.MaxInFlightRequests = 8
			cfg.Sink.Writer.MaxTimeInBuffer = 10 * time.Millisecond
			cfg.Errors.RetryConfig = sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the test's own config is invalid: %v", err)
			}
			start := time.Now()
			j, stop := startJob(t, cfg)
			waitFor(t, "every offset committed", 3*time.Minute, func() bool {
				if j.Health().Status == "stopped" {
					t.Fatalf("job stopped on its own: %v", stop())
				}
				ok, _ := c.committedEqualsEnd(t, group, f.topic)
				return ok
			})
			took := time.Since(start)
			if err := stop(); err != nil {
				t.Fatalf("job: %v", err)
			}
			pv, kv, lost, dups, reqs, failed := rc.result()
			t.Logf("ordering %s: %d requests (%d answered 500), %v; out of order at the receiver: %d by partition, %d by key; %d lost, %d duplicates",
				mode, reqs, failed, took.Round(time.Millisecond), pv, kv, lost, dups)
			rc.mu.Lock()
			for _, b := range rc.badBodies {
				t.Errorf("receiver got %s", b)
			}
			rc.mu.Unlock()
			if lost > 0 {
				t.Errorf("%d records never accepted", lost)
			}
			if failed == 0 {
				t.Errorf("no request answered 500: the load did not test retries")
			}
			switch mode {
			case sinks.OrderPartition:
				if pv > 0 {
					t.Errorf("%d records accepted after a later record of their partition", pv)
				}
				if kv > 0 {
					t.Errorf("%d records accepted after a later record of their key", kv)
				}
			case sinks.OrderKey:
				if kv > 0 {
					t.Errorf("%d records accepted after a later record of their key", kv)
				}
			case sinks.OrderNone:
				if kv == 0 {
					t.Errorf("no record out of key order with ordering none: the receiver's load does not make requests overtake, so the other modes' 0 proves nothing")
				}
			}
		})
	}
}
