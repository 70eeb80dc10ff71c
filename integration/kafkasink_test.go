package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
	kafkasink "github.com/spillway-io/spillway/sinks/kafka"
	"github.com/spillway-io/spillway/sources/kafka"
)

// endCount is the number of records in topic (the sum of its end offsets).
func (c *cluster) endCount(t *testing.T, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := c.admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ends.Each(func(o kadm.ListedOffset) { n += int(o.Offset) })
	return n
}

// TestKafkaToKafka runs Kafka → filter → map → Kafka sink: every record
// arrives in the target topic with its key, value (byte for byte) and
// headers plus the one the map adds; every source partition is committed
// to its end; and one record larger than the target topic's
// max.message.bytes is dead-lettered alone, naming MESSAGE_TOO_LARGE.
func TestKafkaToKafka(t *testing.T) {
	const n = 20_000
	const big = 7_777 // the id of the record too large for the target
	c := newCluster(t, 4)
	in, out, dlq, group := name(t, "in"), name(t, "out"), name(t, "dlq"), name(t, "group")
	c.createTopic(t, in, 4)
	c.createTopic(t, dlq, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maxBytes := "65536"
	if _, err := c.admin(t).CreateTopic(ctx, 3, -1, map[string]*string{"max.message.bytes": &maxBytes}, out); err != nil {
		t.Fatal(err)
	}

	// Input: keyed JSON records with two headers; one is 100 KiB.
	want := map[string]*kgo.Record{} // by id
	cl, err := kgo.NewClient(append(c.clientOpts(t), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		v := fmt.Appendf(nil, `{"id":%d,"amount":%d}`, i, i%100)
		if i == big {
			v = fmt.Appendf(nil, `{"id":%d,"amount":0,"pad":%q}`, i, strings.Repeat("x", 100<<10))
		}
		r := &kgo.Record{Topic: in, Key: fmt.Appendf(nil, "key-%d", i%97), Value: v,
			Headers: []kgo.RecordHeader{{Key: "id", Value: strconv.AppendInt(nil, int64(i), 10)}, {Key: "trace", Value: []byte{0, 1, 2, byte(i)}}}}
		want[strconv.Itoa(i)] = r
		cl.Produce(ctx, r, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	cfg := &config.Pipeline{
		Name:    "k2k",
		Brokers: c.Addrs,
		Source: config.Source{Kind: "kafka", Config: &kafka.Config{
			Topics: []string{in}, Group: group, CheckpointInterval: 200 * time.Millisecond, ConnectTimeout: 10 * time.Second,
		}},
		Operators: []config.Operator{
			{Name: "all", Kind: "filter", Config: ptr(exprop.FilterConfig("json.id >= 0"))},
			{Name: "tag", Kind: "map", Config: &exprop.MapConfig{Headers: map[string]string{"x-pipeline": `"k2k"`}}},
		},
		Sink: config.Sink{Kind: "kafka", Config: &kafkasink.Config{Topic: out}},
		Errors: config.Errors{
			Config:      deadletter.Config{Tolerance: "all", Topic: dlq},
			RetryConfig: sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond},
		},
		ShutdownTimeout: 20 * time.Second,
	}
	cfg.Sink.Writer = sinks.Config{MaxTimeInBuffer: 50 * time.Millisecond, RequestTimeout: 10 * time.Second}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	j, stop := startJob(t, cfg)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, in)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}
	if ok, desc := c.committedEqualsEnd(t, group, in); !ok {
		t.Fatalf("committed offsets after shutdown: %s", desc)
	}

	got := c.readTopic(t, out, c.endCount(t, out))
	seen := map[string]int{}
	for _, r := range got {
		id := header(r, "id")
		w, ok := want[id]
		switch {
		case !ok:
			t.Fatalf("unexpected record in %s: id header %q", out, id)
		case id == strconv.Itoa(big):
			t.Fatalf("the record too large for %s was written", out)
		case !bytes.Equal(r.Key, w.Key) || !bytes.Equal(r.Value, w.Value):
			t.Fatalf("record %s: key %q value %q, want %q %q", id, r.Key, r.Value, w.Key, w.Value)
		case len(r.Headers) != 3 || header(r, "trace") != string(w.Headers[1].Value) || header(r, "x-pipeline") != "k2k":
			t.Fatalf("record %s: headers %v", id, r.Headers)
		}
		seen[id]++
	}
	dups := len(got) - len(seen)
	if len(seen) != n-1 {
		t.Fatalf("%s holds %d distinct records, want %d (%d lost)", out, len(seen), n-1, n-1-len(seen))
	}

	dead := c.readTopic(t, dlq, c.endCount(t, dlq))
	if len(dead) != 1 || header(dead[0], "id") != strconv.Itoa(big) ||
		header(dead[0], deadletter.HeaderClass) != "fatal" || !strings.Contains(header(dead[0], deadletter.HeaderMessage), "MESSAGE_TOO_LARGE") {
		for _, d := range dead {
			t.Logf("dead-lettered: id %s class %s message %s", header(d, "id"), header(d, deadletter.HeaderClass), header(d, deadletter.HeaderMessage))
		}
		t.Fatalf("dead-letter topic holds %d records, want the one of id %d, fatal, MESSAGE_TOO_LARGE", len(dead), big)
	}
	if !json.Valid(dead[0].Value) || !bytes.Equal(dead[0].Value, want[strconv.Itoa(big)].Value) {
		t.Fatal("the dead-lettered record's value differs from the original")
	}
	snap := j.Snapshot()
	t.Logf("%d records written to %s, %d duplicates, 1 dead-lettered (%s); delivered %d, requests %d",
		len(got), out, dups, header(dead[0], deadletter.HeaderMessage), snap.Delivered, snap.Requests)
}

func ptr[T any](v T) *T { return &v }
