package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/config"
	kafkasink "github.com/spillway-io/spillway/sinks/kafka"
)

// Exactly-once into Kafka (sink.kafka.delivery: exactly_once), measured
// from outside: a read_committed reader of the target topic counts each
// input id's output.

var idRe = regexp.MustCompile(`"id":(\d+)`)

// readCommittedIDs reads topic from the start with read_committed until it
// holds at least want records and then nothing more arrives for a second,
// and counts the records per id (the value's "id"). It fails the test when
// want records do not arrive within two minutes.
func (c *cluster) readCommittedIDs(t *testing.T, topic string, want int) map[int]int {
	t.Helper()
	counts := map[int]int{}
	for _, r := range c.readCommitted(t, topic, want) {
		counts[recordID(t, r)]++
	}
	return counts
}

// recordID is the "id" of r's value; the test fails without one.
func recordID(t *testing.T, r *kgo.Record) int {
	t.Helper()
	m := idRe.FindSubmatch(r.Value)
	if m == nil {
		t.Fatalf("record without an id in %s: %q", r.Topic, r.Value)
	}
	id, _ := strconv.Atoi(string(m[1]))
	return id
}

// readCommitted reads topic from the start with read_committed until it
// holds at least want records and then nothing more arrives for a second,
// and returns them all. It fails the test when want records do not arrive
// within two minutes.
func (c *cluster) readCommitted(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(c.clientOpts(t), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(2 * time.Minute)
	var recs []*kgo.Record
	for {
		wait := time.Second
		if len(recs) < want {
			wait = time.Until(deadline)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		got := fs.Records()
		recs = append(recs, got...)
		switch {
		case len(got) > 0:
		case len(recs) >= want:
			return recs
		case time.Now().After(deadline):
			t.Fatalf("read_committed %s: got %d records, want %d", topic, len(recs), want)
		}
	}
}

// checkOnce fails unless counts holds every id below n for which keep is
// true exactly once, and no other.
func checkOnce(t *testing.T, counts map[int]int, n int, keep func(int) bool) {
	t.Helper()
	var lost, dups, extra []int
	for id := range n {
		switch c := counts[id]; {
		case !keep(id) && c > 0:
			extra = append(extra, id)
		case keep(id) && c == 0:
			lost = append(lost, id)
		case c > 1:
			dups = append(dups, id)
		}
	}
	for id := range counts {
		if id < 0 || id >= n {
			extra = append(extra, id)
		}
	}
	first := func(s []int) []int { return s[:min(10, len(s))] }
	if len(lost)+len(dups)+len(extra) > 0 {
		t.Fatalf("read_committed output: %d lost (first %v), %d duplicated (first %v), %d unexpected (first %v)",
			len(lost), first(lost), len(dups), first(dups), len(extra), first(extra))
	}
}

func paid(id int) bool { return id%1000 != 0 } // configs/kafka-to-kafka-eos.yaml's filter: json.amount > 0

// eosConfig loads configs/kafka-to-kafka-eos.yaml for c with the test's own
// topics and group.
func eosConfig(t *testing.T, c *cluster, in, out, dlq, group string) *config.Pipeline {
	t.Helper()
	data, err := os.ReadFile("../configs/kafka-to-kafka-eos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SPILLWAY_BROKERS": joinAddrs(c.Addrs)}
	cfg, err := config.Parse("kafka-to-kafka-eos.yaml", data, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	src := kafkaSrc(cfg)
	src.Topics, src.Group, src.InstanceID = []string{in}, group, group+"-worker"
	sink := cfg.Sink.Config.(*kafkasink.Config)
	if sink.Delivery != kafkasink.ExactlyOnce {
		t.Fatalf("configs/kafka-to-kafka-eos.yaml: delivery %q, want exactly_once", sink.Delivery)
	}
	sink.Topic, sink.TransactionalID = out, group
	if cfg.Errors.Topic == "" {
		t.Fatal("configs/kafka-to-kafka-eos.yaml: no dead_letter_topic")
	}
	cfg.Errors.Topic = dlq
	return cfg
}

// TestExactlyOnceConfig runs configs/kafka-to-kafka-eos.yaml in process
// over 20,000 records: every record the filter keeps is in the target
// once for a read_committed reader, none it drops, and the group committed
// every partition to its end.
func TestExactlyOnceConfig(t *testing.T) {
	const n = 20_000
	c := newCluster(t, 4)
	in, out, dlq, group := name(t, "in"), name(t, "out"), name(t, "dlq"), name(t, "group")
	c.createTopic(t, in, 4)
	c.createTopic(t, out, 3)
	c.produce(t, in, n, 100)
	cfg := eosConfig(t, c, in, out, dlq, group)
	j, stop := startJob(t, cfg)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, in)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}
	counts := c.readCommittedIDs(t, out, n-n/1000)
	checkOnce(t, counts, n, paid)
	if d := c.endCount(t, dlq); d != 0 {
		t.Fatalf("the dead-letter topic holds %d records, want none (every record is valid)", d)
	}
	snap := j.Snapshot()
	t.Logf("%d records in, %d written once each; delivered %d, requests %d", n, n-n/1000, snap.Delivered, snap.Requests)
}

// eosWorkerConfig is a pipeline file for worker processes: Kafka → Kafka
// with exactly_once, paced by a token bucket so that a run lasts long
// enough to be killed in the middle.
func eosWorkerConfig(t *testing.T, c *cluster, in, out, group string, perSecond int) string {
	return writeConfig(t, fmt.Sprintf(`
name: eos-test
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    session_timeout: 6s
    instance_id: %s-worker
sink:
  kafka:
    topic: %s
    delivery: exactly_once
    transactional_id: %s
    transaction_interval: 200ms
  writer:
    max_batch_size: 500
    max_in_flight_requests: 4
    max_time_in_buffer: 20ms
  rate_limit:
    kind: token_bucket
    records_per_second: %d
errors:
  max_attempts: 1000
  retry_backoff: 10ms
  max_retry_backoff: 100ms
log:
  level: warn
`, joinAddrs(c.Addrs), in, group, group, out, group, perSecond))
}

// committedSum is the sum of group's committed offsets on topic.
func (c *cluster) committedSum(t *testing.T, group, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := c.admin(t).FetchOffsets(ctx, group)
	if err != nil {
		return 0
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

// TestExactlyOnceKill9 kills a worker with SIGKILL ten times while it
// moves 50,000 records Kafka → Kafka with exactly_once, restarting it each
// time (the same instance id, so the same transactional id: the new worker
// fences the dead one's producer and aborts its open transaction), then
// lets a last worker finish and stop with SIGTERM. A read_committed reader
// of the target must see every record once: 0 lost, 0 duplicates.
func TestExactlyOnceKill9(t *testing.T) {
	const n, extra = 50_000, 2_000
	loops := killLoops()
	c := newCluster(t, 4)
	in, out, group := name(t, "in"), name(t, "out"), name(t, "group")
	c.createTopic(t, in, 4)
	c.createTopic(t, out, 4)
	c.produce(t, in, n, 100)
	cfg := eosWorkerConfig(t, c, in, out, group, 5_000)
	killed := c.eosKillRounds(t, cfg, group, in, n, loops, func() {
		if err := c.produceRange(t, in, n, n+extra, 500, 0); err != nil {
			t.Fatal(err)
		}
	})
	counts := c.readCommittedIDs(t, out, n+extra)
	checkOnce(t, counts, n+extra, func(int) bool { return true })
	written := c.endCount(t, out) // records, aborted ones and transaction markers
	t.Logf("%d SIGKILLs over %d records: read_committed sees each once; the target's end offsets sum to %d (aborted records and markers included)",
		killed, n+extra, written)
}

// eosKillRounds runs loops workers on cfg one after another, killing each
// with SIGKILL at a random point of its share of the n records of in (read
// from group's commits: the transactions' offsets), at a random moment of
// a transaction. Then it starts a last worker, calls more (which must give
// it records, so that it is still running when SIGTERM comes though
// everything may have been committed before), waits until in is committed
// to its end and stops the worker with SIGTERM, which must exit 0. It
// returns how many workers were killed.
func (c *cluster) eosKillRounds(t *testing.T, cfg, group, in string, n, loops int, more func()) (killed int) {
	t.Helper()
	for round := range loops {
		w := startWorker(t, "run", "-c", cfg, "-summary", "0")
		target := int64(n*round/(loops+1) + rand.IntN(n/(loops+1)) + 1)
		waitFor(t, fmt.Sprintf("round %d committing", round), 2*time.Minute, func() bool { return c.committedSum(t, group, in) >= target })
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		w.wait(t, 30*time.Second)
		killed++
	}
	w := startWorker(t, "run", "-c", cfg, "-summary", "0")
	more()
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, in)
		return ok
	})
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	return killed
}

