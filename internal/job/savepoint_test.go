package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/state"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func savepointJob(t *testing.T, addrs []string, extra string) *config.Pipeline {
	t.Helper()
	yaml := fmt.Sprintf(`name: spj
brokers: %s
source:
  kafka: {topics: [in], group: spg, checkpoint_interval: 50ms, session_timeout: 6s}
sink:
  stdout: {}
  rate_limit:
    kind: aimd
    max_limit: 1000
state: {write_interval: 50ms, load_timeout: 5s%s}
`, strings.Join(addrs, ","), extra)
	cfg, err := config.Parse("spj.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStopRecord: a stop record already in the control topic when a worker
// starts is not obeyed; one written while it runs makes it drain, commit
// and return nil.
func TestStopRecord(t *testing.T) {
	emb, err := broker.Start(broker.Options{Partitions: 2, Topics: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := broker.Produce(ctx, emb.Addrs(), "in", 500, 32, 10); err != nil {
		t.Fatal(err)
	}
	sps, err := state.OpenSavepoints([]kgo.Opt{kgo.SeedBrokers(emb.Addrs()...)}, state.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sps.Close()
	if err := sps.RequestStop(ctx, state.StopRequest{Job: "spj", Savepoint: "old"}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	j, err := job.Build(ctx, savepointJob(t, emb.Addrs(), ""), slog.New(slog.NewTextHandler(&logs, nil)), job.WithStdout(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	waitFor(t, ctx, func() bool { return j.Snapshot().CommittedTotal() == 500 })
	if j.StopRequested() {
		t.Fatal("a stop record older than the worker stopped it")
	}
	if err := sps.RequestStop(ctx, state.StopRequest{Job: "spj", Savepoint: "new"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after a stop request: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the worker did not stop")
	}
	if !j.StopRequested() || !strings.Contains(logs.String(), "savepoint=new") || strings.Contains(logs.String(), "savepoint=old") {
		t.Errorf("stop requested %v; log:\n%s", j.StopRequested(), logs.String())
	}
	if g, err := sps.Group(ctx, "spg"); err != nil || !g.Empty() {
		t.Errorf("group after the stop: %v %v", g, err)
	}
}

// TestRestoreFromFile: a savepoint file restores the group's offsets and,
// with the state on memory, the strategy's state; a savepoint of another
// job or group, an unknown id and a group with a member are refused.
func TestRestoreFromFile(t *testing.T) {
	emb, err := broker.Start(broker.Options{Partitions: 2, Topics: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := broker.Produce(ctx, emb.Addrs(), "in", 100, 32, 10); err != nil {
		t.Fatal(err)
	}
	sp := state.Savepoint{Version: state.SavepointVersion, ID: "f1", Job: "spj", Group: "spg", CreatedAt: time.Now().UTC(),
		Partitions: map[string]int32{"in": 2},
		Offsets:    []state.SavepointOffset{{Topic: "in", Partition: 0, Offset: 3}, {Topic: "in", Partition: 1, Offset: 4}},
		State:      map[string]json.RawMessage{"strategy": json.RawMessage(`{"kind":"aimd","version":1,"limit":37}`)},
	}
	dir := t.TempDir()
	write := func(sp state.Savepoint) string {
		b, err := sp.Encode(true)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, sp.ID+".json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := savepointJob(t, emb.Addrs(), ", kind: memory")
	other := sp
	other.ID, other.Job = "f2", "another"
	otherGroup := sp
	otherGroup.ID, otherGroup.Group = "f3", "g2"
	for _, tc := range []struct {
		opt  job.Option
		want string
	}{
		{job.FromSavepointFile(write(other)), `savepoint f2 belongs to job "another", not to this job "spj"`},
		{job.FromSavepointFile(write(otherGroup)), `savepoint f3 was taken of group "g2", not of this job's group "spg"`},
		{job.FromSavepointFile(filepath.Join(dir, "none.json")), "no such file"},
		{job.FromSavepoint("nope"), `job spj has no savepoint "nope"`},
	} {
		if _, err := job.Build(ctx, cfg, log, tc.opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("build: %v, want %q", err, tc.want)
		}
	}

	j, err := job.Build(ctx, cfg, log, job.WithStdout(io.Discard), job.FromSavepointFile(write(sp)))
	if err != nil {
		t.Fatal(err)
	}
	if got := j.Strategy.(*backpressure.AIMD).Limit(); got != 37 {
		t.Errorf("AIMD limit %d after restore, want the savepoint's 37", got)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	offs, err := adm.FetchOffsets(ctx, "spg")
	if err != nil {
		t.Fatal(err)
	}
	if o0, _ := offs.Lookup("in", 0); o0.At != 3 {
		t.Errorf("committed %+v after restore", offs)
	}
	// While this job runs, the group has a member: a restore is refused.
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(rctx) }()
	waitFor(t, ctx, func() bool { return j.Health().Partitions == 2 })
	if _, err := job.Build(ctx, cfg, log, job.FromSavepointFile(write(sp))); err == nil || !strings.Contains(err.Error(), "group spg is not empty") {
		t.Errorf("restore while a worker runs: %v", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
