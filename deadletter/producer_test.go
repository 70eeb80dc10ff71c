package deadletter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/pipeline"
)

// The tests run against kfake in-process, or against the brokers listed in
// SPILLWAY_TEST_BROKERS (comma separated), each test on its own topic.
// Tests injecting broker faults need kfake and are skipped otherwise.

// bound is how long any single step may take before the test is failed.
const bound = 15 * time.Second

var topicSeq atomic.Int64

type env struct {
	brokers []string
	topic   string
	cluster *kfake.Cluster // nil against external brokers
}

func newEnv(t *testing.T) env {
	t.Helper()
	topic := fmt.Sprintf("dlq-%d-%d", time.Now().UnixNano(), topicSeq.Add(1))
	if s := os.Getenv("SPILLWAY_TEST_BROKERS"); s != "" {
		brokers := strings.Split(s, ",")
		ctx, cancel := context.WithTimeout(t.Context(), bound)
		defer cancel()
		if err := broker.EnsureTopics(ctx, brokers, 1, topic); err != nil {
			t.Fatal(err)
		}
		return env{brokers: brokers, topic: topic}
	}
	e, err := broker.Start(broker.Options{Partitions: 1, Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return env{brokers: e.Addrs(), topic: topic, cluster: e.Cluster()}
}

// faults returns the kfake cluster, skipping the test against real brokers.
func (e env) faults(t *testing.T) *kfake.Cluster {
	t.Helper()
	if e.cluster == nil {
		t.Skip("needs the in-process broker for fault injection")
	}
	return e.cluster
}

func (e env) deadLetter(t *testing.T, opts ...kgo.Opt) *Producer {
	t.Helper()
	d, err := NewProducer(e.brokers, e.topic, opts...)
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// endOffset asks the broker, once and without waiting, how many records
// the topic holds.
func (e env) endOffset(t *testing.T) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, e.topic)
	if err != nil {
		t.Fatalf("list end offsets: %v", err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		n += o.Offset
	})
	return n
}

// read consumes the topic from the start until it has n records.
func (e env) read(t *testing.T, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records from %s", len(recs), n, e.topic)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		recs = append(recs, fs.Records()...)
	}
	if len(recs) > n {
		t.Fatalf("read %d records from %s, want %d", len(recs), e.topic, n)
	}
	return recs
}

