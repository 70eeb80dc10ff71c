package integration

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/config"
)

// Exactly-once with dead letters: the dead-letter topic is written in the
// same transactions as the target and the source offsets, so a
// read_committed reader of each sees every record once, across crashes.
//
// The input holds four kinds of records, by id:
//   - operator: a value that is not JSON (cut short), which the filter
//     cannot read: dead-lettered by the operator chain (class operator);
//   - fatal: a value larger than the target topic's max.message.bytes,
//     which the Kafka sink refuses: dead-lettered by the writer (class
//     fatal, MESSAGE_TOO_LARGE);
//   - dropped: amount 0, dropped on purpose by the filter;
//   - good: written to the target.

const (
	eosDLQOperator = "needs-amount" // the filter's name, in an operator dead letter's message
	eosDLQMaxBytes = 2048           // the target topic's max.message.bytes
)

// eosDLQKind says what becomes of the record of id.
func eosDLQKind(id int) string {
	switch {
	case id%50 == 7:
		return "operator"
	case id%50 == 23:
		return "fatal"
	case id%1000 == 0:
		return "dropped"
	}
	return "good"
}

// eosDLQRecord is the input record of id: its key, value and headers
// (one of them binary, to check that dead letters keep the bytes).
func eosDLQRecord(topic string, id int) *kgo.Record {
	var v []byte
	switch eosDLQKind(id) {
	case "operator":
		v = fmt.Appendf(nil, `{"id":%d,"amount":`, id)
	case "fatal":
		v = fmt.Appendf(nil, `{"id":%d,"amount":1,"pad":%q}`, id, strings.Repeat("x", 2*eosDLQMaxBytes))
	default:
		v = fmt.Appendf(nil, `{"id":%d,"amount":%d}`, id, id%1000)
	}
	return &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", id%97), Value: v,
		Headers: []kgo.RecordHeader{{Key: "src", Value: []byte{0xff, 0x00, byte(id), byte(id >> 8)}}}}
}

