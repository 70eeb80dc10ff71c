package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "path: message fragment"
	}{
		{"fixed topic", Config{Topic: "out"}, nil},
		{"topic expr", Config{TopicExpr: `"out." + json.region`, Key: "json.id", Headers: map[string]string{"x-src": "topic"}}, nil},
		{"no topic", Config{}, []string{"topic: required (or topic_expr)"}},
		{"both", Config{Topic: "a", TopicExpr: `"b"`}, []string{"topic_expr: not with topic"}},
		{"bad topic", Config{Topic: "a b"}, []string{`topic: invalid topic name "a b"`}},
		{"bad expr", Config{TopicExpr: "json.a +"}, []string{"topic_expr: invalid expression"}},
		{"bad key", Config{Topic: "a", Key: "nope("}, []string{"key: invalid expression"}},
		{"bad header", Config{Topic: "a", Headers: map[string]string{"x y": "1"}}, []string{`headers.x y: invalid header name`}},
		{"compression", Config{Topic: "a", Compression: "brotli"}, []string{`compression: must be "none", "gzip", "snappy", "lz4" or "zstd", got "brotli"`}},
		{"exactly once", Config{Topic: "a", Delivery: "exactly_once", TransactionalID: "job"}, nil},
		{"transaction timeout", Config{Topic: "a", Delivery: "exactly_once", TransactionInterval: 5 * time.Second, TransactionTimeout: 2 * time.Second},
			[]string{"transaction_timeout: must exceed transaction_interval (5s), got 2s"}},
		{"transaction records", Config{Topic: "a", TransactionRecords: -1}, []string{"transaction_records: must be positive, got -1"}},
		{"delivery", Config{Topic: "a", Delivery: "twice"}, []string{`delivery: must be "at_least_once" or "exactly_once", got "twice"`}},
		{"partitions", Config{Topic: "a", Partitions: -1}, []string{"partitions: must be positive, got -1"}},
		{"brokers", Config{Topic: "a", Brokers: []string{"localhost:9092", "nope"}}, []string{`brokers[1]: invalid broker address "nope"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := field.Split(tc.cfg.Validate())
			if len(errs) != len(tc.want) {
				t.Fatalf("Validate = %v, want %d errors %v", errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				var fe *field.Error
				if !errors.As(err, &fe) {
					t.Fatalf("error %d is %T, want *field.Error", i, err)
				}
				if !strings.HasPrefix(err.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want it to start with %q", i, err, tc.want[i])
				}
			}
		})
	}
	var c Config
	c.ApplyDefaults()
	if c.Compression != "lz4" || c.Partitions != 4 || c.Delivery != AtLeastOnce {
		t.Fatalf("defaults = %+v", c)
	}
}

// records returns n records with keys k0..k(keys-1) and values v0..v(n-1).
func records(n, keys int) []pipeline.Record {
	out := make([]pipeline.Record, n)
	for i := range out {
		out[i] = pipeline.Record{
			Key:     fmt.Appendf(nil, "k%d", i%keys),
			Value:   fmt.Appendf(nil, `{"id":%d,"region":"r%d"}`, i, i%2),
			Headers: []pipeline.Header{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}},
			Origin:  pipeline.Origin{Topic: "in", Partition: 0, Offset: int64(i)},
		}
	}
	return out
}

func write(t *testing.T, s *Sink, recs []pipeline.Record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	return s.WriteBatch(ctx, recs)
}

// failed returns the failed entries of err by index; all of them when err
// is not a *sinks.BatchError.
func failed(err error, n int) map[int]error {
	out := map[int]error{}
	var be *sinks.BatchError
	if errors.As(err, &be) {
		for _, f := range be.Failed {
			out[f.Index] = f.Err
		}
		return out
	}
	if err != nil {
		for i := range n {
			out[i] = err
		}
	}
	return out
}

func TestWriteThrough(t *testing.T) {
	e := newEnv(t)
	topic := name("through")
	e.createTopic(t, topic, 3, 0)
	s := e.sink(t, Config{Topic: topic, Compression: "zstd"})
	recs := records(50, 5)
	recs[7].Key = nil
	recs[8].Value = nil
	ts := time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC)
	recs[9].Timestamp = ts
	if err := write(t, s, recs); err != nil {
		t.Fatal(err)
	}
	got := e.read(t, topic)
	if len(got) != len(recs) {
		t.Fatalf("read %d records, want %d", len(got), len(recs))
	}
	byHeader := map[string]int{}
	for i, r := range got {
		byHeader[string(r.Headers[0].Value)] = i
	}
	for i, want := range recs {
		r := got[byHeader[fmt.Sprint(i)]]
		if string(r.Key) != string(want.Key) || string(r.Value) != string(want.Value) || len(r.Headers) != 1 {
			t.Fatalf("record %d: key %q value %q headers %v; want %q %q", i, r.Key, r.Value, r.Headers, want.Key, want.Value)
		}
		if (want.Key == nil) != (r.Key == nil) || (want.Value == nil) != (r.Value == nil) {
			t.Fatalf("record %d: nil key/value not kept: key %v value %v", i, r.Key == nil, r.Value == nil)
		}
	}
	if !got[byHeader["9"]].Timestamp.Equal(ts) {
		t.Fatalf("timestamp %v, want %v", got[byHeader["9"]].Timestamp, ts)
	}
}

func TestMapping(t *testing.T) {
	e := newEnv(t)
	topic := name("mapped")
	e.createTopic(t, topic, 1, 0)
	s := e.sink(t, Config{Topic: topic, Key: "json.id", Value: `{"n": json.id * 2}`, Headers: map[string]string{"h": `"new"`, "from": "topic"}})
	recs := records(3, 1)
	recs = append(recs, pipeline.Record{Value: []byte("not json")})
	err := write(t, s, recs)
	f := failed(err, len(recs))
	if len(f) != 1 || sinks.Classify(f[3]) != sinks.Fatal || !strings.Contains(f[3].Error(), "mapping") {
		t.Fatalf("WriteBatch = %v, want only entry 3 failed, fatal", err)
	}
	got := e.read(t, topic)
	if len(got) != 3 {
		t.Fatalf("read %d records, want 3", len(got))
	}
	for i, r := range got {
		hs := fmt.Sprint(r.Headers)
		if string(r.Key) != fmt.Sprint(i) || string(r.Value) != fmt.Sprintf(`{"n":%d}`, 2*i) || !strings.Contains(hs, "{from [105 110]}") || !strings.Contains(hs, "{h [110 101 119]}") {
			t.Fatalf("record %d: key %q value %q headers %s", i, r.Key, r.Value, hs)
		}
	}
}

func TestTopicExpr(t *testing.T) {
	e := newEnv(t)
	base := name("routed")
	e.createTopic(t, base+".r0", 1, 0)
	s := e.sink(t, Config{TopicExpr: fmt.Sprintf("%q + json.region", base+".")})
	recs := records(6, 2) // regions r0 and r1; r1 is missing
	recs = append(recs, pipeline.Record{Value: []byte(`{"region":"bad name!"}`)}, pipeline.Record{Value: []byte(`{}`)})
	err := write(t, s, recs)
	f := failed(err, len(recs))
	for i := range recs {
		switch {
		case i < 6 && i%2 == 0:
			if f[i] != nil {
				t.Errorf("entry %d (r0) failed: %v", i, f[i])
			}
		case i < 6:
			if c := sinks.Classify(f[i]); c != sinks.Misconfigured || !strings.Contains(f[i].Error(), "create_topic") {
				t.Errorf("entry %d (missing topic) = %v (%v), want misconfigured naming create_topic", i, f[i], c)
			}
		default:
			if c := sinks.Classify(f[i]); c != sinks.Fatal {
				t.Errorf("entry %d (bad topic) = %v (%v), want fatal", i, f[i], c)
			}
		}
	}
	if n := len(e.read(t, base+".r0")); n != 3 {
		t.Fatalf("%s.r0 holds %d records, want 3", base, n)
	}

	// With create_topic, the missing topic is created with partitions.
	s = e.sink(t, Config{TopicExpr: fmt.Sprintf("%q + json.region", base+"."), CreateTopic: true, Partitions: 2})
	if err := write(t, s, records(6, 2)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.read(t, base+".r1")); n != 3 {
		t.Fatalf("%s.r1 holds %d records, want 3", base, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	d, err := e.admin(t).ListTopics(ctx, base+".r1")
	if err != nil || len(d[base+".r1"].Partitions) != 2 {
		t.Fatalf("created topic: %v, %v; want 2 partitions", d, err)
	}
}

func TestMissingTopicAtStart(t *testing.T) {
	e := newEnv(t)
	topic := name("missing")
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	_, err := New(ctx, Config{Brokers: e.brokers, Topic: topic})
	if err == nil || !strings.Contains(err.Error(), topic+" does not exist") || !strings.Contains(err.Error(), "create_topic: true") {
		t.Fatalf("New on a missing topic = %v, want an error naming it and create_topic", err)
	}
	s := e.sink(t, Config{Topic: topic, CreateTopic: true, Partitions: 3})
	if err := write(t, s, records(3, 3)); err != nil {
		t.Fatal(err)
	}
	if n := len(e.read(t, topic)); n != 3 {
		t.Fatalf("read %d, want 3", n)
	}
}

// TestRecordTooLargeForTopic: a record larger than the topic's
// max.message.bytes fails alone, fatal, before it is sent; the others of
// its batch are written.
func TestRecordTooLargeForTopic(t *testing.T) {
	e := newEnv(t)
	topic := name("small")
	e.createTopic(t, topic, 1, 10_000)
	s := e.sink(t, Config{Topic: topic, Compression: "none"})
	recs := records(20, 1)
	recs[5].Value = []byte(strings.Repeat("x", 20_000))
	err := write(t, s, recs)
	f := failed(err, len(recs))
	var re *sinks.RequestError
	if len(f) != 1 || sinks.Classify(f[5]) != sinks.Fatal || errors.As(f[5], &re) || !errors.Is(f[5], kerr.MessageTooLarge) {
		t.Fatalf("WriteBatch = %v, want entry 5 alone failed, fatal, MESSAGE_TOO_LARGE, not a request error", err)
	}
	if n := len(e.read(t, topic)); n != 19 {
		t.Fatalf("read %d, want 19", n)
	}
}

// TestClassify injects broker answers to produce requests and checks the
// class of each failed entry.
func TestClassify(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	topic := name("classify")
	e.createTopic(t, topic, 1, 0)
	// franz-go refreshes metadata before retrying a produce, at most every
	// 5s by default: a shorter age keeps the retries quick here.
	s := e.sink(t, Config{Topic: topic, ClientOpts: func() ([]kgo.Opt, error) {
		return []kgo.Opt{kgo.MetadataMinAge(50 * time.Millisecond)}, nil
	}})
	// Warm up: metadata and the producer id are loaded.
	if err := write(t, s, records(1, 1)); err != nil {
		t.Fatal(err)
	}
	var re *sinks.RequestError
	for _, tc := range []struct {
		name    string
		err     *kerr.Error
		n       int
		class   sinks.Class
		request bool // a *sinks.RequestError: bisected by the writer
	}{
		{"topic authorization", kerr.TopicAuthorizationFailed, 3, sinks.Misconfigured, false},
		{"cluster authorization", kerr.ClusterAuthorizationFailed, 1, sinks.Misconfigured, false},
		{"too large, batch", kerr.MessageTooLarge, 3, sinks.Fatal, true},
		{"too large, alone", kerr.MessageTooLarge, 1, sinks.Fatal, false},
		{"invalid record, batch", kerr.InvalidRecord, 4, sinks.Fatal, true},
		{"invalid timestamp", kerr.InvalidTimestamp, 1, sinks.Fatal, false},
		{"unknown server error", kerr.UnknownServerError, 2, sinks.Retryable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: tc.err})
			defer h.Remove()
			err := write(t, s, records(tc.n, 1))
			f := failed(err, tc.n)
			if len(f) != tc.n {
				t.Fatalf("WriteBatch = %v, want all %d entries failed", err, tc.n)
			}
			for i, ferr := range f {
				if got := sinks.Classify(ferr); got != tc.class || errors.As(ferr, &re) != tc.request || !errors.Is(ferr, tc.err) {
					t.Fatalf("entry %d: %v: class %v, request error %v; want %v, %v", i, ferr, got, errors.As(ferr, &re), tc.class, tc.request)
				}
				if tc.request && ferr != f[0] {
					t.Fatalf("entries of one refused batch carry different errors: %v / %v", ferr, f[0])
				}
			}
		})
	}

	t.Run("retriable errors are retried by the client", func(t *testing.T) {
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: 2})
		defer h.Remove()
		if err := write(t, s, records(5, 5)); err != nil {
			t.Fatalf("WriteBatch through two NOT_ENOUGH_REPLICAS = %v, want nil", err)
		}
		if h.Hits() != 2 {
			t.Fatalf("fault hit %d times, want 2", h.Hits())
		}
	})

	t.Run("a partition that keeps failing ends with the request timeout", func(t *testing.T) {
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := s.WriteBatch(ctx, records(4, 2))
		h.Remove()
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("WriteBatch took %v after a 500ms deadline", el)
		}
		if !errors.Is(err, context.DeadlineExceeded) || sinks.Classify(err) != sinks.Retryable {
			t.Fatalf("WriteBatch = %v, want the deadline, retryable", err)
		}
		// The partition recovers: records go through again. The first
		// write may still fail, retryable: franz-go fails every record
		// buffered for a partition with the batch whose context ended
		// (the writer retries them).
		err = write(t, s, records(4, 2))
		if err != nil {
			if c := sinks.Classify(failed(err, 4)[0]); c != sinks.Retryable {
				t.Fatalf("first WriteBatch after the fault = %v (%v), want nil or retryable", err, c)
			}
			t.Logf("first WriteBatch after the fault: %v", err)
			if err := write(t, s, records(4, 2)); err != nil {
				t.Fatalf("second WriteBatch after the fault = %v", err)
			}
		}
	})
}

func TestClose(t *testing.T) {
	e := newEnv(t)
	topic := name("close")
	e.createTopic(t, topic, 1, 0)
	s := e.sink(t, Config{Topic: topic})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := write(t, s, records(1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteBatch after Close = %v, want ErrClosed", err)
	}
}
