package realkafka

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// enable names the variable that lets these tests start real Kafka nodes.
const enable = "SPILLWAY_TEST_REALKAFKA"

func TestStartRejectsUnknownMode(t *testing.T) {
	if _, err := Start(t.Context(), Options{Mode: "five", RunDir: t.TempDir()}); err == nil {
		t.Fatal("Start accepted mode five")
	}
}

func TestNodeOutOfRange(t *testing.T) {
	k := &Kafka{nodes: 3, base: DefaultPortBase}
	for _, n := range []int{0, 4, -1} {
		if err := k.Kill9(t.Context(), n); err == nil {
			t.Errorf("Kill9(%d) = nil, want an error", n)
		}
	}
	if got, want := k.Addr(2), "127.0.0.1:29202"; got != want {
		t.Errorf("Addr(2) = %s, want %s", got, want)
	}
}

// TestClusterSurvivesKill9OfLeader starts three nodes, kills the leader of a
// partition with replication factor 3 and checks that the partition takes
// acks=all writes on the two others (min.insync.replicas=2), then restarts
// the node and checks that it rejoins the ISR.
func TestClusterSurvivesKill9OfLeader(t *testing.T) {
	if os.Getenv(enable) != "1" {
		t.Skipf("starts a three-node Apache Kafka (fetched from Maven Central the first time): set %s=1", enable)
	}
	k := ForTest(t, Cluster, DefaultPortBase)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.RecordRetries(100), kgo.RetryTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const topic = "rf3"
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	produce := func(n int) {
		t.Helper()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%d", i)}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce with acks=all: %v", err)
		}
	}
	partition := func() kadm.PartitionDetail {
		t.Helper()
		td, err := adm.ListTopics(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		return td[topic].Partitions[0]
	}
	produce(100)
	p := partition()
	if len(p.Replicas) != 3 || len(p.ISR) != 3 {
		t.Fatalf("partition %+v: want 3 replicas in sync", p)
	}
	leader := int(p.Leader)
	if err := k.Kill9(ctx, leader); err != nil {
		t.Fatal(err)
	}
	up, err := k.Running(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if up[leader] {
		t.Fatalf("node %d runs after Kill9", leader)
	}
	start := time.Now()
	produce(100)
	p = partition()
	t.Logf("after kill -9 of node %d: writes resumed in %s; leader %d, isr %v", leader, time.Since(start).Round(time.Millisecond), p.Leader, p.ISR)
	if int(p.Leader) == leader || slices.Contains(p.ISR, int32(leader)) {
		t.Fatalf("killed node %d still leads or is in the ISR: %+v", leader, p)
	}
	if err := k.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	for !slices.Contains(partition().ISR, int32(leader)) {
		select {
		case <-ctx.Done():
			t.Fatalf("node %d did not rejoin the ISR: %+v", leader, partition())
		case <-time.After(200 * time.Millisecond):
		}
	}
	produce(100)
	end, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := end.Lookup(topic, 0); o.Offset != 300 {
		t.Fatalf("end offset %d, want 300", o.Offset)
	}
}
