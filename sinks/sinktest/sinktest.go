// Package sinktest is the conformance suite every sinks.Sink passes. A sink's
// tests call Run with a constructor for a fresh sink and a read-back of its
// destination (an httptest receiver, a file); the suite writes records
// through WriteBatch and checks what arrived.
//
// Every record the suite writes has a JSON object as its value, naming the
// subtest, a key and a sequence number, so the destination only needs to
// give values back; keys, headers and origins are not compared.
package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// Target is a sink under test and a view of its destination.
type Target struct {
	// Sink is the sink under test. Required. When it implements io.Closer
	// the suite also checks closing it while batches are being written.
	Sink sinks.Sink

	// Received returns the values of every record the destination has
	// accepted so far, in the order it accepted them. A value the sink
	// embedded as JSON comes back as its JSON text, one it encoded as a
	// JSON string comes back decoded, a JSON null as nil. Required; it is
	// called only while no WriteBatch is running.
	Received func() [][]byte

	// Reject, when set, makes the destination refuse the entries at these
	// indexes of the next batch it receives, with a retryable status, and
	// accept the others. Leave it nil for a destination that cannot fail
	// part of a batch; the partial-failure test is then skipped.
	Reject func(indexes ...int)
}

// Timeout bounds every WriteBatch call of the suite; a sink that takes
// longer is reported as hanging.
const Timeout = 10 * time.Second

// Prompt bounds how long WriteBatch may take to give up on a context that
// is already done.
const Prompt = time.Second

// LargeValueBytes is the size of the large record, the writer's default
// max_record_bytes.
const LargeValueBytes = 1 << 20

// Run runs the suite as subtests of t, calling newTarget for a fresh sink
// and destination in each. newTarget registers its own cleanup with
// t.Cleanup.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, Target)
	}{
		{"BatchInOrder", testBatchInOrder},
		{"KeyOrderAcrossBatches", testKeyOrderAcrossBatches},
		{"EmptyBatch", testEmptyBatch},
		{"CancelledContext", testCancelledContext},
		{"ExpiredDeadline", testExpiredDeadline},
		{"ConcurrentWrites", testConcurrentWrites},
		{"LargeRecord", testLargeRecord},
		{"DoesNotKeepBatch", testDoesNotKeepBatch},
		{"PartialFailure", testPartialFailure},
		{"CloseWhileWriting", testCloseWhileWriting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t)
			if tg.Sink == nil || tg.Received == nil {
				t.Fatal("sinktest: Target needs Sink and Received")
			}
			tc.fn(t, tg)
		})
	}
}

// value is the payload of every record the suite writes.
type value struct {
	Test string `json:"test"`
	Key  string `json:"key"`
	Seq  int    `json:"seq"`
	Pad  string `json:"pad,omitempty"`
}

type id struct {
	key string
	seq int
}

// gen makes records for one subtest with increasing sequence numbers.
type gen struct {
	test string
	seq  int
	off  int64
}

func newGen(t *testing.T) *gen { return &gen{test: t.Name()} }

// batch makes n records cycling over keys; pad adds that many bytes to
// each value.
func (g *gen) batch(n int, keys []string, pad int) []pipeline.Record {
	recs := make([]pipeline.Record, n)
	for i := range recs {
		k := keys[i%len(keys)]
		v := value{Test: g.test, Key: k, Seq: g.seq, Pad: strings.Repeat("x", pad)}
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		recs[i] = pipeline.Record{
			Key:       []byte(k),
			Value:     b,
			Headers:   []pipeline.Header{{Key: "sinktest-seq", Value: fmt.Appendf(nil, "%d", g.seq)}},
			Timestamp: time.Unix(1700000000, int64(g.seq)*int64(time.Millisecond)).UTC(),
			Origin:    pipeline.Origin{Topic: "sinktest", Partition: 0, Offset: g.off},
		}
		g.seq++
		g.off++
	}
	return recs
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// copyValues snapshots the values of recs before the sink sees them.
func copyValues(recs []pipeline.Record) [][]byte {
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = bytes.Clone(r.Value)
	}
	return out
}

// write calls WriteBatch under the suite's Timeout.
func write(t *testing.T, s sinks.Sink, recs []pipeline.Record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, recs)
	if el := time.Since(start); el >= Timeout {
		t.Errorf("WriteBatch of %d records took %v: hanging", len(recs), el)
	}
	return err
}

func mustWrite(t *testing.T, s sinks.Sink, recs []pipeline.Record) {
	t.Helper()
	if err := write(t, s, recs); err != nil {
		t.Fatalf("WriteBatch of %d records: %v (class %v)", len(recs), err, sinks.Classify(err))
	}
}

