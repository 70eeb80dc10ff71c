package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func endOffset(t *testing.T, addrs []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestDataDirSurvivesRestart: with DataDir, a restarted broker still has
// the records and the topics it had.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	e, err := Start(Options{DataDir: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := EnsureTopics(ctx, e.Addrs(), 2, "persisted"); err != nil {
		t.Fatal(err)
	}
	if err := Produce(ctx, e.Addrs(), "persisted", 500, 64, 10); err != nil {
		t.Fatal(err)
	}
	e.Close()

	e2, err := Start(Options{DataDir: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := endOffset(t, e2.Addrs(), "persisted"); got != 500 {
		t.Fatalf("after restart the topic holds %d records, want 500", got)
	}
	// EnsureTopics leaves an existing topic alone.
	if err := EnsureTopics(ctx, e2.Addrs(), 8, "persisted"); err != nil {
		t.Fatal(err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Brokers: -1}, {Partitions: -2}, {Port: 70000}} {
		if e, err := Start(o); err == nil {
			e.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

func TestSeveralBrokers(t *testing.T) {
	e, err := Start(Options{Brokers: 3, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n := len(e.Addrs()); n != 3 {
		t.Fatalf("%d listen addresses, want 3", n)
	}
	if err := Produce(context.Background(), e.Addrs(), "t", 100, 32, 10); err != nil {
		t.Fatal(err)
	}
	if got := endOffset(t, e.Addrs(), "t"); got != 100 {
		t.Fatalf("end offsets sum %d, want 100", got)
	}
}
