package kafkasink

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The tests run against kfake in-process, or against the brokers listed in
// SPILLWAY_TEST_BROKERS (comma separated), each test on its own topics.
// Tests injecting broker faults need kfake and skip otherwise.

// bound is how long any single step may take before a test fails.
const bound = 30 * time.Second

// largeTopicBytes is the max.message.bytes of the test topics: above the
// writer's default max_record_bytes (1 MiB), which sinktest writes.
const largeTopicBytes = 2 << 20

var seq atomic.Int64

// name returns a topic name no other test uses.
func name(base string) string {
	return fmt.Sprintf("%s-%d-%d", base, time.Now().UnixNano(), seq.Add(1))
}

type env struct {
	brokers []string
	cluster *kfake.Cluster // nil against external brokers
}

// newEnv returns brokers: SPILLWAY_TEST_BROKERS, or a fresh kfake cluster
// that creates no topic on its own.
func newEnv(t testing.TB) env {
	t.Helper()
	if s := os.Getenv("SPILLWAY_TEST_BROKERS"); s != "" {
		return env{brokers: strings.Split(s, ",")}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return env{brokers: c.ListenAddrs(), cluster: c}
}

// faults returns the kfake cluster, skipping the test against real brokers.
func (e env) faults(t testing.TB) *kfake.Cluster {
	t.Helper()
	if e.cluster == nil {
		t.Skip("needs the in-process kfake cluster to inject broker faults; unset SPILLWAY_TEST_BROKERS to run it")
	}
	return e.cluster
}

func (e env) admin(t testing.TB) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// createTopic creates topic with partitions partitions and the given
// max.message.bytes (0: the broker's default).
func (e env) createTopic(t testing.TB, topic string, partitions int32, maxMessageBytes int) {
	t.Helper()
	var configs map[string]*string
	if maxMessageBytes > 0 {
		v := strconv.Itoa(maxMessageBytes)
		configs = map[string]*string{"max.message.bytes": &v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	adm := e.admin(t)
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	// A real cluster answers before every broker's metadata has the topic:
	// a sink built at once may be told it does not exist.
	for {
		d, err := adm.ListTopics(ctx, topic)
		if err == nil && d[topic].Err == nil && len(d[topic].Partitions) == int(partitions) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s not visible after creation: %v", topic, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sink builds a sink on e for cfg (Brokers filled in) and closes it at the
// end of the test.
func (e env) sink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	cfg.Brokers = e.brokers
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// read returns every record of topic, partition after partition, each in
// offset order.
func (e env) read(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	ends, err := e.admin(t).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && o.Err != kerr.UnknownTopicOrPartition {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			total += o.Offset
		}
	})
	if total == 0 {
		return nil
	}
	parts := map[int32]kgo.Offset{}
	for p := range want {
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	got := int64(0)
	for got < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", got, total, topic)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				byPart[r.Partition] = append(byPart[r.Partition], r)
				got++
			}
		})
	}
	var out []*kgo.Record
	for p := int32(0); len(byPart) > 0; p++ {
		out = append(out, byPart[p]...)
		delete(byPart, p)
	}
	return out
}