// decode parses received values, failing on values the suite did not write.
func decode(t *testing.T, got [][]byte) []id {
	t.Helper()
	out := make([]id, 0, len(got))
	for i, raw := range got {
		var v value
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("received value %d is not a suite record (%v): %.200q", i, err, raw)
		}
		if v.Test != t.Name() {
			t.Fatalf("received value %d belongs to test %q, not %q", i, v.Test, t.Name())
		}
		out = append(out, id{v.Key, v.Seq})
	}
	return out
}

// sameValues checks got equals want byte for byte (after compacting, for
// sinks that re-format JSON).
func sameValues(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("destination received %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(compact(got[i]), compact(want[i])) {
			t.Fatalf("record %d: received %.200q, want %.200q", i, got[i], want[i])
		}
	}
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

func testBatchInOrder(t *testing.T, tg Target) {
	g := newGen(t)
	recs := g.batch(100, keys("k", 7), 0)
	want := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	got := tg.Received()
	decode(t, got)
	sameValues(t, got, want)
}

func testKeyOrderAcrossBatches(t *testing.T, tg Target) {
	g := newGen(t)
	var want [][]byte
	for range 10 {
		recs := g.batch(37, keys("k", 5), 0)
		want = append(want, copyValues(recs)...)
		mustWrite(t, tg.Sink, recs)
	}
	got := tg.Received()
	last := map[string]int{}
	for i, r := range decode(t, got) {
		if prev, ok := last[r.key]; ok && r.seq <= prev {
			t.Fatalf("received record %d: key %s seq %d after seq %d", i, r.key, r.seq, prev)
		}
		last[r.key] = r.seq
	}
	// Sequential batches: the whole stream arrives in order, exactly once.
	sameValues(t, got, want)
}

func testEmptyBatch(t *testing.T, tg Target) {
	if err := write(t, tg.Sink, nil); err != nil {
		t.Fatalf("WriteBatch(nil) = %v, want nil", err)
	}
	if err := write(t, tg.Sink, []pipeline.Record{}); err != nil {
		t.Fatalf("WriteBatch(empty) = %v, want nil", err)
	}
	if got := tg.Received(); len(got) != 0 {
		t.Fatalf("destination received %d records from empty batches", len(got))
	}
}

// writeDone calls WriteBatch with a context that is already done and checks
// it returns promptly with that context's error and delivers nothing.
func writeDone(t *testing.T, tg Target, ctx context.Context, want error) {
	g := newGen(t)
	recs := g.batch(10, keys("k", 2), 0)
	start := time.Now()
	err := tg.Sink.WriteBatch(ctx, recs)
	if el := time.Since(start); el > Prompt {
		t.Errorf("WriteBatch with a done context took %v, want < %v", el, Prompt)
	}
	if !errors.Is(err, want) {
		t.Fatalf("WriteBatch with a done context = %v, want an error wrapping %v", err, want)
	}
	if c := sinks.Classify(err); c == sinks.Fatal {
		t.Errorf("context error classified %v; cancellation is not a sink failure", c)
	}
	if got := tg.Received(); len(got) != 0 {
		t.Fatalf("destination received %d records after a cancelled WriteBatch", len(got))
	}
	// The sink still works.
	recs = g.batch(3, keys("k", 2), 0)
	want2 := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	sameValues(t, tg.Received(), want2)
}

func testCancelledContext(t *testing.T, tg Target) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	writeDone(t, tg, ctx, context.Canceled)
}

func testExpiredDeadline(t *testing.T, tg Target) {
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	writeDone(t, tg, ctx, context.DeadlineExceeded)
}

func testConcurrentWrites(t *testing.T, tg Target) {
	const writers, batches, size = 8, 15, 20
	type sent struct {
		vals [][]byte
		err  error
	}
	results := make([][]sent, writers)
	var wg sync.WaitGroup
	for w := range writers {
		g := &gen{test: t.Name(), seq: w * batches * size}
		ks := keys(fmt.Sprintf("w%d-k", w), 3) // keys are per writer
		recs := make([][]pipeline.Record, batches)
		for b := range recs {
			recs[b] = g.batch(size, ks, 0)
		}
		wg.Go(func() {
			for _, r := range recs {
				vals := copyValues(r)
				ctx, cancel := context.WithTimeout(context.Background(), Timeout)
				err := tg.Sink.WriteBatch(ctx, r)
				cancel()
				results[w] = append(results[w], sent{vals, err})
			}
		})
	}
	wg.Wait()

	pos := map[id]int{}
	got := decode(t, tg.Received())
	for i, r := range got {
		if _, dup := pos[r]; dup {
			t.Fatalf("record %v received twice", r)
		}
		pos[r] = i
	}
	total := 0
	for w := range results {
		prev := -1 // this writer's batches were sequential: order holds across them
		for b, s := range results[w] {
			if s.err != nil {
				t.Fatalf("writer %d batch %d: %v", w, b, s.err)
			}
			for _, v := range s.vals {
				var val value
				_ = json.Unmarshal(v, &val)
				p, ok := pos[id{val.Key, val.Seq}]
				if !ok {
					t.Fatalf("writer %d batch %d: record %s/%d not received", w, b, val.Key, val.Seq)
				}
				if p <= prev {
					t.Fatalf("writer %d batch %d: record %s/%d received out of order", w, b, val.Key, val.Seq)
				}
				prev = p
				total++
			}
		}
	}
	if len(got) != total {
		t.Fatalf("destination received %d records, %d were written", len(got), total)
	}
}

