package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/sinks"
)

// Broker fault scenarios (issue 4, scenarios 7 and 8). Each one feeds a
// topic with generated ids, runs a job through a fault that kfake injects
// mid-stream, and checks that no record is lost, that every partition ends
// committed to its end, and that commits never pass unacknowledged records.
// Duplicates are counted and logged: at-least-once allows them.

const skipNoFake = "broker fault injection needs the in-process kfake cluster; " +
	"unset SPILLWAY_TEST_BROKERS and SPILLWAY_TEST_TESTCONTAINERS to run it"

// errInjected is what a control function returns to make kfake close the
// client's connection instead of answering.
var errInjected = errors.New("injected fault: connection closed")

// failNext makes kfake answer the next n requests of key for which match
// (nil: all) is true with answer(req, i), i counting from 0; an answer with
// an error closes the connection instead. It keeps its control function
// (KeepControl) for those n requests, then lets every request through and
// drops it. It returns the count of requests failed so far.
func failNext(c *kfake.Cluster, key kmsg.Key, n int, match func(kmsg.Request) bool, answer func(req kmsg.Request, i int) (kmsg.Response, error)) *atomic.Int64 {
	var hits atomic.Int64
	c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if hits.Load() >= int64(n) {
			c.DropControl()
			return nil, nil, false
		}
		if match != nil && !match(req) {
			return nil, nil, false
		}
		c.KeepControl()
		i := int(hits.Add(1) - 1)
		resp, err := answer(req, i)
		return resp, err, true
	})
	return &hits
}

// countRequests counts the requests of key without touching them.
func countRequests(c *kfake.Cluster, key kmsg.Key) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		n.Add(1)
		return nil, nil, false // not handled: kept, and the cluster answers
	})
	return &n
}

// commitError answers an OffsetCommit with codes[i%len(codes)] for every
// partition it names.
func commitError(codes ...*kerr.Error) func(kmsg.Request, int) (kmsg.Response, error) {
	return func(kreq kmsg.Request, i int) (kmsg.Response, error) {
		req := kreq.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		code := codes[i%len(codes)].Code
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil
	}
}

// heartbeatError answers a Heartbeat with codes[i%len(codes)].
func heartbeatError(codes ...*kerr.Error) func(kmsg.Request, int) (kmsg.Response, error) {
	return func(kreq kmsg.Request, i int) (kmsg.Response, error) {
		resp := kreq.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = codes[i%len(codes)].Code
		return resp, nil
	}
}