// produceEOSDLQ writes the records of ids [from, to) to topic and returns
// them by id, with the partition and offset each got.
func (c *cluster) produceEOSDLQ(t *testing.T, topic string, from, to int) map[int]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(c.clientOpts(t), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sent := make(map[int]*kgo.Record, to-from)
	for id := from; id < to; id++ {
		r := eosDLQRecord(topic, id)
		sent[id] = r
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce %s: %v", r.Value[:min(20, len(r.Value))], err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return sent
}

// eosDLQTopics creates the input, the target (with a small
// max.message.bytes) and the dead-letter topics.
func (c *cluster) eosDLQTopics(t *testing.T, in, out, dlq string) {
	t.Helper()
	c.createTopic(t, in, 4)
	c.createTopic(t, dlq, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maxBytes := strconv.Itoa(eosDLQMaxBytes)
	resp, err := c.admin(t).CreateTopic(ctx, 4, -1, map[string]*string{"max.message.bytes": &maxBytes}, out)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// eosDLQConfig is a pipeline file: Kafka → filter → Kafka with
// exactly_once and a dead-letter topic (tolerance all); perSecond > 0 adds
// a token bucket so that a run lasts long enough to be killed.
func eosDLQConfig(t *testing.T, c *cluster, in, out, dlq, group string, perSecond int) string {
	rate := ""
	if perSecond > 0 {
		rate = fmt.Sprintf("  rate_limit:\n    kind: token_bucket\n    records_per_second: %d\n", perSecond)
	}
	return writeConfig(t, fmt.Sprintf(`
name: eos-dlq-test
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    session_timeout: 6s
    instance_id: %s-worker
operators:
  - name: %s
    filter: 'json.amount > 0'
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
%serrors:
  tolerance: all
  dead_letter_topic: %s
  max_attempts: 1000
  retry_backoff: 10ms
  max_retry_backoff: 100ms
log:
  level: warn
`, joinAddrs(c.Addrs), in, group, group, eosDLQOperator, out, group, rate, dlq))
}

// checkEOSDLQ reads the target and the dead-letter topic with
// read_committed and fails unless the target holds every good record of
// sent once and nothing else, and the dead-letter topic every operator
// and fatal record once, with its key, value and headers intact and the
// error headers saying why and where it came from, and nothing else.
func (c *cluster) checkEOSDLQ(t *testing.T, in, out, dlq string, sent map[int]*kgo.Record) {
	t.Helper()
	n, good, bad := len(sent), 0, 0
	for id := range n {
		switch eosDLQKind(id) {
		case "good":
			good++
		case "operator", "fatal":
			bad++
		}
	}
	counts := c.readCommittedIDs(t, out, good)
	checkOnce(t, counts, n, func(id int) bool { return eosDLQKind(id) == "good" })

	dead := c.readCommitted(t, dlq, bad)
	seen := map[int]int{}
	for _, r := range dead {
		id := recordID(t, r)
		seen[id]++
		w, kind := sent[id], eosDLQKind(id)
		if w == nil || (kind != "operator" && kind != "fatal") {
			t.Fatalf("dead letter of id %d (%s): only operator and fatal records may be dead-lettered", id, kind)
		}
		if !bytes.Equal(r.Key, w.Key) || !bytes.Equal(r.Value, w.Value) || header(r, "src") != string(w.Headers[0].Value) {
			t.Fatalf("dead letter of id %d: key %q value %.60q src %x, want %q %.60q %x",
				id, r.Key, r.Value, header(r, "src"), w.Key, w.Value, w.Headers[0].Value)
		}
		msg := header(r, deadletter.HeaderMessage)
		wantMsg := map[string]string{"operator": eosDLQOperator, "fatal": "MESSAGE_TOO_LARGE"}[kind]
		if got := header(r, deadletter.HeaderClass); got != kind || !strings.Contains(msg, wantMsg) {
			t.Fatalf("dead letter of id %d: class %q message %q, want class %s and a message naming %s", id, got, msg, kind, wantMsg)
		}
		if header(r, deadletter.HeaderTopic) != in || header(r, deadletter.HeaderPartition) != strconv.Itoa(int(w.Partition)) ||
			header(r, deadletter.HeaderOffset) != strconv.FormatInt(w.Offset, 10) || header(r, deadletter.HeaderTime) == "" || header(r, deadletter.HeaderAttempts) == "" {
			t.Fatalf("dead letter of id %d: origin %s/%s@%s (attempts %q, time %q), want %s/%d@%d",
				id, header(r, deadletter.HeaderTopic), header(r, deadletter.HeaderPartition), header(r, deadletter.HeaderOffset),
				header(r, deadletter.HeaderAttempts), header(r, deadletter.HeaderTime), in, w.Partition, w.Offset)
		}
		if !r.Attrs.IsTransactional() {
			t.Fatalf("dead letter of id %d written outside a transaction", id)
		}
	}
	var lost, dups []int
	for id := range n {
		k := eosDLQKind(id)
		switch c := seen[id]; {
		case (k == "operator" || k == "fatal") && c == 0:
			lost = append(lost, id)
		case c > 1:
			dups = append(dups, id)
		}
	}
	if len(lost)+len(dups) > 0 {
		t.Fatalf("read_committed dead letters: %d of %d missing (first %v), %d duplicated (first %v)",
			len(lost), bad, lost[:min(10, len(lost))], len(dups), dups[:min(10, len(dups))])
	}
}

// TestExactlyOnceDeadLetters runs Kafka → filter → Kafka with exactly_once
// and a dead-letter topic in process: operator failures and records the
// sink refuses are dead-lettered inside the transactions, and a
// read_committed reader sees every good record once in the target and
// every bad one once in the dead-letter topic, intact.
func TestExactlyOnceDeadLetters(t *testing.T) {
	const n = 10_000
	c := newCluster(t, 4)
	in, out, dlq, group := name(t, "in"), name(t, "out"), name(t, "dlq"), name(t, "group")
	c.eosDLQTopics(t, in, out, dlq)
	sent := c.produceEOSDLQ(t, in, 0, n)
	cfg, err := config.Load(eosDLQConfig(t, c, in, out, dlq, group, 0))
	if err != nil {
		t.Fatal(err)
	}
	j, stop := startJob(t, cfg)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		if j.Health().Status == "stopped" {
			t.Fatalf("job stopped on its own: %v", stop())
		}
		ok, _ := c.committedEqualsEnd(t, group, in)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}
	c.checkEOSDLQ(t, in, out, dlq, sent)
	snap := j.Snapshot()
	t.Logf("%d records: read_committed sees each good one once in the target and each bad one once in the dead-letter topic; dead-lettered %d, delivered %d",
		n, snap.DeadLettered, snap.Delivered)
}

// TestExactlyOnceDeadLettersKill9 is TestExactlyOnceKill9 with dead
// letters: a worker is killed with SIGKILL ten times (at a random moment
// of a transaction) while it moves 20,000 records of which one in 25 is
// dead-lettered (half by the operator, half refused by the sink), and
// restarted with the same identity; a last worker finishes and stops with
// SIGTERM. A read_committed reader sees every good record once in the
// target and every bad record once in the dead-letter topic, intact: the
// dead letters of an aborted transaction are never visible.
func TestExactlyOnceDeadLettersKill9(t *testing.T) {
	const n, extra = 20_000, 2_000
	loops := killLoops()
	c := newCluster(t, 4)
	in, out, dlq, group := name(t, "in"), name(t, "out"), name(t, "dlq"), name(t, "group")
	c.eosDLQTopics(t, in, out, dlq)
	sent := c.produceEOSDLQ(t, in, 0, n)
	cfg := eosDLQConfig(t, c, in, out, dlq, group, 4_000)
	killed := c.eosKillRounds(t, cfg, group, in, n, loops, func() {
		for id, r := range c.produceEOSDLQ(t, in, n, n+extra) {
			sent[id] = r
		}
	})
	c.checkEOSDLQ(t, in, out, dlq, sent)
	t.Logf("%d SIGKILLs over %d records: read_committed sees each good record once in the target and each bad one once in the dead-letter topic; end offsets (aborted records and markers included): target %d, dead-letter topic %d",
		killed, n+extra, c.endCount(t, out), c.endCount(t, dlq))
}
