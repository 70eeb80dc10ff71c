package sinks_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// These tests cover the writer's buffering of segments (runs of records):
// how batches are cut from them, how failed entries come back as retry
// segments, and that the slices handed to the sink are left alone.

func throttleErr(after time.Duration) error {
	return &sinks.ThrottledError{Err: errors.New("429 too many requests"), RetryAfter: after}
}

// byFirstOffset sorts batches of offsets by their first offset.
func byFirstOffset(calls [][]int64) [][]int64 {
	out := slices.Clone(calls)
	slices.SortFunc(out, func(a, b []int64) int { return int(a[0] - b[0]) })
	return out
}

// TestWriterRetryOrderAcrossBatches: batches A (offsets 0-4) and B (5-9)
// are in flight together. B fails first with a short wait, then A with a
// long one. A holds the older records, so B's retry waits for A's although
// B is due first; each retry is exactly the failed entries of its batch,
// and both go before newer records.
func TestWriterRetryOrderAcrossBatches(t *testing.T) {
	const aWait = 2 * time.Second // A's Retry-After
	for _, tc := range []struct {
		name       string
		bErr       error
		batchSize  int // records of 10 bytes
		batchBytes int
	}{
		{"B retryable", errUnavailable, 5, 0},                      // backoff at most 100ms
		{"B throttled", throttleErr(300 * time.Millisecond), 5, 0}, // Retry-After 300ms
		// A and B are the two halves of one Write chunk, split by bytes.
		{"halves of one segment", errUnavailable, 10, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := sinks.Config{
					MaxBatchSize: tc.batchSize, MaxBatchBytes: tc.batchBytes, MaxInFlightRequests: 2, MaxTimeInBuffer: time.Hour,
					Retry: sinks.RetryConfig{RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond},
				}
				releaseA := make(chan struct{})
				sink := newSink()
				sink.def = func(ctx context.Context, b []pipeline.Record) error {
					switch {
					case len(b) == 5 && b[0].Origin.Offset == 0: // A: fails once B's failure is handled
						select {
						case <-releaseA:
						case <-ctx.Done():
							return ctx.Err()
						}
						return failSome(throttleErr(aWait), 1, 3)(ctx, b)
					case len(b) == 5 && b[0].Origin.Offset == 5: // B
						return failSome(tc.bErr, 0, 1, 4)(ctx, b)
					}
					return sink.block(ctx, b) // the rest hold their slot until released
				}
				h := start(t, sink, cfg, nil)
				h.write(records(h.acks, 0, 10, 10))
				synctest.Wait()
				if got := byFirstOffset(h.sink.offsets()); !slices.EqualFunc(got, [][]int64{span(0, 5), span(5, 5)}, slices.Equal) {
					t.Fatalf("calls = %v, want A and B", got)
				}
				if n := h.w.Stats().Retried.Load(); n != 3 {
					t.Fatalf("Stats.Retried = %d with A still in flight, want B's 3 entries", n)
				}
				time.Sleep(10 * time.Millisecond) // B's wait is at least 50ms
				close(releaseA)
				synctest.Wait()
				tA := time.Now().Add(aWait) // A's retry is due
				h.write(records(h.acks, 10, 5, 10))
				h.write(records(h.acks, 15, 2, 10))
				synctest.Wait()

				time.Sleep(time.Until(tA) - time.Nanosecond)
				synctest.Wait()
				if calls := h.sink.offsets(); len(calls) != 2 {
					t.Fatalf("calls = %v before A's retry was due: B's retry or newer records overtook A's", calls)
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				// Both slots are free and both retries are due: they go
				// together, and hold both slots, so nothing newer went
				// before either.
				calls := h.sink.snapshot()
				if len(calls) != 4 {
					t.Fatalf("calls = %v, want the two retries and nothing newer", h.sink.offsets())
				}
				got := byFirstOffset([][]int64{calls[2].offs, calls[3].offs})
				if want := [][]int64{{1, 3}, {5, 6, 9}}; !slices.EqualFunc(got, want, slices.Equal) {
					t.Fatalf("retries = %v, want the failed entries of each batch %v", got, want)
				}
				for _, c := range calls[2:] {
					if !c.at.Equal(tA) {
						t.Errorf("retry %v sent at %v, want %v, when A's was due", c.offs, c.at, tA)
					}
				}
				h.acks.acked(t, 0, 2, 4, 7, 8)

				close(sink.gate)
				h.flush()
				newer := byFirstOffset(h.sink.offsets()[4:])
				if want := [][]int64{span(10, 5), span(15, 2)}; !slices.EqualFunc(newer, want, slices.Equal) {
					t.Errorf("newer requests = %v, want %v", newer, want)
				}
				h.acks.acked(t, span(0, 17)...)
				for o, n := range sink.delivered {
					if n != 1 {
						t.Errorf("offset %d delivered %d times", o, n)
					}
				}
			})
		})
	}
}