// fetchFault alternates closing the connection and answering
// NOT_LEADER_OR_FOLLOWER for every partition a fetch names. A request that
// opens a fetch session always gets the closed connection: answering it
// without a session would make the client stop using sessions for good.
func fetchFault(kreq kmsg.Request, i int) (kmsg.Response, error) {
	req := kreq.(*kmsg.FetchRequest)
	if i%2 == 0 || req.SessionID <= 0 {
		return nil, errInjected
	}
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	resp.SessionID = req.SessionID
	for _, t := range req.Topics {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, kerr.NotLeaderForPartition.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil
}

// produceFault alternates answering NOT_ENOUGH_REPLICAS for every partition
// a produce names (the broker did not append) and closing the connection.
func produceFault(kreq kmsg.Request, i int) (kmsg.Response, error) {
	if i%2 == 1 {
		return nil, errInjected
	}
	req := kreq.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, kerr.NotEnoughReplicas.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil
}

// producesTo reports whether a produce request writes to topic (by name, or
// by id from produce v13 on).
func producesTo(topic string, id [16]byte) func(kmsg.Request) bool {
	return func(kreq kmsg.Request) bool {
		for _, t := range kreq.(*kmsg.ProduceRequest).Topics {
			if t.Topic == topic || (id != [16]byte{} && t.TopicID == id) {
				return true
			}
		}
		return false
	}
}

// pos is where a record landed.
type pos struct {
	part int32
	off  int64
}

// feed writes generated records {"id":N,...} to a topic, id N to partition
// N % parts, and remembers where each landed. One goroutine produces at a
// time; the lookups are safe for concurrent use.
type feed struct {
	topic string
	parts int32
	cl    *kgo.Client

	mu      sync.Mutex
	at      []pos             // id → where it landed
	byPart  map[int32][]int64 // partition → id at each offset
	slowest time.Duration     // the longest a produce waited for its acks
}

func newFeed(t *testing.T, c *cluster, topic string, parts int32) *feed {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &feed{topic: topic, parts: parts, cl: cl, byPart: map[int32][]int64{}}
}

// produce writes the next count ids and returns once all are acknowledged.
func (f *feed) produce(ctx context.Context, count int) error {
	f.mu.Lock()
	from := int64(len(f.at))
	f.mu.Unlock()
	ids := make(map[*kgo.Record]int64, count)
	recs := make([]*kgo.Record, count)
	for i := range recs {
		id := from + int64(i)
		recs[i] = &kgo.Record{
			Partition: int32(id % int64(f.parts)),
			Key:       fmt.Appendf(nil, "k%d", id),
			Value:     fmt.Appendf(nil, `{"id":%d,"pad":"%s"}`, id, strings.Repeat("x", 64)),
		}
		ids[recs[i]] = id
	}
	began := time.Now()
	res := f.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("produce ids %d..%d: %w", from, from+int64(count)-1, err)
	}
	took := time.Since(began)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slowest = max(f.slowest, took)
	f.at = append(f.at, make([]pos, count)...)
	for _, r := range res {
		p := pos{r.Record.Partition, r.Record.Offset}
		id := ids[r.Record]
		f.at[id] = p
		ps := f.byPart[p.part]
		for int64(len(ps)) <= p.off {
			ps = append(ps, -1)
		}
		ps[p.off] = id
		f.byPart[p.part] = ps
	}
	return nil
}

// keepProducing produces chunk ids every pause until the returned stop is
// called; stop waits for the producer and returns how many ids the topic
// holds. stop also runs at test cleanup.
func (f *feed) keepProducing(t *testing.T, chunk int, pause time.Duration) (stop func() (int, error)) {
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(pause)
		defer tick.Stop()
		for {
			// Each chunk has two minutes to be acknowledged: a real
			// cluster restarting under the feed holds a chunk for a
			// while, and a scenario may run longer than that.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := f.produce(ctx, chunk)
			cancel()
			if err != nil {
				done <- err
				return
			}
			select {
			case <-quit:
				done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	stop = sync.OnceValues(func() (int, error) {
		close(quit)
		err := <-done
		return f.count(), err
	})
	t.Cleanup(func() { _, _ = stop() })
	return stop
}

func (f *feed) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.at)
}

// longestWait returns the longest a produce waited for its acks: how long
// a fault stalled acks=all writes.
func (f *feed) longestWait() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slowest
}

func (f *feed) where(id int64) pos {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at[id]
}

// frontier returns, per partition, the lowest offset whose record the
// receiver has not accepted (the partition's end if it accepted all): the
// offset a correct worker commits once its acks settle.
func (f *feed) frontier(rc *receiver) map[int32]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[int32]int64{}
	for p, ids := range f.byPart {
		off := int64(len(ids))
		for o, id := range ids {
			if rc.seen[id] == 0 {
				off = int64(o)
				break
			}
		}
		out[p] = off
	}
	return out
}

// faultEnv is one scenario: a kfake cluster with a topic fed with generated
// ids, a receiver, an admin client and the job's config.
type faultEnv struct {
	t            *testing.T
	c            *cluster
	fake         *kfake.Cluster
	feed         *feed
	rc           *receiver
	adm          *kadm.Client
	topic, group string
	cfg          *config.Pipeline
}

// newFaultEnv starts a kfake cluster with a topic of parts partitions
// holding preload records, or skips t on external brokers.
func newFaultEnv(t *testing.T, parts int32, preload int) *faultEnv {
	t.Helper()
	c := newCluster(t, int(parts))
	if c.Fake == nil {
		t.Skip(skipNoFake)
	}
	return newFaultEnvOn(t, c, parts, preload)
}