func TestNewProducerValidation(t *testing.T) {
	tests := []struct {
		name    string
		brokers []string
		topic   string
		want    string
	}{
		{name: "empty topic", brokers: []string{"localhost:9092"}, want: "topic"},
		{name: "no brokers", topic: "dlq", want: "brokers"},
		{name: "empty broker list", brokers: []string{}, topic: "dlq", want: "brokers"},
		{name: "nothing", want: "topic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewProducer(tc.brokers, tc.topic)
			if err == nil {
				d.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
	// Valid settings need no reachable broker: no I/O before Send.
	d, err := NewProducer([]string{"127.0.0.1:1"}, "dlq")
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	defer d.Close()
	if d.Topic() != "dlq" {
		t.Errorf("Topic() = %q, want dlq", d.Topic())
	}
}

func TestSendHeaders(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	failedAt := time.Date(2024, 5, 1, 14, 30, 15, 123456789, time.FixedZone("CEST", 2*3600))
	d.now = func() time.Time { return failedAt }

	ts := time.Date(2024, 4, 30, 8, 0, 0, 250*int(time.Millisecond), time.UTC)
	recs := []pipeline.Record{
		{
			Key: []byte("k1"), Value: []byte(`{"id":1}`), Timestamp: ts,
			Headers: []pipeline.Header{{Key: "trace", Value: []byte("abc")}, {Key: "dup", Value: []byte("1")}, {Key: "dup", Value: []byte("2")}},
			Origin:  pipeline.Origin{Topic: "orders", Partition: 3, Offset: 42},
		},
		{Value: []byte("no key, no headers"), Timestamp: ts, Origin: pipeline.Origin{Topic: "orders", Partition: 0, Offset: 0}},
		{Key: []byte("tombstone"), Timestamp: ts, Origin: pipeline.Origin{Topic: "other", Partition: 11, Offset: 1 << 40}},
	}
	f := pipeline.Failure{
		Class:    "retries_exhausted",
		Err:      errors.New("http sink: 503 service unavailable"),
		Attempts: 7,
		Details:  map[string]string{"http.status": "503", "http.body": "try later", "http.error": "status"},
	}
	if err := d.Send(t.Context(), recs, f); err != nil {
		t.Fatalf("Send: %v", err)
	}

	got := e.read(t, len(recs))
	for i, r := range got {
		want := recs[i]
		if string(r.Key) != string(want.Key) || (r.Key == nil) != (want.Key == nil) {
			t.Errorf("record %d: key %q, want %q", i, r.Key, want.Key)
		}
		if string(r.Value) != string(want.Value) || (r.Value == nil) != (want.Value == nil) {
			t.Errorf("record %d: value %q, want %q", i, r.Value, want.Value)
		}
		if !r.Timestamp.Equal(ts) {
			t.Errorf("record %d: timestamp %v, want the original %v", i, r.Timestamp, ts)
		}
		var wantHeaders []string
		for _, h := range want.Headers {
			wantHeaders = append(wantHeaders, h.Key+"="+string(h.Value))
		}
		wantHeaders = append(wantHeaders,
			HeaderClass+"=retries_exhausted",
			HeaderMessage+"=http sink: 503 service unavailable",
			HeaderTopic+"="+want.Origin.Topic,
			HeaderPartition+"="+strconv.Itoa(int(want.Origin.Partition)),
			HeaderOffset+"="+strconv.FormatInt(want.Origin.Offset, 10),
			HeaderAttempts+"=7",
			HeaderTime+"=2024-05-01T12:30:15.123456789Z",
			"spillway.http.body=try later",
			"spillway.http.error=status",
			"spillway.http.status=503",
		)
		var gotHeaders []string
		for _, h := range r.Headers {
			gotHeaders = append(gotHeaders, h.Key+"="+string(h.Value))
		}
		if strings.Join(gotHeaders, "\n") != strings.Join(wantHeaders, "\n") {
			t.Errorf("record %d headers:\n%s\nwant:\n%s", i, strings.Join(gotHeaders, "\n"), strings.Join(wantHeaders, "\n"))
		}
		for _, h := range r.Headers {
			if h.Key == HeaderTime {
				at, err := time.Parse(time.RFC3339, string(h.Value))
				if err != nil || !at.Equal(failedAt) {
					t.Errorf("record %d: time header %q is not RFC 3339 for %v: %v", i, h.Value, failedAt, err)
				}
			}
		}
	}
}

// TestSendTimeDefault: without a fixed clock the time header is now.
func TestSendTimeDefault(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	before := time.Now().Truncate(time.Second)
	if err := d.Send(t.Context(), []pipeline.Record{{Value: []byte("v")}}, pipeline.Failure{Class: "fatal"}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	r := e.read(t, 1)[0]
	for _, h := range r.Headers {
		if h.Key == HeaderTime {
			at, err := time.Parse(time.RFC3339, string(h.Value))
			if err != nil || at.Before(before) || at.After(after) || at.Location() != time.UTC {
				t.Errorf("time header %q: %v, want UTC between %v and %v", h.Value, err, before, after)
			}
			return
		}
	}
	t.Error("no time header")
}

func TestSendMessage(t *testing.T) {
	long := strings.Repeat("0123456789", 300)
	// "a" then 2-byte runes: byte 2048 is in the middle of a rune.
	split := "a" + strings.Repeat("é", 1500)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "no error", err: nil, want: ""},
		{name: "short", err: errors.New("boom"), want: "boom"},
		{name: "at the limit", err: errors.New(long[:2048]), want: long[:2048]},
		{name: "long", err: errors.New(long), want: long[:2048]},
		{name: "wrapped", err: fmt.Errorf("send: %w", context.DeadlineExceeded), want: "send: context deadline exceeded"},
		{name: "multi-byte rune at the cut", err: errors.New(split), want: split[:2047]},
	}
	e := newEnv(t)
	d := e.deadLetter(t)
	for i, tc := range tests {
		r := pipeline.Record{Value: []byte(tc.name), Origin: pipeline.Origin{Offset: int64(i)}}
		if err := d.Send(t.Context(), []pipeline.Record{r}, pipeline.Failure{Class: "fatal", Err: tc.err}); err != nil {
			t.Fatalf("%s: Send: %v", tc.name, err)
		}
	}
	for i, r := range e.read(t, len(tests)) {
		tc := tests[i]
		var msg []byte
		found := false
		for _, h := range r.Headers {
			if h.Key == HeaderMessage {
				msg, found = h.Value, true
			}
		}
		switch {
		case !found:
			t.Errorf("%s: no message header", tc.name)
		case len(msg) > 2048:
			t.Errorf("%s: message header of %d bytes, more than 2048", tc.name, len(msg))
		case !utf8.Valid(msg):
			t.Errorf("%s: message header %q is not valid UTF-8", tc.name, msg[max(0, len(msg)-8):])
		case string(msg) != tc.want:
			t.Errorf("%s: message header of %d bytes, want %d: %.40q…", tc.name, len(msg), len(tc.want), msg)
		}
	}
}

// TestSendWaitsForAck holds the broker's produce response back: Send must
// not return before it, and once it returned the records are in the topic
// without any further waiting.
func TestSendWaitsForAck(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	d := e.deadLetter(t)

	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(held)
		c.SleepControl(func() { <-release })
		return nil, nil, false // then handled as usual
	})

	recs := []pipeline.Record{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}}
	done := make(chan error, 1)
	go func() { done <- d.Send(t.Context(), recs, pipeline.Failure{Class: "fatal"}) }()

	select {
	case <-held:
	case err := <-done:
		t.Fatalf("Send returned %v before the broker saw the produce request", err)
	case <-time.After(bound):
		t.Fatal("no produce request reached the broker")
	}
	select {
	case err := <-done:
		t.Fatalf("Send returned %v while the broker held its response", err)
	case <-time.After(200 * time.Millisecond):
	}
	once.Do(func() { close(release) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	case <-time.After(bound):
		t.Fatal("Send did not return after the broker acknowledged")
	}
	if n := e.endOffset(t); n != int64(len(recs)) {
		t.Errorf("right after Send the topic holds %d records, want %d", n, len(recs))
	}
}

