package state_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/integration/realkafka"
	"github.com/spillway-io/spillway/state"
)

// TestKafkaFallbackRealCluster is TestKafkaFallback on three Apache Kafka
// nodes (replication factor 3): every broker killed (-9), a value put while
// they are down, all restarted from their logs → the store resyncs.
func TestKafkaFallbackRealCluster(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_REALKAFKA") != "1" {
		t.Skip("starts three Apache Kafka nodes (fetched from Maven Central the first time): set SPILLWAY_TEST_REALKAFKA=1")
	}
	k := realkafka.ForTest(t, realkafka.Cluster, 29290)
	o := state.KafkaOptions{
		Topic: "state", ReplicationFactor: 3, ClientOpts: []kgo.Opt{kgo.SeedBrokers(k.Brokers...)},
		WriteInterval: 100 * time.Millisecond, RetryInterval: time.Second, LoadTimeout: 10 * time.Second, Log: testLog(),
	}
	s := open(t, o)
	if st := s.Status(); st.Degraded {
		t.Fatalf("status %v at start", st)
	}
	_ = s.Put("j/a", []byte("before"))
	waitFor(t, "j/a written", func() bool { return latest(readTopic(t, k.Brokers[0], "state"))["j/a"] == "before" })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := k.KillAll(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = s.Put("j/b", []byte("during"))
	waitFor(t, "degraded", func() bool { return s.Status().Degraded })
	t.Logf("degraded %s after the brokers were killed: %s", time.Since(start).Round(time.Millisecond), s.Status().Reason)
	if v, _ := s.Get("j/b"); string(v) != "during" {
		t.Errorf("degraded store: j/b = %q", v)
	}
	if err := k.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitFor(t, "recovered", func() bool { return !s.Status().Degraded })
	t.Logf("recovered %s after the brokers were back", time.Since(start).Round(time.Millisecond))
	got := latest(readTopic(t, k.Brokers[0], "state"))
	if got["j/a"] != "before" || got["j/b"] != "during" {
		t.Errorf("after recovery the topic holds %v", got)
	}
}
