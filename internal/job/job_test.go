package job_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
)

// lockedBuffer is an io.Writer the stdout sink may write from several
// requests at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "\n")
}

// TestTwoJobsInOneProcess: two jobs share a process and a broker, as they
// will under the job gateway. A rebalance of one job's group and its
// shutdown leave the other alone: the other delivers each of its records
// once, abandons none, and commits exactly what it delivered.
func TestTwoJobsInOneProcess(t *testing.T) {
	const n = 20_000
	emb, err := broker.Start(broker.Options{Partitions: 4, Topics: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, topic := range []string{"a", "b"} {
		if err := broker.Produce(ctx, emb.Addrs(), topic, n, 64, 100); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	build := func(topic string, out io.Writer) *job.Job {
		t.Helper()
		yaml := fmt.Sprintf(`name: job-%[1]s
brokers: %[2]s
source:
  kafka: {topics: [%[1]s], group: g-%[1]s, checkpoint_interval: 100ms, session_timeout: 6s}
sink:
  stdout: {}
  writer: {max_batch_size: 100, max_time_in_buffer: 10ms}
`, topic, strings.Join(emb.Addrs(), ","))
		cfg, err := config.Parse(topic+".yaml", []byte(yaml), nil)
		if err != nil {
			t.Fatal(err)
		}
		j, err := job.Build(ctx, cfg, log, job.WithStdout(out))
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	var outA, outB lockedBuffer
	a, b := build("a", &outA), build("b", &outB)
	ctxA, stopA := context.WithCancel(ctx)
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- a.Run(ctxA) }()
	ctxB, stopB := context.WithCancel(ctx)
	defer stopB()
	go func() { doneB <- b.Run(ctxB) }()

	// A second member joins A's group: A revokes partitions (its source's
	// abandonment moves), B must not notice.
	waitFor(t, ctx, func() bool { _, d := a.Progress(); return d > 0 })
	intruder, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...), kgo.ConsumerGroup("g-a"), kgo.ConsumeTopics("a"),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for ctx.Err() == nil && !intruder.PollFetches(ctx).IsClientClosed() {
			intruder.AllowRebalance()
		}
	}()
	waitFor(t, ctx, func() bool { return a.Health().Partitions < 4 })
	intruder.Close()
	<-polled
	stopA()
	if err := <-doneA; err != nil {
		t.Fatalf("job a: %v", err)
	}
	if h := a.Health(); h.Status != "stopped" {
		t.Errorf("job a after its Run returned: %s", h.Status)
	}
	if h := b.Health(); h.Status != "ready" {
		t.Errorf("job b while a stopped: %s %v", h.Status, h.Reasons)
	}

	waitFor(t, ctx, func() bool { return b.Snapshot().CommittedTotal() >= n })
	stopB()
	if err := <-doneB; err != nil {
		t.Fatalf("job b: %v", err)
	}
	s := b.Snapshot()
	if s.Delivered != n || s.Abandoned != 0 || s.CommittedTotal() != n || outB.lines() != n {
		t.Errorf("job b: delivered %d, abandoned %d, committed %d, lines %d; want %d, 0, %d, %d",
			s.Delivered, s.Abandoned, s.CommittedTotal(), outB.lines(), n, n, n)
	}
	if outA.lines() == 0 {
		t.Error("job a delivered nothing before it stopped")
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("timed out")
		case <-tick.C:
		}
	}
}
