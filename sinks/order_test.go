package sinks_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// laneRecords returns n records with offsets from..from+n-1 (unique across
// partitions, so the fakes can key by offset), of the partition and key
// each offset maps to.
func laneRecords(c *counter, from int64, n int, part func(off int64) int32, key func(off int64) string) []pipeline.Record {
	out := make([]pipeline.Record, n)
	for i := range out {
		off := from + int64(i)
		r := pipeline.Record{Value: fmt.Appendf(nil, "%010d", off), Origin: pipeline.Origin{Topic: "t", Partition: part(off), Offset: off}}
		if key != nil {
			r.Key = []byte(key(off))
		}
		out[i] = r.WithAcker(c)
	}
	return out
}

// orderChecker watches a sink's requests: no two requests in flight share
// a lane, and no record is sent before every earlier record of its lane is
// done (delivered or dead-lettered) or is before it in the same request.
// (Once sent, a destination that accepts part of a request, 207, may
// itself accept a record before an earlier one it refused: the writer
// cannot undo that, so the check is on what the writer sends.)
type orderChecker struct {
	mode  string
	lanes map[string][]int64 // lane → its offsets, ascending
	done  func(off int64) bool
	mu    sync.Mutex
	busy  map[string]int
	errs  []string
}

func (o *orderChecker) lane(r pipeline.Record) string {
	if o.mode == sinks.OrderKey {
		return fmt.Sprintf("%d/%s", r.Origin.Partition, r.Key)
	}
	return fmt.Sprint(r.Origin.Partition)
}

func (o *orderChecker) enter(b []pipeline.Record) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ls []string
	sent := map[int64]bool{}
	for _, r := range b {
		l := o.lane(r)
		if !slices.Contains(ls, l) {
			ls = append(ls, l)
		}
		for _, off := range o.lanes[l] {
			if off >= r.Origin.Offset {
				break
			}
			if !sent[off] && !o.done(off) {
				o.errs = append(o.errs, fmt.Sprintf("lane %s: %d sent before %d was done", l, r.Origin.Offset, off))
				break
			}
		}
		sent[r.Origin.Offset] = true
	}
	for _, l := range ls {
		if o.busy[l]++; o.busy[l] > 1 {
			o.errs = append(o.errs, fmt.Sprintf("lane %s in two requests at once", l))
		}
	}
	return ls
}

func (o *orderChecker) leave(ls []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range ls {
		o.busy[l]--
	}
}

// TestWriterOrdering: under random latency, retryable, throttled and
// partial failures and bisected refusals, with 8 requests in flight, the
// partition and key orderings never put one lane in two requests at once
// and deliver each lane in order; everything arrives exactly once or is
// dead-lettered. The same run unordered breaks the order (the check can
// fail).
func TestWriterOrdering(t *testing.T) {
	for _, mode := range []string{sinks.OrderPartition, sinks.OrderKey, sinks.OrderNone} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n, parts = 1200, 3
				bad := func(off int64) bool { return off%97 == 5 }
				rnd := rand.New(rand.NewPCG(7, 11))
				var rmu sync.Mutex
				chk := &orderChecker{mode: mode, busy: map[string]int{}, lanes: map[string][]int64{}}
				sink := newSink()
				sink.def = func(ctx context.Context, b []pipeline.Record) error {
					ls := chk.enter(b)
					rmu.Lock()
					lat := time.Duration(rnd.IntN(20)) * time.Millisecond
					roll := rnd.IntN(100)
					pick := rnd.Perm(len(b))[:max(1, len(b)/3)]
					rmu.Unlock()
					time.Sleep(lat)
					var err error
					switch {
					case slices.ContainsFunc(b, func(r pipeline.Record) bool { return bad(r.Origin.Offset) }):
						err = sinks.AsFatal(errors.New("400 bad record"))
					case roll < 15:
						err = errUnavailable
					case roll < 22:
						err = throttleErr(30 * time.Millisecond)
					case roll < 35:
						be := &sinks.BatchError{}
						slices.Sort(pick)
						for _, i := range pick {
							be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: errUnavailable})
						}
						err = be
					}
					chk.leave(ls)
					return err
				}
				dlq := &fakeDLQ{}
				cfg := sinks.Config{
					MaxBatchSize: 40, MaxInFlightRequests: 8, MaxTimeInBuffer: 5 * time.Millisecond, Ordering: mode,
					Retry: sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 40 * time.Millisecond},
				}
				h := start(t, sink, cfg, dlq)
				chk.done = func(off int64) bool { return h.acks.count(off) > 0 }
				// Runs of 1-7 records per partition, as polls interleave them;
				// 4 keys per partition.
				part := func(off int64) int32 { return int32(off/3+off/7) % parts }
				key := func(off int64) string { return fmt.Sprint("k", off%4) }
				for off := range int64(n) {
					r := laneRecords(newCounter(), off, 1, part, key)[0]
					chk.lanes[chk.lane(r)] = append(chk.lanes[chk.lane(r)], off)
				}
				for from := int64(0); from < n; from += 100 {
					h.write(laneRecords(h.acks, from, 100, part, key))
				}
				h.flush()
				h.acks.acked(t, span(0, n)...)
				for o := int64(0); o < n; o++ {
					if want := 1 - min(1, btoi(bad(o))); sink.delivered[o] != want {
						t.Errorf("offset %d delivered %d times, want %d", o, sink.delivered[o], want)
					}
				}
				peak := sink.maxInflight
				switch {
				case mode == sinks.OrderNone && len(chk.errs) == 0:
					t.Errorf("unordered run kept every lane in order: the check cannot fail")
				case mode != sinks.OrderNone && len(chk.errs) > 0:
					t.Errorf("%d order violations, first: %s", len(chk.errs), chk.errs[0])
				case mode == sinks.OrderKey && peak <= parts:
					t.Errorf("peak %d requests in flight: key mode should pass %d partitions", peak, parts)
				case mode == sinks.OrderPartition && peak > parts:
					t.Errorf("peak %d requests in flight with %d partitions", peak, parts)
				}
				t.Logf("%s: peak in flight %d, %d violations, %d requests", mode, peak, len(chk.errs), sink.numCalls())
			})
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestWriterPartitionsInParallel: with partition order, batches of
// different partitions are in flight together, one per partition, and a
// partition's next batch goes as soon as its previous one is done.
func TestWriterPartitionsInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink()
		sink.def = sink.block
		cfg := sinks.Config{MaxBatchSize: 10, MaxInFlightRequests: 8, MaxTimeInBuffer: time.Hour, Ordering: sinks.OrderPartition}
		h := start(t, sink, cfg, nil)
		part := func(off int64) int32 { return int32(off / 20) } // 20 per partition: two batches each
		h.write(laneRecords(h.acks, 0, 60, part, nil))
		synctest.Wait()
		got := byFirstOffset(sink.offsets())
		if want := [][]int64{span(0, 10), span(20, 10), span(40, 10)}; !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("in flight %v, want the first batch of each partition", got)
		}
		sink.gate <- struct{}{} // one completes: its partition's next batch goes
		synctest.Wait()
		if calls := sink.numCalls(); calls != 4 {
			t.Fatalf("%d requests after one completed, want 4", calls)
		}
		close(sink.gate)
		h.flush()
		h.acks.acked(t, span(0, 60)...)
	})
}

