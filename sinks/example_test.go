package sinks_test

import (
	"context"
	"fmt"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// printSink is a Sink that prints each batch it delivers.
type printSink struct{}

func (printSink) WriteBatch(_ context.Context, batch []pipeline.Record) error {
	var vals []string
	for _, r := range batch {
		vals = append(vals, string(r.Value))
	}
	fmt.Println("batch", vals)
	return nil
}

// printAcker prints the offsets the writer reports done.
type printAcker struct{}

func (printAcker) Ack(offsets []int64) { fmt.Println("done", offsets) }

func ExampleWriter() {
	w, err := sinks.NewWriter(printSink{}, sinks.Config{MaxBatchSize: 2, MaxInFlightRequests: 1}, sinks.WithLogger(quiet))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	var recs []pipeline.Record
	for i, v := range []string{"a", "b", "c"} {
		recs = append(recs, pipeline.Record{Value: []byte(v), Origin: pipeline.Origin{Offset: int64(i)}}.WithAcker(printAcker{}))
	}
	if err := w.Write(ctx, recs); err != nil { // a full batch goes at once
		fmt.Println(err)
	}
	if err := w.Flush(ctx); err != nil { // the rest, then wait for it
		fmt.Println(err)
	}
	cancel()
	fmt.Println("run:", <-done)
	// Output:
	// batch [a b]
	// done [0 1]
	// batch [c]
	// done [2]
	// run: <nil>
}
