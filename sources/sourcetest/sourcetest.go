// Package sourcetest is the conformance suite every pipeline.Source passes,
// in the style of watermill's pub/sub tests: a source's tests call Run with
// a Factory that prepares an input of given values and opens sources over
// it, and Features saying which guarantees apply. The suite checks that
//
//   - every record arrives once, in order within its partition, with its
//     origin (topic, partition, increasing offset) and a timestamp;
//   - emit is never called concurrently, and a batch handed to emit is not
//     reused before its records are acknowledged;
//   - acknowledgements, in any order and from several goroutines, make the
//     records committable (Features.Commits);
//   - cancelling ctx, or an emit that fails, stops Run promptly, and Close
//     then leaves no goroutine of the source behind;
//   - a source opened again over the same input resumes at the first record
//     not acknowledged before the previous one closed (Features.Resumes),
//     or reads the input from its start;
//   - acknowledging after Close is harmless and commits nothing.
//
// The subtests must not run in parallel with other tests of the process:
// the goroutine check counts every goroutine started while a subtest runs.
package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// Features says which of the suite's guarantees a source offers.
type Features struct {
	// Exhausts: Run returns nil by itself once it emitted the whole input
	// (a file, a generator with a count). Without it (a Kafka consumer)
	// the suite cancels Run once every record arrived.
	Exhausts bool
	// Commits: the source implements Committer, and a checkpoint commits
	// in each partition exactly up to the first record not acknowledged.
	Commits bool
	// Resumes: a source opened again over the same input starts, in each
	// partition, at the first record not acknowledged when the previous
	// one closed. Without it a new source reads the input from its start.
	Resumes bool
}

// Input is one input prepared by a Factory.
type Input struct {
	// Open returns a new, not yet run, source over the input. Calling it
	// again is a restart. Required.
	Open func(t *testing.T) pipeline.Source
	// Values, when set, are the values the source produces, in order,
	// instead of the ones the suite asked for: a generator makes its own.
	// There must be as many, all distinct.
	Values [][]byte
}

// Factory prepares an input holding values, in order; a source may spread
// them over partitions, keeping their order within each. It registers the
// cleanup of what it starts with t.Cleanup.
type Factory func(t *testing.T, values [][]byte) Input

// Committer is the ability of a source with positions (Features.Commits):
// Checkpoint commits what is done, Committed reports the offsets committed
// so far, by topic and partition. Both are safe to call while Run runs.
type Committer interface {
	Checkpoint(ctx context.Context) error
	Committed() map[string]map[int32]int64
}

// Timeout bounds every wait of the suite: for records to arrive, for Run to
// return, for goroutines to end. A source that takes longer fails.
const Timeout = 30 * time.Second

// Records is the size of the input of each subtest.
const Records = 1000

// Run runs the suite as subtests of t, asking f for a fresh input in each.
func Run(t *testing.T, f Factory, features Features) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"Delivers", testDelivers},
		{"AcksCommit", testAcksCommit},
		{"CancelStops", testCancelStops},
		{"EmitError", testEmitError},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := make([][]byte, Records)
			for i := range values {
				values[i] = fmt.Appendf(nil, "sourcetest %s %06d", t.Name(), i)
			}
			in := f(t, values)
			if in.Open == nil {
				t.Fatal("sourcetest: Input needs Open")
			}
			if in.Values != nil {
				values = in.Values
			}
			s := &suite{in: in, features: features, values: values, index: map[string]int{}}
			for i, v := range values {
				if _, dup := s.index[string(v)]; dup {
					t.Fatalf("sourcetest: value %q appears twice in the input", v)
				}
				s.index[string(v)] = i
			}
			tc.fn(t, s)
		})
	}
}

type suite struct {
	in       Input
	features Features
	values   [][]byte
	index    map[string]int // value → position in the input
}

// part is one partition of a source.
type part struct {
	topic     string
	partition int32
}

func partOf(r pipeline.Record) part { return part{r.Origin.Topic, r.Origin.Partition} }

