package state_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/state"
)

// These tests run on an in-process kfake broker; stopping and restarting
// it is how Kafka becomes unavailable, so they need it even when
// SPILLWAY_TEST_BROKERS names a cluster.

func TestMemory(t *testing.T) {
	s := state.NewMemory()
	storeBasics(t, s)
	if got := s.Status(); got.Mode != "memory" || got.Degraded {
		t.Errorf("status %+v, want memory, not degraded", got)
	}
}

// storeBasics checks the Store contract that does not depend on where
// values are kept.
func storeBasics(t *testing.T, s state.Store) {
	t.Helper()
	if _, ok := s.Get("j/a"); ok {
		t.Fatal("empty store has j/a")
	}
	v := []byte("one")
	if err := s.Put("j/a", v); err != nil {
		t.Fatal(err)
	}
	v[0] = 'X' // the store keeps a copy
	if got, ok := s.Get("j/a"); !ok || string(got) != "one" {
		t.Fatalf("Get(j/a) = %q, %v; want one", got, ok)
	}
	_ = s.Put("j/b", []byte("two"))
	_ = s.Put("k/a", []byte("other job"))
	snap := s.Snapshot("j/")
	if len(snap) != 2 || string(snap["j/a"]) != "one" || string(snap["j/b"]) != "two" {
		t.Fatalf("Snapshot(j/) = %q", snap)
	}
	if err := s.Delete("j/b"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("j/b"); ok {
		t.Fatal("j/b still set after Delete")
	}
	if err := s.Put("", nil); err == nil {
		t.Error("Put with an empty key did not fail")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("j/c", nil); !errors.Is(err, state.ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if got, ok := s.Get("j/a"); !ok || string(got) != "one" {
		t.Errorf("Get after Close = %q, %v; want one", got, ok)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fakeKafka is a kfake broker on a fixed port that can be stopped and
// started again (empty: nothing survives a restart).
type fakeKafka struct {
	t    *testing.T
	port int
	mu   sync.Mutex
	e    *broker.Embedded
}

func startFake(t *testing.T) *fakeKafka {
	f := &fakeKafka{t: t, port: freePort(t)}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeKafka) addr() string { return fmt.Sprintf("127.0.0.1:%d", f.port) }

func (f *fakeKafka) start() {
	f.t.Helper()
	e, err := broker.Start(broker.Options{Port: f.port, Partitions: 1})
	if err != nil {
		f.t.Fatalf("start kfake on %d: %v", f.port, err)
	}
	f.mu.Lock()
	f.e = e
	f.mu.Unlock()
}

func (f *fakeKafka) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.e != nil {
		f.e.Close()
		f.e = nil
	}
}

func opts(addr, topic string) state.KafkaOptions {
	return state.KafkaOptions{
		Topic: topic, ClientOpts: []kgo.Opt{kgo.SeedBrokers(addr)},
		WriteInterval: 50 * time.Millisecond, RetryInterval: 200 * time.Millisecond, LoadTimeout: 2 * time.Second,
		Log: testLog(),
	}
}

// testLog discards unless SPILLWAY_TEST_VERBOSE is set.
func testLog() *slog.Logger {
	if os.Getenv("SPILLWAY_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func open(t *testing.T, o state.KafkaOptions) *state.Kafka {
	t.Helper()
	s, err := state.OpenKafka(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// readTopic returns every record of topic, in order per partition.
func readTopic(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
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
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var out []*kgo.Record
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d of %d records", topic, len(out), total)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // bounds a hung test only
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// latest maps each key of recs to its last value ("" for a tombstone).
func latest(recs []*kgo.Record) map[string]string {
	m := map[string]string{}
	for _, r := range recs {
		if r.Value == nil {
			delete(m, string(r.Key))
		} else {
			m[string(r.Key)] = string(r.Value)
		}
	}
	return m
}

func TestKafkaBasics(t *testing.T) {
	f := startFake(t)
	s := open(t, opts(f.addr(), "state"))
	if st := s.Status(); st.Mode != "kafka" || st.Degraded {
		t.Fatalf("status %+v, want kafka", st)
	}
	storeBasics(t, s) // closes s, which writes what is pending
	got := latest(readTopic(t, f.addr(), "state"))
	want := map[string]string{"j/a": "one", "k/a": "other job"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("topic holds %v, want %v", got, want)
	}

	// The topic is compacted.
	cl, _ := kgo.NewClient(kgo.SeedBrokers(f.addr()))
	defer cl.Close()
	cfgs, err := kadm.NewClient(cl).DescribeTopicConfigs(context.Background(), "state")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On("state", nil)
	if err != nil {
		t.Fatal(err)
	}
	var policy string
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		t.Errorf("cleanup.policy = %q, want compact", policy)
	}

	// A new store loads the topic to its high watermark.
	s2 := open(t, opts(f.addr(), "state"))
	if v, ok := s2.Get("j/a"); !ok || string(v) != "one" {
		t.Errorf("reopened store: j/a = %q, %v; want one (status %v)", v, ok, s2.Status())
	}
	if _, ok := s2.Get("j/b"); ok {
		t.Error("reopened store has the deleted j/b")
	}
}

// TestKafkaCoalesces: a key changed many times within one write interval
// is written once or twice, with its latest value.
func TestKafkaCoalesces(t *testing.T) {
	f := startFake(t)
	o := opts(f.addr(), "state")
	o.WriteInterval = time.Second
	s := open(t, o)
	for i := range 1000 {
		_ = s.Put("j/limit", fmt.Appendf(nil, "%d", i))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := readTopic(t, f.addr(), "state")
	if len(recs) == 0 || len(recs) > 2 {
		t.Fatalf("1000 puts within one interval wrote %d records, want 1 or 2", len(recs))
	}
	if v := string(recs[len(recs)-1].Value); v != "999" {
		t.Errorf("last record %q, want 999", v)
	}
}

// TestKafkaOnChange: a store sees what another writes, not its own writes.
func TestKafkaOnChange(t *testing.T) {
	f := startFake(t)
	var mu sync.Mutex
	var seen []string
	o := opts(f.addr(), "state")
	o.OnChange = func(k string, v []byte) {
		mu.Lock()
		seen = append(seen, k+"="+string(v))
		mu.Unlock()
	}
	a := open(t, o)
	b := open(t, opts(f.addr(), "state"))
	_ = a.Put("j/own", []byte("mine"))
	_ = b.Put("j/x", []byte("1"))
	waitFor(t, "a sees b's write", func() bool {
		v, ok := a.Get("j/x")
		return ok && string(v) == "1"
	})
	_ = b.Delete("j/x")
	waitFor(t, "a sees b's delete", func() bool { _, ok := a.Get("j/x"); return !ok })
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(seen, " "); got != "j/x=1 j/x=" {
		t.Errorf("OnChange saw %q, want %q", got, "j/x=1 j/x=")
	}
}

// TestKafkaFallback: Kafka stops → the store keeps working on memory,
// degraded with a reason; Kafka returns (empty) → the store writes back
// every key it wrote and is healthy again.
func TestKafkaFallback(t *testing.T) {
	f := startFake(t)
	s := open(t, opts(f.addr(), "state"))
	_ = s.Put("j/a", []byte("before"))
	waitFor(t, "j/a written", func() bool { return latest(readTopic(t, f.addr(), "state"))["j/a"] == "before" })

	f.stop()
	_ = s.Put("j/b", []byte("during")) // the write fails: degraded
	waitFor(t, "degraded", func() bool { return s.Status().Degraded })
	st := s.Status()
	if st.Mode != "memory" || !strings.Contains(st.Reason, "kafka unavailable") {
		t.Errorf("status %+v, want memory with the reason", st)
	}
	_ = s.Put("j/a", []byte("changed while down"))
	if v, _ := s.Get("j/b"); string(v) != "during" {
		t.Errorf("degraded store: j/b = %q", v)
	}

	f.start() // empty: the cluster lost everything
	waitFor(t, "recovered", func() bool { return !s.Status().Degraded })
	if st := s.Status(); st.Mode != "kafka" || st.Reason != "" {
		t.Errorf("status after recovery %+v", st)
	}
	got := latest(readTopic(t, f.addr(), "state"))
	if got["j/a"] != "changed while down" || got["j/b"] != "during" {
		t.Errorf("after resync the topic holds %v", got)
	}
}

// TestKafkaStartsDegraded: no Kafka at open → the store starts on memory
// and moves to Kafka when it appears, writing what it holds.
func TestKafkaStartsDegraded(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	o := opts(addr, "state")
	o.LoadTimeout = 300 * time.Millisecond
	s := open(t, o)
	if st := s.Status(); !st.Degraded || st.Mode != "memory" {
		t.Fatalf("status without Kafka %+v, want degraded memory", st)
	}
	_ = s.Put("j/a", []byte("1"))
	f := &fakeKafka{t: t, port: port}
	f.start()
	t.Cleanup(f.stop)
	waitFor(t, "recovered", func() bool { return !s.Status().Degraded })
	if got := latest(readTopic(t, addr, "state")); got["j/a"] != "1" {
		t.Errorf("topic holds %v after recovery", got)
	}
}
