package kafka

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// running is a source's Run in a goroutine, acknowledging every record.
type running struct {
	s      *Source
	got    atomic.Int64
	cancel context.CancelFunc
	done   chan error
}

func runAcking(t *testing.T, s *Source) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- s.Run(ctx, func(_ context.Context, recs []pipeline.Record) error {
			pipeline.AckAll(recs)
			r.got.Add(int64(len(recs)))
			return nil
		})
	}()
	t.Cleanup(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// eventually waits (bounded) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSourcesDoNotShareState runs two sources of different groups in one
// process: a rebalance that revokes partitions from one moves its
// Abandonment and not the other's, and each recycles its batches into its
// own pool.
func TestSourcesDoNotShareState(t *testing.T) {
	ta, tb := name("iso-a"), name("iso-b")
	e := newEnv(t, 2, ta, tb)
	e.produce(t, append(values(ta, 0, 50, 10), values(ta, 1, 50, 10)...)...)
	e.produce(t, append(values(tb, 0, 50, 10), values(tb, 1, 50, 10)...)...)
	ga, gb := name("ga"), name("gb")
	open := func(topic, group string) *Source {
		s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour}, WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := runAcking(t, open(ta, ga)), runAcking(t, open(tb, gb))
	eventually(t, "both sources read their topic", func() bool { return a.got.Load() == 100 && b.got.Load() == 100 })
	epochA, epochB := a.s.Abandonment().Epoch(), b.s.Abandonment().Epoch()

	// A second member of a's group takes one of its partitions.
	a2 := runAcking(t, open(ta, ga))
	eventually(t, "a's partitions move", func() bool { return a.s.Abandonment().Epoch() > epochA })
	eventually(t, "the new member is assigned", func() bool { _, n := a2.s.Status(); return n > 0 })
	if got := b.s.Abandonment().Epoch(); got != epochB {
		t.Fatalf("b's abandonment moved from %d to %d on a rebalance of another group", epochB, got)
	}
	if _, n := b.s.Status(); n != 2 {
		t.Fatalf("b owns %d partitions, want its 2", n)
	}
	if a.s.Abandonment() == b.s.Abandonment() || a.s.Abandonment() == a2.s.Abandonment() {
		t.Fatal("sources share an Abandonment")
	}

	// A batch released by a's lease goes back to a's pool, never to b's.
	const marker = 7777
	ls := &lease{pool: &a.s.pool}
	inA := false
	for range 50 {
		ls.arm(make([]pipeline.Record, 1, marker))
		ls.done(1)
		if got := b.s.pool.get(1); cap(got) == marker {
			t.Fatal("a batch of source a was recycled into source b's pool")
		}
		if got := a.s.pool.get(1); cap(got) == marker {
			inA = true
		}
	}
	if !inA {
		t.Fatal("source a's released batches never came back from its pool")
	}
}