// collector is an Emit recording every record, calling onBatch (when set)
// on each batch, and checking that emit is never called concurrently.
type collector struct {
	mu      sync.Mutex
	recs    []pipeline.Record
	batches [][]pipeline.Record // as handed over
	copies  [][]pipeline.Record // their contents at hand-over
	handled int                 // records whose onBatch returned
	changed chan struct{}       // closed when handled grows
	onBatch func(ctx context.Context, recs []pipeline.Record) error

	in         atomic.Int32
	concurrent atomic.Bool
}

func newCollector(onBatch func(context.Context, []pipeline.Record) error) *collector {
	return &collector{changed: make(chan struct{}), onBatch: onBatch}
}

func (c *collector) emit(ctx context.Context, recs []pipeline.Record) error {
	if c.in.Add(1) > 1 {
		c.concurrent.Store(true)
	}
	defer c.in.Add(-1)
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.batches = append(c.batches, recs)
	c.copies = append(c.copies, slices.Clone(recs))
	f := c.onBatch
	c.mu.Unlock()
	var err error
	if f != nil {
		err = f(ctx, recs)
	}
	c.mu.Lock()
	c.handled += len(recs)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return err
}

// received returns a copy of the records so far.
func (c *collector) received() []pipeline.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

// waitFor waits until at least n records arrived and onBatch returned for
// them, or Run ended.
func (c *collector) waitFor(t *testing.T, n int, r *running) []pipeline.Record {
	t.Helper()
	timeout := time.NewTimer(Timeout)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		got, ch := c.handled, c.changed
		c.mu.Unlock()
		if got >= n {
			return c.received()
		}
		select {
		case <-ch:
		case err := <-r.done:
			r.done <- err // for stop
			if got := c.received(); len(got) < n {
				t.Fatalf("Run returned %v after %d of %d records", err, len(got), n)
			}
		case <-timeout.C:
			t.Fatalf("received %d of %d records within %v", got, n, Timeout)
		}
	}
}

func (c *collector) checkSerial(t *testing.T) {
	t.Helper()
	if c.concurrent.Load() {
		t.Error("emit was called concurrently")
	}
}

// checkIntact fails if a batch handed to emit changed since, as it would
// if the source reused it before its records were acknowledged.
func (c *collector) checkIntact(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range c.batches {
		for j := range b {
			if got, want := b[j], c.copies[i][j]; got.Origin != want.Origin || string(got.Value) != string(want.Value) {
				t.Fatalf("batch %d record %d changed before it was acknowledged: %v is now %v", i, j, want.Origin, got.Origin)
			}
		}
	}
}

// running is a source's Run in a goroutine.
type running struct {
	src    pipeline.Source
	cancel context.CancelFunc
	done   chan error
}

func start(src pipeline.Source, emit pipeline.Emit) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: src, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, emit) }()
	return r
}

// wait returns Run's error once it returns by itself.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.cancel()
		return err
	case <-time.After(Timeout):
		r.cancel()
		t.Fatalf("Run did not return within %v", Timeout)
		return nil
	}
}

// stop cancels Run and returns its error; Run must return promptly and
// treat the cancellation as a normal end.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := r.wait(t); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// end stops a source that does not exhaust and waits for one that does.
func (s *suite) end(t *testing.T, r *running) {
	t.Helper()
	if s.features.Exhausts {
		if err := r.wait(t); err != nil {
			t.Errorf("Run = %v at the end of its input, want nil", err)
		}
		return
	}
	r.stop(t)
}

