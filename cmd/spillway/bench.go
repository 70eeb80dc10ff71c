package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/spillway-io/spillway/internal/bench"
	"github.com/spillway-io/spillway/sinks"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.IntVar(&o.Records, "records", 1_000_000, "records in the benchmark topic")
	fs.IntVar(&o.ValueBytes, "value-bytes", 100, "value size")
	fs.IntVar(&o.Partitions, "partitions", 4, "partitions")
	fs.IntVar(&o.Rounds, "rounds", 3, "alternating rounds per contender (median reported)")
	var w sinks.Config
	fs.IntVar(&w.MaxBatchSize, "max-batch-size", 0, "writer max_batch_size (0: default)")
	fs.IntVar(&w.MaxInFlightRequests, "max-in-flight", 0, "writer max_in_flight_requests (0: default)")
	fs.IntVar(&w.MaxBufferedRequests, "max-buffered", 0, "writer max_buffered_requests (0: default)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if o.Records < 1 || o.ValueBytes < 32 || o.Partitions < 1 || o.Rounds < 1 {
		return usagef("--records, --partitions, --rounds must be >= 1 and --value-bytes >= 32")
	}
	o.Writer, o.Log = w, stderr
	res, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}