// TestExactlyOnceZombie starts a second worker with the same identity (the
// same instance id, so the same transactional id) while the first one is
// still running, as when a worker thought dead is replaced: the first is
// fenced and exits non-zero saying so, the second finishes, and a
// read_committed reader sees every record once.
func TestExactlyOnceZombie(t *testing.T) {
	const n = 20_000
	c := newCluster(t, 4)
	in, out, group := name(t, "in"), name(t, "out"), name(t, "group")
	c.createTopic(t, in, 4)
	c.createTopic(t, out, 4)
	c.produce(t, in, n, 100)
	cfg := eosWorkerConfig(t, c, in, out, group, 5_000)
	zombie := startWorker(t, "run", "-c", cfg, "-summary", "0")
	waitFor(t, "the first worker committing", time.Minute, func() bool { return c.committedSum(t, group, in) >= n/5 })
	next := startWorker(t, "run", "-c", cfg, "-summary", "0")
	code := zombie.wait(t, 2*time.Minute)
	if code == 0 {
		t.Fatalf("the fenced worker exited 0; output:\n%s", tail(zombie.out.String(), 3000))
	}
	if !strings.Contains(zombie.out.String(), "fenced") {
		t.Fatalf("the fenced worker's log does not say it was fenced:\n%s", tail(zombie.out.String(), 3000))
	}
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, in)
		return ok
	})
	if err := next.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := next.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	counts := c.readCommittedIDs(t, out, n)
	checkOnce(t, counts, n, func(int) bool { return true })
	t.Logf("the fenced worker exited %d: %s", code, firstLine(zombie.out.String(), "fenced"))
}

// firstLine returns the first line of s containing sub.
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