func closeSource(t *testing.T, src pipeline.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// checkRecords checks that recs are exactly the input records at want (in
// input order within each partition), with origins and timestamps. It
// returns the records by partition.
func (s *suite) checkRecords(t *testing.T, recs []pipeline.Record, want []int) map[part][]pipeline.Record {
	t.Helper()
	byPart := map[part][]pipeline.Record{}
	seen := map[int]bool{}
	for _, r := range recs {
		i, ok := s.index[string(r.Value)]
		if !ok {
			t.Fatalf("record %v has a value not in the input: %.60q", r.Origin, r.Value)
		}
		if seen[i] {
			t.Fatalf("record %d (%v) arrived twice", i, r.Origin)
		}
		seen[i] = true
		if r.Origin.Topic == "" {
			t.Fatalf("record %d has no origin topic", i)
		}
		if r.Timestamp.IsZero() {
			t.Fatalf("record %d (%v) has no timestamp", i, r.Origin)
		}
		p := partOf(r)
		if prev := byPart[p]; len(prev) > 0 {
			last := prev[len(prev)-1]
			if r.Origin.Offset <= last.Origin.Offset {
				t.Fatalf("%s/%d: offset %d after %d", p.topic, p.partition, r.Origin.Offset, last.Origin.Offset)
			}
			if j := s.index[string(last.Value)]; i < j {
				t.Fatalf("%s/%d: input record %d after %d, out of order", p.topic, p.partition, i, j)
			}
		}
		byPart[p] = append(byPart[p], r)
	}
	if len(seen) != len(want) {
		t.Fatalf("received %d records, want %d", len(seen), len(want))
	}
	for _, i := range want {
		if !seen[i] {
			t.Fatalf("input record %d (%q) missing", i, s.values[i])
		}
	}
	return byPart
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// ackConcurrently acks recs from four goroutines, each in reverse order.
func ackConcurrently(recs []pipeline.Record) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := len(recs) - 1 - g; i >= 0; i -= 4 {
				recs[i].Ack()
			}
		})
	}
	wg.Wait()
}

// committer returns src as a Committer; Features.Commits requires it.
func committer(t *testing.T, src pipeline.Source) Committer {
	t.Helper()
	c, ok := src.(Committer)
	if !ok {
		t.Fatalf("Features.Commits is set but %T does not implement Committer", src)
	}
	return c
}

// checkCommitted checkpoints and compares the committed offsets with want.
// A partition whose wanted offset is its first record's may be missing:
// nothing in it was ever committable.
func checkCommitted(t *testing.T, c Committer, want, first map[part]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Checkpoint(ctx); err != nil {
		t.Fatalf("Checkpoint = %v", err)
	}
	got := c.Committed()
	for p, w := range want {
		g, ok := got[p.topic][p.partition]
		if !ok && w == first[p] {
			continue
		}
		if !ok || g != w {
			t.Errorf("%s/%d: committed %d (present %v), want %d", p.topic, p.partition, g, ok, w)
		}
	}
}

// testDelivers holds every record until all arrived, checks the batches
// are intact, then acks them out of order from several goroutines; with
// Commits, everything is then committed.
func testDelivers(t *testing.T, s *suite) {
	before := goroutines()
	src := s.in.Open(t)
	c := newCollector(nil)
	r := start(src, c.emit)
	recs := c.waitFor(t, len(s.values), r)
	if s.features.Exhausts {
		s.end(t, r)
		recs = c.received()
	}
	byPart := s.checkRecords(t, recs, all(len(s.values)))
	c.checkSerial(t)
	c.checkIntact(t)
	ackConcurrently(recs)
	if s.features.Commits {
		want, first := map[part]int64{}, map[part]int64{}
		for p, rs := range byPart {
			want[p], first[p] = rs[len(rs)-1].Origin.Offset+1, rs[0].Origin.Offset
		}
		checkCommitted(t, committer(t, src), want, first)
	}
	if !s.features.Exhausts {
		s.end(t, r)
	}
	closeSource(t, src)
	checkLeaks(t, before)
}

// testAcksCommit leaves gaps of unacknowledged records and checks that a
// commit stops at the first gap of each partition, then covers everything
// once the gaps are acknowledged.
func testAcksCommit(t *testing.T, s *suite) {
	if !s.features.Commits {
		t.Skip("the source has no positions to commit (Features.Commits)")
	}
	src := s.in.Open(t)
	held := func(r pipeline.Record) bool { return s.index[string(r.Value)]%10 == 5 }
	c := newCollector(func(_ context.Context, recs []pipeline.Record) error {
		for _, r := range recs {
			if !held(r) {
				r.Ack()
			}
		}
		return nil
	})
	r := start(src, c.emit)
	recs := c.waitFor(t, len(s.values), r)
	byPart := s.checkRecords(t, recs, all(len(s.values)))
	want, first, end := map[part]int64{}, map[part]int64{}, map[part]int64{}
	var gaps []pipeline.Record
	for p, rs := range byPart {
		first[p], end[p] = rs[0].Origin.Offset, rs[len(rs)-1].Origin.Offset+1
		want[p] = end[p]
		for _, r := range rs {
			if held(r) {
				want[p] = min(want[p], r.Origin.Offset)
				gaps = append(gaps, r)
			}
		}
	}
	if len(gaps) == 0 {
		t.Fatal("sourcetest: no record was held back")
	}
	cm := committer(t, src)
	checkCommitted(t, cm, want, first)
	ackConcurrently(gaps)
	checkCommitted(t, cm, end, first)
	s.end(t, r)
	closeSource(t, src)
}