// TestWriterHeadOfLine: while a throttled retry waits out Retry-After, free
// request slots and newer records that are due (full, aged, flushed) stay
// unused: the destination asked to wait. Once the wait is over the retry
// goes first and the newer records follow at once.
func TestWriterHeadOfLine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inflight int
		fail     behaviour
		retried  []int64
		flush    bool
	}{
		{"whole batch", 3, failAll(throttleErr(time.Second)), span(0, 3), false},
		{"some entries", 3, failSome(throttleErr(time.Second), 1), []int64{1}, false},
		{"during a flush", 3, failSome(throttleErr(time.Second), 0, 2), []int64{0, 2}, true},
		{"one request at a time", 1, failSome(errUnavailable, 0, 2), []int64{0, 2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := sinks.Config{
					MaxBatchSize: 3, MaxInFlightRequests: tc.inflight, MaxTimeInBuffer: 100 * time.Millisecond,
					// waits of 500ms to 1s; Retry-After 1s
					Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second},
				}
				h := start(t, newSink(tc.fail), cfg, nil)
				t0 := time.Now()
				h.write(records(h.acks, 0, 3, 10))
				synctest.Wait()
				h.write(records(h.acks, 3, 9, 10)) // three full batches
				h.write(records(h.acks, 12, 1, 10))
				flushed := make(chan error, 1)
				if tc.flush {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel() // a failed test does not leave Flush blocked
					go func() { flushed <- h.w.Flush(ctx) }()
				}
				time.Sleep(500*time.Millisecond - time.Nanosecond) // newer records aged too
				synctest.Wait()
				h.wantCalls(span(0, 3))

				time.Sleep(500*time.Millisecond + time.Nanosecond) // the retry is due
				synctest.Wait()
				calls := h.sink.snapshot()
				if len(calls) < 2 {
					t.Fatalf("calls = %v, want the retry sent", h.sink.offsets())
				}
				var tR time.Time
				for _, c := range calls[1:] {
					if slices.Equal(c.offs, tc.retried) {
						tR = c.at
					}
				}
				if tR.IsZero() || tR.Sub(t0) < 500*time.Millisecond {
					t.Fatalf("retry %v sent at %v, want one after its backoff", tc.retried, tR.Sub(t0))
				}
				var newer [][]int64
				for _, c := range calls[1:] {
					if c.at.Before(tR) {
						t.Errorf("newer records %v sent at %v, before the retry at %v", c.offs, c.at.Sub(t0), tR.Sub(t0))
					}
					if !slices.Equal(c.offs, tc.retried) {
						newer = append(newer, c.offs)
					}
				}
				// The retry succeeded at tR; every newer record was due and
				// went at that very instant.
				want := [][]int64{span(3, 3), span(6, 3), span(9, 3), {12}}
				if tc.inflight > 1 {
					newer = byFirstOffset(newer)
				} else if !slices.Equal(calls[1].offs, tc.retried) {
					t.Errorf("calls = %v, want the retry first", h.sink.offsets())
				}
				if !slices.EqualFunc(newer, want, slices.Equal) {
					t.Errorf("newer requests = %v, want %v", newer, want)
				}
				if tc.flush {
					if err := <-flushed; err != nil {
						t.Fatalf("Flush = %v", err)
					}
				}
				h.acks.acked(t, span(0, 13)...)
			})
		})
	}
}