func newFaultEnvOn(t *testing.T, c *cluster, parts int32, preload int) *faultEnv {
	t.Helper()
	e := &faultEnv{t: t, c: c, fake: c.Fake, topic: name(t, "topic"), group: name(t, "group"), rc: newReceiver(t)}
	c.createTopic(t, e.topic, parts)
	e.feed = newFeed(t, c, e.topic, parts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.feed.produce(ctx, preload); err != nil {
		t.Fatal(err)
	}
	e.adm = c.admin(t)
	e.cfg = kafkaToHTTP(c, e.topic, e.group, e.rc.URL())
	applyGroupProtocol(t, e.cfg)
	kafkaSrc(e.cfg).SessionTimeout = 6 * time.Second
	e.cfg.Sink.Writer.MaxBatchSize = 100
	e.cfg.Sink.Writer.MaxBufferedRequests = 2000
	return e
}

// committed returns the group's committed offset per partition of the
// topic, -1 where there is none (or the broker did not answer).
func (e *faultEnv) committed() map[int32]int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[int32]int64{}
	for p := range e.feed.parts {
		out[p] = -1
	}
	offs, err := e.adm.FetchOffsets(ctx, e.group)
	if err != nil {
		return out
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == e.topic && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// atEnd reports whether every partition is committed to its end.
func (e *faultEnv) atEnd() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := e.adm.ListEndOffsets(ctx, e.topic)
	if err != nil {
		return false
	}
	got := e.committed()
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || got[o.Partition] != o.Offset {
			ok = false
		}
	})
	return ok
}

// waitDelivered waits until the receiver accepted at least n unique ids.
func (e *faultEnv) waitDelivered(what string, n int) {
	e.t.Helper()
	waitFor(e.t, what, time.Minute, func() bool { return e.rc.uniqueCount() >= n })
}

// finish stops the feed, waits until every partition is committed to its
// end, stops the job and checks that every id was delivered or is in
// deadLettered. It logs the counts and returns the duplicates.
func (e *faultEnv) finish(scenario string, stopFeed func() (int, error), stopJob func() error, deadLettered map[int64]int) (dups int) {
	t := e.t
	t.Helper()
	n, err := stopFeed()
	if err != nil {
		t.Fatalf("feed: %v", err)
	}
	waitFor(t, "all partitions committed to the end", time.Minute, e.atEnd)
	checkGroupType(t, e.adm, e.group)
	if err := stopJob(); err != nil {
		t.Fatalf("job: %v", err)
	}
	unique, dups, missing := e.rc.stats(n)
	var lostIDs []int64
	for _, id := range missing {
		if deadLettered[id] == 0 {
			lostIDs = append(lostIDs, id)
		}
	}
	if len(lostIDs) > 0 {
		t.Fatalf("%s: %d of %d records lost, first %v", scenario, len(lostIDs), n, lostIDs[:min(10, len(lostIDs))])
	}
	if ok, desc := e.c.committedEqualsEnd(t, e.group, e.topic); !ok {
		t.Fatalf("%s: committed offsets after shutdown: %s", scenario, desc)
	}
	t.Logf("%s: %d records, %d delivered, %d dead-lettered, 0 lost, %d duplicates", scenario, n, unique, len(deadLettered), dups)
	return dups
}

// heldRecords are the ids a receiver holds back (one in the middle of each
// partition's preload) and a watch on the group's commits: check samples
// them and remembers the first commit that passed a held record.
type heldRecords struct {
	e         *faultEnv
	at        map[int64]pos
	violation atomic.Pointer[string]
}

// holdMiddle holds back one record in the middle of each partition's
// preload. A held record blocks the rest of its partition under the
// default partition ordering, so holdMiddle also switches the job to ordering none: the
// tests that use it are about commits that must not pass a gap while
// later records of the partition are delivered.
func (e *faultEnv) holdMiddle(preload int) *heldRecords {
	e.cfg.Sink.Writer.Ordering = sinks.OrderNone
	h := &heldRecords{e: e, at: map[int64]pos{}}
	for p := range int64(e.feed.parts) {
		id := int64(preload/2) + p
		h.at[id] = e.feed.where(id)
	}
	return h
}