// testCancelStops cancels Run while emit blocks, as a sink without room
// does, then closes the source.
func testCancelStops(t *testing.T, s *suite) {
	before := goroutines()
	src := s.in.Open(t)
	blocked := make(chan struct{})
	var once sync.Once
	c := newCollector(func(ctx context.Context, recs []pipeline.Record) error {
		pipeline.AckAll(recs)
		once.Do(func() { close(blocked) })
		<-ctx.Done()
		return ctx.Err()
	})
	r := start(src, c.emit)
	select {
	case <-blocked:
	case err := <-r.done:
		t.Fatalf("Run returned %v before emitting", err)
	case <-time.After(Timeout):
		t.Fatalf("no emit within %v", Timeout)
	}
	r.stop(t)
	c.checkSerial(t)
	closeSource(t, src)
	checkLeaks(t, before)
}

// testEmitError fails the first emit: Run must return that error.
func testEmitError(t *testing.T, s *suite) {
	before := goroutines()
	src := s.in.Open(t)
	boom := errors.New("sourcetest: emit failed")
	c := newCollector(func(_ context.Context, recs []pipeline.Record) error {
		pipeline.AckAll(recs)
		return boom
	})
	r := start(src, c.emit)
	if err := r.wait(t); !errors.Is(err, boom) {
		t.Errorf("Run = %v, want the emit error %v", err, boom)
	}
	closeSource(t, src)
	checkLeaks(t, before)
}

// testRestart acknowledges the first half of the input, closes the source,
// acknowledges the rest too late, and opens a new source over the input.
func testRestart(t *testing.T, s *suite) {
	n := len(s.values)
	src := s.in.Open(t)
	var late []pipeline.Record
	c := newCollector(func(_ context.Context, recs []pipeline.Record) error {
		for _, r := range recs {
			if s.index[string(r.Value)] < n/2 {
				r.Ack()
			} else {
				late = append(late, r) // emit calls are serial
			}
		}
		return nil
	})
	r := start(src, c.emit)
	recs := c.waitFor(t, n, r)
	s.checkRecords(t, recs, all(n))
	s.end(t, r)
	closeSource(t, src)
	pipeline.AckAll(late) // after Close (Run has returned): must not count

	want := all(n)
	if s.features.Resumes {
		want = want[n/2:]
	}
	src2 := s.in.Open(t)
	c2 := newCollector(func(_ context.Context, recs []pipeline.Record) error {
		pipeline.AckAll(recs)
		return nil
	})
	r2 := start(src2, c2.emit)
	recs2 := c2.waitFor(t, len(want), r2)
	s.end(t, r2)
	if s.features.Exhausts {
		recs2 = c2.received()
	}
	s.checkRecords(t, recs2, want)
	closeSource(t, src2)
}

// goroutines returns the ids of the running goroutines.
func goroutines() map[string]bool {
	ids := map[string]bool{}
	for _, g := range stacks() {
		ids[goroutineID(g)] = true
	}
	return ids
}

func stacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func goroutineID(stack string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(stack, "goroutine "), " ")
	return id
}

// checkLeaks waits for every goroutine started since before to end, except
// the test framework's.
func checkLeaks(t *testing.T, before map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		var leaked []string
		for _, g := range stacks() {
			if before[goroutineID(g)] || strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*T).Run") ||
				strings.Contains(g, "sourcetest.stacks(") {
				continue
			}
			leaked = append(leaked, g)
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still running %v after Close:\n\n%s", len(leaked), Timeout, strings.Join(leaked, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