// TestWriterRetryDoesNotIdle: a retry waiting out its backoff after a
// retryable failure does not hold the writer up: newer batches that are
// due take the free request slots at once, and the retry goes when due.
// But no more than max_in_flight_requests retries wait at a time: beyond
// that, newer records wait for a retry to be taken.
func TestWriterRetryDoesNotIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := sinks.Config{
			MaxBatchSize: 3, MaxInFlightRequests: 2, MaxTimeInBuffer: time.Hour,
			Retry: sinks.RetryConfig{RetryBackoff: time.Second, MaxRetryBackoff: time.Second}, // waits of 500ms to 1s
		}
		var mu sync.Mutex
		tried := map[int64]bool{}
		sink := newSink()
		sink.def = func(ctx context.Context, b []pipeline.Record) error {
			mu.Lock()
			defer mu.Unlock()
			first := b[0].Origin.Offset
			if (first == 0 || first == 9) && !tried[first] {
				tried[first] = true
				return errUnavailable // these batches fail once
			}
			return nil
		}
		h := start(t, sink, cfg, nil)
		t0 := time.Now()
		h.write(records(h.acks, 0, 3, 10))
		synctest.Wait()
		h.write(records(h.acks, 3, 3, 10)) // due while 0-2 waits
		synctest.Wait()
		h.wantCalls(span(0, 3), span(3, 3))
		h.acks.acked(t, span(3, 3)...)

		h.write(records(h.acks, 6, 3, 10)) // one retry waits: this one goes
		synctest.Wait()
		h.write(records(h.acks, 9, 3, 10))
		synctest.Wait()
		h.write(records(h.acks, 12, 3, 10)) // two retries wait: this one waits too
		synctest.Wait()
		h.wantCalls(span(0, 3), span(3, 3), span(6, 3), span(9, 3))
		if time.Since(t0) != 0 {
			t.Fatalf("%v passed: the requests above should have gone at once", time.Since(t0))
		}

		h.flush()
		calls := h.sink.snapshot()
		if len(calls) != 7 {
			t.Fatalf("calls = %v, want 7", h.sink.offsets())
		}
		var t12 time.Time
		retried := map[int64]time.Time{}
		for _, c := range calls[4:] {
			if c.offs[0] == 12 {
				t12 = c.at
			} else {
				retried[c.offs[0]] = c.at
			}
		}
		if len(retried) != 2 || t12.IsZero() {
			t.Fatalf("calls = %v, want the two retries and 12-14", h.sink.offsets())
		}
		first := retried[0]
		if retried[9].Before(first) {
			first = retried[9]
		}
		if t12.Before(first) {
			t.Errorf("12-14 sent at %v, before a retry was taken at %v", t12.Sub(t0), first.Sub(t0))
		}
		h.acks.acked(t, span(0, 15)...)
		for o, n := range sink.delivered {
			if n != 1 {
				t.Errorf("offset %d delivered %d times", o, n)
			}
		}
	})
}