func (h *heldRecords) has(id int64) bool { _, ok := h.at[id]; return ok }

// check samples the committed offsets, recording a violation if one passed
// a held record, and returns them.
func (h *heldRecords) check() map[int32]int64 {
	got := h.e.committed()
	for id, at := range h.at {
		if got[at.part] > at.off {
			msg := fmt.Sprintf("partition %d committed at %d while id %d at offset %d was held back", at.part, got[at.part], id, at.off)
			h.violation.CompareAndSwap(nil, &msg)
		}
	}
	return got
}

// failIfPassed fails the test if any sampled commit passed a held record.
func (h *heldRecords) failIfPassed() {
	h.e.t.Helper()
	if v := h.violation.Load(); v != nil {
		h.e.t.Fatal(*v)
	}
}

// TestFaultCommitErrors: OffsetCommit answers coordinator and rebalance
// errors a dozen times mid-stream while the receiver holds back one record
// per partition with 500s. The group's committed offsets never pass a held
// record, converge to the acknowledged frontier once the commit errors stop
// (the failed commits were retried), and reach the end once the records are
// released.
func TestFaultCommitErrors(t *testing.T) {
	const parts, preload, faults = 4, 8000, 12
	e := newFaultEnv(t, parts, preload)

	held := e.holdMiddle(preload)
	var holding atomic.Bool
	holding.Store(true)
	var rejected atomic.Int64
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		if !holding.Load() {
			return false
		}
		for _, id := range ids {
			if held.has(id) {
				rejected.Add(1)
				http.Error(w, "held back by the test", http.StatusInternalServerError)
				return true
			}
		}
		return false
	})

	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 1000)
	waitFor(t, "a first commit", time.Minute, func() bool {
		for _, off := range held.check() {
			if off > 0 {
				return true
			}
		}
		return false
	})

	hits := failNext(e.fake, kmsg.OffsetCommit, faults, nil, commitError(
		kerr.NotCoordinator, kerr.RebalanceInProgress, kerr.CoordinatorLoadInProgress, kerr.CoordinatorNotAvailable))
	waitFor(t, "the commit faults used up", time.Minute, func() bool {
		held.check()
		return hits.Load() >= faults
	})
	// Commits resume: exactly up to the first record not acknowledged.
	var got, want map[int32]int64
	waitFor(t, "commits at the acknowledged frontier", time.Minute, func() bool {
		want = e.feed.frontier(e.rc) // before the commit sample: acks only move it up
		got = held.check()
		for p := range int32(parts) {
			if got[p] != want[p] {
				return false
			}
		}
		return true
	})
	held.failIfPassed()
	if rejected.Load() == 0 {
		t.Fatal("the held records never reached the receiver")
	}
	t.Logf("while held: committed %v, held %v, %d requests rejected, %d commit faults", got, held.at, rejected.Load(), hits.Load())

	holding.Store(false)
	waitFor(t, "the held records delivered", time.Minute, func() bool {
		e.rc.mu.Lock()
		defer e.rc.mu.Unlock()
		for id := range held.at {
			if e.rc.seen[id] == 0 {
				return false
			}
		}
		return true
	})
	e.finish("commit errors", stopFeed, stopJob, nil)
}

// TestFaultFetchErrors: fetches fail mid-stream, every other one, a dozen
// times: alternately a closed connection and NOT_LEADER_OR_FOLLOWER for
// every partition. The client recovers and every record arrives. (Failing
// every fetch in a row works too, but franz-go backs off up to 5s after each
// consecutive failure, which only makes the test slow.)
func TestFaultFetchErrors(t *testing.T) {
	const parts, faults = 4, 12
	e := newFaultEnv(t, parts, 4000)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 1000)

	var seen atomic.Int64 // fetches the control looked at
	everyOther := func(kmsg.Request) bool { return seen.Add(1)%2 == 1 }
	hits := failNext(e.fake, kmsg.Fetch, faults, everyOther, fetchFault)
	waitFor(t, "the fetch faults used up", time.Minute, func() bool { return hits.Load() >= faults })
	e.waitDelivered("delivery after the fetch faults", e.rc.uniqueCount()+2000)
	e.finish("fetch errors", stopFeed, stopJob, nil)
}

