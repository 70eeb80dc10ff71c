package sinks

import (
	"context"
	"time"
)

// RequestObserver is told about every request the writer sends, once the
// sink answered it: a metrics hook (internal/job records the request
// duration and batch size histograms with it). ObserveRequest is called
// from the request's goroutine, so concurrently, once per WriteBatch
// call, retries and bisected halves included; it must not block and must
// not keep anything.
type RequestObserver interface {
	ObserveRequest(ctx context.Context, r RequestStats)
}

// RequestStats describes one answered request.
type RequestStats struct {
	Records  int           // records in the request
	Bytes    int           // their payload bytes (Record.Size), as the writer accounted them
	Duration time.Duration // WriteBatch's duration
	Err      error         // WriteBatch's result
}

// WithRequestObserver sets the observer told about every request.
func WithRequestObserver(o RequestObserver) WriterOption { return func(w *Writer) { w.observer = o } }

// observe tells the observer, if any, about the request of batch started
// at start. The writer knows the batch's bytes already: the observer
// costs no pass over the records.
func (w *Writer) observe(ctx context.Context, batch segment, start time.Time, err error) {
	if w.observer == nil {
		return
	}
	w.observer.ObserveRequest(ctx, RequestStats{Records: len(batch.recs), Bytes: batch.bytes, Duration: w.now().Sub(start), Err: err})
}