// TestWriterThrottledAttempts: only non-throttled failures count toward
// max_attempts, and a Retry-After is waited out in full. Each pattern is
// the outcome of the successive requests for one batch: T throttled
// (Retry-After 2s), R retryable, S delivered.
func TestWriterThrottledAttempts(t *testing.T) {
	const after = 2 * time.Second
	cfg := sinks.Config{
		MaxBatchSize: 2, MaxTimeInBuffer: time.Hour,
		Retry: sinks.RetryConfig{MaxAttempts: 3, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond},
	}
	for _, tc := range []struct {
		pattern string
		dead    bool // dead-lettered as retries_exhausted after the last request
	}{
		{"TTTTTS", false}, // throttled more often than max_attempts
		{"RRS", false},
		{"RRR", true},
		{"TTTTRRR", true},
		{"TTRTTRS", false},
		{"RTTRTTR", true},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var script []behaviour
				for _, c := range tc.pattern {
					script = append(script, map[rune]behaviour{'T': throttled(after), 'R': failAll(errUnavailable), 'S': succeed}[c])
				}
				dlq := &fakeDLQ{}
				h := start(t, newSink(script...), cfg, dlq)
				h.write(records(h.acks, 0, 2, 10))
				h.flush()

				calls := h.sink.snapshot()
				if len(calls) != len(tc.pattern) {
					t.Fatalf("calls = %v, want %d", h.sink.offsets(), len(tc.pattern))
				}
				for i, c := range calls {
					if !slices.Equal(c.offs, []int64{0, 1}) {
						t.Errorf("call %d = %v, want [0 1]", i, c.offs)
					}
					if i == 0 {
						continue
					}
					gap := c.at.Sub(calls[i-1].at)
					switch tc.pattern[i-1] {
					case 'T':
						if gap < after || gap > after+cfg.Retry.MaxRetryBackoff {
							t.Errorf("call %d came %v after a Retry-After of %v", i, gap, after)
						}
					case 'R':
						if gap < cfg.Retry.MaxRetryBackoff/2 || gap > cfg.Retry.MaxRetryBackoff {
							t.Errorf("call %d came %v after a retryable failure, want [50ms,100ms]", i, gap)
						}
					}
				}
				sends := dlq.snapshot()
				if !tc.dead {
					if len(sends) != 0 {
						t.Errorf("dead-lettered %+v, want delivered", sends)
					}
					if sink := h.sink; sink.delivered[0] != 1 || sink.delivered[1] != 1 {
						t.Errorf("delivered %v", sink.delivered)
					}
				} else {
					if len(sends) != 1 || !slices.Equal(sends[0].offs, []int64{0, 1}) {
						t.Fatalf("dead-lettered %+v, want [0 1] once", sends)
					}
					f := sends[0].f
					if f.Class != "retries_exhausted" || f.Attempts != len(tc.pattern) || !errors.Is(f.Err, errUnavailable) {
						t.Errorf("failure = %+v, want retries_exhausted after %d attempts", f, len(tc.pattern))
					}
				}
				h.acks.acked(t, 0, 1)
			})
		})
	}

	// Entries of one batch fail differently: each record counts its own
	// retryable failures, not those of its neighbours.
	t.Run("entries counted apart", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cfg := cfg
			cfg.Retry.MaxAttempts = 2
			mixed := func(context.Context, []pipeline.Record) error {
				return &sinks.BatchError{Failed: []sinks.EntryError{{Index: 0, Err: throttleErr(after)}, {Index: 1, Err: errUnavailable}}}
			}
			dlq := &fakeDLQ{}
			// 0 is throttled twice, then fails once; 1 fails twice.
			h := start(t, newSink(mixed, mixed, failAll(errUnavailable)), cfg, dlq)
			h.write(records(h.acks, 0, 2, 10))
			h.flush()
			h.wantCalls([]int64{0, 1}, []int64{0, 1}, []int64{0}, []int64{0})
			// A retry waits for the longest wait among its entries.
			calls := h.sink.snapshot()
			for i := range 2 {
				if gap := calls[i+1].at.Sub(calls[i].at); gap < after {
					t.Errorf("call %d came %v after a Retry-After of %v", i+1, gap, after)
				}
			}
			sends := dlq.snapshot()
			if len(sends) != 1 || !slices.Equal(sends[0].offs, []int64{1}) || sends[0].f.Class != "retries_exhausted" {
				t.Fatalf("dead-lettered %+v, want only [1], retries exhausted", sends)
			}
			if h.sink.delivered[0] != 1 {
				t.Errorf("offset 0 delivered %d times, want 1: its throttled attempts were counted", h.sink.delivered[0])
			}
			h.acks.acked(t, 0, 1)
		})
	})
}

// varied returns n records from offset from whose sizes vary from 3 to 22
// bytes.
func varied(c *counter, from int64, n int) []pipeline.Record {
	out := make([]pipeline.Record, 0, n)
	for off := from; off < from+int64(n); off++ {
		out = append(out, records(c, off, 1, 3+int(off*7%20))...)
	}
	return out
}

