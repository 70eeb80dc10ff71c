package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
)

// cluster is the Kafka a test runs against.
type cluster struct {
	Addrs []string
	// Fake is the in-process cluster, nil for external brokers; tests that
	// inject broker faults skip without it.
	Fake *kfake.Cluster
	kind string
	// opts, when set, returns the extra options (TLS, SASL) of each new
	// client the test helpers open; called once per client.
	opts func(t *testing.T) []kgo.Opt
}

// clientOpts returns the options of a new test client: the seed brokers,
// then c.opts.
func (c *cluster) clientOpts(t *testing.T) []kgo.Opt {
	t.Helper()
	o := []kgo.Opt{kgo.SeedBrokers(c.Addrs...)}
	if c.opts != nil {
		o = append(o, c.opts(t)...)
	}
	return o
}

var (
	reportOnce sync.Once
	seq        atomic.Int64
)

// newCluster returns the cluster for t, chosen by environment:
// SPILLWAY_TEST_BROKERS, then SPILLWAY_TEST_TESTCONTAINERS=1, else kfake.
func newCluster(t *testing.T, partitions int) *cluster {
	t.Helper()
	if addrs := os.Getenv("SPILLWAY_TEST_BROKERS"); addrs != "" {
		reportOnce.Do(func() { fmt.Fprintf(os.Stderr, "integration: using external brokers %s\n", addrs) })
		return &cluster{Addrs: strings.Split(addrs, ","), kind: "external"}
	}
	if os.Getenv("SPILLWAY_TEST_TESTCONTAINERS") == "1" {
		testcontainers.SkipIfProviderIsNotHealthy(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		kc, err := tckafka.Run(ctx, "confluentinc/confluent-local:7.5.0", tckafka.WithClusterID("spillway-test"))
		if err != nil {
			t.Fatalf("start kafka container: %v", err)
		}
		t.Cleanup(func() { _ = testcontainers.TerminateContainer(kc) })
		addrs, err := kc.Brokers(ctx)
		if err != nil {
			t.Fatalf("kafka container brokers: %v", err)
		}
		return &cluster{Addrs: addrs, kind: "testcontainers"}
	}
	reportOnce.Do(func() {
		fmt.Fprintln(os.Stderr, "integration: using in-process kfake clusters (set SPILLWAY_TEST_BROKERS=host:port,... for an external cluster or SPILLWAY_TEST_TESTCONTAINERS=1 with Docker for a container)")
	})
	e, err := broker.Start(broker.Options{Partitions: partitions})
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(e.Close)
	return &cluster{Addrs: e.Addrs(), Fake: e.Cluster(), kind: "kfake"}
}

// name returns a topic or group name unique to this test run, so the suite
// can share an external cluster.
func name(t *testing.T, what string) string {
	return fmt.Sprintf("%s-%s-%d-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), what, os.Getpid(), seq.Add(1))
}

// createTopic creates topic with partitions.
func (c *cluster) createTopic(t *testing.T, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.EnsureTopicsWith(ctx, c.Addrs, c.clientOpts(t), partitions, topic); err != nil {
		t.Fatal(err)
	}
}

// produce writes count generated records (values {"id":N,...}) to topic.
func (c *cluster) produce(t *testing.T, topic string, count, valueBytes int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := broker.ProduceWith(ctx, c.Addrs, c.clientOpts(t), topic, count, valueBytes, 1000); err != nil {
		t.Fatal(err)
	}
}

// admin returns a kadm client closed at test end.
func (c *cluster) admin(t *testing.T) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(c.clientOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// committedEqualsEnd reports whether group's committed offsets equal the end
// offsets of every partition of topic, and a description of both.
func (c *cluster) committedEqualsEnd(t *testing.T, group, topic string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := c.admin(t)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false, err.Error()
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false, err.Error()
	}
	ok := true
	var b strings.Builder
	ends.Each(func(o kadm.ListedOffset) {
		co, found := committed.Lookup(topic, o.Partition)
		got := int64(-1)
		if found {
			got = co.At
		}
		if got != o.Offset {
			ok = false
		}
		fmt.Fprintf(&b, "p%d committed=%d end=%d; ", o.Partition, got, o.Offset)
	})
	return ok, b.String()
}

// produceRange writes records with ids [from, to) to topic, keyed by id, in
// chunks, waiting pause between chunks (to spread them over time).
func (c *cluster) produceRange(t *testing.T, topic string, from, to, chunk int, pause time.Duration) error {
	cl, err := kgo.NewClient(c.clientOpts(t)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := from; i < to; i += chunk {
		var recs []*kgo.Record
		for id := i; id < min(i+chunk, to); id++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", id), Value: fmt.Appendf(nil, `{"id":%d}`, id)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return err
		}
		time.Sleep(pause)
	}
	return nil
}
