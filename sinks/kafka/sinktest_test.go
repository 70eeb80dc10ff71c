package kafkasink

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sinks/sinktest"
)

// TestConformance runs the sink conformance suite on a topic of its own
// per subtest. Kafka keeps the records of a key in order (one partition
// per key). A partial failure is a partition whose produce requests fail
// with UNKNOWN_SERVER_ERROR (kfake only): the client does not retry it, the
// sink reports it retryable.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	// The suite's partial failure refuses the records of one key among
	// three: the three keys must land on three partitions.
	parts := spread(t, "k0", "k1", "k2")
	f := sinktest.Features{Ordering: sinktest.OrderPerKey, Restartable: true, PartialFailure: e.cluster != nil}
	sinktest.Run(t, f, func(t *testing.T) sinktest.Target {
		topic := name("sinktest")
		e.createTopic(t, topic, parts, largeTopicBytes)
		cfg := Config{Topic: topic}
		s := e.sink(t, cfg)
		tg := sinktest.Target{
			Received: func() [][]byte {
				var out [][]byte
				for _, r := range e.read(t, topic) {
					out = append(out, r.Value)
				}
				return out
			},
			Reopen: func() (sinks.Sink, error) {
				c := cfg
				c.Brokers = e.brokers
				return New(t.Context(), c)
			},
		}
		if e.cluster == nil {
			tg.Sink = s
			return tg
		}
		r := &rejecting{Sink: s, cluster: e.cluster, topic: topic, parts: parts}
		tg.Sink, tg.Reject = r, r.reject
		return tg
	})
}

// spread returns a partition count at which keys land on distinct
// partitions with the sink's (franz-go's default) partitioner.
func spread(t *testing.T, keys ...string) int32 {
	for n := int32(len(keys)); n < 64; n++ {
		seen := map[int]bool{}
		for _, k := range keys {
			seen[partitionOf(k, n)] = true
		}
		if len(seen) == len(keys) {
			return n
		}
	}
	t.Fatalf("no partition count below 64 spreads %v", keys)
	return 0
}

// partitionOf is the partition franz-go's default partitioner gives key
// among n.
func partitionOf(key string, n int32) int {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("t") // keys: murmur2, as the default partitioner
	return p.Partition(&kgo.Record{Key: []byte(key)}, int(n))
}

// rejecting is the sink with sinktest's Reject hook: the next batch's
// entries at the given indexes are refused, with a retryable error, by
// failing the produce requests of their partitions while it is written.
// Their partitions must hold no other record of the batch.
type rejecting struct {
	*Sink
	cluster *kfake.Cluster
	topic   string
	parts   int32

	mu   sync.Mutex
	next []int
}

func (r *rejecting) reject(indexes ...int) {
	r.mu.Lock()
	r.next = indexes
	r.mu.Unlock()
}

func (r *rejecting) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	r.mu.Lock()
	idx := r.next
	r.next = nil
	r.mu.Unlock()
	if len(idx) > 0 {
		var ps []int32
		for _, i := range idx {
			ps = append(ps, int32(partitionOf(string(batch[i].Key), r.parts)))
		}
		h := r.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: r.topic, Partitions: ps,
			Err: kerr.UnknownServerError, Count: -1})
		defer h.Remove()
	}
	return r.Sink.WriteBatch(ctx, batch)
}

func TestSpread(t *testing.T) {
	n := spread(t, "k0", "k1", "k2")
	got := fmt.Sprint(partitionOf("k0", n), partitionOf("k1", n), partitionOf("k2", n))
	t.Logf("%d partitions: k0 k1 k2 on %s", n, got)
}
