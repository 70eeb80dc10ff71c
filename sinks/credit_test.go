package sinks_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// TestWriterByteCredit: Write blocks once max_buffered_bytes are held, Free
// reports the remaining credit, and completions free it again.
func TestWriterByteCredit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newSink()
		sink.def = sink.block // every request waits for a gate token
		w, err := sinks.NewWriter(sink, sinks.Config{
			MaxBatchSize: 10, MaxBatchBytes: 1000, MaxBufferedRequests: 1000, MaxBufferedBytes: 2000,
			MaxInFlightRequests: 4, MaxTimeInBuffer: time.Millisecond, MaxRecordBytes: 100,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.Run(ctx)
		rec := func(i int) pipeline.Record {
			return pipeline.Record{Value: make([]byte, 100), Origin: pipeline.Origin{Offset: int64(i)}}
		}
		recs := make([]pipeline.Record, 30) // 3000 bytes, over the 2000 budget
		for i := range recs {
			recs[i] = rec(i)
		}
		wrote := make(chan error, 1)
		go func() { wrote <- w.Write(ctx, recs) }()
		synctest.Wait()
		select {
		case err := <-wrote:
			t.Fatalf("Write returned (%v) with 3000 bytes against a 2000-byte budget", err)
		default:
		}
		if _, b := w.Free(); b != 0 {
			t.Fatalf("free bytes = %d while blocked, want 0", b)
		}
		if peak := w.Stats().PeakBufferedBytes.Load(); peak > 2000 {
			t.Fatalf("buffered %d bytes, budget 2000", peak)
		}
		changed := w.Changed()
		sink.gate <- struct{}{} // complete one request of 10 records
		synctest.Wait()
		select {
		case <-changed:
		default:
			t.Fatal("Changed not signalled after a completion")
		}
		for range 5 {
			select {
			case sink.gate <- struct{}{}:
			case err := <-wrote:
				if err != nil {
					t.Fatal(err)
				}
				wrote <- nil
			}
			synctest.Wait()
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if peak := w.Stats().PeakBufferedBytes.Load(); peak > 2000 {
			t.Fatalf("peak buffered %d bytes, budget 2000", peak)
		}
	})
}
