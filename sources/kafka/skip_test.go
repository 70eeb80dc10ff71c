package kafka

import (
	"bytes"
	"context"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/pipeline"
)

// member is a running source whose emitted records a test acks by hand.
type member struct {
	s      *Source
	mu     sync.Mutex
	seen   map[int64]pipeline.Record // offset → record, partition 0
	gate   chan struct{}             // emit waits on it when not nil
	cancel context.CancelFunc
	done   chan error
}

func startMember(t *testing.T, cfg Config, opts ...Option) *member {
	t.Helper()
	s, err := New(cfg, append([]Option{WithLogger(quiet())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{s: s, seen: map[int64]pipeline.Record{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		m.done <- s.Run(ctx, func(ctx context.Context, recs []pipeline.Record) error {
			m.mu.Lock()
			for _, r := range recs {
				m.seen[r.Origin.Offset] = r
			}
			gate := m.gate
			m.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
				}
			}
			return nil
		})
	}()
	return m
}

func (m *member) offsets() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int64, 0, len(m.seen))
	for o := range m.seen {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

func (m *member) ack(offsets ...int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range offsets {
		m.seen[o].Ack()
	}
}

func (m *member) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	if err := <-m.done; err != nil {
		t.Fatal(err)
	}
	if err := m.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// commitOf returns the group's committed offset of partition 0 and the done
// ranges its metadata names.
func commitOf(t *testing.T, addrs []string, group, topic string) (int64, [][2]int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok {
		t.Fatalf("no commit for %s/0", topic)
	}
	m, err := checkpoint.ParseMetadata(o.Metadata, o.At)
	if err != nil {
		t.Fatalf("metadata %q: %v", o.Metadata, err)
	}
	return o.At, m.Done
}

// TestRestartSkipsDoneOffsets: a worker that stops with records 10 and 50
// undone commits 10 and names 11-49 and 51-99 done in the metadata. The next
// worker of the group delivers only 10 and 50; while it has fetched only a
// few records, its commits still name the ranges it has not reached. The
// one after that delivers only 50.
func TestRestartSkipsDoneOffsets(t *testing.T) {
	topic, group := name("skip"), name("g")
	e := newEnv(t, 1, topic)
	e.produce(t, values(topic, 0, 100, 10)...)
	cfg := Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour, CommitDelay: time.Hour}
	ctx := context.Background()

	// First worker: everything but 10 and 50 is done.
	m := startMember(t, cfg)
	eventually(t, "100 records emitted", func() bool { return len(m.offsets()) == 100 })
	for o := int64(0); o < 100; o++ {
		if o != 10 && o != 50 {
			m.ack(o)
		}
	}
	if err := m.s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{11, 49}, {51, 99}}
	if at, done := commitOf(t, e.brokers, group, topic); at != 10 || !reflect.DeepEqual(done, want) {
		t.Fatalf("first worker committed %d %v, want 10 %v", at, done, want)
	}
	m.stop(t)

	// Second worker, a few records per poll, held in its first emit.
	cfg2 := cfg
	cfg2.MaxPollRecords = 5
	m = startMember(t, cfg2)
	m.gate = make(chan struct{})
	eventually(t, "offset 10 emitted again", func() bool { return slices.Contains(m.offsets(), 10) })
	if err := m.s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if at, done := commitOf(t, e.brokers, group, topic); at != 10 || !reflect.DeepEqual(done, want) {
		t.Fatalf("second worker, at its first poll, committed %d %v, want 10 %v", at, done, want)
	}
	close(m.gate)
	eventually(t, "the 88 done records above 10 skipped", func() bool { return m.s.Skipped() == 88 })
	if got := m.offsets(); !reflect.DeepEqual(got, []int64{10, 50}) {
		t.Fatalf("second worker emitted %v, want [10 50]", got)
	}
	m.ack(10)
	if err := m.s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if at, done := commitOf(t, e.brokers, group, topic); at != 50 || !reflect.DeepEqual(done, [][2]int64{{51, 99}}) {
		t.Fatalf("second worker committed %d %v, want 50 [[51 99]]", at, done)
	}
	m.stop(t)

	// Third worker: only 50 is left.
	m = startMember(t, cfg)
	eventually(t, "offset 50 emitted again", func() bool { return slices.Contains(m.offsets(), 50) })
	eventually(t, "49 done records skipped", func() bool { return m.s.Skipped() == 49 })
	if got := m.offsets(); !reflect.DeepEqual(got, []int64{50}) {
		t.Fatalf("third worker emitted %v, want [50]", got)
	}
	m.ack(50)
	if err := m.s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if at, done := commitOf(t, e.brokers, group, topic); at != 100 || done != nil {
		t.Fatalf("third worker committed %d %v, want 100 and nothing above", at, done)
	}
	m.stop(t)
}