// TestWriterOrderedSendsFreeLanesWhenBufferFull: once the buffer holds a
// batch's worth, the records whose lanes are free go at once, fewer than
// a batch, instead of waiting for max_time_in_buffer while the rest wait
// for their lanes: request slots do not idle while lanes free up one by
// one.
func TestWriterOrderedSendsFreeLanesWhenBufferFull(t *testing.T) {
	for _, tc := range []struct {
		mode string
		part func(off int64) int32
		key  func(off int64) string
	}{
		// Partition 0 holds 0-14, partition 1 15-17, partition 2 18-19.
		{sinks.OrderPartition, func(off int64) int32 { return int32(max(0, off-12) / 3) }, nil},
		// One partition; 0-14 on keys k0-k4, 15-19 on k5.
		{sinks.OrderKey, func(int64) int32 { return 0 }, func(off int64) string { return fmt.Sprint("k", min(off%5+off/15*5, 5)) }},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newSink()
				sink.def = sink.block
				cfg := sinks.Config{MaxBatchSize: 10, MaxInFlightRequests: 8, MaxTimeInBuffer: time.Hour, Ordering: tc.mode}
				h := start(t, sink, cfg, nil)
				h.write(laneRecords(h.acks, 0, 10, tc.part, tc.key))
				synctest.Wait()
				h.write(laneRecords(h.acks, 10, 10, tc.part, tc.key))
				synctest.Wait()
				// 10-14 wait for the lanes of the batch in flight; 15-19
				// are free, and the buffer holds a batch's worth.
				got := byFirstOffset(sink.offsets())
				if want := [][]int64{span(0, 10), span(15, 5)}; !slices.EqualFunc(got, want, slices.Equal) {
					t.Fatalf("in flight %v, want %v", got, want)
				}
				close(sink.gate)
				h.flush()
				h.acks.acked(t, span(0, 20)...)
			})
		})
	}
}

// TestWriterKeyOrderScansPastHeldRun: in key order, free records behind a
// long run of records whose keys are all in flight are found and sent; the
// scan's bound counts only records that may go, not a held run (the run,
// longer than the bound, used to hide everything behind it).
func TestWriterKeyOrderScansPastHeldRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink()
		sink.def = sink.block
		cfg := sinks.Config{MaxBatchSize: 10, MaxInFlightRequests: 8, MaxBufferedRequests: 20000,
			MaxTimeInBuffer: time.Hour, Ordering: sinks.OrderKey}
		h := start(t, sink, cfg, nil)
		const run = 5000 // more than the scan's bound, max(4×batch, 2048)
		// Partition 0: 0-9 on keys k0-k9 (sent), then a run on the same
		// keys (held behind them); partition 1: ten records on other keys.
		part := func(off int64) int32 { return int32(off / (run + 10)) }
		key := func(off int64) string { return fmt.Sprint("k", off%10) }
		h.write(laneRecords(h.acks, 0, 10, part, key))
		synctest.Wait()
		h.write(laneRecords(h.acks, 10, run, part, key))
		h.write(laneRecords(h.acks, run+10, 10, part, func(off int64) string { return fmt.Sprint("p1-", off) }))
		synctest.Wait()
		got := byFirstOffset(sink.offsets())
		if want := [][]int64{span(0, 10), span(run+10, 10)}; !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("in flight %v, want %v", got, want)
		}
		close(sink.gate)
		h.flush()
		h.acks.acked(t, span(0, run+20)...)
	})
}