// TestFaultDeadLetterProduceErrors: the receiver rejects one batch with 400
// (fatal, dead-lettered with tolerance all) while producing to the
// dead-letter topic fails. The records are dead-lettered once the produce
// faults stop, and their offsets are committed only after that.
func TestFaultDeadLetterProduceErrors(t *testing.T) {
	const parts, preload, faults = 4, 6000, 4
	e := newFaultEnv(t, parts, preload)
	dlq := name(t, "dlq")
	e.c.createTopic(t, dlq, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	details, err := e.adm.ListTopics(ctx, dlq)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Errors.Tolerance = "all"
	e.cfg.Errors.Topic = dlq

	const trigger = preload / 2
	var (
		mu       sync.Mutex
		rejected []int64
	)
	// Every batch holding the trigger record is rejected: the writer
	// bisects down to it, and only it is dead-lettered.
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if id == trigger {
				rejected = []int64{trigger}
				http.Error(w, `{"error":"schema violation"}`, http.StatusBadRequest)
				return true
			}
		}
		return false
	})
	// Every produce to the dead-letter topic fails until the faults are
	// used up; the job's own producer is the only one writing to it.
	hits := failNext(e.fake, kmsg.Produce, faults, producesTo(dlq, details[dlq].ID), produceFault)

	j, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	waitFor(t, "the receiver rejecting a batch", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return rejected != nil
	})
	mu.Lock()
	lowest := map[int32]int64{} // lowest rejected offset per partition
	for _, id := range rejected {
		at := e.feed.where(id)
		if o, ok := lowest[at.part]; !ok || at.off < o {
			lowest[at.part] = at.off
		}
	}
	nRejected := len(rejected)
	mu.Unlock()

	var violation atomic.Pointer[string]
	check := func() bool {
		// Sample in causal order: a commit past a rejected record needs
		// the dead-lettering first, which needs the faults used up.
		got := e.committed()
		dead := j.Snapshot().DeadLettered
		h := hits.Load()
		for p, off := range lowest {
			if got[p] > off && dead < int64(nRejected) {
				msg := fmt.Sprintf("partition %d committed at %d before rejected offset %d was dead-lettered", p, got[p], off)
				violation.CompareAndSwap(nil, &msg)
			}
		}
		if dead > 0 && h < faults {
			msg := fmt.Sprintf("%d records dead-lettered after only %d of %d produce faults", dead, h, faults)
			violation.CompareAndSwap(nil, &msg)
		}
		return dead >= int64(nRejected)
	}
	waitFor(t, "the rejected batch dead-lettered", time.Minute, check)
	if v := violation.Load(); v != nil {
		t.Fatal(*v)
	}
	if h := hits.Load(); h < faults {
		t.Fatalf("only %d of %d produce faults hit", h, faults)
	}

	recs := e.c.readTopic(t, dlq, nRejected)
	deadLettered := map[int64]int{}
	for _, r := range recs {
		var v struct{ ID int64 }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("dead-letter value %q: %v", r.Value, err)
		}
		deadLettered[v.ID]++
	}
	for _, id := range rejected {
		if deadLettered[id] == 0 {
			t.Fatalf("rejected id %d not in the dead-letter topic", id)
		}
	}
	e.waitDelivered("delivery after the dead-lettering", e.rc.uniqueCount()+1000)
	e.finish("dead-letter produce errors", stopFeed, stopJob, deadLettered)
	if got := j.Snapshot().DeadLettered; got != int64(nRejected) {
		t.Fatalf("dead-lettered %d records, want the %d rejected", got, nRejected)
	}
	t.Logf("%d records dead-lettered at offsets from %v after %d produce faults", nRejected, lowest, hits.Load())
}

