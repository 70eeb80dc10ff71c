package integration

import (
	"os"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
)

// TestFaultLeaderAndCoordinatorMoves (issue 4, scenario 7: leader moves):
// on a three-broker kfake cluster, partition leaders are re-elected, single
// partitions move to another broker and the group coordinator moves, five
// rounds mid-stream. The clients follow the new leaders and coordinator
// (NOT_LEADER / NOT_COORDINATOR answers make them reload metadata), and
// every record arrives with every partition committed to its end.
func TestFaultLeaderAndCoordinatorMoves(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_BROKERS") != "" || os.Getenv("SPILLWAY_TEST_TESTCONTAINERS") == "1" {
		t.Skip(skipNoFake)
	}
	const parts, rounds = 4, 5
	emb, err := broker.Start(broker.Options{Brokers: 3, Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	c := &cluster{Addrs: emb.Addrs(), Fake: emb.Cluster(), kind: "kfake"}
	e := newFaultEnvOn(t, c, parts, 4000)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 1000)

	moved := 0
	for r := range rounds {
		before := make([]int32, parts)
		for p := range int32(parts) {
			before[p] = e.fake.LeaderFor(e.topic, p)
		}
		e.fake.ShufflePartitionLeaders()
		p := int32(r % parts)
		to := (e.fake.LeaderFor(e.topic, p) + 1) % 3
		if err := e.fake.MoveTopicPartition(e.topic, p, to); err != nil {
			t.Fatalf("move partition %d to node %d: %v", p, to, err)
		}
		e.fake.RehashCoordinators()
		for p := range int32(parts) {
			if e.fake.LeaderFor(e.topic, p) != before[p] {
				moved++
			}
		}
		e.waitDelivered("delivery after the moves", e.rc.uniqueCount()+500)
	}
	if moved == 0 {
		t.Fatal("no partition leader changed; the test moved nothing")
	}
	dups := e.finish("leader and coordinator moves", stopFeed, stopJob, nil)
	t.Logf("leader and coordinator moves: %d leader changes over %d rounds, %d duplicates", moved, rounds, dups)
}
