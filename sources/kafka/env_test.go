package kafka

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
)

// The tests run against kfake in-process, or against the brokers listed in
// SPILLWAY_TEST_BROKERS (comma separated), each test on its own topics and
// groups.

// bound is how long any single step may take before a test fails.
const bound = time.Minute

var seq atomic.Int64

type env struct {
	brokers []string
	cluster *kfake.Cluster // nil against external brokers
}

// name returns a topic or group name no other test uses.
func name(base string) string {
	return fmt.Sprintf("%s-%d-%d", base, time.Now().UnixNano(), seq.Add(1))
}

// newEnv returns brokers holding topics, each with partitions partitions.
func newEnv(t *testing.T, partitions int, topics ...string) env {
	t.Helper()
	if s := os.Getenv("SPILLWAY_TEST_BROKERS"); s != "" {
		brokers := strings.Split(s, ",")
		ctx, cancel := context.WithTimeout(t.Context(), bound)
		defer cancel()
		if err := broker.EnsureTopics(ctx, brokers, int32(partitions), topics...); err != nil {
			t.Fatal(err)
		}
		return env{brokers: brokers}
	}
	e, err := broker.Start(broker.Options{Partitions: partitions, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return env{brokers: e.Addrs(), cluster: e.Cluster()}
}

// produce writes recs and waits for the brokers to acknowledge them.
func (e env) produce(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// values returns n records of valueBytes bytes for partition p of topic.
func values(topic string, p int32, n, valueBytes int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: p, Value: []byte(strings.Repeat("x", valueBytes))}
	}
	return recs
}