// TestForeignMetadataIgnored: commits whose metadata another client (or
// an older Spillway) wrote name nothing; the partitions are read from the
// committed offset, and the metadata is logged once, at debug.
func TestForeignMetadataIgnored(t *testing.T) {
	topic, group := name("foreign"), name("g")
	e := newEnv(t, 2, topic)
	e.produce(t, values(topic, 0, 20, 10)...)
	e.produce(t, values(topic, 1, 20, 10)...)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 5, LeaderEpoch: -1, Metadata: `{"checkpoint":3,"by":"spillway"}`})
	offs.Add(kadm.Offset{Topic: topic, Partition: 1, At: 5, LeaderEpoch: -1, Metadata: "sw1:4:!!"})
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	if err := kadm.NewClient(cl).CommitAllOffsets(ctx, group, offs); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var mu sync.Mutex
	n := 0
	s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour}, WithLogger(lg))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(rctx, func(_ context.Context, recs []pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			n += len(recs)
			pipeline.AckAll(recs)
			return nil
		})
	}()
	eventually(t, "30 records from the committed offsets", func() bool { mu.Lock(); defer mu.Unlock(); return n >= 30 })
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n != 30 || s.Skipped() != 0 {
		t.Fatalf("emitted %d records, skipped %d; want 30 and 0", n, s.Skipped())
	}
	if c := strings.Count(logs.String(), "commit metadata ignored"); c != 1 {
		t.Fatalf("logged the ignored metadata %d times, want once:\n%s", c, logs.String())
	}
}

// TestCommitLoop: signals coalesce into one commit a delay later, calls never
// overlap, nothing is committed while nothing is done, and the periodic
// commit runs every interval.
func TestCommitLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stop, acked := make(chan struct{}), make(chan struct{}, 1)
		var calls []string
		start := time.Now()
		go commitLoop(stop, acked, time.Second, 20*time.Millisecond, func(periodic bool) {
			calls = append(calls, time.Since(start).String()+map[bool]string{true: " periodic", false: ""}[periodic])
			time.Sleep(5 * time.Millisecond) // the commit's own time
		})
		signal := func() {
			select {
			case acked <- struct{}{}:
			default:
			}
		}
		// A burst of acks over 30ms: commits at 20ms, then 20ms after the
		// first signal that came after it.
		for range 30 {
			signal()
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // idle: no commit
		signal()
		time.Sleep(900 * time.Millisecond)
		close(stop)
		synctest.Wait()
		want := []string{"20ms", "45ms", "150ms", "1s periodic"}
		if !reflect.DeepEqual(calls, want) {
			t.Fatalf("commits at %v, want %v", calls, want)
		}
	})
}

// TestStoredOffsetsAhead: with the destination's stored offsets ahead of the
// group's commit (none here), a partition starts after them; a failing
// lookup leaves the group's commit in charge.
func TestStoredOffsetsAhead(t *testing.T) {
	topic := name("stored")
	e := newEnv(t, 2, topic)
	e.produce(t, values(topic, 0, 100, 10)...)
	e.produce(t, values(topic, 1, 30, 10)...)
	cfg := Config{Brokers: e.brokers, Topics: []string{topic}, Group: name("g"), StartOffset: "earliest", CheckpointInterval: time.Hour, CommitDelay: time.Hour}
	s, err := New(cfg, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan string, 4)
	s.UseStoredOffsets(func(_ context.Context, tp string) (map[int32]int64, error) {
		asked <- tp
		return map[int32]int64{0: 59}, nil // partition 1: nothing stored
	})
	var mu sync.Mutex
	seen := map[int32][]int64{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(_ context.Context, recs []pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				seen[r.Origin.Partition] = append(seen[r.Origin.Partition], r.Origin.Offset)
				r.Ack()
			}
			return nil
		})
	}()
	eventually(t, "70 records emitted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[0])+len(seen[1]) >= 70
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := <-asked; got != topic {
		t.Errorf("asked for topic %q, want %q", got, topic)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen[0]) != 40 || seen[0][0] != 60 || len(seen[1]) != 30 || seen[1][0] != 0 {
		t.Errorf("partition 0 from %v (%d records), partition 1 from %v (%d): want 60.. (40) and 0.. (30)",
			first(seen[0]), len(seen[0]), first(seen[1]), len(seen[1]))
	}
}

func first(xs []int64) any {
	if len(xs) == 0 {
		return "-"
	}
	return xs[0]
}