// TestFaultHeartbeatErrors: heartbeats fail mid-stream with coordinator
// errors and REBALANCE_IN_PROGRESS, which makes the member rejoin (and may
// cost it its session); no record is lost.
func TestFaultHeartbeatErrors(t *testing.T) {
	const parts, faults = 4, 6
	e := newFaultEnv(t, parts, 4000)
	joins := countRequests(e.fake, kmsg.JoinGroup)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 1000)
	joinsBefore := joins.Load()

	hits := failNext(e.fake, kmsg.Heartbeat, faults, nil, heartbeatError(
		kerr.NotCoordinator, kerr.RebalanceInProgress, kerr.CoordinatorNotAvailable))
	waitFor(t, "the heartbeat faults used up", time.Minute, func() bool { return hits.Load() >= faults })
	e.waitDelivered("delivery after the heartbeat faults", e.rc.uniqueCount()+2000)
	dups := e.finish("heartbeat errors", stopFeed, stopJob, nil)
	t.Logf("heartbeat errors: %d rejoins during the faults, %d duplicates", joins.Load()-joinsBefore, dups)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRestartBrokerMidStream stops the broker while the job is delivering
// (the receiver is slowed), starts it again on the same port from the same
// data directory, and checks the job finishes: every record delivered, every
// partition committed to its end. The broker stays down either just until
// the job ran dry, or past the group session timeout, so that the worker's
// heartbeats fail and it loses its partitions and rejoins.
func TestRestartBrokerMidStream(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_BROKERS") != "" || os.Getenv("SPILLWAY_TEST_TESTCONTAINERS") == "1" {
		t.Skip(skipNoFake)
	}
	for _, tc := range []struct {
		name string
		down time.Duration // extra time down after the job ran dry
	}{
		{"brief", 0},
		{"past_session_timeout", 7 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { restartBroker(t, tc.down) })
	}
}

func restartBroker(t *testing.T, down time.Duration) {
	const parts, n = 4, 20_000
	dir, port := t.TempDir(), freePort(t)
	opts := broker.Options{DataDir: dir, Port: port, Partitions: parts}
	first, err := broker.Start(opts)
	if err != nil {
		t.Fatalf("start kfake on port %d: %v", port, err)
	}
	closeFirst := sync.OnceFunc(first.Close)
	t.Cleanup(closeFirst)
	c := &cluster{Addrs: first.Addrs(), Fake: first.Cluster(), kind: "kfake"}
	e := newFaultEnvOn(t, c, parts, n)
	e.rc.setHook(func(http.ResponseWriter, *http.Request, []int64) bool {
		time.Sleep(10 * time.Millisecond)
		return false
	})
	e.cfg.Sink.Writer.MaxInFlightRequests = 2
	// A small byte budget keeps fetches small, so the job cannot have the
	// whole topic in hand when the broker stops.
	e.cfg.Sink.Writer.MaxBatchBytes = 64 << 10
	e.cfg.Sink.Writer.MaxBufferedBytes = 256 << 10

	j, stopJob := startJob(t, e.cfg)
	e.waitDelivered("delivery under way", n/5)
	closeFirst()
	// Let the job run dry against the stopped broker.
	waitFor(t, "the job idle without a broker", 30*time.Second, func() bool {
		s := j.Snapshot()
		return s.Buffered == 0 && s.InFlightRequests == 0
	})
	time.Sleep(down) // the outage itself; nothing is timed
	atStop := e.rc.uniqueCount()
	if atStop >= n {
		t.Fatal("the job delivered everything without the broker; the restart was not mid-stream")
	}

	second, err := broker.Start(opts)
	if err != nil {
		t.Fatalf("restart kfake on port %d: %v", port, err)
	}
	t.Cleanup(second.Close)
	if got := second.Addrs(); len(got) != 1 || got[0] != c.Addrs[0] {
		t.Fatalf("restarted broker listens on %v, want %v", got, c.Addrs)
	}
	e.waitDelivered("delivery after the restart", atStop+1)
	dups := e.finish("broker restart", func() (int, error) { return e.feed.count(), nil }, stopJob, nil)
	t.Logf("broker restart: %d of %d delivered when it came back, %d duplicates", atStop, n, dups)
}
