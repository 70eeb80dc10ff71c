// Package sinktest is the conformance suite every sinks.Sink passes. A sink's
// tests call Run with the Features the sink declares, a constructor for a
// fresh sink and a read-back of its destination (an httptest receiver, a
// file); the suite writes records through WriteBatch and checks what
// arrived. As in watermill's pub/sub suite, a check is skipped, with the
// reason, only when the sink declares it cannot do what the check needs.
//
// Every record the suite writes has a JSON object as its value, naming the
// subtest, a key and a sequence number, so the destination only needs to
// give values back; keys, headers and origins are not compared. Each key
// belongs to one of Partitions source partitions (Record.Origin.Partition),
// and offsets are unique within a subtest.
package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// Ordering is the order in which a destination keeps the records of
// sequential WriteBatch calls; each level implies the ones before it.
type Ordering int

const (
	// OrderNone promises no order: the suite checks only that every record
	// arrives once.
	OrderNone Ordering = iota
	// OrderPerKey keeps the records of one key in the order written (a
	// Kafka topic partitioned by key).
	OrderPerKey
	// OrderPerPartition keeps the records of one source partition
	// (Record.Origin.Partition) in the order written.
	OrderPerPartition
	// OrderTotal keeps every record in the order written: a batch in batch
	// order, sequential batches one after the other (a file, one HTTP
	// endpoint).
	OrderTotal
)

// String names the ordering.
func (o Ordering) String() string {
	switch o {
	case OrderNone:
		return "none"
	case OrderPerKey:
		return "per key"
	case OrderPerPartition:
		return "per partition"
	case OrderTotal:
		return "total"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// Features are what a sink declares it can do. A check whose feature is
// not declared is skipped with the reason; a declared feature that needs a
// hook in Target (Reject, Reopen) fails the suite without it.
type Features struct {
	// Ordering is the strongest order the destination keeps. Zero is
	// OrderNone.
	Ordering Ordering

	// PartialFailure: the destination can refuse some entries of a batch
	// and accept the others, and the sink reports the refused ones in a
	// *sinks.BatchError. Needs Target.Reject.
	PartialFailure bool

	// ExactlyOnce: a batch written again, as the writer retries one whose
	// outcome it did not learn, is not delivered twice (an idempotency key
	// the destination honours, a transaction, an upsert keyed by origin).
	ExactlyOnce bool

	// Restartable: a new sink over the same destination (Target.Reopen),
	// after the first one was closed, continues it: what was delivered
	// stays and new records follow. Needs Target.Reopen.
	Restartable bool
}

// Partitions is how many source partitions the suite's records come from.
const Partitions = 3

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

	// Reject makes the destination refuse the entries at these indexes of
	// the next batch it receives, with a retryable status, and accept the
	// others. Required with Features.PartialFailure.
	Reject func(indexes ...int)

	// Reopen returns a new sink over the same destination, as a restarted
	// worker would build; the suite closes the first sink (when it is an
	// io.Closer) before calling it, and closes the new one when done.
	// Required with Features.Restartable.
	Reopen func() (sinks.Sink, error)
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
func Run(t *testing.T, f Features, newTarget func(t *testing.T) Target) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, Features, Target)
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
		{"RetryDeliversOnce", testRetryDeliversOnce},
		{"Restart", testRestart},
		{"CloseWhileWriting", testCloseWhileWriting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t)
			switch {
			case tg.Sink == nil || tg.Received == nil:
				t.Fatal("sinktest: Target needs Sink and Received")
			case f.PartialFailure && tg.Reject == nil:
				t.Fatal("sinktest: Features.PartialFailure needs Target.Reject")
			case f.Restartable && tg.Reopen == nil:
				t.Fatal("sinktest: Features.Restartable needs Target.Reopen")
			}
			tc.fn(t, f, tg)
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

// gen makes records for one subtest with increasing sequence numbers; a
// record's offset is its sequence number, so offsets are unique.
type gen struct {
	test string
	seq  int
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
			Origin:    pipeline.Origin{Topic: "sinktest", Partition: partitionOf(k), Offset: int64(g.seq)},
		}
		g.seq++
	}
	return recs
}

// partitionOf is the source partition of every record of key.
func partitionOf(key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int32(h.Sum32() % Partitions)
}