// TestWriterBatchFormation cuts batches from Write calls of many sizes,
// where max_batch_bytes splits segments in the middle: every batch keeps
// both limits and holds at least one record, and records come out in write
// order, each exactly once.
func TestWriterBatchFormation(t *testing.T) {
	writes := []int{1, 7, 500, 1200, 7, 1, 500}
	for _, tc := range []struct {
		name     string
		maxBytes int
		inflight int
		midSplit bool // max_batch_bytes is below the bytes of a 500-record segment
	}{
		{"records only", 1 << 20, 1, false},
		{"bytes split segments", 4000, 1, true},
		{"odd byte limit", 997, 1, true},
		{"odd byte limit, concurrent", 997, 4, true},
		{"record-sized byte limit", 22, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := sinks.Config{
					MaxBatchSize: 500, MaxBatchBytes: tc.maxBytes, MaxInFlightRequests: tc.inflight,
					MaxBufferedRequests: 1000, MaxTimeInBuffer: time.Second,
				}
				h := start(t, newSink(), cfg, nil)
				var off int64
				chunkStart := map[int64]bool{}
				for _, n := range writes {
					for c := off; c < off+int64(n); c += int64(cfg.MaxBatchSize) {
						chunkStart[c] = true
					}
					h.write(varied(h.acks, off, n)) // a fresh slice: the writer owns it
					off += int64(n)
					time.Sleep(400 * time.Millisecond) // some partial batches age
				}
				h.flush()

				calls := h.sink.snapshot()
				var all [][]int64
				split := false
				for i, c := range calls {
					if len(c.offs) == 0 || len(c.offs) > cfg.MaxBatchSize || c.bytes > cfg.MaxBatchBytes {
						t.Errorf("call %d: %d records, %d bytes; want 1 to %d records, at most %d bytes",
							i, len(c.offs), c.bytes, cfg.MaxBatchSize, cfg.MaxBatchBytes)
						continue
					}
					if !slices.Equal(c.offs, span(c.offs[0], int64(len(c.offs)))) {
						t.Errorf("call %d = %v, not a run in write order", i, c.offs)
					}
					split = split || !chunkStart[c.offs[0]]
					all = append(all, c.offs)
				}
				if tc.inflight > 1 {
					all = byFirstOffset(all) // concurrent requests reach the sink in any order
				}
				if got := slices.Concat(all...); !slices.Equal(got, span(0, off)) {
					t.Errorf("records came out as %v..., want 0 to %d in order, each once", got[:min(len(got), 20)], off-1)
				}
				if split != tc.midSplit {
					t.Errorf("a batch began inside a segment: %v, want %v", split, tc.midSplit)
				}
				h.acks.acked(t, span(0, off)...)
				if st := h.w.Stats(); st.Delivered.Load() != off || st.Buffered.Load() != 0 {
					t.Errorf("stats: delivered %d buffered %d", st.Delivered.Load(), st.Buffered.Load())
				}
			})
		})
	}
}

