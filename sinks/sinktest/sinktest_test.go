package sinktest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sinks/sinktest"
)

// dest is an in-memory destination shared by the sinks opened over it.
type dest struct {
	mu     sync.Mutex
	values [][]byte
	seen   map[pipeline.Origin]bool
	reject []int
}

func (d *dest) Received() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.values)
}

func (d *dest) Reject(indexes ...int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reject = indexes
}

// memSink delivers to a dest. With byPartition it delivers a batch grouped
// by source partition, the highest first (order holds only per
// partition); with dedupe it drops records whose origin it already
// stored (exactly once); with dupe it stores every batch twice (broken).
type memSink struct {
	d                         *dest
	byPartition, dedupe, dupe bool

	mu     sync.Mutex
	closed bool
}

var errClosed = errors.New("mem sink: closed")

func (s *memSink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errClosed
	}
	order := make([]int, len(batch))
	for i := range order {
		order[i] = i
	}
	if s.byPartition {
		slices.SortStableFunc(order, func(a, b int) int { return int(batch[b].Origin.Partition - batch[a].Origin.Partition) })
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	rej := d.reject
	d.reject = nil
	var be sinks.BatchError
	for range 1 + btoi(s.dupe) {
		for _, i := range order {
			r := batch[i]
			if slices.Contains(rej, i) {
				be.Failed = append(be.Failed, sinks.EntryError{Index: i, Err: errors.New("busy")})
				continue
			}
			if s.dedupe {
				if d.seen[r.Origin] {
					continue
				}
				if d.seen == nil {
					d.seen = map[pipeline.Origin]bool{}
				}
				d.seen[r.Origin] = true
			}
			d.values = append(d.values, bytes.Clone(r.Value))
		}
	}
	if len(be.Failed) > 0 {
		slices.SortFunc(be.Failed, func(a, b sinks.EntryError) int { return a.Index - b.Index })
		return &be
	}
	return nil
}

func (s *memSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// run runs the suite on memSinks built by mk over one dest per subtest.
func run(t *testing.T, f sinktest.Features, mk func(d *dest) *memSink) {
	sinktest.Run(t, f, func(t *testing.T) sinktest.Target {
		d := &dest{}
		return sinktest.Target{Sink: mk(d), Received: d.Received, Reject: d.Reject,
			Reopen: func() (sinks.Sink, error) { return mk(d), nil }}
	})
}

// TestFeatures runs the suite with each ordering and feature on sinks that
// have just that much.
func TestFeatures(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		run(t, sinktest.Features{Ordering: sinktest.OrderTotal, PartialFailure: true, ExactlyOnce: true, Restartable: true},
			func(d *dest) *memSink { return &memSink{d: d, dedupe: true} })
	})
	t.Run("per partition", func(t *testing.T) {
		run(t, sinktest.Features{Ordering: sinktest.OrderPerPartition, Restartable: true},
			func(d *dest) *memSink { return &memSink{d: d, byPartition: true} })
	})
	t.Run("per key", func(t *testing.T) {
		run(t, sinktest.Features{Ordering: sinktest.OrderPerKey},
			func(d *dest) *memSink { return &memSink{d: d, byPartition: true} })
	})
	t.Run("none", func(t *testing.T) {
		run(t, sinktest.Features{}, func(d *dest) *memSink { return &memSink{d: d, byPartition: true} })
	})
}

// brokenEnv names the mismatch TestBroken runs, in a child process
// started by TestSuiteFails.
const brokenEnv = "SINKTEST_BROKEN"

func TestBroken(t *testing.T) {
	switch os.Getenv(brokenEnv) {
	case "":
		t.Skip("run by TestSuiteFails")
	case "reorders":
		run(t, sinktest.Features{Ordering: sinktest.OrderTotal}, func(d *dest) *memSink { return &memSink{d: d, byPartition: true} })
	case "duplicates":
		run(t, sinktest.Features{Ordering: sinktest.OrderTotal, ExactlyOnce: true}, func(d *dest) *memSink { return &memSink{d: d} })
	case "no-reject":
		sinktest.Run(t, sinktest.Features{PartialFailure: true}, func(t *testing.T) sinktest.Target {
			d := &dest{}
			return sinktest.Target{Sink: &memSink{d: d}, Received: d.Received}
		})
	case "dupe":
		run(t, sinktest.Features{}, func(d *dest) *memSink { return &memSink{d: d, dupe: true} })
	}
}

// TestSuiteFails checks, in a child process, that the suite fails a sink
// that does less than it declares.
func TestSuiteFails(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	tests := []struct {
		broken string
		want   []string
	}{
		{"reorders", []string{"--- FAIL: TestBroken/BatchInOrder", "received"}},
		{"duplicates", []string{"--- FAIL: TestBroken/RetryDeliversOnce", "received 40 records, want 20"}},
		{"no-reject", []string{"--- FAIL: TestBroken/PartialFailure", "Features.PartialFailure needs Target.Reject"}},
		{"dupe", []string{"--- FAIL: TestBroken/BatchInOrder", "received twice"}},
	}
	for _, tc := range tests {
		t.Run(tc.broken, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBroken$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tc.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a sink that %s:\n%s", tc.broken, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
