package sinks

import (
	"context"
	"errors"

	"github.com/spillway-io/spillway/pipeline"
)

// The writer's credit is its buffer budget, max_buffered_requests records
// and max_buffered_bytes bytes: Write takes credit for what it buffers, and
// a record's credit returns once it is done (delivered, dead-lettered,
// abandoned) or given up. The Writer implements pipeline.Credit with it,
// so a source can pause fetching instead of blocking in Write.

var _ pipeline.Credit = (*Writer)(nil)

// Free returns the records and bytes the writer can still accept before
// Write blocks: the credit a source may fetch for. It implements
// pipeline.Credit.
func (w *Writer) Free() (records, bytes int64) {
	return int64(w.cfg.MaxBufferedRequests) - w.stats.Buffered.Load(),
		int64(w.cfg.MaxBufferedBytes) - w.stats.BufferedBytes.Load()
}

// Capacity returns max_buffered_requests and max_buffered_bytes.
func (w *Writer) Capacity() (records, bytes int64) {
	return int64(w.cfg.MaxBufferedRequests), int64(w.cfg.MaxBufferedBytes)
}

// Changed returns a channel closed at the next change of the writer's state
// (credit freed, records buffered, requests completed).
func (w *Writer) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// acquire takes n records' and b bytes' credit, blocking until both are
// free, ctx ends or the job failed.
func (w *Writer) acquire(ctx context.Context, n, b int64, recs []pipeline.Record) error {
	if w.credits.TryAcquire(n) {
		if w.bcredit.TryAcquire(b) {
			return nil
		}
		w.credits.Release(n)
	}
	// About to wait: records of a partition being revoked must not wait
	// for room they will never need (the revocation waits for them).
	moved := w.abandon.Next()
	if anyAbandoned(recs) {
		return errAbandoned
	}
	// Acquire blocks on ctx only; also give up when the job failed or
	// records may have been abandoned.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-w.failed:
			cancel(nil)
		case <-moved:
			cancel(errAbandoned)
		case <-actx.Done():
		}
	}()
	fail := func(err error) error {
		if e := w.Err(); e != nil {
			return e
		}
		if errors.Is(context.Cause(actx), errAbandoned) {
			return errAbandoned
		}
		return err
	}
	if err := w.credits.Acquire(actx, n); err != nil {
		return fail(err)
	}
	if err := w.bcredit.Acquire(actx, b); err != nil {
		w.credits.Release(n)
		return fail(err)
	}
	return nil
}

// errAbandoned interrupts a Write waiting for credit: some of its records
// may have been abandoned (pipeline.Abandonment moved).
var errAbandoned = errors.New("records abandoned while waiting for room")

func anyAbandoned(recs []pipeline.Record) bool {
	for i := range recs {
		if recs[i].Abandoned() {
			return true
		}
	}
	return false
}

// giveBackAbandoned removes the abandoned records from recs, which the
// writer owns but has not buffered (no credit held), gives them back
// undone (pipeline.ReleaseAll) and returns the rest.
func (w *Writer) giveBackAbandoned(recs []pipeline.Record) []pipeline.Record {
	var dropped []pipeline.Record
	keep := recs[:0]
	for _, r := range recs {
		if r.Abandoned() {
			dropped = append(dropped, r)
			continue
		}
		keep = append(keep, r)
	}
	if len(dropped) > 0 {
		w.stats.Abandoned.Add(int64(len(dropped)))
		pipeline.ReleaseAll(dropped) // dropped must not be read after this
		w.log.Debug("records of moved partitions not buffered", "records", len(dropped))
	}
	return keep
}

// complete acknowledges delivered records and frees their credit.
func (w *Writer) complete(recs []pipeline.Record) {
	// Read everything needed before acknowledging: once the last record of
	// a poll batch is acked, its slice is recycled by the source.
	n, b := w.creditOf(recs)
	pipeline.AckAll(recs)
	w.stats.Delivered.Add(int64(n))
	w.releaseN(n, b)
}

// release returns the credit recs held (for records not acknowledged).
func (w *Writer) release(recs []pipeline.Record) {
	w.releaseN(w.creditOf(recs))
}

// creditOf is the credit recs hold: one record each, and their bytes unless
// they were oversized (those never took byte credit).
func (w *Writer) creditOf(recs []pipeline.Record) (int, int64) {
	var b int64
	for i := range recs {
		if sz := recs[i].Size(); sz <= w.cfg.MaxRecordBytes {
			b += int64(sz)
		}
	}
	return len(recs), b
}

func (w *Writer) releaseN(n int, b int64) {
	w.stats.Buffered.Add(-int64(n))
	w.stats.BufferedBytes.Add(-b)
	w.credits.Release(int64(n))
	w.bcredit.Release(b)
	w.mu.Lock()
	w.signalLocked()
	w.mu.Unlock()
}