// TestWriterLeavesBatchesAlone: the writer keeps the slice given to Write
// and may hand parts of it to the sink without copying. The test never
// touches a slice after writing it, and checks that every batch the sink saw
// holds the records written, unchanged after WriteBatch returned, through
// oversized records moved out of a chunk, merged and split segments,
// retries and concurrent requests.
func TestWriterLeavesBatchesAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		seen := map[int64]bool{}
		sink := newSink()
		sink.def = func(ctx context.Context, b []pipeline.Record) error {
			// Each offset divisible by 3 fails the first time it is sent.
			mu.Lock()
			defer mu.Unlock()
			var idx []int
			for i, r := range b {
				if o := r.Origin.Offset; o%3 == 0 && !seen[o] {
					idx = append(idx, i)
				}
				seen[r.Origin.Offset] = true
			}
			if len(idx) == 0 {
				return nil
			}
			return failSome(errUnavailable, idx...)(ctx, b)
		}
		dlq := &fakeDLQ{}
		cfg := sinks.Config{
			MaxBatchSize: 5, MaxBatchBytes: 40, MaxRecordBytes: 12, MaxInFlightRequests: 3, MaxTimeInBuffer: 50 * time.Millisecond,
			Retry: sinks.RetryConfig{RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 10 * time.Millisecond},
		}
		h := start(t, sink, cfg, dlq)
		written := map[int64]pipeline.Record{}
		var off int64
		var fit, oversized []int64
		for _, n := range []int{1, 7, 13, 3, 12, 2, 26} {
			recs := make([]pipeline.Record, 0, n)
			for o := off; o < off+int64(n); o++ {
				size := 6 + int(o%7) // 6 to 12 bytes
				if o%5 == 4 {
					size, oversized = 13, append(oversized, o)
				} else {
					fit = append(fit, o)
				}
				r := records(h.acks, o, 1, size)[0]
				written[o] = cloneRecord(r)
				recs = append(recs, r)
			}
			h.write(recs)
			off += int64(n)
			time.Sleep(20 * time.Millisecond)
		}
		h.flush()
		for _, d := range sink.changedBatches() {
			t.Errorf("writer changed a batch it gave the sink: %s", d)
		}
		for i, c := range sink.snapshot() {
			for j, r := range c.seen {
				if w, ok := written[r.Origin.Offset]; !ok || !sameRecord(r, w) {
					t.Errorf("call %d entry %d: offset %d value %q, not as written", i, j, r.Origin.Offset, r.Value)
				}
			}
		}
		for _, o := range fit {
			if n := sink.delivered[o]; n != 1 {
				t.Errorf("offset %d delivered %d times", o, n)
			}
		}
		if got := dlq.offsets(); !slices.Equal(got, oversized) {
			t.Errorf("dead-lettered %v, want %v", got, oversized)
		}
		h.acks.acked(t, span(0, off)...)
	})
}

// TestWriterOversizedInsideChunk: records above max_record_bytes anywhere
// in a chunk (first, last, in the middle, several) are dead-lettered and
// the chunk's other records are still delivered, in write order.
func TestWriterOversizedInsideChunk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dlq := &fakeDLQ{}
		cfg := sinks.Config{MaxBatchSize: 5, MaxRecordBytes: 10, MaxInFlightRequests: 1, MaxTimeInBuffer: time.Hour}
		h := start(t, newSink(), cfg, dlq)
		big := []int64{1, 4, 5, 9, 11} // chunks 0-4, 5-9, 10-11
		var in []pipeline.Record
		for o := range int64(12) {
			size := 10
			if slices.Contains(big, o) {
				size = 11
			}
			in = append(in, records(h.acks, o, 1, size)...)
		}
		h.write(in)
		h.flush()

		calls := h.sink.snapshot()
		var got []int64
		for _, c := range calls {
			if len(c.offs) == 0 || len(c.offs) > cfg.MaxBatchSize {
				t.Errorf("batch %v", c.offs)
			}
			got = append(got, c.offs...)
		}
		if want := []int64{0, 2, 3, 6, 7, 8, 10}; !slices.Equal(got, want) {
			t.Errorf("delivered %v, want %v in order", got, want)
		}
		for _, s := range dlq.snapshot() {
			if s.f.Class != "oversized" || s.f.Attempts != 0 || !slices.IsSorted(s.offs) {
				t.Errorf("dead-letter send %v: %+v", s.offs, s.f)
			}
		}
		if got := dlq.offsets(); !slices.Equal(got, big) {
			t.Errorf("dead-lettered %v, want %v", got, big)
		}
		if len(dlq.early) != 0 {
			t.Errorf("offsets %v acknowledged before being dead-lettered", dlq.early)
		}
		h.acks.acked(t, span(0, 12)...)
		st := h.w.Stats()
		if st.Delivered.Load() != 7 || st.DeadLettered.Load() != 5 || st.Buffered.Load() != 0 {
			t.Errorf("stats: delivered %d dead-lettered %d buffered %d", st.Delivered.Load(), st.DeadLettered.Load(), st.Buffered.Load())
		}
	})
}
