package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/state"
)

// TestStatus runs a pipeline on a broker, then asks `spillway status` about
// its group while it runs: one member owning all four partitions, every
// partition committed to its end once the records are done, lag 0; and a
// text table naming the owner; the worker's own record. Both group
// protocols: a group of the consumer protocol (KIP-848) is described with
// ConsumerGroupDescribe.
func TestStatus(t *testing.T) {
	for _, proto := range []string{"classic", "consumer"} {
		t.Run(proto, func(t *testing.T) { testStatus(t, proto) })
	}
}

func testStatus(t *testing.T, proto string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The embedded broker, or the cluster of SPILLWAY_TEST_BROKERS (make
	// test-kafka), with a topic and group of this run.
	addrs := strings.Split(os.Getenv("SPILLWAY_TEST_BROKERS"), ",")
	topic, group, jobName := "orders", "status-test", "st"
	if addrs[0] == "" {
		if proto == "consumer" {
			t.Skip("kfake's ConsumerGroupDescribe names assigned topics by id only, which kadm cannot use; runs on real Kafka with SPILLWAY_TEST_BROKERS (make test-kafka)")
		}
		emb, err := broker.Start(broker.Options{Partitions: 4, Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		defer emb.Close()
		addrs = emb.Addrs()
	} else {
		suffix := fmt.Sprintf("-%s-%d-%d", proto, os.Getpid(), time.Now().UnixNano())
		topic, group, jobName = topic+suffix, group+suffix, jobName+suffix
		if err := broker.EnsureTopicsWith(ctx, addrs, nil, 4, topic); err != nil {
			t.Fatal(err)
		}
	}
	if err := broker.Produce(ctx, addrs, topic, 2000, 50, 100); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	body := fmt.Sprintf(`name: %s
brokers: %s
source:
  kafka: {topics: [%s], group: %s, start_offset: earliest, checkpoint_interval: 100ms, instance_id: worker-a, group_protocol: %s}
sink:
  file: {path: %s}
  rate_limit: {kind: token_bucket, records_per_second: 100000, scope: group}
  circuit_breaker: {}
state:
  write_interval: 50ms
`, jobName, strings.Join(addrs, ","), topic, group, proto, filepath.Join(dir, "out.jsonl"))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, config.WithRegistry(registry.Builtin()))
	if err != nil {
		t.Fatal(err)
	}
	jctx, stop := context.WithCancel(ctx)
	j, err := job.Build(jctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- j.Run(jctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("job: %v", err)
		}
	}()

	var st groupStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out, errb strings.Builder
		code := Main([]string{"status", "-c", path, "--json"}, &out, &errb, registry.Builtin())
		if code == 0 {
			if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, out.String())
			}
		} else if !strings.Contains(errb.String(), "GROUP_ID_NOT_FOUND") { // not joined yet
			t.Fatalf("status exit %d: %s", code, errb.String())
		}
		if code == 0 && len(st.Members) == 1 && st.TotalLag == 0 && len(st.Partitions) == 4 && st.Partitions[0].Committed > 0 &&
			len(st.Workers) == 1 && len(st.Workers[0].Partitions[topic]) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed one member and lag 0: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m := st.Members[0]; m.InstanceID != "worker-a" || len(m.Partitions) != 4 || st.State != "Stable" {
		t.Errorf("group %+v, want Stable with worker-a owning 4 partitions", st)
	}
	var sum int64
	for _, p := range st.Partitions {
		sum += p.Committed
		if p.Committed != p.End || p.Member != "worker-a" {
			t.Errorf("partition %+v, want committed at its end, owned by worker-a", p)
		}
	}
	if sum != 2000 {
		t.Errorf("committed %d records in all, want 2000", sum)
	}
	// The worker's own record: its limit, share, breaker and state mode.
	w := st.Workers[0]
	if w.Worker != "worker-a" || w.Scope != "group" || w.Share != 1 || w.Breaker != "closed" || w.State.Mode != "kafka" || w.Stale ||
		len(w.Limits) != 1 || w.Limits[0] != (state.Limit{Kind: "token_bucket", Unit: "records", Value: 100000}) {
		t.Errorf("worker record %+v, want worker-a, share 1 of a group limit of 100000 records/s, breaker closed, state kafka", w)
	}
	if len(st.GroupLimits) != 1 || st.GroupLimits[0].Value != 100000 {
		t.Errorf("group limits %+v, want 100000 records/s", st.GroupLimits)
	}
	var out, errb strings.Builder
	if code := Main([]string{"status", "-c", path}, &out, &errb, registry.Builtin()); code != 0 ||
		!strings.Contains(out.String(), "group "+group+": Stable, 1 members") || !strings.Contains(out.String(), "worker-a") ||
		!strings.Contains(out.String(), "worker worker-a: 4 partitions, limit 100000 records/s (token_bucket) = share 1.000 of the group's, breaker closed, state kafka") ||
		!strings.Contains(out.String(), "group limit: 100000 records/s (token_bucket) in all") {
		t.Errorf("status (text) exit %d:\n%s%s", code, out.String(), errb.String())
	}

	// A worker that stops deletes its record.
	stop()
	if err := <-done; err != nil {
		t.Errorf("job: %v", err)
	}
	done <- nil
	out.Reset()
	errb.Reset()
	if code := Main([]string{"status", "-c", path, "--json"}, &out, &errb, registry.Builtin()); code != 0 {
		t.Fatalf("status after stop: exit %d: %s", code, errb.String())
	}
	st = groupStatus{}
	if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Workers) != 0 {
		t.Errorf("after the worker stopped, status shows worker records %+v", st.Workers)
	}
}
