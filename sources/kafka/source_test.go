package kafka

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/pipeline"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func committed(t *testing.T, addrs []string, group, topic string, p int32) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup(topic, p)
	if !ok {
		return -1
	}
	return o.At
}

// TestCommitStopsAtGap holds back the ack of one record and checks the
// commit stops there, then advances once it is acked.
func TestCommitStopsAtGap(t *testing.T) {
	topic, group := name("gap"), name("g")
	e := newEnv(t, 1, topic)
	e.produce(t, values(topic, 0, 100, 50)...)
	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []pipeline.Record
	seen := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(_ context.Context, recs []pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				seen++
				if r.Origin.Offset == 40 {
					held = append(held, r)
					continue
				}
				r.Ack()
			}
			return nil
		})
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := seen
		mu.Unlock()
		if n >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("saw %d records", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, e.brokers, group, topic, 0); got != 40 {
		t.Fatalf("committed %d with offset 40 unacked, want 40", got)
	}
	held[0].Ack()
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, e.brokers, group, topic, 0); got != 100 {
		t.Fatalf("committed %d after all acked, want 100", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestLateAckAfterRevokeIgnored acks a record after its partition was
// revoked (the source closed) and checks nothing more is committed.
func TestLateAckAfterRevokeIgnored(t *testing.T) {
	topic, group := name("late"), name("g")
	e := newEnv(t, 1, topic)
	e.produce(t, values(topic, 0, 10, 50)...)
	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []pipeline.Record, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(_ context.Context, recs []pipeline.Record) error {
			got <- append([]pipeline.Record(nil), recs...)
			return nil
		})
	}()
	var recs []pipeline.Record
	for len(recs) < 10 {
		select {
		case b := <-got:
			recs = append(recs, b...)
		case <-time.After(time.Minute):
			t.Fatal("no records")
		}
	}
	for _, r := range recs[:5] {
		r.Ack()
	}
	cancel()
	<-done
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[5:] {
		r.Ack() // late: the partition is gone
	}
	if c := committed(t, e.brokers, group, topic, 0); c != 5 {
		t.Fatalf("committed %d, want 5", c)
	}
}

func TestUnreachableBrokerNamed(t *testing.T) {
	s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"x"}, Group: "g", ConnectTimeout: 300 * time.Millisecond}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = s.Run(context.Background(), func(context.Context, []pipeline.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkAppendRecords(b *testing.B) {
	rs := make([]*kgo.Record, 20000)
	for i := range rs {
		rs[i] = &kgo.Record{Topic: "t", Partition: 1, Offset: int64(i), Key: []byte("k"), Value: make([]byte, 100), Timestamp: time.Now()}
	}
	offs := make([]int64, len(rs))
	for b.Loop() {
		tr := checkpoint.NewPartition(0)
		offs = offs[:0]
		for _, r := range rs {
			offs = append(offs, r.Offset)
		}
		from, to := tr.BeginBatch(offs)
		batch := appendRecords(make([]pipeline.Record, 0, len(rs)), rs[from:to], tr)
		pipeline.AckAll(batch)
	}
	b.ReportMetric(float64(b.N*len(rs))/b.Elapsed().Seconds(), "records/s")
}

// fixedCredit is a sink budget whose free room never changes.
type fixedCredit struct{ records, bytes, capRecords, capBytes int64 }

func (c fixedCredit) Free() (int64, int64)     { return c.records, c.bytes }
func (c fixedCredit) Capacity() (int64, int64) { return c.capRecords, c.capBytes }
func (c fixedCredit) Changed() <-chan struct{} { return make(chan struct{}) }

// TestPollCutToFreeBytes: records of mixed sizes make a poll sized by the
// average record overshoot the sink's free bytes. The source hands over only
// what fits (so emit never has to block holding the poll, which would hold
// up a rebalance), keeps the rest at hand, and every record still arrives
// once and in order.
func TestPollCutToFreeBytes(t *testing.T) {
	const n, free = 2000, 8000
	topic := name("cut")
	e := newEnv(t, 2, topic)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		size := 40
		if i%50 >= 40 {
			size = 1500 // ten big records after forty small ones
		}
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(strings.Repeat("x", size))}
	}
	e.produce(t, recs...)

	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: name("g"), CheckpointInterval: time.Hour}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	s.UseCredit(fixedCredit{records: 1000, bytes: free, capRecords: 1000, capBytes: 10000})
	var mu sync.Mutex
	next := map[int32]int64{} // next offset expected per partition
	total, over := 0, 0
	var orderErr string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(_ context.Context, batch []pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			bytes := 0
			for _, r := range batch {
				bytes += r.Size()
				p, o := r.Origin.Partition, r.Origin.Offset
				if o != next[p] && orderErr == "" {
					orderErr = fmt.Sprintf("partition %d: offset %d after %d", p, o, next[p]-1)
				}
				next[p] = o + 1
				total++
				r.Ack()
			}
			if bytes > free && len(batch) > 1 {
				over++
			}
			return nil
		})
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		got := total
		mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d records", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if orderErr != "" {
		t.Fatal(orderErr)
	}
	if total != n || next[0] != n/2 || next[1] != n/2 {
		t.Fatalf("received %d records, next offsets %v; want each of %d once", total, next, n)
	}
	if over > 0 {
		t.Fatalf("%d batches exceeded the %d free bytes", over, free)
	}
	if s.Cuts() == 0 {
		t.Fatal("no poll was cut: the test did not exercise the overshoot")
	}
	t.Logf("%d polls cut to fit", s.Cuts())
}

// TestCreateTopics: with create_topics, Run creates the missing topic with
// the configured partitions (the broker's default is 4) before joining.
func TestCreateTopics(t *testing.T) {
	topic := name("created")
	e := newEnv(t, 4)
	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: name("g"), CreateTopics: true, Partitions: 3,
		CheckpointInterval: time.Hour}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	runAcking(t, s)
	eventually(t, "the created topic's partitions are assigned", func() bool { _, n := s.Status(); return n == 3 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[topic].Partitions); n != 3 {
		t.Fatalf("topic %s has %d partitions, want 3", topic, n)
	}
}

func TestCreateTopicsUnreachableBrokerNamed(t *testing.T) {
	s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"x"}, Group: "g", CreateTopics: true,
		ConnectTimeout: 300 * time.Millisecond}, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = s.Run(context.Background(), func(context.Context, []pipeline.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "create topics x") {
		t.Fatalf("err = %v", err)
	}
}
