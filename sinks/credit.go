package sinks

import (
	"context"

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
func (w *Writer) acquire(ctx context.Context, n, b int64) error {
	if w.credits.TryAcquire(n) {
		if w.bcredit.TryAcquire(b) {
			return nil
		}
		w.credits.Release(n)
	}
	// Acquire blocks on ctx only; also give up when the job failed.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.failed:
			cancel()
		case <-actx.Done():
		}
	}()
	if err := w.credits.Acquire(actx, n); err != nil {
		if e := w.Err(); e != nil {
			return e
		}
		return err
	}
	if err := w.bcredit.Acquire(actx, b); err != nil {
		w.credits.Release(n)
		if e := w.Err(); e != nil {
			return e
		}
		return err
	}
	return nil
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
