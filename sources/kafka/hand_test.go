package kafka

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/pipeline"
)

// heldCredit is a sink budget of records that the test holds until it acks
// them: free is the capacity less the records emitted and not acked.
type heldCredit struct {
	capRecords int64

	mu      sync.Mutex
	out     []pipeline.Record // emitted, not acked
	changed chan struct{}
}

func (c *heldCredit) Free() (int64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.capRecords - int64(len(c.out)), 64 << 20
}
func (c *heldCredit) Capacity() (int64, int64) { return c.capRecords, 64 << 20 }
func (c *heldCredit) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *heldCredit) emit(_ context.Context, batch []pipeline.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, batch...)
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

// outstanding returns the records emitted and not acked, per partition.
func (c *heldCredit) outstanding() (int, map[int32]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	per := map[int32]int{}
	for _, r := range c.out {
		per[r.Origin.Partition]++
	}
	return len(c.out), per
}

// ackAll frees the outstanding records' credit, then acks them (the order
// of a sink whose acks come late, as a dead letter's), and returns them.
func (c *heldCredit) ackAll() []pipeline.Record {
	c.mu.Lock()
	out := c.out
	c.out = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	pipeline.AckAll(out)
	return out
}

// TestHandOverSharesBudget: on a backlog whose fetch brings thousands of
// records of each partition, the source does not hand the sink's whole
// budget to the partition polled first: each of the 4 partitions gets at
// most its share (3/8 of the 1,000-record budget), and the rest waits at
// hand. Every
// record still arrives once, in order within its partition.
func TestHandOverSharesBudget(t *testing.T) {
	const parts, perPart, budget = 4, 2000, 1000
	topic := name("share")
	e := newEnv(t, parts, topic)
	var recs []*kgo.Record
	for i := range parts * perPart {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % parts), Value: []byte(strings.Repeat("x", 100))})
	}
	e.produce(t, recs...)

	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: name("g"), CheckpointInterval: time.Hour}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	c := &heldCredit{capRecords: budget, changed: make(chan struct{})}
	s.UseCredit(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, c.emit) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		_ = s.Close(context.Background())
	}()

	// The first fetch brings every partition's records (they are all well
	// below a partition fetch): the budget goes to them in shares of one
	// and a half budgets over the 4 partitions.
	eventually(t, "the budget is used", func() bool { n, _ := c.outstanding(); return n == budget })
	const share = budget * 3 / 2 / parts
	_, per := c.outstanding()
	for p, n := range per {
		if n > share {
			t.Fatalf("partition %d has %d records in the pipeline (%v), want at most %d", p, n, per, share)
		}
	}
	if len(per) < 3 {
		t.Fatalf("records of %d partitions in the pipeline (%v), want 3 or 4", len(per), per)
	}
	next := map[int32]int64{}
	for total := 0; total < parts*perPart; {
		eventually(t, "more records", func() bool { n, _ := c.outstanding(); return n > 0 })
		for _, r := range c.ackAll() {
			p, o := r.Origin.Partition, r.Origin.Offset
			if o != next[p] {
				t.Fatalf("partition %d: offset %d after %d", p, o, next[p]-1)
			}
			next[p] = o + 1
			total++
		}
	}
	for p := range int32(parts) {
		if next[p] != perPart {
			t.Fatalf("next offsets %v, want %d each", next, perPart)
		}
	}
}