// group names what ordering o keeps in order together with r: every
// record (total), its partition's, its key's; "" with no ordering.
func group(o Ordering, r id) (string, bool) {
	switch o {
	case OrderTotal:
		return "all", true
	case OrderPerPartition:
		return fmt.Sprint(partitionOf(r.key)), true
	case OrderPerKey:
		return r.key, true
	}
	return "", false
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

// delivered checks that got holds the records of want, each once and byte
// for byte (after compacting), in an order that o allows.
func delivered(t *testing.T, o Ordering, got, want [][]byte) {
	t.Helper()
	if o == OrderTotal {
		sameValues(t, got, want)
		return
	}
	if len(got) != len(want) {
		t.Fatalf("destination received %d records, want %d", len(got), len(want))
	}
	pos := map[id]int{}
	for i, r := range decode(t, got) {
		if _, dup := pos[r]; dup {
			t.Fatalf("record %s/%d received twice", r.key, r.seq)
		}
		pos[r] = i
	}
	last := map[string]int{}
	for i, r := range decode(t, want) {
		p, ok := pos[r]
		if !ok {
			t.Fatalf("record %s/%d was not received", r.key, r.seq)
		}
		if !bytes.Equal(compact(got[p]), compact(want[i])) {
			t.Fatalf("record %s/%d: received %.200q, want %.200q", r.key, r.seq, got[p], want[i])
		}
		if g, ok := group(o, r); ok {
			if prev, seen := last[g]; seen && p < prev {
				t.Fatalf("record %s/%d received before an earlier record of its %s (ordering %v)", r.key, r.seq, kindOf(o), o)
			}
			last[g] = p
		}
	}
}

func kindOf(o Ordering) string {
	switch o {
	case OrderPerKey:
		return "key"
	case OrderPerPartition:
		return "partition"
	}
	return "stream"
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

func testBatchInOrder(t *testing.T, f Features, tg Target) {
	g := newGen(t)
	recs := g.batch(100, keys("k", 7), 0)
	want := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	got := tg.Received()
	decode(t, got)
	delivered(t, f.Ordering, got, want)
}

func testKeyOrderAcrossBatches(t *testing.T, f Features, tg Target) {
	if f.Ordering < OrderPerKey {
		t.Skip("the sink declares no ordering (Features.Ordering is none)")
	}
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
	// Sequential batches: the whole stream arrives once, in the order the
	// sink declares.
	delivered(t, f.Ordering, got, want)
}

func testEmptyBatch(t *testing.T, _ Features, tg Target) {
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
func writeDone(t *testing.T, f Features, tg Target, ctx context.Context, want error) {
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
	delivered(t, f.Ordering, tg.Received(), want2)
}

func testCancelledContext(t *testing.T, f Features, tg Target) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	writeDone(t, f, tg, ctx, context.Canceled)
}

func testExpiredDeadline(t *testing.T, f Features, tg Target) {
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	writeDone(t, f, tg, ctx, context.DeadlineExceeded)
}

func testConcurrentWrites(t *testing.T, f Features, tg Target) {
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
		// This writer's batches were sequential: the declared order holds
		// across them (its keys are its own).
		prev := map[string]int{}
		for b, s := range results[w] {
			if s.err != nil {
				t.Fatalf("writer %d batch %d: %v", w, b, s.err)
			}
			for _, v := range s.vals {
				var val value
				_ = json.Unmarshal(v, &val)
				r := id{val.Key, val.Seq}
				p, ok := pos[r]
				if !ok {
					t.Fatalf("writer %d batch %d: record %s/%d not received", w, b, val.Key, val.Seq)
				}
				if g, ok := group(f.Ordering, r); ok {
					if q, seen := prev[g]; seen && p <= q {
						t.Fatalf("writer %d batch %d: record %s/%d received out of order (ordering %v)", w, b, val.Key, val.Seq, f.Ordering)
					}
					prev[g] = p
				}
				total++
			}
		}
	}
	if len(got) != total {
		t.Fatalf("destination received %d records, %d were written", len(got), total)
	}
}

func testLargeRecord(t *testing.T, f Features, tg Target) {
	g := newGen(t)
	recs := g.batch(1, keys("small", 1), 0)
	recs = append(recs, g.batch(1, keys("large", 1), LargeValueBytes-100)...)
	recs = append(recs, g.batch(1, keys("small", 1), 0)...)
	if n := len(recs[1].Value); n < LargeValueBytes-100 || n > LargeValueBytes {
		t.Fatalf("suite bug: large value has %d bytes", n)
	}
	want := copyValues(recs)
	mustWrite(t, tg.Sink, recs)
	delivered(t, f.Ordering, tg.Received(), want)
}

func testDoesNotKeepBatch(t *testing.T, f Features, tg Target) {
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
	delivered(t, f.Ordering, tg.Received(), want)
}

func testPartialFailure(t *testing.T, f Features, tg Target) {
	if !f.PartialFailure {
		t.Skip("the sink declares no partial failure (Features.PartialFailure)")
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
	delivered(t, f.Ordering, tg.Received(), [][]byte{vals[0], vals[2], vals[3], vals[5]})

	// The writer retries the failed entries as their own batch.
	mustWrite(t, tg.Sink, []pipeline.Record{recs[1], recs[4]})
	delivered(t, f.Ordering, tg.Received(), [][]byte{vals[0], vals[2], vals[3], vals[5], vals[1], vals[4]})
}

// testRetryDeliversOnce writes a batch twice, as the writer does when it
// did not learn the outcome of the first attempt (a timeout), and then
// a batch that overlaps it.
func testRetryDeliversOnce(t *testing.T, f Features, tg Target) {
	if !f.ExactlyOnce {
		t.Skip("the sink declares no exactly-once delivery (Features.ExactlyOnce)")
	}
	g := newGen(t)
	recs := g.batch(20, keys("k", 3), 0)
	want := copyValues(recs)
	mustWrite(t, tg.Sink, slices.Clone(recs))
	mustWrite(t, tg.Sink, slices.Clone(recs))
	delivered(t, f.Ordering, tg.Received(), want)

	// New records after the retry still arrive.
	more := g.batch(5, keys("k", 3), 0)
	want = append(want, copyValues(more)...)
	mustWrite(t, tg.Sink, more)
	delivered(t, f.Ordering, tg.Received(), want)
}

// testRestart closes the sink, opens a new one over the same destination
// and checks that it continues where the first left off.
func testRestart(t *testing.T, f Features, tg Target) {
	if !f.Restartable {
		t.Skip("the sink declares no restart over the same destination (Features.Restartable)")
	}
	g := newGen(t)
	first := g.batch(10, keys("k", 3), 0)
	want := copyValues(first)
	mustWrite(t, tg.Sink, first)
	if c, ok := tg.Sink.(io.Closer); ok {
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	s, err := tg.Reopen()
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	if c, ok := s.(io.Closer); ok {
		defer c.Close()
	}
	second := g.batch(10, keys("k", 3), 0)
	want = append(want, copyValues(second)...)
	mustWrite(t, s, second)
	delivered(t, f.Ordering, tg.Received(), want)
}

func testCloseWhileWriting(t *testing.T, _ Features, tg Target) {
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