func TestSendCancelledContext(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := d.Send(ctx, []pipeline.Record{{Value: []byte("v")}}, pipeline.Failure{Class: "fatal"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled ctx: %v, want context.Canceled", err)
	}
	if err != nil && !strings.Contains(err.Error(), e.topic) {
		t.Errorf("error %q does not name the topic", err)
	}
}

// TestSendContextEndsWhileBrokerStalls: the broker takes the produce
// request and never answers. Send must give up when ctx ends; the caller
// then keeps the originals and they are delivered again.
func TestSendContextEndsWhileBrokerStalls(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	d := e.deadLetter(t)

	// Warm up, so the stalled request is a produce and not a metadata or
	// producer id request.
	if err := d.Send(t.Context(), []pipeline.Record{{Value: []byte("warm up")}}, pipeline.Failure{Class: "fatal"}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- d.Send(ctx, []pipeline.Record{{Value: []byte("stalled")}}, pipeline.Failure{Class: "fatal"})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send: %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("Send returned after %v, before ctx ended", took)
		}
	case <-time.After(bound):
		t.Fatal("Send did not return after ctx ended while the broker stalled")
	}
}

// produceError answers a produce request with code for every partition.
func produceError(req kmsg.Request, code int16) kmsg.Response {
	pr := req.(*kmsg.ProduceRequest)
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			sp.BaseOffset = -1
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// TestSendRetriesRetriableErrors: franz-go retries a retriable produce
// error itself; the record lands once.
func TestSendRetriesRetriableErrors(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	// Retries wait for a metadata refresh, by default at most every 5s.
	d := e.deadLetter(t, kgo.MetadataMinAge(10*time.Millisecond))
	var failed atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if failed.Add(1) <= 2 {
			c.KeepControl()
			return produceError(req, kerr.NotEnoughReplicas.Code), nil, true
		}
		return nil, nil, false
	})
	if err := d.Send(t.Context(), []pipeline.Record{{Value: []byte("v")}}, pipeline.Failure{Class: "fatal"}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if failed.Load() < 3 {
		t.Errorf("%d produce requests, want the 2 failed ones retried", failed.Load())
	}
	if n := e.endOffset(t); n != 1 {
		t.Errorf("topic holds %d records, want 1", n)
	}
}

func TestSendNonRetriableError(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	d := e.deadLetter(t)
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		return produceError(req, kerr.TopicAuthorizationFailed.Code), nil, true
	})
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	err := d.Send(ctx, []pipeline.Record{{Value: []byte("v")}}, pipeline.Failure{Class: "fatal"})
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("Send: %v, want %v", err, kerr.TopicAuthorizationFailed)
	}
}

func TestSendConcurrent(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	const senders, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				r := pipeline.Record{Key: fmt.Appendf(nil, "s%d", s), Value: fmt.Appendf(nil, "%d", i)}
				errs <- d.Send(t.Context(), []pipeline.Record{r}, pipeline.Failure{Class: "operator", Attempts: 1})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if n := e.endOffset(t); n != senders*each {
		t.Errorf("topic holds %d records, want %d", n, senders*each)
	}
	// One partition: each sender's records are in the order it sent them.
	next := map[string]int{}
	for _, r := range e.read(t, senders*each) {
		if want := strconv.Itoa(next[string(r.Key)]); string(r.Value) != want {
			t.Errorf("sender %s: record %s, want %s", r.Key, r.Value, want)
		}
		next[string(r.Key)]++
	}
}

func TestSendNothing(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	if err := d.Send(t.Context(), nil, pipeline.Failure{Class: "fatal"}); err != nil {
		t.Errorf("Send of no records: %v", err)
	}
	if n := e.endOffset(t); n != 0 {
		t.Errorf("topic holds %d records, want 0", n)
	}
}