func testLargeRecord(t *testing.T, tg Target) {
	g := newGen(t)
	recs := g.batch(1, keys("small", 1), 0)
	recs = append(recs, g.batch(1, keys("large", 1), LargeValueBytes-100)...)
	recs = append(recs, g.batch(1, keys("small", 1), 0)...)
	if n := len(recs[1].Value); n < LargeValueBytes-100 || n > LargeValueBytes {
		t.Fatalf("suite bug: large value has %d bytes", n)
	}
	want := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	sameValues(t, tg.Received(), want)
}

func testDoesNotKeepBatch(t *testing.T, tg Target) {
	g := newGen(t)
	recs := g.batch(20, keys("k", 3), 0)
	want := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	// The writer may reuse the batch once WriteBatch returned.
	for i := range recs {
		for j := range recs[i].Value {
			recs[i].Value[j] = 'X'
		}
		recs[i] = pipeline.Record{}
	}
	sameValues(t, tg.Received(), want)
}

func testPartialFailure(t *testing.T, tg Target) {
	if tg.Reject == nil {
		t.Skip("destination cannot fail part of a batch")
	}
	g := newGen(t)
	recs := g.batch(6, keys("k", 3), 0)
	vals := copyValues(recs)
	tg.Reject(1, 4)
	err := write(t, tg.Sink, recs)
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("WriteBatch with entries 1 and 4 refused = %v, want a *sinks.BatchError", err)
	}
	if len(be.Failed) != 2 || be.Failed[0].Index != 1 || be.Failed[1].Index != 4 {
		t.Fatalf("BatchError lists %+v, want entries 1 and 4", be.Failed)
	}
	for _, f := range be.Failed {
		if f.Err == nil {
			t.Fatalf("entry %d has a nil error", f.Index)
		}
		if c := sinks.Classify(f.Err); c == sinks.Fatal {
			t.Errorf("entry %d refused with a retryable status classified %v", f.Index, c)
		}
	}
	sameValues(t, tg.Received(), [][]byte{vals[0], vals[2], vals[3], vals[5]})

	// The writer retries the failed entries as their own batch.
	mustWrite(t, tg.Sink, []pipeline.Record{recs[1], recs[4]})
	sameValues(t, tg.Received(), [][]byte{vals[0], vals[2], vals[3], vals[5], vals[1], vals[4]})
}

func testCloseWhileWriting(t *testing.T, tg Target) {
	c, ok := tg.Sink.(io.Closer)
	if !ok {
		t.Skip("sink has no Close")
	}
	const writers = 4
	type sent struct {
		vals [][]byte
		err  error
	}
	results := make([][]sent, writers)
	started := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for w := range writers {
		g := &gen{test: t.Name(), seq: w * 1_000_000}
		ks := keys(fmt.Sprintf("w%d-k", w), 2)
		wg.Go(func() {
			var once sync.Once
			signal := func() { started <- struct{}{} }
			defer once.Do(signal)
			for i := 0; ; i++ {
				r := g.batch(10, ks, 0)
				vals := copyValues(r)
				ctx, cancel := context.WithTimeout(context.Background(), Timeout)
				err := tg.Sink.WriteBatch(ctx, r)
				cancel()
				results[w] = append(results[w], sent{vals, err})
				if i == 2 {
					once.Do(signal)
				}
				if err != nil || i == 10_000 {
					return
				}
			}
		})
	}
	for range writers {
		<-started
	}
	closeErr := c.Close()
	wg.Wait()
	if closeErr != nil {
		t.Fatalf("Close while writing: %v", closeErr)
	}
	if err := write(t, tg.Sink, newGen(t).batch(1, keys("after", 1), 0)); err == nil {
		t.Fatal("WriteBatch after Close succeeded")
	} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WriteBatch after Close = %v, want an error that is not a context error", err)
	}

	got := map[id]bool{}
	for _, r := range decode(t, tg.Received()) {
		if got[r] {
			t.Fatalf("record %v received twice", r)
		}
		got[r] = true
	}
	for w := range results {
		for b, s := range results[w] {
			if s.err != nil {
				continue // not delivered, or delivered in full: either is fine
			}
			for _, v := range s.vals {
				var val value
				_ = json.Unmarshal(v, &val)
				if !got[id{val.Key, val.Seq}] {
					t.Fatalf("writer %d batch %d succeeded but record %s/%d was not received", w, b, val.Key, val.Seq)
				}
			}
		}
	}
}
